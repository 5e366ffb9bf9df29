//! A pod's resources as the handlers see them, below the Solid logic: where a resource is and
//! what it is called (the pod's mount, public URLs, entity tags, the ACL and description
//! names), the headers every resource answer carries, and its bytes — read whole (for RDF,
//! bounded) or written as a new blob committed under the pod's fence.
//!
//! Every other pod module builds on this one ([`super::pods`], [`super::solid`],
//! [`super::access`], [`super::notify`]); it imports none of them.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use xpod_routing::encode_path;
use xpod_storage::blobs::PendingUpload;
use xpod_storage::meta::{Fence, MetaError, PodRecord, Precondition, PutResource, ResourceRecord};

use super::ldp;
use super::Ctx;
use crate::reply::error::ApiError;
use crate::solid::rdf::{self, Format, RdfError};

pub const ALLOW_DOC: &str = "OPTIONS, HEAD, GET, PUT, PATCH, DELETE";

pub const ALLOW_CONTAINER: &str = "OPTIONS, HEAD, GET, POST, PUT, DELETE";

pub fn allow(path: &str) -> &'static str {
    if path.ends_with('/') {
        ALLOW_CONTAINER
    } else {
        ALLOW_DOC
    }
}

/// `If-Match` / `If-None-Match` from the headers.
pub fn preconditions(h: &HeaderMap) -> Result<Precondition, ApiError> {
    let joined = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        let vals: Vec<&str> = h
            .get_all(&name)
            .iter()
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::bad_request(format!("{name} is not valid text")))
            })
            .collect::<Result<_, _>>()?;
        Ok((!vals.is_empty()).then(|| vals.join(",")))
    };
    let parse = |name: header::HeaderName, weak_ok: bool| -> Result<_, ApiError> {
        joined(name.clone())?
            .map(|v| {
                ldp::parse_etags(&v, weak_ok)
                    .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
            })
            .transpose()
    };
    Ok(Precondition {
        if_match: parse(header::IF_MATCH, false)?,
        if_none_match: parse(header::IF_NONE_MATCH, true)?,
    })
}

pub fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// The URL path of a resource as the client addressed the pod, for `Location`: `/<pod>/…` in
/// path mode, `/…` when the request came to `<pod>.<pods-domain>`.
pub fn location(mount: &str, path: &str) -> String {
    format!("{mount}{}", encode_path(path))
}

/// `""` when the request's Host is the pod's own subdomain, else `/<pod>`.
pub fn mount_of(ctx: &Ctx, pod_id: &str, h: &HeaderMap) -> String {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let sub = ctx.app.target.pods_domain.as_deref().is_some_and(|d| {
        let name = xpod_routing::host::strip_port(&host);
        name.trim_end_matches('.') == format!("{pod_id}.{d}")
    });
    if sub {
        String::new()
    } else {
        format!("/{pod_id}")
    }
}

pub fn resource_headers(
    mut b: http::response::Builder,
    r: &ResourceRecord,
) -> http::response::Builder {
    b = b
        .header(header::ETAG, quoted(&r.etag))
        .header(header::LAST_MODIFIED, ldp::http_date(r.modified_at))
        .header(header::ALLOW, allow(&r.path));
    let is_rdf = r
        .content_type
        .as_deref()
        .and_then(rdf::Format::of_media_type)
        .is_some();
    for l in ldp::type_links(&r.path, r.is_container, is_rdf) {
        b = b.header(header::LINK, l);
    }
    b = b.header(header::LINK, ldp::describedby_link(&r.path));
    b = b.header(header::LINK, description_link(&r.path));
    if acl_subject(&r.path).is_none() {
        b = b.header(header::LINK, acl_link(&r.path));
    }
    if r.is_container {
        b.header("accept-post", "*/*")
            .header(header::VARY, "Accept")
    } else {
        b.header(header::ACCEPT_RANGES, "bytes")
            .header("accept-patch", ACCEPT_PATCH)
    }
}

/// The media type of a request body: required for documents, kept as given.
fn content_type(h: &HeaderMap) -> Result<String, ApiError> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| ApiError::bad_request("Content-Type is required for a document"))?
        .to_str()
        .map_err(|_| ApiError::bad_request("Content-Type is not valid text"))?
        .trim();
    if ct.is_empty() || ct.len() > 255 || !ct.contains('/') {
        return Err(ApiError::bad_request(format!(
            "Content-Type `{}`: expected type/subtype",
            ct.chars().take(80).collect::<String>()
        )));
    }
    Ok(ct.to_string())
}

