//! `/api/v1/node/…` (admin): this node's tunnel lists, changed without a restart
//! (`crate::reload`).
//!
//! - `GET /node/tunnel`: the services (edge) and forwards (center) running now;
//! - `POST /node/reload`: re-read the configuration file (as SIGHUP does);
//! - `PUT|DELETE /node/services/{name}` (edge), body `{"local": "IP:PORT", "kind": "http",
//!   "proxyProtocol": false}`;
//! - `PUT|DELETE /node/forwards/{listen}` (center), body `{"node": "laptop", "service": "ssh"}`.
//!
//! API changes last until the next reload or restart; every change is audited.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_config::{ServiceKind, TunnelForward, TunnelService};

use super::{read_json, segments, Ctx};
use crate::api_types::node::{Outcome, PutForward, PutService, Tunnel, TunnelChange};
use crate::api_types::ErrorBody;
use crate::auth::require_admin;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

const UNTIL_RELOAD: &str =
    "this change lasts until the next reload or restart: put it in the configuration file to keep it";

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    let method = req.method().clone();
    let outcome = match (segments(rest).as_slice(), &method) {
        (["node", "tunnel"], &Method::GET) => return Ok(show(ctx).await),
        (["node", "tunnel"], _) => return Err(ApiError::method_not_allowed("GET")),
        (["node", "reload"], &Method::POST) => reload(ctx).await?,
        (["node", "reload"], _) => return Err(ApiError::method_not_allowed("POST")),
        (["node", "services", name], &Method::PUT) => put_service(ctx, name, req).await?,
        (["node", "services", name], &Method::DELETE) => delete_service(ctx, name).await?,
        (["node", "services", _], _) => return Err(ApiError::method_not_allowed("PUT, DELETE")),
        (["node", "forwards", listen], &Method::PUT) => put_forward(ctx, listen, req).await?,
        (["node", "forwards", listen], &Method::DELETE) => delete_forward(ctx, listen).await?,
        (["node", "forwards", _], _) => return Err(ApiError::method_not_allowed("PUT, DELETE")),
        _ => return Err(ApiError::not_found(format!("no API at /api/v1{rest}"))),
    };
    Ok(answer(outcome))
}

fn answer(outcome: Outcome) -> Response<Body> {
    let note = (!outcome.persistent).then(|| UNTIL_RELOAD.to_string());
    body::json(StatusCode::OK, &TunnelChange { outcome, note })
}

/// This node's tunnel lists as running now: services (an edge), forwards (a center).
#[utoipa::path(get, path = "/api/v1/node/tunnel", operation_id = "showTunnel", tag = "node",
    responses((status = 200, description = "The lists (null where the node has none)", body = Tunnel)))]
async fn show(ctx: &Ctx) -> Response<Body> {
    body::json(StatusCode::OK, &crate::reload::tunnel(&ctx.app).await)
}

/// Re-reads this node's configuration file (as SIGHUP does): an edge's services and a center's
/// forwards change at once; other changed sections are named in `restartNeeded`; an invalid
/// file changes nothing.
#[utoipa::path(post, path = "/api/v1/node/reload", operation_id = "reloadNode", tag = "node",
    responses(
        (status = 200, description = "What changed", body = TunnelChange),
        (status = 400, description = "The file is invalid (named, with the problem); nothing changed", body = ErrorBody),
    ))]
async fn reload(ctx: &Ctx) -> Result<Outcome, ApiError> {
    let app = &ctx.app;
    let o = crate::reload::reload(app).await?;
    ctx.audit("node.reload", &format!("node:{}", app.node_id), json!(o))
        .await;
    Ok(o)
}

/// Publishes (or changes) a service of this edge until the next reload or restart.
#[utoipa::path(put, path = "/api/v1/node/services/{name}", operation_id = "putService", tag = "node",
    params(("name" = String, Path, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description = "The service's name (a DNS label)")),
    request_body = PutService,
    responses(
        (status = 200, description = "What changed", body = TunnelChange),
        (status = 409, description = "This node is not an edge", body = ErrorBody),
    ))]
