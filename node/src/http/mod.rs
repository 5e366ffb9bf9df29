//! The HTTP front: one pass per request, in one direction —
//! trace id → classify (one classifier, `xpod_routing::classify`, for every target) → route →
//! authenticate → the handler for the target → error mapping, node and trace headers, metrics
//! and a log line. Routing: an edge's service (`<service>.<node>.<edge_domain>`) goes through
//! the edge's tunnel (`edges::forward`), a sandbox port (`<port>-<id>.<sandbox.domain>`) to the
//! sandbox (`sandbox::ports`), a pod to its owner unless this node owns it (`mesh::route`).
//! Early branches, before classification: a runner request on a `Runner` stream from a center
//! (`sandbox::internal`, never from a client) and the HTTPS redirect; after it, a pod's
//! notification socket, served here whoever owns the pod ([`notify`]).
//!
//! Handlers: [`ops`] (probes, metrics; [`route_label`]: the route label of the request
//! metrics), [`cluster`] (`/.cluster`), [`api`] (`/api/v1`: keys, audit; [`sandboxes`],
//! [`webhook_api`], [`tunnel_api`]: this node's services and forwards, [`events`]: what
//! changed, for the dashboard), [`dashboard`] (`/-/dashboard`), [`node_admin`]
//! (nodes), [`pods`] (pod resources, with [`solid`] — RDF, PATCH, the storage description —,
//! [`access`] — who may do what: key scopes, Web Access Control — and [`notify`] — Solid
//! notifications, all on [`resource`] — names, headers and bytes of resources), [`ldp`] (the
//! LDP vocabulary and header parsing).

pub mod access;
pub mod api;
pub mod cluster;
pub mod dashboard;
pub mod events;
pub mod ldp;
pub mod node_admin;
pub mod notify;
pub mod ops;
pub mod pods;
pub mod resource;
pub mod route_label;
pub mod sandboxes;
pub mod solid;
pub mod tunnel_api;
pub mod webhook_api;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;
use xpod_routing::decide::Route;
use xpod_routing::{classify, Target};
use xpod_storage::meta::{self, NewAudit};

use crate::app::App;
use crate::auth::{self, Principal};
use crate::reply::body::{self, Body};
use crate::reply::error::{error_response, ApiError};

/// Largest JSON request body of the APIs.
const MAX_JSON: usize = 1024 * 1024;

pub use xpod_routing::forward::Https;

/// Per-request context handed to handlers.
pub struct Ctx {
    pub app: Arc<App>,
    pub trace_id: String,
    pub principal: Principal,
    pub peer: SocketAddr,
    /// Credentials on a pod request that were not accepted: the request goes on as anonymous
    /// (a public resource needs none, and an unknown `Authorization` must not break it); when
    /// anonymous access is refused, this error is the answer.
    pub rejected: Option<ApiError>,
}

impl Ctx {
    /// Appends to the audit log; a failure is logged and counted, not returned (the write it
    /// describes has already happened).
    pub async fn audit(&self, action: &str, target: &str, details: serde_json::Value) {
        let entry = NewAudit {
            at: meta::now_millis(),
            actor: self.principal.actor(),
            action: action.to_string(),
            target: target.to_string(),
            details,
            trace_id: self.trace_id.clone(),
        };
        if let Err(e) = self.app.meta.append_audit(&entry).await {
            self.app.metrics.audit_failed();
            tracing::error!(error = %e, action, target, "audit entry lost");
        }
    }
}

impl Ctx {
    /// Audits a request refused as if the thing did not exist (another owner's sandbox or
    /// webhook answers 404, so its existence is not revealed; the operator still sees it).
    pub fn refused_not_owner(&self, target: String) {
        self.app.refusal(
            Some(self.peer.ip()),
            self.principal.actor(),
            "refused.not_owner",
            target,
            serde_json::json!({"client": self.peer.ip().to_string()}),
            self.trace_id.clone(),
        );
    }
}

