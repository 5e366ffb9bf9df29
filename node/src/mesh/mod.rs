//! The mesh of centers (ARCHITECTURE §2, §5): every center keeps a mutual-TLS QUIC connection
//! to every other online center and forwards pod requests over it to the pod's owner.
//!
//! - **Discovery**: centers are the `nodes` rows with `node_type = center`, status online, a
//!   QUIC address and a heartbeat younger than [`peers::STALE_AFTER`]. [`Mesh::run`] rereads them every
//!   [`peers::REFRESH`] and dials those it has no live connection to.
//! - **Connections**: each center dials every other one from its own QUIC endpoint (the same UDP
//!   port it serves), so a pair of centers has two connections, and each side opens streams
//!   only on the connection it dialed (no tie-breaking, no shared state). The peer's node id is
//!   read from its verified certificate and must be the one dialed. A failed dial is retried on
//!   the next refresh, and not sooner than [`peers::RETRY_AFTER`] on the request path.
//! - **Streams**: keep-alive HTTP/1.1 over pooled streams that start with the
//!   [`StreamHeader`](xpod_tunnel::proto::StreamHeader) `PodRequests`; each request names its
//!   pod, epoch, hops and client in headers ([`forward`] sends with the one forwarder of
//!   `xpod_routing::forward`, `crate::front::streams` answers with the same request path as the TCP
//!   listener). The pool is swept every [`peers::REFRESH`].
//! - **Owners**: [`route`] decides local or forward from the owner table (`xpod_routing::owners`),
//!   kept fresh by the change feed ([`follow_feed`]).

pub mod forward;
pub mod peers;
pub mod route;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use xpod_storage::meta::FeedEvent;

use crate::app::App;

pub use peers::{Mesh, PeerKey};

/// The safety net behind the change feed: the owner table is dropped this often.
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Keeps the owner table in step with the change feed until `shutdown`: an owner event drops
/// its pod, a reset (feed reconnected, or events lost) drops everything, and so does the
/// periodic re-check every [`RECHECK_EVERY`]. A key event (`key:<id>`, a revocation) drops the
/// key from the key cache ([`crate::key_cache`]), a reset drops every key. With `XPOD_TEST_IGNORE_FEED=1` (tests only: it
/// simulates lost notifications) events are ignored and only the re-check runs.
pub async fn follow_feed(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let ignore = std::env::var("XPOD_TEST_IGNORE_FEED").is_ok_and(|v| v == "1");
    if ignore {
        tracing::warn!("XPOD_TEST_IGNORE_FEED=1: ignoring change-feed events (a test setting; never in production)");
    }
    let mut feed = app.meta.subscribe();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = recheck.tick() => {
                // Not while the store is unreachable: the tables could not refill, and nothing
                // can change owners meanwhile (the reset after the feed reconnects clears them).
                let reachable = tokio::time::timeout(Duration::from_secs(2), app.meta.ping()).await;
                if matches!(reachable, Ok(Ok(()))) {
                    app.owners.clear();
                    app.acls.clear();
                }
            }
            ev = feed.next() => match ev {
                None => break,
                // Key events are never ignored: the flag simulates lost owner events only.
                Some(FeedEvent::Key { key_id }) => app.keys.invalidate(&key_id),
                Some(_) if ignore => {}
                Some(FeedEvent::Reset) => {
                    app.owners.clear();
                    app.keys.clear();
                    app.acls.clear();
                }
                Some(FeedEvent::PodOwner { pod_id, .. }) => {
                    app.owners.invalidate(&pod_id);
                    app.acls.invalidate(&pod_id);
                    app.solid_hooks.invalidate(&pod_id);
                }
            },
        }
    }
}
