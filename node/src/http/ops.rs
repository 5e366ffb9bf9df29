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
        OpsRoute::Metrics => Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(body::full(
                app.metrics.render(&app.node_id, app.meta.backend())
                    + &crate::regions::render_metrics(&app.regions)
                    + &app.tls.render_metrics()
                    + &app.runner.render_metrics(&app.config.sandbox)
                    + &format!(
                        "# HELP xpod_refusals_unaudited_total Refusals beyond the audit budget (counted, not audited).\n# TYPE xpod_refusals_unaudited_total counter\nxpod_refusals_unaudited_total {}\n\
                         # HELP xpod_owner_loads_total Pod owners (or their absence) read from the metadata store by the owner table.\n# TYPE xpod_owner_loads_total counter\nxpod_owner_loads_total {}\n\
                         # HELP xpod_key_loads_total API keys read from the metadata store by the key cache.\n# TYPE xpod_key_loads_total counter\nxpod_key_loads_total {}\n\
                         # HELP xpod_runtime_alive_tasks Tasks alive in the node's async runtime.\n# TYPE xpod_runtime_alive_tasks gauge\nxpod_runtime_alive_tasks {}\n\
                         # HELP xpod_lease_valid Whether this node may write for its pods now (its liveness lease runs; 1 on nodes without one).\n# TYPE xpod_lease_valid gauge\nxpod_lease_valid {}\n\
                         # HELP xpod_edges_connected Edges whose tunnel this node holds.\n# TYPE xpod_edges_connected gauge\nxpod_edges_connected {}\n",
                        app.refusals.unaudited(),
                        app.owners.loads(),
                        app.keys.loads(),
                        tokio::runtime::Handle::current().metrics().num_alive_tasks(),
                        u8::from(app.lease.valid_at(std::time::Instant::now())),
                        app.edges.len()
                    ),
            ))
            .map_err(|e| ApiError::internal(e.to_string()))?,
        OpsRoute::OpenApi => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body::full(OPENAPI))
            .map_err(|e| ApiError::internal(e.to_string()))?,
    })
}
