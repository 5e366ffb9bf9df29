//! Operations endpoints: `/health`, `/health/detailed`, `/readiness`, `/metrics` (and
//! `/openapi.json`, served by [`super::openapi`]). No credentials needed; they reveal no
//! secrets.

use http::{Method, Request, Response, StatusCode};
use xpod_routing::OpsRoute;

use crate::api_types::ops::{Checks, Health, HealthDetailed, MetadataCheck, ObjectsCheck, Ready};
use crate::api_types::ErrorBody;
use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

pub async fn handle<B>(
    app: &App,
    route: OpsRoute,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::method_not_allowed("GET, HEAD"));
    }
    match route {
        OpsRoute::Health => Ok(health(app)),
        OpsRoute::HealthDetailed => Ok(health_detailed(app).await),
        OpsRoute::Readiness => readiness(app).await,
        OpsRoute::Metrics => metrics(app),
        // Served by `super::openapi` (which names this module's operations).
        OpsRoute::OpenApi => Err(ApiError::not_found("/openapi.json is served elsewhere")),
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "ops", security(()),
    responses((status = 200, description = "Alive", body = Health)))]
fn health(app: &App) -> Response<Body> {
    let h = Health {
        status: "ok".into(),
        node_id: app.node_id.clone(),
    };
    body::json(StatusCode::OK, &h)
}

/// The node's checks of its metadata and object stores.
#[utoipa::path(get, path = "/health/detailed", operation_id = "healthDetailed", tag = "ops", security(()),
    responses(
        (status = 200, description = "Every check passed", body = HealthDetailed),
        (status = 503, description = "Degraded: a check failed", body = HealthDetailed),
    ))]
async fn health_detailed(app: &App) -> Response<Body> {
    let meta = app.meta.ping().await;
    let ok = meta.is_ok();
    let h = HealthDetailed {
        status: if ok { "ok" } else { "degraded" }.into(),
        node_id: app.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        region: app.config.region.clone(),
        checks: Checks {
            metadata: MetadataCheck {
                backend: app.meta.backend().into(),
                ok,
                error: meta.err().map(|e| e.to_string()),
            },
            objects: ObjectsCheck {
                url: app.blobs.url().to_string(),
            },
        },
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    body::json(status, &h)
}

/// Ready to serve: the metadata store answers.
#[utoipa::path(get, path = "/readiness", operation_id = "readiness", tag = "ops", security(()),
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready", body = ErrorBody),
    ))]
async fn readiness(app: &App) -> Result<Response<Body>, ApiError> {
    match app.meta.ping().await {
        Ok(()) => Ok(body::json(StatusCode::OK, &Ready { ready: true })),
        Err(e) => Err(ApiError::unavailable(format!("not ready: {e}"))),
    }
}

/// Prometheus metrics (text exposition 0.0.4).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "ops", security(()),
    responses((status = 200, description = "The metrics", content_type = "text/plain", body = String)))]
fn metrics(app: &App) -> Result<Response<Body>, ApiError> {
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
    figures.extend(super::terminal::figures());
    figures.extend(super::migrate::figures());
    if app.config.role == xpod_config::Role::Edge {
        figures.extend(crate::edges::terminal::figures());
    }
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(body::full(app.metrics.render(sample, &figures)))
        .map_err(|e| ApiError::internal(e.to_string()))
}
