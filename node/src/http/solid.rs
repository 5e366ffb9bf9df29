//! The Solid parts of the pod handler (issue 17): serving an RDF document in another format,
//! PATCH, and the storage description. The RDF and patch logic itself is [`crate::solid`];
//! reading and writing resources is [`super::resource`].
//!
//! PATCH reads the document (at most [`rdf::MAX_RDF`] bytes), applies the patch in memory and
//! writes the result as a new blob in the document's own format (Turtle for a new document),
//! conditional on the entity tag it read, or on the client's `If-Match`. A write that raced it
//! is retried from a fresh read ([`PATCH_ATTEMPTS`] in all): the patch applies to the newest
//! version or not at all, and a client's `If-Match` that no longer holds is a 412. The write is
//! fenced by the pod's epoch like any other.

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta::{Change, EtagCondition, PodRecord, Precondition, ResourceRecord};

use super::access;
use super::resource::{
    self as pods, not_acceptable, read_all, resource_url, Payload, ACCEPT_PATCH,
};
use super::Ctx;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;
use crate::solid::patch::{self, PatchError};
use crate::solid::rdf::{self, Format};
use crate::solid::wac::Modes;

/// The largest patch body.
pub const MAX_PATCH: usize = 1 << 20;
/// How often a PATCH that raced another write is tried in all.
pub const PATCH_ATTEMPTS: usize = 4;

/// Where a pod describes itself (Solid Protocol §4.1.2), below its root.
pub const DESCRIPTION_PATH: &str = "/.well-known/solid";

/// `GET /.well-known/solid` of a pod: its storage description (public, read-only): the root
/// is a `pim:Storage`, with its owner when the pod has an owner WebID, and its notification
/// subscription endpoint (WebSocketChannel2023, `crate::http::notify`).
pub fn storage_description(
    ctx: &Ctx,
    pod: &PodRecord,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return Err(ApiError::method_not_allowed("OPTIONS, HEAD, GET"));
    }
    let base = access::base_of(ctx, pod, req);
    let url = format!("{base}{DESCRIPTION_PATH}");
    let channels = format!("{base}{}", super::notify::WEBSOCKET_PATH);
    let hooks = format!("{base}{}", super::notify::WEBHOOK_PATH);
    let mut ttl = format!(
        "@prefix pim: <http://www.w3.org/ns/pim/space#>.\n@prefix solid: <http://www.w3.org/ns/solid/terms#>.\n\
         @prefix notify: <http://www.w3.org/ns/solid/notifications#>.\n\n\
         <{channels}> notify:channelType notify:WebSocketChannel2023;\n    notify:feature notify:endAt.\n\
         <{hooks}> notify:channelType notify:WebhookChannel2023;\n    notify:feature notify:endAt.\n\n\
         <{base}/> a pim:Storage;\n    notify:subscription <{channels}>, <{hooks}>"
    );
    if let Some(owner) = pod
        .account_id
        .as_deref()
        .filter(|a| a.starts_with("https://") || a.starts_with("http://"))
    {
        ttl.push_str(&format!(";\n    solid:owner <{owner}>"));
    }
    ttl.push_str(".\n");
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = rdf::negotiate(accept, Format::Turtle).ok_or_else(not_acceptable)?;
    let bytes = if format == Format::Turtle {
        ttl.into_bytes()
    } else {
        let g = rdf::parse(ttl.as_bytes(), Format::Turtle, &url)
            .map_err(|e| ApiError::internal(format!("the storage description: {e}")))?;
        rdf::serialize(&g, format, &url)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.media_type())
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::VARY, "Accept")
        .header(header::ALLOW, "OPTIONS, HEAD, GET")
        .body(if *req.method() == http::Method::HEAD {
            body::empty()
        } else {
            body::full(bytes)
        })
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// For a GET/HEAD of RDF document `r`: the response in another RDF format when `Accept` asks
/// for one, `None` to serve the stored bytes, 406 when `Accept` takes no RDF format. A
/// document that cannot be converted (too large, a remote JSON-LD context) is served as stored.
pub async fn converted(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    r: &ResourceRecord,
    req: &Request<Incoming>,
    head: bool,
) -> Result<Option<Response<Body>>, ApiError> {
    let Some(stored) = r.content_type.as_deref().and_then(Format::of_media_type) else {
        return Ok(None);
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let want = rdf::negotiate(accept, stored).ok_or_else(not_acceptable)?;
    if want == stored || r.size.max(0) as usize > rdf::MAX_RDF {
        return Ok(None);
    }
    let base = resource_url(req, &pods::mount_of(ctx, &pod.pod_id, req.headers()), path);
    let bytes = read_all(ctx, r).await?;
    let graph = match rdf::parse(&bytes, stored, &base) {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(path, error = %e, "RDF document served as stored (not convertible)");
            return Ok(None);
        }
    };
    let out = rdf::serialize(&graph, want, &base);
    let b = pods::resource_headers(Response::builder().status(StatusCode::OK), r)
        .header(header::CONTENT_TYPE, want.media_type())
        .header(header::CONTENT_LENGTH, out.len())
        .header(header::VARY, "Accept");
    let body = if head { body::empty() } else { body::full(out) };
    b.body(body)
        .map(Some)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn patch_error(e: PatchError) -> ApiError {
    let (status, code) = match &e {
        PatchError::Syntax(_) => (StatusCode::BAD_REQUEST, "invalid_patch"),
        PatchError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_patch"),
        PatchError::Conflict(_) => (StatusCode::CONFLICT, "patch_conflict"),
        PatchError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "unsupported_patch"),
    };
    ApiError::new(status, code, e.to_string())
}

