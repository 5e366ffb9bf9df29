//! Pod resources over HTTP: the LDP basics of the Solid Protocol.
//!
//! A request has already been classified to (pod, decoded path) and routed here by the owner
//! table (`crate::mesh::route`), which holds the pod's row in memory. Here: check this node owns
//! it (else forward it to the owner after all; a write rereads the row first), authorize through
//! [`super::access`] (API key scopes, else Web Access Control), then
//! GET/HEAD/OPTIONS/PUT/POST/PATCH/DELETE; every answer carries `WAC-Allow`. A GET reads the
//! resource with `get_resource_fenced`, which checks the in-memory row's owner and epoch in the
//! same round trip (one query on PostgreSQL): a GET of an existing resource makes one metadata
//! round trip, and a stale row (a lost change-feed event) forwards the request to the owner. Bodies stream: a PUT goes straight into a new immutable blob (recorded as
//! pending from before the first byte), then one fenced, conditional metadata transaction makes
//! it visible and retires the blob it replaces (or the new blob is deleted again). Replaced and
//! deleted blobs are left to the GC's grace period, never deleted at once.
//! Preconditions are checked before the upload (to fail fast) and again inside the
//! transaction (to be right under races).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_storage::meta::{
    parent_path, Change, Fence, MetaError, PodRecord, Precondition, ResourceRecord,
};

use super::access;
use super::ldp::{self, RangeSpec};
use super::resource::{
    allow, location, mount_of, preconditions, quoted, resource_headers, write_resource, Payload,
    ALLOW_CONTAINER, ALLOW_DOC,
};
use super::Ctx;
use crate::api_types::ErrorBody;
use crate::reply::body::{self, Body};
use crate::reply::error::error_response;
use crate::reply::error::ApiError;
use crate::solid::rdf;
use crate::solid::wac::Modes;

const EXPOSE: &str = "Accept-Patch, Accept-Post, Accept-Put, Accept-Ranges, Allow, Content-Range, ETag, Last-Modified, Link, Location, Vary, WAC-Allow, WWW-Authenticate, X-Xpod-Node, X-Trace-Id";

/// Entry point for a pod request; errors become JSON here so CORS headers apply to them too.
pub async fn handle(
    ctx: &Ctx,
    pod_id: &str,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut resp = match serve(ctx, pod_id, path, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e, &ctx.trace_id),
    };
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin, Accept"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if let Some(req_headers) = preflight_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req_headers);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("OPTIONS, HEAD, GET, POST, PUT, PATCH, DELETE"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    Ok(resp)
}

