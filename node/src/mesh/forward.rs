//! Sending a pod request to its owner over the mesh (ARCHITECTURE §5).
//!
//! Keep-alive streams on the connection this node dialed to the next hop, sent by the one
//! forwarder ([`xpod_routing::forward`]): a stream starts with the [`StreamHeader`]
//! `PodRequests` and then carries any number of HTTP/1.1 exchanges for any pods; each request
//! names its pod, the epoch this node believed and its hop count in `x-xpod-hop`, and its
//! original client in `x-xpod-client` (both replaced on every hop, so a client cannot set
//! them). Streams go back to the pool when their response has been read, so a forwarded
//! request in steady state opens no stream and makes no handshake. Bodies stream both ways.
//! On the first hop the request gets `Forwarded`/`X-Forwarded-*` and loses its hop-by-hop
//! headers (as for edges); later hops pass it on otherwise unchanged. The owner's response keeps its `X-Xpod-Node`; if that names
//! another node than the one this node believed, its owner-table entry is dropped, so the next
//! request goes straight to the right node (the correction for lost change-feed events).
//!
//! Pods owned by an edge go through the edge's tunnel: the center that holds it authenticates
//! and authorizes the request (see [`authorize_for_edge`]); any other center forwards to that
//! center first.
//!
//! Errors are immediate JSON: more than [`MAX_HOPS`] forwards → 508 `loop_detected`; an owner
//! that cannot be reached → 503 `owner_unavailable` (an edge whose tunnel is gone: 503
//! `edge_offline`, naming when it was last seen); a stream or exchange that fails → 502. A
//! next hop that stops answering while a request waits is found dead within seconds (the
//! forwarder's probes, [`xpod_routing::forward::exchange`]).
//! A pooled stream that the next hop closed as the request went out is replaced by a new one
//! (the forwarder's replay rule).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use xpod_routing::decide::Route;
use xpod_routing::forward::{self as fwd, headers as fwd_headers, ForwardError};
use xpod_storage::meta;
use xpod_tunnel::proto::{StreamHeader, Target};

use super::peers::PeerKey;
use crate::app::App;
use crate::auth::{self, Access, AUTHENTICATED_BY_CENTER, AUTHORIZED_BY_CENTER};
use crate::reply::body::Body;
use crate::reply::error::ApiError;
use xpod_routing::forward::MeshHop;

pub use xpod_routing::forward::MAX_HOPS;

