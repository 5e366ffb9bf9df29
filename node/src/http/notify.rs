//! Solid Notifications over HTTP (WebSocketChannel2023; the protocol:
//! https://solidproject.org/TR/notifications-protocol):
//!
//! - `POST /<pod>/.notifications/WebSocketChannel2023/` (JSON-LD: `type`, `topic`, optional
//!   `endAt`, not taken) subscribes to a resource of the pod; it needs Read on the topic (Web
//!   Access Control, at the pod's owner like every pod request). The answer names the channel
//!   and its `receiveFrom`, a capability URL (an unguessable id) valid until `endAt`
//!   ([`MAX_LIFETIME_MS`] from now). At most [`MAX_CHANNELS`] live channels per pod.
//! - `POST /<pod>/.notifications/WebhookChannel2023/` (with `sendTo`) makes a webhook of the
//!   webhook machinery (`crate::webhooks`: signing, retries, private destinations refused unless
//!   `[sandbox] webhooks_allow_private`); the owner stores a delivery per notification
//!   ([`after_write`]) and the webhook worker (one center at a time) sends it.
//! - `GET receiveFrom` with `Upgrade: websocket` is served by whichever center takes it (not
//!   forwarded): the channel is read from the metadata store, the socket registered in this
//!   node's [`crate::notify::Hub`], and every event for the topic announced anywhere in the
//!   cluster is sent as a text message. Pings every [`PING_EVERY`]; the socket closes at the
//!   channel's end.
//! - Ended channels (both kinds) are removed from the store every [`SWEEP_EVERY`]
//!   ([`sweep_loop`]), and a pod's when a new subscription is made for it.

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
/// Where a pod's webhook channels are made, below its root.
pub const WEBHOOK_PATH: &str = "/.notifications/WebhookChannel2023/";
const WEBHOOK_TYPE: &str = "http://www.w3.org/ns/solid/notifications#WebhookChannel2023";
/// The event type of Solid deliveries in the webhook machinery.
const WEBHOOK_EVENT: &str = "solid.notification";
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