async fn serve(
    ctx: &Ctx,
    pod_id: &str,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let app = &ctx.app;
    let method = req.method().clone();
    let reads = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut pod = crate::mesh::route::pod_row(app, pod_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pod {pod_id} not found")))?;
    if !reads {
        // A write reads the row afresh (it costs several round trips anyway): a stale table
        // then forwards the write instead of failing it at the fence.
        let fresh = app
            .meta
            .get_pod(pod_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("pod {pod_id} not found")))?;
        if (fresh.node_id.as_str(), fresh.epoch) != (pod.node_id.as_str(), pod.epoch) {
            app.owners.invalidate(pod_id);
        }
        pod = std::sync::Arc::new(fresh);
    }
    if pod.node_id != app.node_id {
        // The owner table said this node; the row says otherwise: it was stale.
        app.owners.invalidate(pod_id);
        let owner = xpod_routing::Owner {
            node_id: pod.node_id.clone(),
            epoch: pod.epoch,
        };
        let route = crate::mesh::route::route_to(app, pod_id, owner, &req).await?;
        return crate::mesh::forward::pod(app, route, pod_id, ctx.peer, req).await;
    }
    if method == Method::OPTIONS {
        return Ok(options(path));
    }
    if path == super::sparql::PATH {
        // A query reads; it needs no lease, and WAC is decided per document it reads.
        return super::sparql::serve(ctx, &pod, req).await;
    }
    if !matches!(method, Method::GET | Method::HEAD) {
        // Self-fencing: without a running lease this center writes nothing for its pods.
        app.lease.check_writable()?;
    }
    if path == super::solid::DESCRIPTION_PATH {
        return super::solid::storage_description(ctx, &pod, &req);
    }
    if path == super::notify::WEBSOCKET_PATH || path == super::notify::WEBHOOK_PATH {
        let webhook = path == super::notify::WEBHOOK_PATH;
        return super::notify::subscribe(ctx, &pod, req, webhook).await;
    }
    let decision = access::decide(ctx, &pod, path, &req).await?;
    if method != Method::PATCH {
        // A PATCH needs what its patch does (checked once it is parsed).
        access::require(
            ctx,
            &decision,
            access::needs(&method),
            &format!("{method} {path}"),
        )?;
    }
    let mut resp = match method {
        Method::GET | Method::HEAD => {
            // The pod row came from memory: the read checks it in the same round trip.
            let fence = Fence {
                node_id: app.node_id.clone(),
                epoch: pod.epoch,
            };
            let mut cached = false;
            let current = match app.meta.get_resource_fenced(pod_id, path, &fence).await {
                Err(MetaError::Unavailable(why)) => {
                    match app.rows.recall(pod_id, path, pod.epoch) {
                        // The store is unreachable: what this owner last knew (crate::row_cache).
                        Some(row) => {
                            cached = true;
                            row
                        }
                        None => return Err(MetaError::Unavailable(why).into()),
                    }
                }
                Err(MetaError::Fenced { owner, epoch, .. }) => {
                    app.owners.invalidate(pod_id);
                    if owner == app.node_id {
                        // Still ours, at a newer epoch than the table knew: read again.
                        let fence = Fence {
                            node_id: owner,
                            epoch,
                        };
                        app.meta.get_resource_fenced(pod_id, path, &fence).await?
                    } else {
                        let owner = xpod_routing::Owner {
                            node_id: owner,
                            epoch,
                        };
                        let route = crate::mesh::route::route_to(app, pod_id, owner, &req).await?;
                        return crate::mesh::forward::pod(app, route, pod_id, ctx.peer, req).await;
                    }
                }
                other => other?,
            };
            if !cached {
                app.rows.remember(pod_id, path, pod.epoch, current.as_ref());
            }
            if current.is_none() && path == "/.acl" {
                // No ACL stored at the root: the pod's default one is in force; show it.
                return default_root_acl(ctx, &pod, &req, method == Method::HEAD, &decision);
            }
            let resp = get(ctx, &pod, path, current, &req, method == Method::HEAD).await;
            if !cached {
                resp
            } else {
                resp.map(|mut r| {
                    r.headers_mut().insert(
                        crate::row_cache::STALE_HEADER,
                        http::HeaderValue::from_static(crate::row_cache::STALE_VALUE),
                    );
                    r
                })
            }
        }
        Method::PUT => put(ctx, &pod, path, req).await,
        Method::POST => post(ctx, &pod, path, req).await,
        Method::DELETE => delete(ctx, &pod, path, &req).await,
        Method::PATCH if path.ends_with('/') => Err(ApiError::method_not_allowed(ALLOW_CONTAINER)
            .with_details(
                json!({"reason": "a container's listing is not patched; PATCH its members"}),
            )),
        Method::PATCH => super::solid::patch(ctx, &pod, path, req, &decision).await,
        _ => Err(ApiError::method_not_allowed(allow(path))),
    }?;
    if let Ok(v) = HeaderValue::from_str(&decision.header()) {
        resp.headers_mut().insert(access::WAC_ALLOW, v);
    }
    if !matches!(method, Method::GET | Method::HEAD) {
        access::acl_changed(ctx, pod_id, path);
    }
    Ok(resp)
}

/// `GET /.acl` of a pod without a stored root ACL: the default in force (Turtle).
fn default_root_acl(
    ctx: &Ctx,
    pod: &PodRecord,
    req: &Request<Incoming>,
    head: bool,
    decision: &access::Decision,
) -> Result<Response<Body>, ApiError> {
    let base = access::base_of(ctx, pod, req);
    let ttl = access::default_acl_turtle(pod);
    let format = rdf::negotiate(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
        rdf::Format::Turtle,
    )
    .ok_or_else(super::resource::not_acceptable)?;
    let acl_url = format!("{base}/.acl");
    let bytes = if format == rdf::Format::Turtle {
        ttl.into_bytes()
    } else {
        let g = rdf::parse(ttl.as_bytes(), rdf::Format::Turtle, &acl_url)
            .map_err(|e| ApiError::internal(format!("the default ACL: {e}")))?;
        rdf::serialize(&g, format, &acl_url)
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.media_type())
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::ALLOW, ALLOW_DOC)
        .header(header::VARY, "Accept")
        .header(access::WAC_ALLOW, decision.header())
        .body(if head {
            body::empty()
        } else {
            body::full(bytes)
        })
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn options(path: &str) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ALLOW, allow(path))
        .header("accept-put", "*/*");
    if path.ends_with('/') {
        b = b.header("accept-post", "*/*");
    } else {
        b = b.header("accept-patch", super::resource::ACCEPT_PATCH);
    }
    for l in ldp::type_links(path, path.ends_with('/'), false) {
        b = b.header(header::LINK, l);
    }
    if access::acl_subject(path).is_none() {
        b = b.header(header::LINK, access::acl_link(path));
    }
    b.body(body::empty())
        .unwrap_or_else(|_| Response::new(body::empty()))
}

