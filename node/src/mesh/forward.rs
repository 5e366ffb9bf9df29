//! Sending a pod request to its owner over the mesh (ARCHITECTURE §5).
//!
//! One QUIC stream per request on the connection this node dialed to the owner: a
//! [`StreamHeader`] `Pod { pod_id, epoch, hops + 1 }` carrying the original client's address,
//! then HTTP/1.1 spoken by hyper's client. Bodies stream both ways. On the first hop the
//! request gets `Forwarded`/`X-Forwarded-*` and loses its hop-by-hop headers (as for edges);
//! later hops pass it on unchanged. The owner's response keeps its `X-Xpod-Node`; if that names
//! another node than the one this node believed, its owner-table entry is dropped, so the next
//! request goes straight to the right node (the correction for lost change-feed events).
//!
//! Pods owned by an edge go through the edge's tunnel: the center that holds it authenticates
//! and authorizes the request (see [`authorize_for_edge`]); any other center forwards to that
//! center first.
//!
//! Errors are immediate JSON: more than [`MAX_HOPS`] forwards → 508 `loop_detected`; an owner
//! that cannot be reached → 503 `owner_unavailable`; a stream or exchange that fails → 502.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use xpod_routing::Owner;
use xpod_storage::meta::{self, NodeType};
use xpod_tunnel::proto::{StreamHeader, Target};

use super::route::MeshHop;
use crate::app::App;
use crate::auth::{self, Access, AUTHORIZED_BY_CENTER};
use crate::edges::forward::{prepare, strip_hop_by_hop};
use crate::http::body::Body;
use crate::http::error::ApiError;

/// A request forwarded this many times is in a loop.
pub const MAX_HOPS: u8 = 4;
/// Upper bound for opening a stream to the owner and starting the exchange.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwards `req` (for pod `pod_id`, from client `peer`) to `owner`.
pub async fn pod(
    app: &Arc<App>,
    owner: Owner,
    pod_id: &str,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let hops = req.extensions().get::<MeshHop>().map_or(0, |h| h.hops);
    let details =
        json!({"podId": pod_id, "owner": owner.node_id, "epoch": owner.epoch, "hops": hops});
    if hops >= MAX_HOPS {
        tracing::warn!(pod = pod_id, owner = %owner.node_id, hops, "forwarding loop stopped");
        return Err(ApiError::new(
            StatusCode::LOOP_DETECTED,
            "loop_detected",
            format!("the request for pod {pod_id} was forwarded {hops} times without reaching its owner; the nodes disagree about who owns it"),
        )
        .with_details(details));
    }
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "owner_unavailable",
            format!(
                "pod {pod_id} is owned by node {}, which this node ({}) cannot reach: {why}",
                owner.node_id, app.node_id
            ),
        )
        .with_details(details.clone())
        .with_header(header::RETRY_AFTER, "1")
    };
    let node = app
        .mesh
        .node(app, &owner.node_id)
        .await
        .map_err(unavailable)?;
    let (conn, req) = if node.node_type != NodeType::Edge {
        let conn = app
            .mesh
            .connection(app, &owner.node_id)
            .await
            .map_err(unavailable)?;
        (conn, req)
    } else if let Some(conn) = app.edges.get(&owner.node_id) {
        // This center holds the edge's tunnel: it authorizes, the edge serves.
        (conn, authorize_for_edge(app, pod_id, req).await?)
    } else {
        // Through the center that holds the edge's tunnel.
        let holder = node
            .attached_centers
            .iter()
            .find(|c| **c != app.node_id)
            .ok_or_else(|| {
                unavailable(format!(
                    "edge {} has no tunnel to any center",
                    owner.node_id
                ))
            })?;
        let conn = app
            .mesh
            .connection(app, holder)
            .await
            .map_err(unavailable)?;
        (conn, req)
    };
    let header = StreamHeader {
        target: Target::Pod {
            pod_id: pod_id.to_string(),
            epoch: u64::try_from(owner.epoch).unwrap_or(0),
            hops: hops + 1,
        },
        client_addr: Some(peer),
    };
    let mut sender = tokio::time::timeout(OPEN_TIMEOUT, open(&conn, header))
        .await
        .map_err(|_| unavailable(format!("no stream within {OPEN_TIMEOUT:?}")))?
        .map_err(unavailable)?;
    let req = if hops == 0 {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        prepare(req, &host, peer)
    } else {
        req
    };
    let resp = sender.send_request(req).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("forwarding to node {} failed: {e}", owner.node_id),
        )
        .with_details(details.clone())
    })?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let served_by = parts
        .headers
        .get("x-xpod-node")
        .and_then(|v| v.to_str().ok());
    if served_by != Some(owner.node_id.as_str()) {
        // The owner moved on (or another node answered): ask the store next time.
        app.owners.invalidate(pod_id);
    }
    app.metrics.forwarded();
    Ok(Response::from_parts(
        parts,
        body.map_err(std::io::Error::other).boxed_unsync(),
    ))
}

/// A request for a pod of an edge whose tunnel this center holds: authenticated with the
/// cluster's keys and authorized against the cluster's pod row here, then sent on without
/// the credentials (an edge never sees a cluster key) and with the actor in
/// [`AUTHORIZED_BY_CENTER`], which the edge trusts on its tunnel only.
async fn authorize_for_edge(
    app: &App,
    pod_id: &str,
    mut req: Request<Incoming>,
) -> Result<Request<Incoming>, ApiError> {
    let principal = auth::authenticate(
        req.headers(),
        &app.keys,
        app.meta.as_ref(),
        meta::now_millis(),
    )
    .await?;
    let pod = app
        .meta
        .get_pod(pod_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("pod {pod_id} not found")))?;
    let want = match *req.method() {
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => Access::Read,
        _ => Access::Write,
    };
    auth::authorize_pod(&principal, pod_id, pod.access_mode, want)?;
    let h = req.headers_mut();
    h.remove(header::AUTHORIZATION);
    h.remove("x-api-key");
    if let Ok(v) = http::HeaderValue::from_str(&principal.actor()) {
        h.insert(AUTHORIZED_BY_CENTER, v);
    }
    Ok(req)
}

/// Opens a stream, writes `header`, and starts an HTTP/1.1 client on it.
async fn open(
    conn: &quinn::Connection,
    header: StreamHeader,
) -> Result<hyper::client::conn::http1::SendRequest<Incoming>, String> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| format!("the mesh connection is gone: {e}"))?;
    let mut head = BytesMut::new();
    header.encode(&mut head).map_err(|e| e.to_string())?;
    send.write_all(&head)
        .await
        .map_err(|e| format!("writing the stream header: {e}"))?;
    let io = TokioIo::new(tokio::io::join(recv, send));
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "forwarded pod exchange ended with an error");
        }
    });
    Ok(sender)
}