async fn put_service(ctx: &Ctx, name: &str, req: Request<Incoming>) -> Result<Outcome, ApiError> {
    let body: PutService = read_json(req).await?;
    let kind = match body.kind.as_deref().unwrap_or("http") {
        "http" => ServiceKind::Http,
        "tls" => ServiceKind::Tls,
        "tcp" => ServiceKind::Tcp,
        other => {
            return Err(ApiError::bad_request(format!(
                "kind {other:?}: expected \"http\", \"tls\" or \"tcp\""
            )))
        }
    };
    let service = TunnelService {
        name: name.to_string(),
        local: body.local,
        kind,
        proxy_protocol: body.proxy_protocol,
    };
    let o = crate::reload::service(&ctx.app, name, Some(service)).await?;
    ctx.audit("node.service.put", &format!("service:{name}"), json!(o))
        .await;
    Ok(o)
}

/// Stops publishing a service of this edge until the next reload or restart.
#[utoipa::path(delete, path = "/api/v1/node/services/{name}", operation_id = "deleteService", tag = "node",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "What changed", body = TunnelChange),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "This node is not an edge", body = ErrorBody),
    ))]
async fn delete_service(ctx: &Ctx, name: &str) -> Result<Outcome, ApiError> {
    let o = crate::reload::service(&ctx.app, name, None).await?;
    ctx.audit("node.service.delete", &format!("service:{name}"), json!(o))
        .await;
    Ok(o)
}

fn listen_addr(listen: &str) -> Result<std::net::SocketAddr, ApiError> {
    let listen = percent_encoding::percent_decode_str(listen).decode_utf8_lossy();
    listen
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{listen:?} is not a listen address (IP:PORT)")))
}

/// Forwards a TCP port of this center to an edge's service until the next reload or restart
/// (the port is bound first: 409 if it cannot be).
#[utoipa::path(put, path = "/api/v1/node/forwards/{listen}", operation_id = "putForward", tag = "node",
    params(("listen" = String, Path, pattern = "^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)$", description = "IP:PORT (IPv6 `[::]:2222` is accepted too)")),
    request_body = PutForward,
    responses(
        (status = 200, description = "What changed", body = TunnelChange),
        (status = 409, description = "This node is not a center, or the port cannot be bound", body = ErrorBody),
    ))]
async fn put_forward(ctx: &Ctx, listen: &str, req: Request<Incoming>) -> Result<Outcome, ApiError> {
    let listen = listen_addr(listen)?;
    let body: PutForward = read_json(req).await?;
    let forward = TunnelForward {
        listen,
        node: body.node,
        service: body.service,
    };
    let o = crate::reload::forward(&ctx.app, listen, Some(forward)).await?;
    ctx.audit("node.forward.put", &format!("forward:{listen}"), json!(o))
        .await;
    Ok(o)
}

/// Stops a TCP forward of this center until the next reload or restart.
#[utoipa::path(delete, path = "/api/v1/node/forwards/{listen}", operation_id = "deleteForward", tag = "node",
    params(("listen" = String, Path, pattern = "^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)$", description = "IP:PORT (IPv6 `[::]:2222` is accepted too)")),
    responses(
        (status = 200, description = "What changed", body = TunnelChange),
        (status = 404, description = "No such forward", body = ErrorBody),
        (status = 409, description = "This node is not a center", body = ErrorBody),
    ))]
async fn delete_forward(ctx: &Ctx, listen: &str) -> Result<Outcome, ApiError> {
    let listen = listen_addr(listen)?;
    let o = crate::reload::forward(&ctx.app, listen, None).await?;
    ctx.audit(
        "node.forward.delete",
        &format!("forward:{listen}"),
        json!(o),
    )
    .await;
    Ok(o)
}
