//! HTTP (and WebSockets) to a port inside a sandbox: `<port>-<id>.<sandbox.domain>` (any
//! path) or `/api/v1/sandboxes/{id}/ports/{port}/…` (the rest of the path).
//!
//! Private by default: the owner's API key (scope `sandbox` or `admin`; `sandbox:read` for GET,
//! HEAD and OPTIONS without an upgrade) or the sandbox's access token in `X-Sandbox-Token`; credentials are removed before the request
//! goes in. `public: true` needs neither. On the sandbox's node the request goes through the
//! supervisor's `connect` (the sandbox has no network of its own); from another node over a
//! `SandboxPort` stream that the runner relays byte for byte ([`serve_stream`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};

use super::model::{self, Sandbox, Status};
use crate::app::App;
use crate::auth::{self, Access, Principal};
use crate::reply::body::Body;
use crate::reply::error::ApiError;

/// The header carrying a sandbox's access token.
pub const TOKEN_HEADER: &str = "x-sandbox-token";

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("sandbox {id} not found"))
}

/// Whether `principal` or the token header may send this request to the ports of `sb`: 401
/// without credentials, 404 for another owner's sandbox (it is not theirs to know of), 403 for
/// a write with a `sandbox:read` key (it only reads: GET, HEAD and OPTIONS without an upgrade).
fn check(sb: &Sandbox, principal: &Principal, req: &Request<Incoming>) -> Result<(), ApiError> {
    if sb.public {
        return Ok(());
    }
    let headers = req.headers();
    let token_ok = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            bool::from(
                auth::hash_key(t.trim())
                    .as_bytes()
                    .ct_eq(sb.token_hash.as_bytes()),
            )
        });
    if token_ok {
        return Ok(());
    }
    let owns = principal.is_admin() || principal.owner() == Some(sb.owner.as_str());
    match principal.sandbox_access() {
        Some(Access::Write) if owns => Ok(()),
        Some(Access::Read) if owns => {
            let reads = matches!(
                *req.method(),
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            );
            if reads && !headers.contains_key(header::UPGRADE) {
                Ok(())
            } else {
                Err(ApiError::forbidden(format!(
                    "this API key may only read (sandbox:read): GET, HEAD or OPTIONS to sandbox {} without an upgrade",
                    sb.id
                )))
            }
        }
        _ => Err(match principal {
            Principal::Anonymous if !headers.contains_key(TOKEN_HEADER) => {
                ApiError::unauthorized(format!(
                    "sandbox {} is private: send its owner's API key or its access token ({TOKEN_HEADER})",
                    sb.id
                ))
            }
            _ => not_found(&sb.id),
        }),
    }
}

async fn load(app: &App, id: &str) -> Result<Sandbox, ApiError> {
    let (sb, _) = model::get(app.meta.as_ref(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(sb)
}

/// A request for `<port>-<id>.<domain>` (authenticates itself: no credentials are needed for
/// a public sandbox).
pub async fn by_host(
    app: &Arc<App>,
    port: u16,
    id: &str,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let sb = load(app, id).await?;
    if !sb.public {
        let principal = auth::authenticate(
            req.headers(),
            &app.keys,
            app.meta.as_ref(),
            xpod_storage::meta::now_millis(),
        )
        .await?;
        if let Err(e) = check(&sb, &principal, &req) {
            if e.status == StatusCode::NOT_FOUND {
                app.refusal(
                    Some(peer.ip()),
                    principal.actor(),
                    "refused.not_owner",
                    format!("sandbox:{id}"),
                    serde_json::json!({"client": peer.ip().to_string(), "port": port}),
                    String::new(),
                );
            }
            return Err(e);
        }
    }
    forward(app, &sb, port, peer, req, None).await
}

/// A request for `/api/v1/sandboxes/{id}/ports/{port}/…` (`prefix` is removed from the path).
/// `principal` made the request from `peer`; `trace_id` names it in the audit of a refusal.
pub async fn by_path(
    app: &Arc<App>,
    principal: &Principal,
    peer: SocketAddr,
    trace_id: &str,
    (id, port, prefix): (&str, &str, &str),
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::bad_request(format!("port {port:?}: expected 1..=65535")))?;
    if !model::valid_id(id) {
        return Err(not_found(id));
    }
    let sb = load(app, id).await?;
    if let Err(e) = check(&sb, principal, &req) {
        if e.status == StatusCode::NOT_FOUND {
            app.refusal(
                Some(peer.ip()),
                principal.actor(),
                "refused.not_owner",
                format!("sandbox:{id}"),
                serde_json::json!({"client": peer.ip().to_string()}),
                trace_id.to_string(),
            );
        }
        return Err(e);
    }
    forward(app, &sb, port, peer, req, Some(prefix)).await
}

fn bad_gateway(sb: &Sandbox, port: u16, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        format!("port {port} of sandbox {}: {why}", sb.id),
    )
}