/// PATCH of document `path` (see the module docs).
pub async fn patch(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    req: Request<Incoming>,
    decision: &access::Decision,
) -> Result<Response<Body>, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let mount = pods::mount_of(ctx, &pod.pod_id, req.headers());
    let url = resource_url(&req, &mount, path);
    let client_pre = pods::preconditions(req.headers())?;
    // Whether the container allows a create is asked before the body is read.
    let exists = ctx
        .app
        .meta
        .get_resource(&pod.pod_id, path)
        .await?
        .is_some();
    if !exists && access::acl_subject(path).is_none() {
        access::require_on_parent(ctx, pod, path, &req, Modes::APPEND).await?;
    }
    let body = super::read_small_body(req, MAX_PATCH).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("a patch must be UTF-8 text"))?;
    let parsed = match ct.as_str() {
        "text/n3" => patch::parse_n3(text, &url),
        "application/sparql-update" => patch::parse_sparql(text, &url),
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("PATCH takes {ACCEPT_PATCH}, not {other:?}"),
            )
            .with_header(
                header::HeaderName::from_static("accept-patch"),
                ACCEPT_PATCH,
            ))
        }
    }
    .map_err(patch_error)?;
    // Inserting needs Append; reading conditions or deleting needs Read, deleting Write.
    let needs = parsed.needs();
    let mut need = Modes::default();
    if needs.read {
        need = need.union(Modes::READ);
    }
    if needs.write {
        need = need.union(Modes::WRITE);
    } else if needs.append {
        need = need.union(Modes::APPEND);
    }
    access::require(ctx, decision, need, &format!("this PATCH of {path}"))?;
    for attempt in 1..=PATCH_ATTEMPTS {
        let current = ctx.app.meta.get_resource(&pod.pod_id, path).await?;
        if !client_pre.holds(current.as_ref()) {
            return Err(ApiError::precondition_failed());
        }
        let (format, content_type, mut graph) = match &current {
            Some(r) => {
                let content_type = r.content_type.clone().unwrap_or_default();
                let format = Format::of_media_type(&content_type).ok_or_else(|| {
                    ApiError::conflict(format!(
                        "{path} is not an RDF document ({content_type}); only RDF documents are patched"
                    ))
                })?;
                let bytes = read_all(ctx, r).await?;
                let graph = rdf::parse(&bytes, format, &url).map_err(|e| {
                    ApiError::conflict(format!(
                        "{path} does not hold valid RDF, so it cannot be patched: {e}"
                    ))
                })?;
                (format, content_type, graph)
            }
            None => (
                Format::Turtle,
                Format::Turtle.media_type().to_string(),
                oxrdf::Graph::new(),
            ),
        };
        parsed.apply(&mut graph).map_err(patch_error)?;
        let bytes = Bytes::from(rdf::serialize(&graph, format, &url));
        // The write holds only if nothing changed the document since it was read.
        let pre = Precondition {
            if_match: current
                .as_ref()
                .map(|r| EtagCondition::Tags(vec![r.etag.clone()])),
            if_none_match: current.is_none().then_some(EtagCondition::Any),
        };
        let payload = Payload::Bytes {
            content_type,
            bytes,
        };
        match pods::write_resource(ctx, pod, path, payload, &pre).await {
            Ok((record, created)) => {
                let change = if created { Change::Created } else { Change::Updated };
                super::notify::after_write(ctx, &pod.pod_id, path, change, Some(&record.etag)).await;
                ctx.audit(
                    "resource.patch",
                    &format!("{}:{path}", pod.pod_id),
                    json!({"size": record.size, "etag": record.etag, "created": created, "attempts": attempt}),
                )
                .await;
                let mut b = Response::builder()
                    .header(header::ETAG, pods::quoted(&record.etag));
                b = if created {
                    b.status(StatusCode::CREATED)
                        .header(header::LOCATION, pods::location(&mount, path))
                } else {
                    // 205 like the Community Solid Server: done, nothing to show.
                    b.status(StatusCode::RESET_CONTENT)
                };
                return b
                    .body(body::empty())
                    .map_err(|e| ApiError::internal(e.to_string()));
            }
            Err(e) if e.status == StatusCode::PRECONDITION_FAILED && attempt < PATCH_ATTEMPTS => {
                tracing::debug!(path, attempt, "PATCH raced another write; reading again");
            }
            Err(e) if e.status == StatusCode::PRECONDITION_FAILED => {
                return Err(ApiError::conflict(format!(
                    "{path} kept changing while the patch was applied ({PATCH_ATTEMPTS} attempts); retry"
                )))
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns on its last attempt")
}
