//! A center's side of HTTP forwarding to edges (ARCHITECTURE §5, §8).
//!
//! When `tunnel.edge_domain` is set, a request whose Host is `<service>.<node>.<edge_domain>`
//! or `<node>.<edge_domain>` (meaning the service [`DEFAULT_SERVICE`], `web`) never reaches the
//! pod or cluster handlers and needs no credentials (the edge's service decides): it goes
//! through a QUIC stream on the tunnel of edge `<node>` — the stream starts with a
//! [`StreamHeader`] `Http { service }` and is then spoken as HTTP/1.1 with hyper's client;
//! streams are kept alive and reused by later requests ([`super::pool`]), so the edge's service
//! sees keep-alive connections. Bodies stream both ways (nothing buffered).
//! Hop-by-hop headers are stripped both ways; the request gains `Forwarded`,
//! `X-Forwarded-For` (appended), `X-Forwarded-Host` and `X-Forwarded-Proto`.
//!
//! Errors: a name that is not a DNS label → 400; an edge whose tunnel this center does not hold
//! → 503 `edge_unavailable` at once; a stream that cannot be opened within [`OPEN_TIMEOUT`] or an
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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use xpod_tunnel::proto::{StreamHeader, Target};

use super::pool::{Key, StreamPool};
use crate::app::App;
use crate::http::body::Body;
use crate::http::error::ApiError;

/// Upper bound for opening a stream to an edge and starting the exchange on it.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Relayed connections (TCP forwards, TLS passthrough) one edge's tunnel carries at most: the
/// rest of its streams ([`xpod_tunnel::endpoint::MAX_STREAMS`]) stay free for HTTP, pods and
/// sandboxes, however many clients hold connections open.
pub const RELAYS_PER_EDGE: usize = 3072;

/// The edges whose tunnel this center holds: node id → the QUIC connection.
#[derive(Default)]
pub struct EdgeRegistry {
    conns: Mutex<HashMap<String, quinn::Connection>>,
    /// Per edge, the budget of relayed connections ([`RELAYS_PER_EDGE`]).
    relays: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Idle HTTP exchanges to the edges' services, for reuse.
    pub pool: Arc<StreamPool>,
}

impl EdgeRegistry {
    /// Records `conn` as the tunnel of `node_id` (replacing an older one).
    pub fn insert(&self, node_id: &str, conn: quinn::Connection) {
        self.conns
            .lock()
            .expect("poisoned")
            .insert(node_id.to_string(), conn);
    }

    /// Forgets `node_id`'s tunnel if it is still `conn` (a newer connection stays). Returns
    /// whether it was removed.
    pub fn remove(&self, node_id: &str, conn: &quinn::Connection) -> bool {
        let mut conns = self.conns.lock().expect("poisoned");
        if conns
            .get(node_id)
            .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            conns.remove(node_id);
            self.pool.forget_node(node_id);
            true
        } else {
            false
        }
    }

    /// The live tunnel of `node_id`, if this center holds one.
    pub fn get(&self, node_id: &str) -> Option<quinn::Connection> {
        self.conns
            .lock()
            .expect("poisoned")
            .get(node_id)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// A place for one more relayed connection to `node_id`, or `None` when its budget is
    /// spent (the client's connection is then closed at once, not queued).
    pub fn relay_permit(&self, node_id: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let budget = self
            .relays
            .lock()
            .expect("poisoned")
            .entry(node_id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(RELAYS_PER_EDGE)))
            .clone();
        budget.try_acquire_owned().ok()
    }

    /// How many edges' tunnels this center holds.
    pub fn len(&self) -> usize {
        self.conns.lock().expect("poisoned").len()
    }

    /// Whether this center holds no edge's tunnel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub use xpod_routing::edge_host::{EdgeRoute, DEFAULT_SERVICE};

/// [`xpod_routing::edge_host::edge_route`] with its error as a 400.
pub fn edge_route(host: Option<&str>, edge_domain: &str) -> Result<Option<EdgeRoute>, ApiError> {
    xpod_routing::edge_host::edge_route(host, edge_domain).map_err(ApiError::bad_request)
}

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

