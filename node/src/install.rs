//! Edges in one line (issue 19): what a center serves to a machine that installs an edge.
//!
//! `curl -fsSL https://CENTER/install.sh | sudo sh -s -- --token xpt_…` runs the script
//! (`install.sh` beside this file, rendered with this center's URL, QUIC endpoint and
//! architecture), which fetches from `/-/install/`:
//!
//! - `ca.crt`: the cluster CA. The script refuses unless its SHA-256 is the fingerprint the token
//!   carries — the token is the trust anchor, as it is for the join itself.
//! - `node.crt`: this center's certificate, which must be signed by that CA.
//! - `manifest` and `manifest.sig`: the SHA-256 of the script (as served for this URL) and of
//!   the binary, signed with this center's node key (ECDSA P-256 / SHA-256, DER, what
//!   `openssl dgst -verify` checks).
//! - `xpod-linux-<arch>`: this node's own binary (`/proc/self/exe`: the running one, even when
//!   the file on disk was replaced since), for its own architecture only.
//!
//! Everything here is public (no credentials): the CA certificate, a certificate and a binary.
//! The script hands the token to `xpod service install` through the environment.
//! A node without a node certificate (a lone node, an edge) answers 404 naming why.

use std::io::Read as _;
use std::sync::Arc;

use http::{Method, Response};
use sha2::{Digest as _, Sha256};

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// The script, with `@CENTER@`, `@JOIN@` and `@ARCH@` to fill in.
const SCRIPT: &str = include_str!("install.sh");
/// Where the running binary is read from.
const SELF_EXE: &str = "/proc/self/exe";
/// Longest Host header accepted for the URL the script is rendered with.
const MAX_HOST: usize = 255;

/// The binary's file name for this node's architecture.
pub fn binary_name() -> String {
    format!("xpod-linux-{}", std::env::consts::ARCH)
}

/// SHA-256 (hex) and length of the running binary, computed once.
static BINARY: tokio::sync::OnceCell<(String, u64)> = tokio::sync::OnceCell::const_new();

/// The installer itself: `curl -fsSL https://CENTER/install.sh | sudo sh -s -- --token xpt_…`.
#[utoipa::path(get, path = "/install.sh", operation_id = "installScript", tag = "ops", security(()),
    responses(
        (status = 200, description = "A POSIX shell script", content_type = "text/x-shellscript", body = String),
        (status = 404, description = "This node installs no edges", body = crate::api_types::ErrorBody),
    ))]
pub async fn serve_script(
    app: &Arc<App>,
    method: &Method,
    host: Option<&str>,
    https: bool,
) -> Result<Response<Body>, ApiError> {
    serve(app, method, "install.sh", host, https).await
}

/// What the installer fetches: `ca.crt`, `node.crt`, `manifest` (SHA-256 of the script and
/// the binary), `manifest.sig` (the center's ECDSA P-256 signature), `xpod-linux-<arch>`.
#[utoipa::path(get, path = "/-/install/{file}", operation_id = "installFile", tag = "ops", security(()),
    params(("file" = String, Path)),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such file, or this node installs no edges", body = crate::api_types::ErrorBody),
    ))]
///
/// Serves `file` of the installer; `host` is the request's Host header, `https` whether the
/// request came over TLS (together: the URL the script fetches the rest from).
pub async fn serve(
    app: &Arc<App>,
    method: &Method,
    file: &str,
    host: Option<&str>,
    https: bool,
) -> Result<Response<Body>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    let dir = &app.config.data_dir;
    let node_crt = dir.join(crate::edges::NODE_CERT);
    if app.config.role == xpod_config::Role::Edge || !node_crt.exists() {
        return Err(ApiError::not_found(
            "this node installs no edges: only a center with a node certificate does (xpod ca issue)",
        ));
    }
    let text = |s: String, kind: &str| reply(body::full(s), kind, None);
    match file {
        "install.sh" => text(render(app, host, https)?, "text/x-shellscript"),
        "ca.crt" | "node.crt" => {
            let name = if file == "ca.crt" {
                crate::cluster_ca::CA_CERT
            } else {
                crate::edges::NODE_CERT
            };
            text(read(&dir.join(name)).await?, "application/x-pem-file")
        }
        "manifest" => text(manifest(app, host, https).await?, "text/plain"),
        "manifest.sig" => {
            let signed = sign(app, manifest(app, host, https).await?.as_bytes()).await?;
            reply(body::full(signed), "application/octet-stream", None)
        }
        f if f == binary_name() => {
            let (_, len) = binary().await?;
            let file = tokio::fs::File::open(SELF_EXE)
                .await
                .map_err(|e| ApiError::internal(format!("opening this node's binary: {e}")))?;
            let stream = tokio_util::io::ReaderStream::new(file);
            reply(body::stream(stream), "application/octet-stream", Some(len))
        }
        f if f.starts_with("xpod-") => Err(ApiError::not_found(format!(
            "this center serves the binary for linux-{} only ({})",
            std::env::consts::ARCH,
            binary_name()
        ))),
        _ => Err(ApiError::not_found(format!(
            "no installer file {:?} (install.sh, ca.crt, node.crt, manifest, manifest.sig, {})",
            file.chars().take(64).collect::<String>(),
            binary_name()
        ))),
    }
}