fn declared_length(h: &HeaderMap) -> Result<Option<u64>, ApiError> {
    h.get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))
        })
        .transpose()
}

/// What a write stores: a request's body, streamed (its `Content-Type` is the media type), or
/// bytes already read (an RDF body that was checked, a patched document).
pub enum Payload {
    Body(Box<Request<Incoming>>),
    Bytes {
        content_type: String,
        bytes: bytes::Bytes,
    },
}

impl Payload {
    /// The payload of a PUT/POST to `path` (`url`: its public URL, the base of RDF): a
    /// container's body is ignored; an RDF document is read (up to [`rdf::MAX_RDF`]) and must
    /// parse; any other document streams.
    pub async fn of_request(
        req: Request<Incoming>,
        path: &str,
        url: &str,
    ) -> Result<Payload, ApiError> {
        if path.ends_with('/') {
            return Ok(Payload::Body(Box::new(req)));
        }
        let content_type = content_type(req.headers())?;
        let Some(format) = rdf::Format::of_media_type(&content_type) else {
            return Ok(Payload::Body(Box::new(req)));
        };
        let bytes = super::read_small_body(req, rdf::MAX_RDF).await?;
        check_rdf(&bytes, format, url)?;
        Ok(Payload::Bytes {
            content_type,
            bytes,
        })
    }
}

/// Streams the payload into a blob, commits the metadata, cleans up on failure.
pub async fn write_resource(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    payload: Payload,
    pre: &Precondition,
) -> Result<(ResourceRecord, bool), ApiError> {
    let app = &ctx.app;
    let fence = Fence {
        node_id: app.node_id.clone(),
        epoch: pod.epoch,
    };
    let is_container = path.ends_with('/');
    let mut pending: Option<PendingUpload> = None;
    let mut put = PutResource {
        pod_id: pod.pod_id.clone(),
        path: path.to_string(),
        content_type: None,
        size: 0,
        blob_key: None,
        regions: vec![app.config.region.clone()],
    };
    if !is_container {
        let (content_type, stream) = match payload {
            Payload::Body(req) => {
                let ct = content_type(req.headers())?;
                if declared_length(req.headers())?.is_some_and(|n| n > app.max_body) {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("body larger than the limit of {} bytes", app.max_body),
                    ));
                }
                let stream: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, String>> =
                    Box::pin(futures_util::StreamExt::map(
                        req.into_body().into_data_stream(),
                        |r| r.map_err(|e| e.to_string()),
                    ));
                (ct, stream)
            }
            Payload::Bytes {
                content_type,
                bytes,
            } => {
                let stream: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, String>> =
                    Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
                (content_type, stream)
            }
        };
        put.content_type = Some(content_type);
        // Recorded as pending before the first byte, until the commit (the GC keeps it).
        let upload = PendingUpload::begin(
            app.meta.clone(),
            &pod.pod_id,
            &app.node_id,
            app.gc.pending_refresh,
        )
        .await?;
        let blob = match app
            .blobs
            .put_stream_at(upload.key(), stream, Some(app.max_body))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                // Nothing is left under the key (the partial upload was aborted).
                upload.finish().await;
                return Err(e.into());
            }
        };
        app.metrics.add_bytes_received(blob.size);
        put.size = blob.size as i64;
        put.blob_key = Some(blob.key);
        pending = Some(upload);
        commit_hold().await;
    } else {
        // A container PUT carries no representation we keep; drain it so the connection stays usable.
        let Payload::Body(req) = payload else {
            return Err(ApiError::internal(
                "a container write with a document payload",
            ));
        };
        let mut b = req.into_body();
        while let Some(frame) = b.frame().await {
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        }
    }
    // The replaced blob (if any) was retired in the commit's transaction: the GC deletes it
    // after the grace period, so readers of the previous version finish.
    let result = app.meta.put_resource(&fence, &put, pre).await;
    // A refused commit wrote nothing; after a lost connection it may have committed all the
    // same, so that blob is left to the GC (referenced, or an orphan after the minimum age).
    let refused = match &result {
        Ok(_) | Err(MetaError::Unavailable(_) | MetaError::Backend(_)) => false,
        Err(_) => true,
    };
    match &result {
        Ok(o) => app
            .rows
            .remember(&pod.pod_id, path, pod.epoch, Some(&o.record)),
        Err(_) if !refused => app.rows.forget(&pod.pod_id, path),
        Err(_) => {}
    }
    let failed_blob = put.blob_key.filter(|_| refused);
    if let Some(upload) = pending {
        let blobs = app.blobs.clone();
        tokio::spawn(async move {
            // Nobody saw a blob whose commit failed: delete it, then forget the upload.
            if let Some(key) = failed_blob {
                if let Err(e) = blobs.delete(&key).await {
                    tracing::warn!(%key, error = %e, "deleting an uncommitted blob failed; GC will retry");
                }
            }
            upload.finish().await;
        });
    }
    let outcome = result?;
    Ok((outcome.record, outcome.created))
}