/// Forwards `req` (for pod `pod_id`, from client `peer`) along `route` (one of the forwarding
/// routes of [`xpod_routing::decide`]).
pub async fn pod(
    app: &Arc<App>,
    route: Route,
    pod_id: &str,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let hops = req.extensions().get::<MeshHop>().map_or(0, |h| h.hops);
    let (owner, via) = match &route {
        Route::Peer { owner } | Route::Edge { owner } => (owner.clone(), owner.node_id.clone()),
        Route::ViaCenter { owner, center } => (owner.clone(), center.clone()),
        Route::Local | Route::Missing => {
            return Err(ApiError::internal(format!(
                "pod {pod_id}: route {route:?} is not a forward"
            )))
        }
    };
    let details =
        json!({"podId": pod_id, "owner": owner.node_id, "epoch": owner.epoch, "hops": hops});
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
    let (conn, req) = match &route {
        Route::Edge { .. } => {
            // This center holds the edge's tunnel: it authorizes, the edge serves.
            let Some(conn) = app.edges.get(&via) else {
                return Err(edge_gone(app, pod_id, &via).await);
            };
            (conn, authorize_for_edge(app, pod_id, req).await?)
        }
        _ => {
            let conn = app
                .mesh
                .connection(&app.policies, app.meta.as_ref(), &via)
                .await
                .map_err(unavailable)?;
            (conn, req)
        }
    };
    let next_hop = PeerKey {
        node: via,
        conn: conn.stable_id(),
    };
    let mut req = if hops == 0 {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        fwd::prepare(req, &host, peer)
    } else {
        req
    };
    let h = req.headers_mut();
    let epoch = u64::try_from(owner.epoch).unwrap_or(0);
    if let Ok(v) = HeaderValue::from_str(&fwd_headers::hop_value(pod_id, epoch, hops + 1)) {
        h.insert(fwd_headers::HOP, v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer.to_string()) {
        h.insert(fwd_headers::CLIENT, v);
    }
    let replay = fwd::replay_of(&req, crate::reply::body::empty);
    // To an edge through its tunnel here: its bandwidth limit applies.
    let limits = match &route {
        Route::Edge { owner } => crate::edges::forward::limits(app, &owner.node_id),
        _ => None,
    };
    let req = req.map(|b| crate::edges::forward::paced(b, &limits, true));
    let header = StreamHeader {
        target: Target::PodRequests,
        client_addr: None,
    };
    let sent = fwd::send(&app.mesh.pool, &next_hop, &conn, &header, req, replay).await;
    let sent = match sent {
        Err(ForwardError::Lost(_)) if matches!(route, Route::Edge { .. }) => {
            return Err(edge_gone(app, pod_id, &owner.node_id).await)
        }
        other => other,
    };
    let sent = sent.map_err(|e| match e {
        ForwardError::Lost(why) | ForwardError::Open(why) => unavailable(why),
        ForwardError::Failed(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("forwarding to node {} failed: {e}", owner.node_id),
        )
        .with_details(details.clone()),
    })?;
    let resp = sent.resp;
    if !sent.reused {
        app.metrics.forward_stream_opened();
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        app.mesh.pool.checkin_when_ready(next_hop, sent.sender);
    }
    let (mut parts, body) = resp.into_parts();
    fwd::strip_hop_by_hop(&mut parts.headers);
    let served_by = parts
        .headers
        .get("x-xpod-node")
        .and_then(|v| v.to_str().ok());
    if served_by != Some(owner.node_id.as_str()) {
        // The owner moved on (or another node answered): ask the store next time.
        app.owners.invalidate(pod_id);
    }
    app.metrics.forwarded(match route {
        Route::Edge { .. } => "edge",
        Route::ViaCenter { .. } => "via_center",
        _ => "peer",
    });
    Ok(Response::from_parts(
        parts,
        crate::edges::forward::paced(body, &limits, false),
    ))
}

/// 503 `edge_offline` for a pod of edge `edge`, whose tunnel this center just lost: when it
/// was last seen comes from the node directory.
async fn edge_gone(app: &App, pod_id: &str, edge: &str) -> ApiError {
    let seen = app
        .mesh
        .node(app.meta.as_ref(), edge)
        .await
        .map_or(0, |n| n.last_heartbeat);
    crate::reply::error::edge_offline(pod_id, edge, seen)
}

/// A request for a pod of an edge whose tunnel this center holds. The center authenticates
/// (an edge never sees a cluster key or a token) and sends the request on without credentials:
/// - an API key with the pod in its scopes is authorized here, against the cluster's pod row,
///   and named in [`AUTHORIZED_BY_CENTER`] (the edge then grants what the key may);
/// - a WebID (Solid-OIDC, checked here against the public URL) is named there as
///   `webid:<url>`, and the edge decides under its own ACLs;
/// - a key without the pod in its scopes is named in [`AUTHENTICATED_BY_CENTER`] (the edge's
///   ACLs decide, and refuse it with 403 rather than 401);
/// - anyone else goes on as anonymous, and the edge decides under its ACLs.
///
/// The edge trusts the header on its tunnel only.
async fn authorize_for_edge(
    app: &App,
    pod_id: &str,
    mut req: Request<Incoming>,
) -> Result<Request<Incoming>, ApiError> {
    let url = format!("{}{}", fwd::public_origin(&req), req.uri().path());
    // Credentials that are not accepted leave the request anonymous (a public resource needs
    // none); the edge answers for what anonymous may not do.
    let principal = match auth::authenticate_request(
        req.headers(),
        req.method().as_str(),
        &url,
        &app.keys,
        app.meta.as_ref(),
        &app.oidc,
        meta::now_millis(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => auth::Principal::Anonymous,
        Err(e) => return Err(e),
    };
    let scoped = principal.pod_access(pod_id).is_some();
    if scoped {
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
    }
    let h = req.headers_mut();
    h.remove(header::AUTHORIZATION);
    h.remove("x-api-key");
    h.remove("dpop");
    h.remove(AUTHORIZED_BY_CENTER);
    h.remove(AUTHENTICATED_BY_CENTER);
    if let (auth::Principal::Key(_), false) = (&principal, scoped) {
        if let Ok(v) = http::HeaderValue::from_str(&principal.actor()) {
            h.insert(AUTHENTICATED_BY_CENTER, v);
        }
    }
    let named = match &principal {
        auth::Principal::WebId { webid, .. } => Some(format!("webid:{webid}")),
        p if scoped => Some(p.actor()),
        _ => None,
    };
    if let Some(v) = named.and_then(|n| http::HeaderValue::from_str(&n).ok()) {
        h.insert(AUTHORIZED_BY_CENTER, v);
    }
    Ok(req)
}
