//! A center's side of HTTP forwarding to edges (ARCHITECTURE §5, §8).
//!
//! When `tunnel.edge_domain` is set, a request whose Host is `<service>.<node>.<edge_domain>`
//! or `<node>.<edge_domain>` (meaning the service [`DEFAULT_SERVICE`], `web`) never reaches the
//! pod or cluster handlers and needs no credentials (the edge's service decides): it goes
//! through a QUIC stream on the tunnel of edge `<node>` — the stream starts with a
//! [`StreamHeader`] `Http { service }` and is then spoken as HTTP/1.1 by the one forwarder
//! ([`xpod_routing::forward`]); streams are kept alive and reused by later requests (its
//! pool), so the edge's service sees keep-alive connections. Bodies stream both ways (nothing
//! buffered). Hop-by-hop headers are stripped both ways; the request gains `Forwarded`,
//! `X-Forwarded-For` (appended), `X-Forwarded-Host` and `X-Forwarded-Proto`.
//!
//! Errors: a name that is not a DNS label → 400; an edge whose tunnel this center does not hold
//! → 503 `edge_unavailable` at once; a stream that cannot be opened within the forwarder's `OPEN_TIMEOUT` (5 s) or an
//! exchange that fails before the response head → 502 `bad_gateway`. The edge itself answers 502
//! for a service it does not publish.
//!
//! Upgrades (WebSocket): a request with `Connection: upgrade` keeps its `Upgrade` header; when
//! the edge's service answers `101 Switching Protocols`, the client's connection and the QUIC
//! stream are joined and relayed as raw bytes until either side closes. Any other answer is
//! passed on as a normal response.
//!
//! Not yet: HTTPS on the center (`proto` is always `http`), forwarding through another center
//! that holds the edge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use xpod_routing::forward::{self as fwd, ForwardError};
use xpod_tunnel::proto::{StreamHeader, Target};

use crate::app::App;
use crate::reply::body::Body;
use crate::reply::error::ApiError;

use super::registry::Key;
pub use xpod_routing::edge_host::{EdgeRoute, DEFAULT_SERVICE};

fn unavailable(app: &App, route: &EdgeRoute) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "edge_unavailable",
        format!(
            "edge {} has no tunnel to this node ({}); it may be offline or connected to another center",
            route.node, app.node_id
        ),
    )
    .with_details(serde_json::json!({"node": route.node, "service": route.service}))
}

fn bad_gateway(route: &EdgeRoute, why: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        format!(
            "forwarding to service {} on edge {} failed: {why}",
            route.service, route.node
        ),
    )
    .with_details(serde_json::json!({"node": route.node, "service": route.service}))
}

/// The JSON error for a failed forward to `route`.
fn forward_error(app: &App, route: &EdgeRoute, e: ForwardError) -> ApiError {
    match e {
        ForwardError::Lost(why) => {
            tracing::info!(node = %route.node, error = %why, "edge tunnel lost while opening a stream");
            unavailable(app, route)
        }
        e => {
            tracing::info!(node = %route.node, service = %route.service, error = %e, "forwarded request failed");
            bad_gateway(route, e.to_string())
        }
    }
}

/// The bandwidth limiters of `edge`, if its policy sets a limit (`super::bandwidth`).
pub(crate) fn limits(app: &App, edge: &str) -> Option<Arc<super::bandwidth::Pair>> {
    app.bandwidth
        .of(edge, app.policies.get(edge).bandwidth_bytes_per_sec)
}

/// `body` boxed, paced by `limits` in the direction `to_edge` (else from the edge) if any.
pub(crate) fn paced<B>(body: B, limits: &Option<Arc<super::bandwidth::Pair>>, to_edge: bool) -> Body
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match limits {
        Some(l) => super::bandwidth::Paced::new(body, l.clone(), to_edge)
            .map_err(std::io::Error::other)
            .boxed_unsync(),
        None => body.map_err(std::io::Error::other).boxed_unsync(),
    }
}

/// Forwards `req` (for `host`, from `peer`) to `route` through the edge's tunnel, on an idle
/// stream from the pool when there is one.
pub async fn forward(
    app: &App,
    route: EdgeRoute,
    host: &str,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(conn) = app.edges.get(&route.node) else {
        return Err(unavailable(app, &route));
    };
    let key = Key {
        node: route.node.clone(),
        service: route.service.clone(),
        conn: conn.stable_id(),
    };
    let mut req = req;
    let upgrade = fwd::upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let mut req = fwd::prepare(req, host, peer);
    if let Some(protocol) = &upgrade {
        let h = req.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, protocol.clone());
    }
    let replay = fwd::replay_of(&req, crate::reply::body::empty);
    let limits = limits(app, &route.node);
    let req = req.map(|b| paced(b, &limits, true));
    let header = StreamHeader {
        target: Target::Http {
            service: route.service.clone(),
        },
        // A stream carries many requests (pooled); each one names its client in `Forwarded`.
        client_addr: None,
    };
    let fwd::Sent {
        mut resp, sender, ..
    } = fwd::send(&app.edges.pool, &key, &conn, &header, req, replay)
        .await
        .map_err(|e| forward_error(app, &route, e))?;
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgraded = match (switching, client_upgrade) {
        (true, Some(client)) => {
            let edge = hyper::upgrade::on(&mut resp);
            let idle = app.config.tunnel.relay_idle();
            tokio::spawn(relay_upgraded(
                client,
                edge,
                route.clone(),
                idle,
                limits.clone(),
            ));
            true
        }
        (true, None) => {
            return Err(bad_gateway(
                &route,
                "the service switched protocols without being asked to".into(),
            ))
        }
        _ => false,
    };
    if !upgraded {
        app.edges.pool.checkin_when_ready(key, sender);
    } else {
        drop(sender);
    }
    let (mut parts, body) = resp.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    fwd::strip_hop_by_hop(&mut parts.headers);
    // This center serves the response; an edge's service cannot speak for a node.
    parts.headers.remove("x-xpod-node");
    if upgraded {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(p) = protocol {
            parts.headers.insert(header::UPGRADE, p);
        }
    }
    Ok(Response::from_parts(parts, paced(body, &limits, false)))
}

/// Joins an upgraded client connection and the upgraded stream to the edge, byte for byte,
/// until either side closes or both are quiet for `idle` (`tunnel.relay_idle_secs`).
async fn relay_upgraded(
    client: hyper::upgrade::OnUpgrade,
    edge: hyper::upgrade::OnUpgrade,
    route: EdgeRoute,
    idle: Duration,
    limits: Option<Arc<super::bandwidth::Pair>>,
) {
    let (client, edge) = match tokio::try_join!(client, edge) {
        Ok(both) => both,
        Err(e) => {
            tracing::info!(node = %route.node, service = %route.service, error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let copied = match limits {
        Some(l) => {
            let mut edge = super::bandwidth::PacedIo::new(TokioIo::new(edge), l);
            crate::idle_copy::copy_bidirectional(&mut client, &mut edge, idle).await
        }
        None => {
            let mut edge = TokioIo::new(edge);
            crate::idle_copy::copy_bidirectional(&mut client, &mut edge, idle).await
        }
    };
    match copied {
        Ok((up, down)) => {
            tracing::debug!(node = %route.node, service = %route.service, up, down, "upgraded connection closed")
        }
        Err(e) => {
            tracing::debug!(node = %route.node, service = %route.service, error = %e, "upgraded connection ended")
        }
    }
}
