//! Reaching the node that runs a sandbox: its runner API ([`call`]), its ports
//! ([`open_port`]) and its terminals ([`open_terminal`]), here or over the mesh / an edge's
//! tunnel.
//!
//! To a center: a stream on this node's mesh connection to it. To an edge: a stream on its
//! tunnel when this center holds it, else through a center that does (which passes the
//! stream on: `Runner { node }` names the destination, a `SandboxPort` stream is looked up).
//! Errors are immediate JSON: unreachable → 503 `runner_unavailable`, more than
//! [`MAX_HOPS`] → 508, an exchange that fails → 502.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use xpod_storage::meta::NodeType;
use xpod_tunnel::proto::{StreamHeader, Target};

use crate::app::App;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;

/// A runner request passed on this many times is in a loop.
pub const MAX_HOPS: u8 = 4;
/// Upper bound for reaching the runner and opening a stream to it.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(node: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "runner_unavailable",
        format!("node {node} cannot be reached: {why}"),
    )
    .with_header(header::RETRY_AFTER, "1")
}

/// The QUIC connection a stream to `node` goes on (the node's own, or a center holding its
/// tunnel).
pub async fn connection_to(app: &App, node: &str) -> Result<quinn::Connection, ApiError> {
    if let Some(c) = app.edges.get(node) {
        return Ok(c);
    }
    let rec = app
        .meta
        .get_node(node)
        .await?
        .ok_or_else(|| unavailable(node, "no such node"))?;
    let via = if rec.node_type == NodeType::Edge {
        rec.attached_centers
            .iter()
            .find(|c| **c != app.node_id)
            .cloned()
            .ok_or_else(|| unavailable(node, "the edge has no tunnel to any center"))?
    } else {
        node.to_string()
    };
    app.mesh
        .connection(&app.policies, app.meta.as_ref(), &via)
        .await
        .map_err(|e| unavailable(node, e))
}

pub async fn open_stream(
    app: &App,
    node: &str,
    header: StreamHeader,
) -> Result<(quinn::SendStream, quinn::RecvStream), ApiError> {
    let conn = connection_to(app, node).await?;
    let open = async {
        xpod_tunnel::stream::open(&conn, &header)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(OPEN_TIMEOUT, open)
        .await
        .map_err(|_| unavailable(node, format!("no stream within {OPEN_TIMEOUT:?}")))?
        .map_err(|e| unavailable(node, e))
}

/// Sends a runner request to `node` (`hops`: how often it was forwarded already).
pub async fn call(
    app: &Arc<App>,
    node: &str,
    hops: u8,
    method: Method,
    path_and_query: &str,
    payload: Bytes,
) -> Result<Response<Body>, ApiError> {
    if node == app.node_id {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        return super::internal::serve(app, &method, path, query, payload).await;
    }
    if hops >= MAX_HOPS {
        return Err(ApiError::new(
            StatusCode::LOOP_DETECTED,
            "loop_detected",
            format!("a runner request for node {node} was passed on {hops} times"),
        ));
    }
    let header = StreamHeader {
        target: Target::Runner {
            node: node.to_string(),
            hops: hops + 1,
        },
        client_addr: None,
    };
    let (send, recv) = open_stream(app, node, header).await?;
    let io = TokioIo::new(tokio::io::join(recv, send));
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(io)
        .await
        .map_err(|e| unavailable(node, format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "runner exchange ended with an error");
        }
    });
    let req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, node)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(payload))
        .map_err(|e| ApiError::internal(format!("building a runner request: {e}")))?;
    let resp = sender.send_request(req).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("the runner request to node {node} failed: {e}"),
        )
    })?;
    let (mut parts, b) = resp.into_parts();
    xpod_routing::forward::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        b.map_err(std::io::Error::other).boxed_unsync(),
    ))
}

/// Reads a runner's JSON answer; a non-2xx answer becomes the same error here.
pub async fn json_of(resp: Response<Body>) -> Result<serde_json::Value, ApiError> {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()))?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status.is_success() {
        return Ok(v);
    }
    let code = match v["code"].as_str() {
        Some("no_capacity") => "no_capacity",
        Some("unknown_image") => "unknown_image",
        Some("not_running_here") => "not_running_here",
        Some("start_failed") => "start_failed",
        Some("runner_unavailable") => "runner_unavailable",
        _ => "runner_error",
    };
    let message = v["message"]
        .as_str()
        .or_else(|| v["error"]["message"].as_str())
        .unwrap_or("the runner failed")
        .to_string();
    Err(ApiError::new(status, code, message))
}

/// A byte stream to `port` in sandbox `id` on `node` (not this node): a `SandboxPort` stream.
pub async fn open_port(
    app: &App,
    node: &str,
    id: &str,
    port: u16,
    client: Option<SocketAddr>,
) -> Result<tokio::io::Join<quinn::RecvStream, quinn::SendStream>, ApiError> {
    let header = StreamHeader {
        target: Target::SandboxPort {
            sandbox_id: id.to_string(),
            port,
        },
        client_addr: client,
    };
    let (send, recv) = open_stream(app, node, header).await?;
    Ok(tokio::io::join(recv, send))
}

/// A stream to a terminal of sandbox `id` on `node` (not this node): a `SandboxTerminal`
/// stream ([`super::terminal`] speaks on it).
pub async fn open_terminal(
    app: &App,
    node: &str,
    id: &str,
    client: Option<SocketAddr>,
) -> Result<tokio::io::Join<quinn::RecvStream, quinn::SendStream>, ApiError> {
    let header = StreamHeader {
        target: Target::SandboxTerminal {
            sandbox_id: id.to_string(),
        },
        client_addr: client,
    };
    let (send, recv) = open_stream(app, node, header).await?;
    Ok(tokio::io::join(recv, send))
}