/// GET/HEAD of `current`, the row at `path` read by the caller (fenced).
#[utoipa::path(get, path = "/{podId}/{path}", operation_id = "readResource", tag = "pods",
    params(
        ("podId" = String, Path, description = "The pod (or the pod's own host name in subdomain mode)"),
        ("path" = String, Path, description = "The resource's path in the pod; a container's ends with `/`"),
        ("Range" = Option<String>, Header), ("If-None-Match" = Option<String>, Header), ("If-Match" = Option<String>, Header),
    ),
    responses(
        (status = 200, description = "The representation (a container: text/turtle or application/ld+json)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 412, description = "A precondition failed", body = ErrorBody),
        (status = 416, description = "The range is not satisfiable", body = ErrorBody),
    ))]
async fn get(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    current: Option<ResourceRecord>,
    req: &Request<Incoming>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let app = &ctx.app;
    let Some(r) = current else {
        return Err(ApiError::not_found(format!(
            "{path} not found in pod {}",
            pod.pod_id
        )));
    };
    let pre = preconditions(req.headers())?;
    if let Some(m) = &pre.if_match {
        if !(Precondition {
            if_match: Some(m.clone()),
            if_none_match: None,
        })
        .holds(Some(&r))
        {
            return Err(ApiError::precondition_failed());
        }
    }
    if let Some(n) = &pre.if_none_match {
        if !(Precondition {
            if_match: None,
            if_none_match: Some(n.clone()),
        })
        .holds(Some(&r))
        {
            let b = resource_headers(Response::builder().status(StatusCode::NOT_MODIFIED), &r);
            return b
                .body(body::empty())
                .map_err(|e| ApiError::internal(e.to_string()));
        }
    }
    if r.is_container {
        let members = app.meta.list_container(&pod.pod_id, path).await?;
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let accept = if accept.contains("application/json") && !accept.contains("ld+json") {
            // Plain JSON clients get the JSON-LD listing.
            accept.replace("application/json", "application/ld+json")
        } else {
            accept.to_string()
        };
        let format = rdf::negotiate(Some(&accept), rdf::Format::Turtle)
            .ok_or_else(super::resource::not_acceptable)?;
        let (ctype, bytes) = match format {
            rdf::Format::JsonLd => {
                let mut v =
                    serde_json::to_vec_pretty(&ldp::json_ld(&r, &members)).unwrap_or_default();
                v.push(b'\n');
                ("application/ld+json", v)
            }
            rdf::Format::Turtle => ("text/turtle", ldp::turtle(&r, &members).into_bytes()),
            rdf::Format::NTriples => {
                let base = super::resource::resource_url(
                    req,
                    &mount_of(ctx, &pod.pod_id, req.headers()),
                    path,
                );
                let ttl = ldp::turtle(&r, &members);
                let graph = rdf::parse(ttl.as_bytes(), rdf::Format::Turtle, &base)
                    .map_err(|e| ApiError::internal(format!("container listing: {e}")))?;
                (
                    "application/n-triples",
                    rdf::serialize(&graph, rdf::Format::NTriples, &base),
                )
            }
        };
        let b = resource_headers(Response::builder().status(StatusCode::OK), &r)
            .header(header::CONTENT_TYPE, ctype)
            .header(header::CONTENT_LENGTH, bytes.len());
        let body = if head {
            body::empty()
        } else {
            body::full(bytes)
        };
        return b.body(body).map_err(|e| ApiError::internal(e.to_string()));
    }
    if let Some(converted) = super::solid::converted(ctx, pod, path, &r, req, head).await? {
        return Ok(converted);
    }
    let size = r.size.max(0) as u64;
    let mut range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeSpec::Full, |v| ldp::parse_range(v, size));
    if let Some(if_range) = req
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        if if_range.trim() != quoted(&r.etag) {
            range = RangeSpec::Full;
        }
    }
    let mut b = resource_headers(Response::builder(), &r).header(
        header::CONTENT_TYPE,
        r.content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
    );
    if r.content_type
        .as_deref()
        .and_then(rdf::Format::of_media_type)
        .is_some()
    {
        // Served as stored here, but other formats on request.
        b = b.header(header::VARY, "Accept");
    }
    let byte_range = match range {
        RangeSpec::Unsatisfiable => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the resource has {size} bytes"),
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
        RangeSpec::Full => {
            b = b
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, size);
            None
        }
        RangeSpec::Partial { start, end } => {
            b = b
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
                .header(header::CONTENT_LENGTH, end - start + 1);
            Some(start..end + 1)
        }
    };
    if head || size == 0 {
        return b
            .body(body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let key = r
        .blob_key
        .as_deref()
        .ok_or_else(|| ApiError::internal(format!("{path} has no blob")))?;
    let read = app
        .regions
        .read(key, r.size.max(0) as u64, &r.regions, byte_range)
        .await?;
    b = b.header("x-xpod-read-from", read.tier.label());
    b.body(body::stream(read.stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Creates or replaces a document (streamed; Content-Type required) or creates a container
/// (path ending with `/`); intermediate containers are created.
#[utoipa::path(put, path = "/{podId}/{path}", operation_id = "writeResource", tag = "pods",
    params(
        ("podId" = String, Path, description = "The pod (or the pod's own host name in subdomain mode)"),
        ("path" = String, Path, description = "The resource's path in the pod; a container's ends with `/`"),
        ("If-Match" = Option<String>, Header), ("If-None-Match" = Option<String>, Header),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The document's bytes, any media type"),
    responses(
        (status = 201, description = "Created"),
        (status = 204, description = "Replaced"),
        (status = 409, description = "A container is in the way, or the pod moved (fenced)", body = ErrorBody),
        (status = 412, description = "A precondition failed", body = ErrorBody),
        (status = 413, description = "Larger than the node accepts", body = ErrorBody),
    ))]
async fn put(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let pre = preconditions(req.headers())?;
    let current = ctx.app.meta.get_resource(&pod.pod_id, path).await?;
    // Fail fast, before a possibly large upload; the transaction checks again.
    if !pre.holds(current.as_ref()) {
        return Err(ApiError::precondition_failed());
    }
    if path.ends_with('/') && current.is_some() {
        return Err(ApiError::conflict(format!(
            "container {path} exists; containers cannot be replaced with PUT"
        )));
    }
    // A create needs Append on the container — except an ACL, which Control alone governs.
    if current.is_none() && access::acl_subject(path).is_none() {
        access::require_on_parent(ctx, pod, path, &req, Modes::APPEND).await?;
    }
    let mount = mount_of(ctx, &pod.pod_id, req.headers());
    let url = super::resource::resource_url(&req, &mount, path);
    let payload = Payload::of_request(req, path, &url).await?;
    let (record, created) = write_resource(ctx, pod, path, payload, &pre).await?;
    let change = if created {
        Change::Created
    } else {
        Change::Updated
    };
    super::notify::after_write(ctx, &pod.pod_id, path, change, Some(&record.etag)).await;
    ctx.audit(
        "resource.put",
        &format!("{}:{path}", pod.pod_id),
        json!({"size": record.size, "etag": record.etag, "created": created}),
    )
    .await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    let mut b = Response::builder()
        .status(status)
        .header(header::ETAG, quoted(&record.etag));
    if created {
        b = b.header(header::LOCATION, location(&mount, path));
    }
    b.body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A `Slug` that can be used as a member name as is.
fn usable_slug(h: &HeaderMap) -> Option<String> {
    let raw = h.get("slug")?.to_str().ok()?.trim();
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let s = decoded.trim().trim_end_matches('/');
    let ok = !s.is_empty()
        && s.len() <= 200
        && s != "."
        && s != ".."
        && !s.contains('/')
        && !s.contains('\\')
        && !s.ends_with(".acl")
        && !s.chars().any(char::is_control);
    ok.then(|| s.to_string())
}

fn wants_container(h: &HeaderMap) -> bool {
    h.get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',').any(|l| {
                (l.contains("ldp#BasicContainer>") || l.contains("ldp#Container>"))
                    && l.contains("rel=\"type\"")
            })
        })
}

/// Creates a member of a container (`Slug`; `Link: <ldp:BasicContainer>; rel="type"` for a
/// container).
#[utoipa::path(post, path = "/{podId}/{path}", operation_id = "createResource", tag = "pods",
    params(
        ("podId" = String, Path, description = "The pod (or the pod's own host name in subdomain mode)"),
        ("path" = String, Path, description = "The resource's path in the pod; a container's ends with `/`"),
        ("Slug" = Option<String>, Header),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The new member's bytes"),
    responses(
        (status = 201, description = "Created (Location: the member)"),
        (status = 404, description = "No such container", body = ErrorBody),
        (status = 405, description = "Not a container", body = ErrorBody),
    ))]