/// The hyper service function.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut req = req;
    if !req.headers().contains_key(http::header::HOST) {
        // HTTP/2 names the host in `:authority`: the handlers (and forwarded HTTP/1.1) read Host.
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let trace_id = hex::encode(rand::random::<[u8; 8]>());
    let started = Instant::now();
    let _in_flight = app.metrics.start();
    let method = req.method().clone();
    let span = tracing::info_span!("request", trace_id = %trace_id, method = %method, path = %req.uri().path(), %peer);
    // For the audit of a refusal: the path (bounded) and the key's id (never its secret).
    let path: String = req.uri().path().chars().take(300).collect();
    let key_id = presented_key_id(req.headers());
    let mut route = route_label::of(None);
    let result = dispatch(app.clone(), peer, req, &trace_id, &mut route)
        .instrument(span.clone())
        .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if matches!(e.status.as_u16(), 401 | 403 | 429) {
                audit_refusal(&app, peer, &method, &path, &key_id, &e, &trace_id);
            }
            error_response(&e, &trace_id)
        }
    };
    let h = resp.headers_mut();
    // A response forwarded from a pod's owner already names the owner.
    if !h.contains_key("x-xpod-node") {
        if let Ok(v) = HeaderValue::from_str(&app.node_id) {
            h.insert("x-xpod-node", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        h.insert("x-trace-id", v);
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    app.metrics.record(&route, method.as_str(), status, elapsed);
    let elapsed_ms = elapsed.as_millis() as u64;
    if status >= 500 {
        span.in_scope(|| tracing::warn!(target: "xpod::access", status, elapsed_ms, "served"));
    } else if app.config.log.access {
        span.in_scope(|| tracing::info!(target: "xpod::access", status, elapsed_ms, "served"));
    }
    Ok(resp)
}

/// The id of the API key a request presents, if it has the shape of one.
fn presented_key_id(headers: &http::HeaderMap) -> Option<String> {
    let v = headers
        .get(http::header::AUTHORIZATION)
        .or_else(|| headers.get("x-api-key"))?
        .to_str()
        .ok()?;
    let token = v.rsplit(' ').next()?.trim();
    auth::parse_key(token).map(|(id, _)| id.to_string())
}

/// A refused request in the audit log (within the budget of [`crate::audit`]).
fn audit_refusal(
    app: &Arc<App>,
    peer: SocketAddr,
    method: &http::Method,
    path: &str,
    key_id: &Option<String>,
    e: &ApiError,
    trace_id: &str,
) {
    let actor = match key_id {
        Some(id) => format!("key:{id}"),
        None => format!("client:{}", peer.ip()),
    };
    app.refusal(
        Some(peer.ip()),
        actor,
        &format!("refused.{}", e.status.as_u16()),
        path.to_string(),
        serde_json::json!({"method": method.as_str(), "code": e.code, "message": e.message, "client": peer.ip().to_string()}),
        trace_id.to_string(),
    );
}

async fn dispatch(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
    trace_id: &str,
    route: &mut String,
) -> Result<Response<Body>, ApiError> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .map(|h| {
            h.to_str()
                .map_err(|_| ApiError::bad_request("Host header is not valid text"))
        })
        .transpose()?
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(hop) = req
        .extensions()
        .get::<crate::sandbox::internal::RunnerHop>()
        .cloned()
    {
        // A runner request from a center (never from a client): served here, or passed on.
        "runner".clone_into(route);
        return runner_request(&app, hop, req).await;
    }
    let hop = req
        .extensions()
        .get::<xpod_routing::forward::MeshHop>()
        .cloned();
    if hop.is_none() {
        if let Some(resp) = https_redirect(&app, host.as_deref(), &req) {
            return Ok(resp);
        }
    }
    let target = classify(&app.target, host.as_deref(), req.uri().path())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    *route = route_label::of(Some(&target));
    if hop.is_none() {
        match target {
            // Edge hosts never reach the pod or cluster handlers, and need no credentials
            // here: the edge's service decides (edges::forward).
            Target::EdgeService(route) => {
                let host = host.unwrap_or_default();
                return crate::edges::forward::forward(&app, route, &host, peer, req).await;
            }
            Target::SandboxPort { id, port } => {
                return crate::sandbox::ports::by_host(&app, port, &id, peer, req).await;
            }
            _ => {}
        }
    }
    if let Some(hop) = &hop {
        // A stream opened for a pod carries a request for that pod and nothing else.
        if !matches!(&target, Target::Pod { pod_id, .. } if *pod_id == hop.pod_id) {
            return Err(ApiError::bad_request(format!(
                "a forwarded stream for pod {} carries a request for something else",
                hop.pod_id
            )));
        }
    }
    if let Target::Pod { pod_id, path } = &target {
        // A notification socket is served where the client connected (events reach every
        // node), never forwarded.
        if let Some(id) = notify::channel_id(path) {
            if req.method() == http::Method::GET {
                return notify::websocket(&app, pod_id, id, req).await;
            }
        }
    }
    if let Target::Pod { pod_id, .. } = &target {
        // Not ours: the owner authenticates and serves it (ARCHITECTURE §5).
        match crate::mesh::route::decide(&app, pod_id, &req).await? {
            Route::Local => {}
            Route::Missing => return Err(ApiError::not_found(format!("pod {pod_id} not found"))),
            route => return crate::mesh::forward::pod(&app, route, pod_id, peer, req).await,
        }
    }
    if let Target::Ops(route) = target {
        // Probes and scrapes never need credentials, and never touch the key store.
        return ops::handle(&app, route, &req).await;
    }
    if let Target::Dashboard(file) = &target {
        return dashboard::serve(req.method(), file.as_deref());
    }
    if let Target::Install(file) = &target {
        // Public files: the CA certificate, the installer and the binary (crate::install).
        let https = req.extensions().get::<Https>().is_some();
        return crate::install::serve(&app, req.method(), file, host.as_deref(), https).await;
    }
    let (principal, rejected) =
        match auth::authorized_by_center(app.config.role, hop.as_ref(), req.headers()) {
            Some(p) => (p, None),
            None => {
                // The URL as the client addressed it (DPoP proofs name it).
                let url = format!("{}{}", resource::origin(&req), req.uri().path());
                let authenticated = auth::authenticate_request(
                    req.headers(),
                    req.method().as_str(),
                    &url,
                    &app.keys,
                    app.meta.as_ref(),
                    &app.oidc,
                    meta::now_millis(),
                )
                .await;
                match authenticated {
                    Ok(p) => (p, None),
                    // A pod request goes on as anonymous: a public pod needs no credentials.
                    Err(e)
                        if e.status == StatusCode::UNAUTHORIZED
                            && matches!(target, Target::Pod { .. }) =>
                    {
                        (Principal::Anonymous, Some(e))
                    }
                    Err(e) => return Err(e),
                }
            }
        };
    let ctx = Ctx {
        app,
        trace_id: trace_id.to_string(),
        principal,
        peer,
        rejected,
    };
    match target {
        Target::Ops(_)
        | Target::Install(_)
        | Target::Dashboard(_)
        | Target::EdgeService(_)
        | Target::SandboxPort { .. } => {
            unreachable!("handled above")
        }
        Target::Index => Ok(index(&ctx)),
        Target::Cluster(rest) => cluster::handle(&ctx, &rest, req).await,
        Target::Api(rest) => api::handle(&ctx, &rest, req).await,
        Target::Pod { pod_id, path } => pods::handle(&ctx, &pod_id, &path, req).await,
    }
}

/// A request on a `Runner` stream: this node's runner API, or passed on towards `hop.node`.
async fn runner_request(
    app: &Arc<App>,
    hop: crate::sandbox::internal::RunnerHop,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = read_small_body(req, 16 << 20).await?;
    if hop.node == app.node_id {
        let (path, query) = pq.split_once('?').unwrap_or((&pq, ""));
        if path == crate::edges::learned::PATH {
            return crate::edges::learned::serve(app, &method, &body);
        }
        return crate::sandbox::internal::serve(app, &method, path, query, body).await;
    }
    if app.config.role == xpod_config::Role::Edge {
        return Err(ApiError::not_found(format!(
            "this edge is not node {}",
            hop.node
        )));
    }
    crate::sandbox::client::call(app, &hop.node, hop.hops, method, &pq, body).await
}

/// Plain HTTP for a name the centers' ACME certificate covers → `308` to the same URL on the
/// TLS port. Health, readiness, metrics and ACME paths stay on plain HTTP (probes and CAs use
/// them); names without an ACME certificate (IPs, localhost, before the first issuance) too.
fn https_redirect<B>(app: &App, host: Option<&str>, req: &Request<B>) -> Option<Response<Body>> {
    if req.extensions().get::<Https>().is_some() {
        return None;
    }
    let tls = app.config.tunnel.tls_listen?;
    let host = host?;
    let name = xpod_routing::host::strip_port(host);
    let path = req.uri().path();
    let exempt = [
        "/health",
        "/readiness",
        "/metrics",
        "/.well-known/acme-challenge/",
    ];
    if exempt
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{}/", p.trim_end_matches('/'))))
    {
        return None;
    }
    let served = app.tls.certs.current()?;
    if served.source != crate::certs::resolver::Source::Acme
        || !crate::certs::resolver::covers(&served.names, name)
    {
        return None;
    }
    let port = match tls.port() {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{name}{port}{pq}");
    let mut resp = body::json(
        StatusCode::PERMANENT_REDIRECT,
        &serde_json::json!({"redirect": location}),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Some(resp)
}

fn index(ctx: &Ctx) -> Response<Body> {
    body::json(
        StatusCode::OK,
        &serde_json::json!({
            "name": "xpod",
            "version": env!("CARGO_PKG_VERSION"),
            "nodeId": ctx.app.node_id,
            "links": {"openapi": "/openapi.json", "health": "/health", "pods": "/.cluster/pods", "apiKeys": "/api/v1/auth/api-keys"},
        }),
    )
}

/// Reads a JSON request body (at most 1 MiB) into `T`, naming the problem on failure.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = read_small_body(req, MAX_JSON).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("a JSON request body is required"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// How long a small (JSON) request body may take to arrive in full.
pub const SMALL_BODY_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a small body fully, refusing more than `limit` bytes or a body that takes longer
/// than [`SMALL_BODY_WITHIN`] (408: a trickling client does not hold a task for ever).
pub async fn read_small_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body larger than {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    let collected = tokio::time::timeout(SMALL_BODY_WITHIN, limited.collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {SMALL_BODY_WITHIN:?}"),
            )
        })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Splits `/a/b/c` into non-empty segments.
pub fn segments(rest: &str) -> Vec<&str> {
    rest.split('/').filter(|s| !s.is_empty()).collect()
}