/// Test hook: while the file named by `XPOD_TEST_COMMIT_HOLD` (read once) exists, a write
/// waits between its upload and its commit, so a test can run the GC over it.
async fn commit_hold() {
    static HOLD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let Some(hold) = HOLD.get_or_init(|| std::env::var_os("XPOD_TEST_COMMIT_HOLD").map(Into::into))
    else {
        return;
    };
    while hold.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The patch formats a document accepts (`Accept-Patch`).
pub const ACCEPT_PATCH: &str = "text/n3, application/sparql-update";

const STORAGE_DESCRIPTION_REL: &str = "http://www.w3.org/ns/solid/terms#storageDescription";

/// The `Link` to the pod's storage description from resource `path`, relative to it.
pub fn description_link(path: &str) -> String {
    let depth = path.matches('/').count().saturating_sub(1);
    format!(
        "<{}.well-known/solid>; rel=\"{STORAGE_DESCRIPTION_REL}\"",
        if depth == 0 {
            "./".to_string()
        } else {
            "../".repeat(depth)
        }
    )
}

/// 406 naming the formats there are.
pub fn not_acceptable() -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        "none of the media types in Accept is available; this resource is served as text/turtle, application/ld+json or application/n-triples",
    )
}

/// `scheme://host` of the request as its client made it ([`xpod_routing::forward::public_origin`]).
pub fn origin<B>(req: &Request<B>) -> String {
    xpod_routing::forward::public_origin(req)
}

/// The absolute URL of `path` (a decoded pod path) mounted at `mount` (`""` or `/<pod>`).
pub fn resource_url<B>(req: &Request<B>, mount: &str, path: &str) -> String {
    format!("{}{}", origin(req), location(mount, path))
}

/// A body with an RDF media type must parse: 400 `invalid_rdf` naming line and column. JSON-LD
/// that needs a remote context cannot be checked here and is stored as sent.
pub fn check_rdf(bytes: &[u8], format: Format, base: &str) -> Result<(), ApiError> {
    match rdf::parse(bytes, format, base) {
        Ok(_) | Err(RdfError::RemoteContext(_)) => Ok(()),
        Err(RdfError::TooLarge) => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_rdf",
            format!("the body is not valid {}: {e}", format.media_type()),
        )),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("RDF documents are limited to {} bytes", rdf::MAX_RDF),
    )
}

/// Reads a whole document (at most [`rdf::MAX_RDF`] bytes).
pub async fn read_all(ctx: &Ctx, r: &ResourceRecord) -> Result<Bytes, ApiError> {
    let size = r.size.max(0) as u64;
    if size > rdf::MAX_RDF as u64 {
        return Err(too_large());
    }
    let Some(key) = r.blob_key.as_deref() else {
        return Ok(Bytes::new());
    };
    let read = ctx.app.regions.read(key, size, &r.regions, None).await?;
    let mut out = Vec::with_capacity(size as usize);
    let mut stream = read.stream;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| ApiError::internal(format!("reading {}: {e}", r.path)))?;
        out.extend_from_slice(&chunk);
        if out.len() > rdf::MAX_RDF {
            return Err(too_large());
        }
    }
    Ok(out.into())
}

/// The path of the ACL of `path` (`/a/b` → `/a/b.acl`, `/a/` → `/a/.acl`).
pub fn acl_path(path: &str) -> String {
    format!("{path}.acl")
}

/// The resource an ACL belongs to, if `path` is an ACL.
pub fn acl_subject(path: &str) -> Option<&str> {
    let s = path.strip_suffix(".acl")?;
    (!s.is_empty()).then_some(s)
}

/// The `Link` to the ACL of `path`, relative to it.
pub fn acl_link(path: &str) -> String {
    let name = if path.ends_with('/') {
        String::new()
    } else {
        xpod_routing::encode_path(path.rsplit('/').next().unwrap_or(""))
    };
    format!("<{name}.acl>; rel=\"acl\"")
}
