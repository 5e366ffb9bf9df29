//! Operations endpoints: `/health`, `/health/detailed`, `/readiness`, `/metrics`,
//! `/openapi.json`. No credentials needed; they reveal no secrets.

use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use xpod_routing::OpsRoute;

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

static OPENAPI: &str = include_str!("../openapi.json");

pub async fn handle<B>(
    app: &App,
    route: OpsRoute,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    Ok(match route {
        OpsRoute::Health => body::json(
            StatusCode::OK,
            &json!({"status": "ok", "nodeId": app.node_id}),
        ),
        OpsRoute::HealthDetailed => {
            let meta = app.meta.ping().await;
            let ok = meta.is_ok();
            body::json(
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &json!({
                    "status": if ok { "ok" } else { "degraded" },
                    "nodeId": app.node_id,
                    "version": env!("CARGO_PKG_VERSION"),
                    "region": app.config.region,
                    "checks": {
                        "metadata": {"backend": app.meta.backend(), "ok": ok, "error": meta.err().map(|e| e.to_string())},
                        "objects": {"url": app.blobs.url()},
                    },
                }),
            )
        }
        OpsRoute::Readiness => match app.meta.ping().await {
            Ok(()) => body::json(StatusCode::OK, &json!({"ready": true})),
            Err(e) => return Err(ApiError::unavailable(format!("not ready: {e}"))),
        },
        OpsRoute::Metrics => {
            let now = std::time::Instant::now();
            let sample = crate::metrics::Sample {
                node_id: &app.node_id,
                backend: app.meta.backend(),
                owner_hits: app.owners.hits(),
                owner_loads: app.owners.loads(),
                key_loads: app.keys.loads(),
                refusals_unaudited: app.refusals.unaudited(),
                alive_tasks: tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks(),
                lease_valid: app.lease.valid_at(now),
                lease_remaining: app.lease.remaining(now).map(|d| d.as_secs_f64()),
                edges_connected: app.edges.len(),
                tunnel_bytes: app.edges.traffic(),
                bandwidth: app.bandwidth.snapshot(),
            };
            let mut figures = crate::regions::figures(&app.regions);
            figures.extend(app.tls.figures());
            figures.extend(app.runner.figures(&app.config.sandbox));
            Response::builder()
                .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(body::full(app.metrics.render(sample, &figures)))
                .map_err(|e| ApiError::internal(e.to_string()))?
        }
        OpsRoute::OpenApi => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body::full(OPENAPI))
            .map_err(|e| ApiError::internal(e.to_string()))?,
    })
}
