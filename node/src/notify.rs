//! Solid Notifications (WebSocketChannel2023) on this node: the subscribers connected here, and
//! the events that reach them.
//!
//! - A write's owner announces it ([`announce`], through `MetaStore::announce`: PostgreSQL
//!   `NOTIFY`, so every center hears it wherever the pod lives, also after a migration).
//! - [`follow`] hands every announced event to the [`Hub`], which sends it to the WebSockets
//!   connected to this node whose topic is the resource (`Create`, `Update`, `Delete`) or its
//!   container (`Add`, `Remove` with `target`), as Activity Streams JSON-LD.
//! - A subscriber that does not keep up (its queue of [`QUEUE`] messages is full) is dropped;
//!   at most [`MAX_SUBSCRIBERS`] on a node.
//!
//! Channels (the subscription and its capability URL) are documents in the metadata store
//! (kind [`CHANNEL_KIND`]), so the WebSocket may be opened at any center: `crate::http::notify`.
//! WebhookChannel2023 channels are webhooks (`crate::webhooks`); the owner keeps a pod's list of
//! them in a [`HookCache`] (fresh for [`HOOKS_FRESH`]) to raise their deliveries after a write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::mpsc;
use xpod_storage::meta::{Change, MetaStore, ResourceEvent};

/// Messages queued per subscriber before it is dropped.
pub const QUEUE: usize = 64;
/// WebSockets served by one node at most.
pub const MAX_SUBSCRIBERS: usize = 10_000;
/// The metadata documents that hold channels.
pub const CHANNEL_KIND: &str = "solid-channel";

struct Subscriber {
    id: u64,
    /// The URL base the subscriber addressed the pod with (`scheme://host[/<pod>]`).
    base: String,
    tx: mpsc::Sender<String>,
}

/// The WebSockets connected to this node, by (pod, topic path).
#[derive(Default)]
pub struct Hub {
    subs: Mutex<HashMap<(String, String), Vec<Subscriber>>>,
    count: AtomicU64,
    next: AtomicU64,
}

/// A registration; dropping it unregisters.
pub struct Registration {
    hub: Arc<Hub>,
    key: (String, String),
    id: u64,
    pub rx: mpsc::Receiver<String>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut subs = self.hub.subs.lock().expect("poisoned");
        if let Some(v) = subs.get_mut(&self.key) {
            let before = v.len();
            v.retain(|s| s.id != self.id);
            if v.len() < before {
                self.hub.count.fetch_sub(1, Ordering::Relaxed);
            }
            if v.is_empty() {
                subs.remove(&self.key);
            }
        }
    }
}

impl Hub {
    /// Registers a subscriber to `path` of `pod`; `None` when the node has
    /// [`MAX_SUBSCRIBERS`] already.
    pub fn register(self: &Arc<Self>, pod: &str, path: &str, base: &str) -> Option<Registration> {
        if self.count.fetch_add(1, Ordering::Relaxed) >= MAX_SUBSCRIBERS as u64 {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let key = (pod.to_string(), path.to_string());
        self.subs
            .lock()
            .expect("poisoned")
            .entry(key.clone())
            .or_default()
            .push(Subscriber {
                id,
                base: base.to_string(),
                tx,
            });
        Some(Registration {
            hub: self.clone(),
            key,
            id,
            rx,
        })
    }

    /// How many subscribers are connected here.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `ev` to the subscribers of its resource and of its container.
    pub fn dispatch(&self, ev: &ResourceEvent) {
        let mut topics = vec![ev.path.clone()];
        topics.extend(crate::http::ldp::parent(&ev.path));
        let mut subs = self.subs.lock().expect("poisoned");
        for topic in topics {
            if let Some(v) = subs.get_mut(&(ev.pod_id.clone(), topic.clone())) {
                let before = v.len();
                // A subscriber whose queue is full (or closed) is dropped.
                v.retain(|s| match notification(ev, &topic, &s.base) {
                    Some(m) => s.tx.try_send(m).is_ok(),
                    None => true,
                });
                self.count
                    .fetch_sub((before - v.len()) as u64, Ordering::Relaxed);
            }
        }
        subs.retain(|_, v| !v.is_empty());
    }
}

/// The notification a subscriber of `topic` (a path of the event's pod, addressed with `base`)
/// gets for `ev`: `Create`/`Update`/`Delete` when the topic is the resource, `Add`/`Remove`
/// when it is the resource's container; `None` when the event says nothing about the topic.
pub fn notification(ev: &ResourceEvent, topic: &str, base: &str) -> Option<String> {
    if topic == ev.path {
        let kind = match ev.change {
            Change::Created => "Create",
            Change::Updated => "Update",
            Change::Deleted => "Delete",
        };
        return Some(message(ev, kind, base, &ev.path, None));
    }
    if crate::http::ldp::parent(&ev.path).as_deref() != Some(topic) {
        return None;
    }
    let kind = match ev.change {
        Change::Created => "Add",
        Change::Deleted => "Remove",
        Change::Updated => return None,
    };
    Some(message(ev, kind, base, &ev.path, Some(topic)))
}

fn url(base: &str, path: &str) -> String {
    format!("{base}{}", xpod_routing::encode_path(path))
}

/// One notification (the Community Solid Server's shape): `object` the resource, `target` the
/// container for `Add`/`Remove`, `state` the new entity tag.
fn message(ev: &ResourceEvent, kind: &str, base: &str, path: &str, target: Option<&str>) -> String {
    let topic = url(base, target.unwrap_or(path));
    let mut m = json!({
        "@context": ["https://www.w3.org/ns/activitystreams", "https://www.w3.org/ns/solid/notification/v1"],
        "id": format!("urn:{}:{topic}", ev.at),
        "type": kind,
        "object": url(base, path),
        "published": crate::http::ldp::xsd_datetime(ev.at),
    });
    if let Some(t) = target {
        m["target"] = json!(url(base, t));
    }
    if let Some(etag) = &ev.etag {
        if target.is_none() {
            m["state"] = json!(format!("\"{etag}\""));
        }
    }
    m.to_string()
}

/// A WebhookChannel2023 channel, as the owner needs it to raise its deliveries.
#[derive(Clone, Debug)]
pub struct HookRef {
    pub id: String,
    pub path: String,
    pub base: String,
    pub end_at: i64,
}

/// How long the owner trusts its list of a pod's webhook channels (it also drops it when a
/// subscription is made through it, and when the pod's owner changes).
pub const HOOKS_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// A pod's webhook channels and when they were read.
type Hooks = (std::time::Instant, Arc<Vec<HookRef>>);

/// A pod's webhook channels, per pod, as last read.
#[derive(Default)]
pub struct HookCache {
    pods: Mutex<HashMap<String, Hooks>>,
}

impl HookCache {
    pub fn get(&self, pod: &str) -> Option<Arc<Vec<HookRef>>> {
        let m = self.pods.lock().expect("poisoned");
        m.get(pod)
            .filter(|(at, _)| at.elapsed() < HOOKS_FRESH)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, pod: &str, hooks: Vec<HookRef>) -> Arc<Vec<HookRef>> {
        let hooks = Arc::new(hooks);
        let mut m = self.pods.lock().expect("poisoned");
        if m.len() >= 10_000 {
            m.clear();
        }
        m.insert(pod.to_string(), (std::time::Instant::now(), hooks.clone()));
        hooks
    }

