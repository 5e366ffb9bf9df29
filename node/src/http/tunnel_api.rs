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
use serde::Deserialize;
use serde_json::json;
use xpod_config::{ServiceKind, TunnelForward, TunnelService};

use super::{read_json, segments, Ctx};
use crate::auth::require_admin;
use crate::reload::Outcome;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutService {
    local: std::net::SocketAddr,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    proxy_protocol: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutForward {
    node: String,
    service: String,
}

const UNTIL_RELOAD: &str =
    "this change lasts until the next reload or restart: put it in the configuration file to keep it";

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    let app = &ctx.app;
    let method = req.method().clone();
    let outcome = match (segments(rest).as_slice(), &method) {
        (["node", "tunnel"], &Method::GET) => {
            return Ok(body::json(
                StatusCode::OK,
                &serde_json::to_value(crate::reload::tunnel(app).await).unwrap_or_default(),
            ))
        }
        (["node", "tunnel"], _) => return Err(ApiError::method_not_allowed("GET")),
        (["node", "reload"], &Method::POST) => {
            let o = crate::reload::reload(app).await?;
            ctx.audit("node.reload", &format!("node:{}", app.node_id), json!(o))
                .await;
            o
        }
        (["node", "reload"], _) => return Err(ApiError::method_not_allowed("POST")),
        (["node", "services", name], &Method::PUT) => {
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
            let o = crate::reload::service(app, name, Some(service)).await?;
            ctx.audit("node.service.put", &format!("service:{name}"), json!(o))
                .await;
            o
        }
        (["node", "services", name], &Method::DELETE) => {
            let o = crate::reload::service(app, name, None).await?;
            ctx.audit("node.service.delete", &format!("service:{name}"), json!(o))
                .await;
            o
        }
        (["node", "services", _], _) => return Err(ApiError::method_not_allowed("PUT, DELETE")),
        (["node", "forwards", listen], m) if m == Method::PUT || m == Method::DELETE => {
            let listen: std::net::SocketAddr = listen.parse().map_err(|_| {
                ApiError::bad_request(format!("{listen:?} is not a listen address (IP:PORT)"))
            })?;
            let forward = if m == Method::PUT {
                let body: PutForward = read_json(req).await?;
                Some(TunnelForward {
                    listen,
                    node: body.node,
                    service: body.service,
                })
            } else {
                None
            };
            let action = if forward.is_some() {
                "node.forward.put"
            } else {
                "node.forward.delete"
            };
            let o = crate::reload::forward(app, listen, forward).await?;
            ctx.audit(action, &format!("forward:{listen}"), json!(o))
                .await;
            o
        }
        (["node", "forwards", _], _) => return Err(ApiError::method_not_allowed("PUT, DELETE")),
        _ => return Err(ApiError::not_found(format!("no API at /api/v1{rest}"))),
    };
    Ok(answer(&outcome))
}

fn answer(o: &Outcome) -> Response<Body> {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if !o.persistent {
        v["note"] = json!(UNTIL_RELOAD);
    }
    body::json(StatusCode::OK, &v)
}
