//! The change feed: ownership hints fanned out to subscribers; and resource events (a document
//! created, updated, deleted — for Solid notifications), on a feed of their own so that a burst
//! of writes never costs the ownership subscribers a reset.
//!
//! Events are hints only; correctness comes from the epoch check in every write. A subscriber
//! that falls behind (broadcast lag) gets a [`FeedEvent::Reset`] instead of the lost events, so
//! it drops its cache just as after a reconnect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

/// One change-feed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedEvent {
    /// Drop every cached owner and reload: the feed (re)connected or events were lost.
    Reset,
    /// The pod's owner or epoch changed (or the pod was created); payload `pod:<id>:<epoch>`.
    PodOwner { pod_id: String, epoch: i64 },
    /// An API key changed (revoked); payload `key:<id>`. Nodes drop it from their key cache.
    Key { key_id: String },
}

impl FeedEvent {
    /// The NOTIFY payload for a pod event: `pod:<id>:<epoch>`.
    pub fn payload(pod_id: &str, epoch: i64) -> String {
        format!("pod:{pod_id}:{epoch}")
    }

    /// The NOTIFY payload for a key event: `key:<id>`.
    pub fn key_payload(key_id: &str) -> String {
        format!("key:{key_id}")
    }

    /// Parses a NOTIFY payload; `None` for anything malformed.
    pub fn parse_payload(payload: &str) -> Option<FeedEvent> {
        if let Some(key_id) = payload.strip_prefix("key:") {
            return (!key_id.is_empty()).then(|| FeedEvent::Key {
                key_id: key_id.to_string(),
            });
        }
        let rest = payload.strip_prefix("pod:")?;
        let (pod_id, epoch) = rest.rsplit_once(':')?;
        if pod_id.is_empty() {
            return None;
        }
        let epoch = epoch.parse().ok()?;
        Some(FeedEvent::PodOwner {
            pod_id: pod_id.to_string(),
            epoch,
        })
    }
}

/// What happened to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

/// A resource event, announced by the pod's owner after a write commits. Best effort: a lost
/// event is a lost notification, nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceEvent {
    pub pod_id: String,
    pub path: String,
    pub change: Change,
    /// The new entity tag (`None` after a delete).
    pub etag: Option<String>,
    /// When it happened (Unix ms).
    pub at: i64,
}

impl ResourceEvent {
    /// The NOTIFY payload: `res:<c|u|d>:<at>:<etag or ->:<pod>:<path>` (the path last, since
    /// it may hold `:`).
    pub fn payload(&self) -> String {
        let c = match self.change {
            Change::Created => 'c',
            Change::Updated => 'u',
            Change::Deleted => 'd',
        };
        format!(
            "res:{c}:{}:{}:{}:{}",
            self.at,
            self.etag.as_deref().unwrap_or("-"),
            self.pod_id,
            self.path
        )
    }

    /// Parses a payload; `None` for anything malformed.
    pub fn parse(payload: &str) -> Option<ResourceEvent> {
        let mut it = payload.strip_prefix("res:")?.splitn(5, ':');
        let change = match it.next()? {
            "c" => Change::Created,
            "u" => Change::Updated,
            "d" => Change::Deleted,
            _ => return None,
        };
        let at = it.next()?.parse().ok()?;
        let etag = match it.next()? {
            "-" => None,
            e if !e.is_empty() => Some(e.to_string()),
            _ => return None,
        };
        let pod_id = it.next().filter(|p| !p.is_empty())?.to_string();
        let path = it.next().filter(|p| p.starts_with('/'))?.to_string();
        Some(ResourceEvent {
            pod_id,
            path,
            change,
            etag,
            at,
        })
    }
}

/// The resource events of a store: send by a backend, received by every subscriber (one that
/// lags loses the events it missed).
#[derive(Clone, Debug)]
pub struct ResourceHub {
    tx: broadcast::Sender<ResourceEvent>,
}

impl Default for ResourceHub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(4096);
        ResourceHub { tx }
    }
}

impl ResourceHub {
    pub fn send(&self, ev: ResourceEvent) {
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ResourceEvent> {
        self.tx.subscribe()
    }
}

/// The sending half, owned by a store.
#[derive(Clone, Debug)]
pub struct FeedHub {
    tx: broadcast::Sender<FeedEvent>,
    live: Arc<AtomicBool>,
}

impl Default for FeedHub {
    fn default() -> Self {
        Self::new()
    }
}

impl FeedHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            tx,
            live: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the feed live (sends [`FeedEvent::Reset`] to everyone) or down. A backend calls
    /// `set_live(true)` after every successful (re)connect and LISTEN, `set_live(false)` when
    /// the connection drops.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
        if live {
            self.send(FeedEvent::Reset);
        }
    }

    /// Sends to every current subscriber (no-op without subscribers).
    pub fn send(&self, ev: FeedEvent) {
        let _ = self.tx.send(ev);
    }

    /// A new subscriber; it receives events sent from now on.
    /// If the feed is live already, the subscriber's first event is a [`FeedEvent::Reset`];
    /// otherwise it gets one when the feed goes live.
    pub fn subscribe(&self) -> ChangeFeed {
        let rx = self.tx.subscribe();
        let pending_reset = self.live.load(Ordering::SeqCst);
        ChangeFeed { rx, pending_reset }
    }
}

/// A subscription to the change feed.
#[derive(Debug)]
pub struct ChangeFeed {
    rx: broadcast::Receiver<FeedEvent>,
    pending_reset: bool,
}

impl ChangeFeed {
    /// The next event; `None` when the store is gone.
    pub async fn next(&mut self) -> Option<FeedEvent> {
        if std::mem::take(&mut self.pending_reset) {
            return Some(FeedEvent::Reset);
        }
        match self.rx.recv().await {
            Ok(ev) => Some(ev),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(FeedEvent::Reset),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = FeedEvent::payload("alice", 7);
        assert_eq!(p, "pod:alice:7");
        assert_eq!(
            FeedEvent::parse_payload(&FeedEvent::key_payload("0123456789ab")),
            Some(FeedEvent::Key {
                key_id: "0123456789ab".into()
            })
        );
        assert_eq!(FeedEvent::parse_payload("key:"), None);
        assert_eq!(
            FeedEvent::parse_payload(&p),
            Some(FeedEvent::PodOwner {
                pod_id: "alice".into(),
                epoch: 7
            })
        );
        assert_eq!(FeedEvent::parse_payload("pod::1"), None);
        assert_eq!(FeedEvent::parse_payload("pod:a:x"), None);
        assert_eq!(FeedEvent::parse_payload("node:a:1"), None);
    }

    #[test]
    fn resource_payload_round_trip() {
        let ev = ResourceEvent {
            pod_id: "alice".into(),
            path: "/notes/a:b c".into(),
            change: Change::Updated,
            etag: Some("e1".into()),
            at: 17,
        };
        assert_eq!(ResourceEvent::parse(&ev.payload()), Some(ev.clone()));
        let gone = ResourceEvent {
            change: Change::Deleted,
            etag: None,
            ..ev
        };
        assert_eq!(ResourceEvent::parse(&gone.payload()), Some(gone));
        assert_eq!(ResourceEvent::parse("res:x:1:-:a:/p"), None);
        assert_eq!(ResourceEvent::parse("res:c:1:-:a:p"), None);
        assert_eq!(ResourceEvent::parse("pod:a:1"), None);
    }
}