fn reply(body: Body, kind: &str, len: Option<u64>) -> Result<Response<Body>, ApiError> {
    let mut b = Response::builder()
        .header(http::header::CONTENT_TYPE, kind)
        .header(http::header::CACHE_CONTROL, "no-store");
    if let Some(len) = len {
        b = b.header(http::header::CONTENT_LENGTH, len);
    }
    b.body(body).map_err(|e| ApiError::internal(e.to_string()))
}

async fn read(path: &std::path::Path) -> Result<String, ApiError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))
}

/// The URL the script fetches the rest from: the one the client used. The Host header goes
/// into a shell script, so only host-name characters pass.
fn center_url(app: &App, host: Option<&str>, https: bool) -> Result<String, ApiError> {
    let Some(host) = host else {
        return Ok(app.base_url.clone());
    };
    if host.is_empty() || host.len() > MAX_HOST || !is_host_port(host) {
        return Err(ApiError::bad_request(
            "the Host header is not a host name (the installer is rendered with it)",
        ));
    }
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

/// Only the characters of a host name, an IP address and a port (nothing a shell interprets).
fn is_host_port(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// The QUIC endpoint an edge joins through: what this center advertises to the mesh.
fn join_address(app: &App) -> Result<String, ApiError> {
    let addr = app.quic_address.get().ok_or_else(|| {
        ApiError::unavailable("this center's QUIC endpoint is not up (yet): edges cannot join")
    })?;
    if !is_host_port(addr) {
        return Err(ApiError::internal(format!(
            "the advertised QUIC address {addr:?} is not HOST:PORT"
        )));
    }
    Ok(addr.clone())
}

fn render(app: &App, host: Option<&str>, https: bool) -> Result<String, ApiError> {
    Ok(SCRIPT
        .replace("@CENTER@", &center_url(app, host, https)?)
        .replace("@JOIN@", &join_address(app)?)
        .replace("@ARCH@", std::env::consts::ARCH))
}

/// The manifest: the script as served for this URL and the binary, by SHA-256.
async fn manifest(app: &App, host: Option<&str>, https: bool) -> Result<String, ApiError> {
    let script = hex::encode(Sha256::digest(render(app, host, https)?.as_bytes()));
    let (bin, len) = binary().await?;
    Ok(format!(
        "xpod-install-manifest 1\nversion {}\ncenter {}\nsha256 {script} install.sh\nsha256 {bin} {} {len}\n",
        env!("CARGO_PKG_VERSION"),
        app.node_id,
        binary_name(),
    ))
}

async fn binary() -> Result<(String, u64), ApiError> {
    BINARY
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(hash_self)
                .await
                .map_err(|e| e.to_string())?
        })
        .await
        .cloned()
        .map_err(|e| ApiError::internal(format!("hashing this node's binary: {e}")))
}

fn hash_self() -> Result<(String, u64), String> {
    let mut f = std::fs::File::open(SELF_EXE).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

/// Signs `msg` with this center's node key.
async fn sign(app: &App, msg: &[u8]) -> Result<Vec<u8>, ApiError> {
    use rcgen::SigningKey as _;
    let pem = read(&app.config.data_dir.join(crate::edges::NODE_KEY)).await?;
    let key = rcgen::KeyPair::from_pem(&pem)
        .map_err(|e| ApiError::internal(format!("reading this center's node key: {e}")))?;
    key.sign(msg)
        .map_err(|e| ApiError::internal(format!("signing the manifest: {e}")))
}
