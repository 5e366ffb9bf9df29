//! Solid Notifications over HTTP (WebSocketChannel2023; the protocol:
//! https://solidproject.org/TR/notifications-protocol):
//!
//! - `POST /<pod>/.notifications/WebSocketChannel2023/` (JSON-LD: `type`, `topic`, optional
//!   `endAt`, not taken) subscribes to a resource of the pod; it needs Read on the topic (Web
//!   Access Control, at the pod's owner like every pod request). The answer names the channel
//!   and its `receiveFrom`, a capability URL (an unguessable id) valid until `endAt`
//!   ([`MAX_LIFETIME_MS`] from now). At most [`MAX_CHANNELS`] live channels per pod.
//! - `GET receiveFrom` with `Upgrade: websocket` is served by whichever center takes it (not
//!   forwarded): the channel is read from the metadata store, the socket registered in this
//!   node's [`crate::notify::Hub`], and every event for the topic announced anywhere in the
//!   cluster is sent as a text message. Pings every [`PING_EVERY`]; the socket closes at the
//!   channel's end.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use xpod_storage::meta::{now_millis, DocRecord, PodRecord};

use super::access;
use super::Ctx;
use crate::app::App;
use crate::notify::CHANNEL_KIND;
use crate::reply::body::{self, Body};
use crate::reply::error::ApiError;
use crate::solid::wac::Modes;

/// Where a pod's WebSocket channels live, below its root.
pub const WEBSOCKET_PATH: &str = "/.notifications/WebSocketChannel2023/";
/// The longest a channel lives.
pub const MAX_LIFETIME_MS: i64 = 14 * 86_400_000;
/// Live channels per pod at most.
pub const MAX_CHANNELS: usize = 1000;
/// How often an idle socket is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(30);
const WEBSOCKET_TYPE: &str = "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023";
const SUBPROTOCOL: &str = "http://www.w3.org/ns/solid/notifications#WebSocketChannel2023";

/// The channel id in a `receiveFrom` path, if `path` is one.
pub fn channel_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix(WEBSOCKET_PATH)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// `POST <pod>/.notifications/WebSocketChannel2023/`: see the module docs.
pub async fn subscribe(
    ctx: &Ctx,
    pod: &PodRecord,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if req.method() != http::Method::POST {
        return Err(ApiError::method_not_allowed("OPTIONS, POST"));
    }
    let (parts, incoming) = req.into_parts();
    let head = Request::from_parts(parts.clone(), ());
    let base = access::base_of(ctx, pod, &head);
    let ws_base = base
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let body = super::read_small_body(Request::from_parts(parts, incoming), 64 * 1024).await?;
    let input: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the subscription is not JSON: {e}")))?;
    let ty = input["type"].as_str().unwrap_or_default();
    if ty != WEBSOCKET_TYPE && ty != "WebSocketChannel2023" {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_channel",
            format!("type {ty:?}: this endpoint makes WebSocketChannel2023 channels"),
        ));
    }
    let topic = input["topic"].as_str().ok_or_else(|| {
        ApiError::bad_request("the subscription needs a topic (a URL in this pod)")
    })?;
    let path = topic
        .split('#')
        .next()
        .and_then(|t| t.strip_prefix(&base))
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "topic_not_here",
                format!("topic {topic:?} is not a resource of this pod ({base}/…)"),
            )
        })?;
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the topic's path is not UTF-8"))?
        .to_string();
    let decision = access::decide(ctx, pod, &path, &head).await?;
    access::require(
        ctx,
        &decision,
        Modes::READ,
        &format!("subscribing to {path}"),
    )?;
    // The server chooses the end (a client's `endAt` is not taken; the answer says when).
    let now = now_millis();
    let end = now + MAX_LIFETIME_MS;
    // Expired channels of the pod go now; a pod has a bounded number of live ones.
    let mut live = 0;
    for d in ctx
        .app
        .meta
        .list_docs(CHANNEL_KIND, Some(&pod.pod_id))
        .await?
    {
        if d.doc["endAt"].as_i64().unwrap_or(0) <= now {
            let _ = ctx
                .app
                .meta
                .delete_doc(CHANNEL_KIND, &d.id, d.version)
                .await;
        } else {
            live += 1;
        }
    }
    if live >= MAX_CHANNELS {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_channels",
            format!(
                "pod {} has {MAX_CHANNELS} live notification channels",
                pod.pod_id
            ),
        ));
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let doc = DocRecord {
        kind: CHANNEL_KIND.into(),
        id: id.clone(),
        owner: pod.pod_id.clone(),
        version: 0,
        updated_at: now,
        doc: json!({"pod": pod.pod_id, "path": path, "base": base, "endAt": end, "by": ctx.principal.actor()}),
    };
    ctx.app.meta.put_doc(&doc, 0, now).await?;
    let channel = format!("{base}{WEBSOCKET_PATH}{id}");
    let answer = json!({
        "@context": ["https://www.w3.org/ns/solid/notification/v1"],
        "id": channel,
        "type": WEBSOCKET_TYPE,
        "topic": topic,
        "receiveFrom": format!("{ws_base}{WEBSOCKET_PATH}{id}"),
        "endAt": crate::http::ldp::xsd_datetime(end),
    });
    ctx.audit(
        "notifications.subscribe",
        &format!("{}:{path}", pod.pod_id),
        json!({"channel": id}),
    )
    .await;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/ld+json")
        .body(body::full(answer.to_string().into_bytes()))
        .unwrap_or_default())
}

/// `GET receiveFrom` with `Upgrade: websocket` (served here, whatever node owns the pod).
pub async fn websocket(
    app: &Arc<App>,
    pod_id: &str,
    id: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let unknown = || ApiError::not_found("no such notification channel (or it has ended)");
    let doc = app
        .meta
        .get_doc(CHANNEL_KIND, id)
        .await?
        .ok_or_else(unknown)?;
    let end = doc.doc["endAt"].as_i64().unwrap_or(0);
    if doc.owner != pod_id || end <= now_millis() {
        return Err(unknown());
    }
    let (Some(path), Some(base)) = (doc.doc["path"].as_str(), doc.doc["base"].as_str()) else {
        return Err(unknown());
    };
    let h = req.headers();
    let is_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = h.get("sec-websocket-key").cloned();
    let (true, Some(key)) = (is_ws, key) else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "a notification channel is read over a WebSocket",
        )
        .with_header(header::UPGRADE, "websocket"));
    };
    let offered_subprotocol = h
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == SUBPROTOCOL));
    let registration = app.notify.register(pod_id, path, base).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            "this node serves as many notification sockets as it may; try another",
        )
    })?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let until =
        tokio::time::Instant::now() + Duration::from_millis((end - now_millis()).max(0) as u64);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "notification socket upgrade failed");
                return;
            }
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        pump(ws, registration, until).await;
    });
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept);
    if offered_subprotocol {
        b = b.header(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    b.body(body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Sends the channel's notifications until the client goes, the channel ends or the hub drops
/// the subscriber (it fell behind).
async fn pump<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    mut registration: crate::notify::Registration,
    until: tokio::time::Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            m = registration.rx.recv() => match m {
                Some(text) => if tx.send(Message::Text(text.into())).await.is_err() { return },
                None => break,
            },
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Clients say nothing on this channel; pongs and stray messages are ignored.
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => if tx.send(Message::Ping(Vec::new().into())).await.is_err() { return },
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    let _ = tx.send(Message::Close(None)).await;
}
