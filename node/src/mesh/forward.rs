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
use xpod_storage::meta::NodeType;
use xpod_tunnel::proto::{StreamHeader, Target};

use super::route::MeshHop;
use crate::app::App;
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
    if node.node_type == NodeType::Edge {
        return Err(unavailable(
            "pods owned by edges are not served through the mesh yet".into(),
        ));
    }
    let conn = app
        .mesh
        .connection(app, &owner.node_id)
        .await
        .map_err(unavailable)?;
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