/// A new stream to `route`'s service, within [`OPEN_TIMEOUT`].
async fn open_timed(
    app: &App,
    conn: &quinn::Connection,
    route: &EdgeRoute,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, ApiError> {
    match tokio::time::timeout(OPEN_TIMEOUT, open(conn, route)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(Open::Lost(e))) => {
            tracing::info!(node = %route.node, error = %e, "edge tunnel lost while opening a stream");
            Err(unavailable(app, route))
        }
        Ok(Err(Open::Failed(why))) => Err(bad_gateway(route, why)),
        Err(_) => Err(bad_gateway(
            route,
            format!(
                "no stream could be opened within {} s",
                OPEN_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Forwards `req` (for `host`, from `peer`) to `route` through the edge's tunnel, on an idle
/// stream from the pool when there is one (see [`super::pool`]).
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
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let mut req = prepare(req, host, peer);
    if let Some(protocol) = &upgrade {
        let h = req.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, protocol.clone());
    }
    let failed = |e: hyper::Error| {
        tracing::info!(node = %route.node, service = %route.service, error = %e, "forwarded request failed");
        bad_gateway(&route, format!("no response: {e}"))
    };
    let (parts, body) = req.into_parts();
    // A bodiless idempotent request can be sent again if a reused stream closes under it.
    let replay = replayable(&parts).then(|| {
        let mut again = Request::new(crate::http::body::empty());
        *again.method_mut() = parts.method.clone();
        *again.uri_mut() = parts.uri.clone();
        *again.version_mut() = parts.version;
        *again.headers_mut() = parts.headers.clone();
        again
    });
    let req = Request::from_parts(parts, body.map_err(std::io::Error::other).boxed_unsync());
    let (sender, mut resp) = match app.edges.pool.checkout(&key) {
        Some(mut sender) => match sender.try_send_request(req).await {
            Ok(resp) => (sender, resp),
            Err(mut e) => {
                // The pooled stream closed as the request went out: the service ended an idle
                // keep-alive connection. Send it again on a new stream if it did not go out
                // (hyper hands it back) or may safely be repeated.
                let again = e
                    .take_message()
                    .or(replay)
                    .ok_or_else(|| failed(e.into_error()))?;
                tracing::debug!(node = %route.node, service = %route.service, "a reused stream closed; sending on a new one");
                let mut sender = open_timed(app, &conn, &route).await?;
                let resp = sender.send_request(again).await.map_err(failed)?;
                (sender, resp)
            }
        },
        None => {
            let mut sender = open_timed(app, &conn, &route).await?;
            let resp = sender.send_request(req).await.map_err(failed)?;
            (sender, resp)
        }
    };
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgraded = match (switching, client_upgrade) {
        (true, Some(client)) => {
            let edge = hyper::upgrade::on(&mut resp);
            let idle = app.config.tunnel.relay_idle();
            tokio::spawn(relay_upgraded(client, edge, route.clone(), idle));
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
    strip_hop_by_hop(&mut parts.headers);
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
    Ok(Response::from_parts(
        parts,
        body.map_err(std::io::Error::other).boxed_unsync(),
    ))
}

/// Whether a request may be sent twice: an idempotent method without a body (what Go's
/// `http.Transport` retries on a reused connection too).
fn replayable(parts: &http::request::Parts) -> bool {
    let idempotent = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    let no_body = !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0");
    idempotent && no_body && !parts.headers.contains_key(header::UPGRADE)
}

/// The protocol a request asks to switch to: its `Upgrade` header, when `Connection` lists
/// `upgrade`.
fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Joins an upgraded client connection and the upgraded stream to the edge, byte for byte,
/// until either side closes or both are quiet for `idle` (`tunnel.relay_idle_secs`).
async fn relay_upgraded(
    client: hyper::upgrade::OnUpgrade,
    edge: hyper::upgrade::OnUpgrade,
    route: EdgeRoute,
    idle: Duration,
) {
    let (client, edge) = match tokio::try_join!(client, edge) {
        Ok(both) => both,
        Err(e) => {
            tracing::info!(node = %route.node, service = %route.service, error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut edge = TokioIo::new(edge);
    match crate::idle_copy::copy_bidirectional(&mut client, &mut edge, idle).await {
        Ok((up, down)) => {
            tracing::debug!(node = %route.node, service = %route.service, up, down, "upgraded connection closed")
        }
        Err(e) => {
            tracing::debug!(node = %route.node, service = %route.service, error = %e, "upgraded connection ended")
        }
    }
}

enum Open {
    /// The tunnel is gone: the edge is unavailable.
    Lost(quinn::ConnectionError),
    Failed(String),
}

/// Opens a stream, writes its header and starts an HTTP/1.1 client connection over it (its
/// driver task ends when the connection does: the stream or its tunnel closed, or the pool
/// dropped it).
async fn open(
    conn: &quinn::Connection,
    route: &EdgeRoute,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, Open> {
    let (mut send, recv) = conn.open_bi().await.map_err(Open::Lost)?;
    let mut head = BytesMut::new();
    StreamHeader {
        target: Target::Http {
            service: route.service.clone(),
        },
        // A stream carries many requests (pooled); each one names its client in `Forwarded`.
        client_addr: None,
    }
    .encode(&mut head)
    .map_err(|e| Open::Failed(e.to_string()))?;
    send.write_all(&head)
        .await
        .map_err(|e| Open::Failed(format!("writing the stream header: {e}")))?;
    let io = TokioIo::new(tokio::io::join(recv, send));
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Open::Failed(format!("HTTP handshake: {e}")))?;
    let node = route.node.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%node, error = %e, "forwarded HTTP exchange ended with an error");
        }
    });
    Ok(sender)
}

/// The request as the edge's service gets it: origin-form target, HTTP/1.1, no hop-by-hop
/// headers (nor `Expect`: this node already answered it), plus the forwarding headers.
pub(crate) fn prepare(req: Request<Incoming>, host: &str, peer: SocketAddr) -> Request<Incoming> {
    let (mut parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    parts.uri = target.parse().unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = http::Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    h.remove(header::EXPECT);
    if !h.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(header::HOST, v);
        }
    }
    let ip = peer.ip();
    let for_node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let host_q = host.replace(['"', '\\'], "");
    append(
        h,
        header::FORWARDED,
        &format!("for={for_node};host=\"{host_q}\";proto=http"),
    );
    append(
        h,
        HeaderName::from_static("x-forwarded-for"),
        &ip.to_string(),
    );
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    Request::from_parts(parts, body)
}

/// Adds `value` to a list header: `old, value` (several lines folded into one).
fn append(h: &mut HeaderMap, name: HeaderName, value: &str) {
    let old: Vec<&str> = h
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let joined = if old.is_empty() {
        value.to_string()
    } else {
        format!("{}, {value}", old.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        h.insert(name, v);
    }
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn list_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        append(
            &mut h,
            HeaderName::from_static("x-forwarded-for"),
            "127.0.0.1",
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
    }
}
