//! The change feed: ownership hints fanned out to subscribers.
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
}