/// `POST <pod>/.notifications/WebSocketChannel2023/` or `…/WebhookChannel2023/` (`webhook`):
/// see the module docs.
pub async fn subscribe(
    ctx: &Ctx,
    pod: &PodRecord,
    req: Request<Incoming>,
    webhook: bool,
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
    let (full, short) = if webhook {
        (WEBHOOK_TYPE, "WebhookChannel2023")
    } else {
        (WEBSOCKET_TYPE, "WebSocketChannel2023")
    };
    if ty != full && ty != short {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_channel",
            format!("type {ty:?}: this endpoint makes {short} channels"),
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
    // The same rules as a request's path (no `..`, no encoded slashes, …).
    let path = xpod_routing::path::parse_resource_path(path)
        .map_err(|e| ApiError::bad_request(format!("the topic's path: {e}")))?;
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
    if webhook {
        return subscribe_webhook(ctx, pod, &input, topic, &path, &base, end).await;
    }
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

/// A WebhookChannel2023 channel: a webhook of the webhook machinery (signing, retries, the
/// refusal of private destinations), owned by `solid:<pod>`, delivering notifications as sent.
async fn subscribe_webhook(
    ctx: &Ctx,
    pod: &PodRecord,
    input: &Value,
    topic: &str,
    path: &str,
    base: &str,
    end: i64,
) -> Result<Response<Body>, ApiError> {
    let send_to = input["sendTo"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("a WebhookChannel2023 subscription needs sendTo"))?;
    crate::webhooks::check_url(send_to, ctx.app.config.sandbox.webhooks_allow_private)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_send_to", e))?;
    let owner = hooks_owner(&pod.pod_id);
    let now = now_millis();
    let existing = ctx
        .app
        .meta
        .list_docs(crate::webhooks::KIND, Some(&owner))
        .await?;
    let mut live = 0;
    for d in existing {
        let end_at = d.doc["solid"]["endAt"].as_i64().unwrap_or(0);
        if end_at <= now {
            let _ = ctx
                .app
                .meta
                .delete_doc(crate::webhooks::KIND, &d.id, d.version)
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
                "pod {} has {MAX_CHANNELS} live webhook channels",
                pod.pod_id
            ),
        ));
    }
    let hook = crate::webhooks::Webhook {
        id: format!("wh_{}", hex::encode(rand::random::<[u8; 8]>())),
        owner: owner.clone(),
        url: send_to.to_string(),
        events: vec![WEBHOOK_EVENT.into()],
        description: Some(format!("Solid WebhookChannel2023 for {topic}")),
        secret: crate::webhooks::new_secret(),
        created_at: now,
        solid: Some(crate::webhooks::SolidTopic {
            pod: pod.pod_id.clone(),
            path: path.to_string(),
            base: base.to_string(),
            end_at: end,
        }),
    };
    let doc = DocRecord {
        kind: crate::webhooks::KIND.into(),
        id: hook.id.clone(),
        owner,
        version: 0,
        updated_at: now,
        doc: serde_json::to_value(&hook).unwrap_or_default(),
    };
    ctx.app.meta.put_doc(&doc, 0, now).await?;
    ctx.app.solid_hooks.invalidate(&pod.pod_id);
    ctx.audit(
        "notifications.subscribe",
        &format!("{}:{path}", pod.pod_id),
        json!({"channel": hook.id, "sendTo": send_to}),
    )
    .await;
    let answer = json!({
        "@context": ["https://www.w3.org/ns/solid/notification/v1"],
        "id": format!("{base}{WEBHOOK_PATH}{}", hook.id),
        "type": WEBHOOK_TYPE,
        "topic": topic,
        "sendTo": send_to,
        "endAt": crate::http::ldp::xsd_datetime(end),
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/ld+json")
        .body(body::full(answer.to_string().into_bytes()))
        .unwrap_or_default())
}

/// The webhook owner of a pod's Solid channels (`:` is never in an API key owner's name).
fn hooks_owner(pod: &str) -> String {
    format!("solid:{pod}")
}

/// After a committed write of `path` (at the pod's owner): announces it to every node's
/// sockets, and stores a delivery for every webhook channel of the resource or its container.
pub async fn after_write(
    ctx: &Ctx,
    pod: &str,
    path: &str,
    change: xpod_storage::meta::Change,
    etag: Option<&str>,
) {
    let ev = crate::notify::event(pod, path, change, etag);
    crate::notify::announce(ctx.app.meta.as_ref(), &ev).await;
    let hooks = match ctx.app.solid_hooks.get(pod) {
        Some(h) => h,
        None => match ctx
            .app
            .meta
            .list_docs(crate::webhooks::KIND, Some(&hooks_owner(pod)))
            .await
        {
            Ok(docs) => ctx.app.solid_hooks.put(
                pod,
                docs.into_iter()
                    .filter_map(|d| {
                        let h: crate::webhooks::Webhook = serde_json::from_value(d.doc).ok()?;
                        let s = h.solid?;
                        Some(crate::notify::HookRef {
                            id: h.id,
                            path: s.path,
                            base: s.base,
                            end_at: s.end_at,
                        })
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, pod, "webhook channels not read; notifications not sent");
                return;
            }
        },
    };
    let now = now_millis();
    let mut queued = false;
    for h in hooks.iter().filter(|h| h.end_at > now) {
        let Some(m) = crate::notify::notification(&ev, &h.path, &h.base) else {
            continue;
        };
        let payload: Value = serde_json::from_str(&m).unwrap_or_default();
        queued |= crate::webhooks::enqueue(
            &ctx.app,
            &h.id,
            WEBHOOK_EVENT,
            payload,
            Some("application/ld+json"),
        )
        .await
        .is_some();
    }
    if queued {
        crate::webhooks::wake().notify_one();
    }
}

/// How often ended channels (sockets' and webhooks') are removed from the store.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the channels that have ended: socket channels ([`CHANNEL_KIND`]) and Solid
/// webhook channels (webhooks with a `solid` topic). Every node may run it; deletes are
/// conditional on the version read.
pub async fn sweep(meta: &dyn xpod_storage::meta::MetaStore) {
    let now = now_millis();
    let ended =
        |d: &DocRecord, at: &Value| at.as_i64().is_some_and(|end| end <= now) && !d.id.is_empty();
    for (kind, end) in [
        (CHANNEL_KIND, "/endAt"),
        (crate::webhooks::KIND, "/solid/endAt"),
    ] {
        let docs = match meta.list_docs(kind, None).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, kind, "channel sweep skipped");
                continue;
            }
        };
        for d in docs {
            let at = d.doc.pointer(end).cloned().unwrap_or_default();
            if ended(&d, &at) {
                let _ = meta.delete_doc(kind, &d.id, d.version).await;
            }
        }
    }
}

/// Sweeps ended channels every [`SWEEP_EVERY`] until `shutdown`.
pub async fn sweep_loop(
    meta: Arc<dyn xpod_storage::meta::MetaStore>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => sweep(meta.as_ref()).await,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ended_channels_are_swept_and_live_ones_kept() {
        let meta = xpod_storage::meta::open("sqlite::memory:", 1)
            .await
            .unwrap();
        let now = now_millis();
        let doc = |kind: &str, id: &str, body: Value| DocRecord {
            kind: kind.into(),
            id: id.into(),
            owner: "solid:alice".into(),
            version: 0,
            updated_at: now,
            doc: body,
        };
        for d in [
            doc(CHANNEL_KIND, "old", json!({"endAt": now - 1})),
            doc(CHANNEL_KIND, "live", json!({"endAt": now + 60_000})),
            doc(
                crate::webhooks::KIND,
                "wh_old",
                json!({"solid": {"endAt": now - 1}}),
            ),
            doc(
                crate::webhooks::KIND,
                "wh_sandbox",
                json!({"url": "https://x"}),
            ),
        ] {
            assert!(meta.put_doc(&d, 0, now).await.unwrap());
        }
        sweep(meta.as_ref()).await;
        let left = |kind: &'static str| {
            let meta = meta.clone();
            async move {
                let mut ids: Vec<String> = meta
                    .list_docs(kind, None)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|d| d.id)
                    .collect();
                ids.sort();
                ids
            }
        };
        assert_eq!(left(CHANNEL_KIND).await, vec!["live".to_string()]);
        assert_eq!(
            left(crate::webhooks::KIND).await,
            vec!["wh_sandbox".to_string()],
            "a sandbox webhook has no end"
        );
    }
}