async fn post(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !path.ends_with('/') {
        return Err(ApiError::method_not_allowed(ALLOW_DOC).with_details(
            json!({"reason": "POST creates members of a container; this is a document"}),
        ));
    }
    let app = &ctx.app;
    // A container that does not exist yet is created with the member (and its ancestors),
    // as a PUT would.
    let container = wants_container(req.headers());
    let base = usable_slug(req.headers()).unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()));
    let member = |name: &str| format!("{path}{name}{}", if container { "/" } else { "" });
    // Take the slug if free (neither `name` nor `name/` exists), else add a random suffix.
    let mut name = base.clone();
    for _ in 0..3 {
        let taken_doc = app
            .meta
            .get_resource(&pod.pod_id, &format!("{path}{name}"))
            .await?
            .is_some();
        let taken_container = app
            .meta
            .get_resource(&pod.pod_id, &format!("{path}{name}/"))
            .await?
            .is_some();
        if !taken_doc && !taken_container {
            break;
        }
        name = format!("{base}-{}", hex::encode(rand::random::<[u8; 4]>()));
    }
    let target = member(&name);
    let mount = mount_of(ctx, &pod.pod_id, req.headers());
    // If-None-Match: * makes the create atomic: a racing create of the same name fails cleanly.
    let pre = Precondition {
        if_match: None,
        if_none_match: Some(xpod_storage::meta::EtagCondition::Any),
    };
    let url = super::resource::resource_url(&req, &mount, &target);
    let payload = Payload::of_request(req, &target, &url).await?;
    let (record, _) = write_resource(ctx, pod, &target, payload, &pre)
        .await
        .map_err(|e| {
            if e.status == StatusCode::PRECONDITION_FAILED {
                ApiError::conflict(format!("{target} was created concurrently; retry the POST"))
            } else {
                e
            }
        })?;
    super::notify::after_write(
        ctx,
        &pod.pod_id,
        &target,
        Change::Created,
        Some(&record.etag),
    )
    .await;
    ctx.audit(
        "resource.post",
        &format!("{}:{target}", pod.pod_id),
        json!({"size": record.size, "etag": record.etag}),
    )
    .await;
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, location(&mount, &target))
        .header(header::ETAG, quoted(&record.etag))
        .body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Deletes a document or an empty container.