async fn forward(
    app: &Arc<App>,
    sb: &Sandbox,
    port: u16,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    strip_prefix: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    if sb.status != Status::Running {
        return Err(ApiError::conflict(format!(
            "sandbox {} is {}, not running",
            sb.id,
            sb.status.as_str()
        )));
    }
    // Credentials are for this node, never for the sandbox's server.
    let h = req.headers_mut();
    h.remove(header::AUTHORIZATION);
    h.remove("x-api-key");
    h.remove(TOKEN_HEADER);
    if let Some(prefix) = strip_prefix {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let rest = pq.strip_prefix(prefix).unwrap_or("/");
        let rest = if rest.is_empty() || rest.starts_with('?') {
            format!("/{rest}")
        } else {
            rest.to_string()
        };
        *req.uri_mut() = rest
            .parse::<Uri>()
            .map_err(|e| ApiError::bad_request(format!("path: {e}")))?;
    }
    let upgrade = xpod_routing::forward::upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut req = xpod_routing::forward::prepare(req, &host, peer);
    if let Some(p) = &upgrade {
        let h = req.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, p.clone());
    }
    let req = req.map(|b| b.map_err(std::io::Error::other).boxed_unsync());
    let mut resp = if sb.node == app.node_id {
        let conn = app
            .runner
            .connect(&sb.id, port)
            .await
            .map_err(|e| bad_gateway(sb, port, e.message))?;
        exchange(conn, req, sb, port).await?
    } else {
        let io = super::client::open_port(app, &sb.node, &sb.id, port, Some(peer)).await?;
        exchange(io, req, sb, port).await?
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Err(bad_gateway(
                sb,
                port,
                "the server switched protocols unasked",
            ));
        };
        let server = hyper::upgrade::on(&mut resp);
        let idle = app.config.tunnel.relay_idle();
        tokio::spawn(async move {
            if let Ok((c, s)) = tokio::try_join!(client, server) {
                let _ = crate::idle_copy::copy_bidirectional(
                    &mut TokioIo::new(c),
                    &mut TokioIo::new(s),
                    idle,
                )
                .await;
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    xpod_routing::forward::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove("x-xpod-node");
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(p) = protocol {
            parts.headers.insert(header::UPGRADE, p);
        }
    }
    Ok(Response::from_parts(
        parts,
        body.map_err(std::io::Error::other).boxed_unsync(),
    ))
}

/// A byte stream an HTTP/1.1 client can run on.
trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// One HTTP exchange (upgrades allowed) on `conn`; whatever must live as long as the
/// connection (a local port's busy guard) is dropped with its driver task.
async fn exchange<C: IntoIo>(
    conn: C,
    req: Request<Body>,
    sb: &Sandbox,
    port: u16,
) -> Result<Response<Incoming>, ApiError> {
    let (io, guard) = conn.into_io();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| bad_gateway(sb, port, format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "sandbox port exchange ended with an error");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| bad_gateway(sb, port, format!("no response: {e}")))
}

/// A connection and what must live as long as it.
trait IntoIo {
    type Io: Conn;
    fn into_io(self) -> (Self::Io, Option<Box<dyn Send>>);
}

impl IntoIo for super::runner::PortConn {
    type Io = tokio::net::UnixStream;
    fn into_io(self) -> (Self::Io, Option<Box<dyn Send>>) {
        let (stream, busy) = self.split();
        (stream, Some(busy))
    }
}

impl IntoIo for tokio::io::Join<quinn::RecvStream, quinn::SendStream> {
    type Io = Self;
    fn into_io(self) -> (Self::Io, Option<Box<dyn Send>>) {
        (self, None)
    }
}

/// The runner side of a `SandboxPort` stream (`rest`: bytes read past its header): relayed to
/// the port when the sandbox runs here; on a center, passed on towards the node that runs it.
pub async fn serve_stream(
    app: Arc<App>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    rest: BytesMut,
    id: String,
    port: u16,
    client: Option<SocketAddr>,
) {
    let inbound = std::io::Cursor::new(rest.freeze()).chain(recv);
    if app.runner.has(&id) {
        match app.runner.connect(&id, port).await {
            Ok(conn) => {
                let (mut stream, _busy) = conn.split();
                let mut quic = tokio::io::join(inbound, send);
                let idle = app.config.tunnel.relay_idle();
                let _ = crate::idle_copy::copy_bidirectional(&mut quic, &mut stream, idle).await;
            }
            Err(e) => {
                tracing::info!(sandbox = %id, port, error = %e.message, "sandbox port stream refused");
                let _ = send.reset(1u32.into());
            }
        }
        return;
    }
    if app.config.role == xpod_config::Role::Edge {
        tracing::info!(sandbox = %id, "a port stream for a sandbox this edge does not run; reset");
        let _ = send.reset(1u32.into());
        return;
    }
    // A center passing it on to the node that runs it.
    let node = match model::get(app.meta.as_ref(), &id).await {
        Ok(Some((sb, _))) if sb.node != app.node_id && !sb.node.is_empty() => sb.node,
        _ => {
            let _ = send.reset(1u32.into());
            return;
        }
    };
    match super::client::open_port(&app, &node, &id, port, client).await {
        Ok(mut next) => {
            let mut quic = tokio::io::join(inbound, send);
            let idle = app.config.tunnel.relay_idle();
            let _ = crate::idle_copy::copy_bidirectional(&mut quic, &mut next, idle).await;
        }
        Err(e) => {
            tracing::info!(sandbox = %id, %node, error = %e.message, "cannot pass a port stream on");
            let _ = send.reset(1u32.into());
        }
    }
}