    pub fn invalidate(&self, pod: &str) {
        self.pods.lock().expect("poisoned").remove(pod);
    }
}

/// The event of a write committed now.
pub fn event(pod: &str, path: &str, change: Change, etag: Option<&str>) -> ResourceEvent {
    ResourceEvent {
        pod_id: pod.to_string(),
        path: path.to_string(),
        change,
        etag: etag.map(str::to_string),
        at: xpod_storage::meta::now_millis(),
    }
}

/// Announces a committed write to every node (best effort: a lost announcement is a lost
/// notification).
pub async fn announce(meta: &dyn MetaStore, ev: &ResourceEvent) {
    if let Err(e) = meta.announce(ev).await {
        tracing::debug!(error = %e, pod = %ev.pod_id, path = %ev.path, "announcing a resource event failed");
    }
}

/// Hands announced events to `hub` until `shutdown` (events missed while lagging are lost).
pub async fn follow(
    meta: Arc<dyn MetaStore>,
    hub: Arc<Hub>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut events = meta.resource_events();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            ev = events.recv() => match ev {
                Ok(ev) => hub.dispatch(&ev),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "notifications: resource events lost (too many at once)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(path: &str, change: Change) -> ResourceEvent {
        ResourceEvent {
            pod_id: "alice".into(),
            path: path.into(),
            change,
            etag: Some("e2".into()),
            at: 1_800_000_000_000,
        }
    }

    #[tokio::test]
    async fn resource_and_container_subscribers_get_their_events() {
        let hub = Arc::new(Hub::default());
        let mut doc = hub
            .register("alice", "/notes/a", "https://h/alice")
            .unwrap();
        let mut dir = hub.register("alice", "/notes/", "https://h/alice").unwrap();
        let mut other = hub.register("bob", "/notes/a", "https://h/bob").unwrap();
        hub.dispatch(&ev("/notes/a", Change::Created));
        let m: serde_json::Value = serde_json::from_str(&doc.rx.recv().await.unwrap()).unwrap();
        assert_eq!(m["type"], "Create");
        assert_eq!(m["object"], "https://h/alice/notes/a");
        assert_eq!(m["state"], "\"e2\"");
        let m: serde_json::Value = serde_json::from_str(&dir.rx.recv().await.unwrap()).unwrap();
        assert_eq!(
            (m["type"].as_str(), m["target"].as_str()),
            (Some("Add"), Some("https://h/alice/notes/"))
        );
        assert!(
            other.rx.try_recv().is_err(),
            "another pod's subscriber hears nothing"
        );
        hub.dispatch(&ev("/notes/a", Change::Updated));
        assert!(
            dir.rx.try_recv().is_err(),
            "an update is not a membership change"
        );
        hub.dispatch(&ev("/notes/a", Change::Deleted));
        let _update = doc.rx.recv().await.unwrap();
        let m: serde_json::Value = serde_json::from_str(&doc.rx.recv().await.unwrap()).unwrap();
        assert_eq!(m["type"], "Delete");
        let m: serde_json::Value = serde_json::from_str(&dir.rx.recv().await.unwrap()).unwrap();
        assert_eq!(m["type"], "Remove");
        assert_eq!(hub.len(), 3);
        drop(other);
        assert_eq!(hub.len(), 2);
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped() {
        let hub = Arc::new(Hub::default());
        let slow = hub.register("alice", "/a", "https://h/alice").unwrap();
        for _ in 0..=QUEUE {
            hub.dispatch(&ev("/a", Change::Updated));
        }
        assert_eq!(hub.len(), 0, "dropped once its queue was full");
        drop(slow);
        assert_eq!(hub.len(), 0);
    }
}