#[utoipa::path(delete, path = "/{podId}/{path}", operation_id = "deleteResource", tag = "pods",
    params(
        ("podId" = String, Path, description = "The pod (or the pod's own host name in subdomain mode)"),
        ("path" = String, Path, description = "The resource's path in the pod; a container's ends with `/`"),
        ("If-Match" = Option<String>, Header), ("If-None-Match" = Option<String>, Header),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 409, description = "The container is not empty", body = ErrorBody),
        (status = 412, description = "A precondition failed", body = ErrorBody),
    ))]
async fn delete(
    ctx: &Ctx,
    pod: &PodRecord,
    path: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let h = req.headers();
    if path == "/" {
        return Err(
            ApiError::method_not_allowed("OPTIONS, HEAD, GET, POST, PUT")
                .with_details(json!({"reason": "the root container of a pod cannot be deleted"})),
        );
    }
    let pre = preconditions(h)?;
    if access::acl_subject(path).is_none() {
        access::require_on_parent(ctx, pod, path, req, Modes::WRITE).await?;
    }
    let fence = Fence {
        node_id: ctx.app.node_id.clone(),
        epoch: pod.epoch,
    };
    // The freed blob is retired in the same transaction; the GC deletes it after the grace
    // period (a reader of it may still be streaming).
    let deleted = ctx
        .app
        .meta
        .delete_resource(&fence, &pod.pod_id, path, &pre)
        .await;
    match &deleted {
        Ok(_) => ctx.app.rows.remember(&pod.pod_id, path, pod.epoch, None),
        Err(MetaError::Unavailable(_) | MetaError::Backend(_)) => {
            ctx.app.rows.forget(&pod.pod_id, path)
        }
        Err(_) => {}
    }
    deleted.map_err(|e| match e {
        MetaError::NotFound(_) => {
            ApiError::not_found(format!("{path} not found in pod {}", pod.pod_id))
        }
        other => other.into(),
    })?;
    super::notify::after_write(ctx, &pod.pod_id, path, Change::Deleted, None).await;
    ctx.audit(
        "resource.delete",
        &format!("{}:{path}", pod.pod_id),
        json!({"parent": parent_path(path)}),
    )
    .await;
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}
