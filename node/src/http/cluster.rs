//! The cluster API under `/.cluster` (admin key on every route):
//! `GET/POST /pods`, `GET /pods/{podId}`, `GET /nodes`, `GET /nodes/{nodeId}`.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use xpod_storage::meta::{AccessMode, NewPod};

use super::body::{self, Body};
use super::error::ApiError;
use super::{read_json, segments, Ctx};
use crate::auth::require_admin;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreatePod {
    pod_id: String,
    access_mode: Option<String>,
    account_id: Option<String>,
}

pub async fn handle(
    ctx: &Ctx,
    rest: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    require_admin(&ctx.principal)?;
    let method = req.method().clone();
    match (segments(rest).as_slice(), &method) {
        (["pods"], &Method::GET) => {
            let pods = ctx.app.meta.list_pods().await?;
            Ok(body::json(StatusCode::OK, &json!({"pods": pods})))
        }
        (["pods"], &Method::POST) => create_pod(ctx, req).await,
        (["pods"], _) => Err(ApiError::method_not_allowed("GET, POST")),
        (["pods", pod_id], &Method::GET) => match ctx.app.meta.get_pod(pod_id).await? {
            Some(pod) => Ok(body::json(
                StatusCode::OK,
                &serde_json::to_value(pod).unwrap_or_default(),
            )),
            None => Err(ApiError::not_found(format!("pod {pod_id} not found"))),
        },
        (["pods", _], _) => Err(ApiError::method_not_allowed("GET")),
        (["nodes"], &Method::GET) => {
            let nodes = ctx.app.meta.list_nodes().await?;
            Ok(body::json(StatusCode::OK, &json!({"nodes": nodes})))
        }
        (["nodes", node_id], &Method::GET) => match ctx.app.meta.get_node(node_id).await? {
            Some(n) => Ok(body::json(
                StatusCode::OK,
                &serde_json::to_value(n).unwrap_or_default(),
            )),
            None => Err(ApiError::not_found(format!("node {node_id} not found"))),
        },
        (["nodes"], _) | (["nodes", _], _) => Err(ApiError::method_not_allowed("GET")),
        _ => Err(ApiError::not_found(format!(
            "no cluster API at /.cluster{rest}"
        ))),
    }
}

async fn create_pod(ctx: &Ctx, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let input: CreatePod = read_json(req).await?;
    xpod_routing::target::validate_pod_id(&input.pod_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let access_mode = match input.access_mode.as_deref() {
        None => AccessMode::Private,
        Some(s) => AccessMode::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "accessMode `{s}`: expected private, public-read or public-read-write"
            ))
        })?,
    };
    let new = NewPod {
        pod_id: input.pod_id.clone(),
        base_url: ctx.app.pod_base_url(&input.pod_id),
        account_id: input
            .account_id
            .or_else(|| ctx.principal.owner().map(str::to_string)),
        node_id: ctx.app.node_id.clone(),
        access_mode,
    };
    let pod = ctx.app.meta.create_pod(&new).await?;
    ctx.audit(
        "pod.create",
        &pod.pod_id,
        json!({"accessMode": access_mode.as_str(), "nodeId": pod.node_id}),
    )
    .await;
    let mut resp = body::json(
        StatusCode::CREATED,
        &serde_json::to_value(&pod).unwrap_or_default(),
    );
    if let Ok(v) = http::HeaderValue::from_str(&format!("/.cluster/pods/{}", pod.pod_id)) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(resp)
}
