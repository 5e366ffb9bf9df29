//! Keep-alive for HTTP forwarding to edges: idle HTTP/1.1 exchanges over QUIC streams, kept per
//! (edge, service, tunnel connection) for reuse by later requests.
//!
//! A forwarded request used to cost a new QUIC stream, an HTTP handshake on it and — on the
//! edge, which relays each stream to its own TCP connection — a new TCP connection to the
//! service. Now a stream whose response has been read to the end goes back to the pool, so one
//! stream is one keep-alive connection to the service, end to end:
//!
//! - LIFO: the most recently used stream is taken first, so under a light load few stay open.
//! - A stream is reusable only when hyper says its connection is ready (the previous response
//!   read to the end, no `Connection: close` from the service, not upgraded). A service that
//!   closes an idle keep-alive connection makes the edge finish the stream, and the pooled
//!   exchange notices it is closed.
//! - Streams idle longer than [`IDLE_TIMEOUT`] are dropped by [`StreamPool::sweep`] (the
//!   center's presence sweeper calls it every few seconds); dropping one finishes the stream and
//!   the edge closes its connection to the service.
//! - At most [`MAX_IDLE_PER_SERVICE`] idle streams per key; more are closed.
//! - The key includes the tunnel connection's id: after an edge reconnects, streams of the old
//!   connection are never handed out (they fail anyway when their connection ends).
//!
//! A request sent on a pooled stream that the service closes at that very moment is sent again on
//! a new stream by the caller when hyper hands it back unsent (`try_send_request`) or when it is
//! an idempotent request without a body (as Go's `http.Transport` and nginx's
//! `proxy_next_upstream` do); otherwise the client gets a 502.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use crate::http::body::Body;

/// How long an idle stream is kept for reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The most idle streams kept per (edge, service, connection).
pub const MAX_IDLE_PER_SERVICE: usize = 64;
/// How long a returned stream may take to become reusable (its response body read to the end)
/// before it is given up; long downloads simply do not come back.
const READY_WITHIN: Duration = Duration::from_secs(300);

/// Identifies the streams that can serve a request: same edge, same service, same connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    pub node: String,
    pub service: String,
    /// `quinn::Connection::stable_id` of the tunnel.
    pub conn: usize,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The idle streams, by key. See the module docs.
#[derive(Default)]
pub struct StreamPool {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
}

impl StreamPool {
    /// An idle, ready stream for `key`, if there is one (the most recently returned).
    pub fn checkout(&self, key: &Key) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().expect("poisoned");
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < IDLE_TIMEOUT && i.sender.is_ready() {
                found = Some(i.sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Returns `sender` to the pool once its current exchange is over (response body read to
    /// the end); a connection that closes instead is forgotten.
    pub fn checkin_when_ready(self: &Arc<Self>, key: Key, mut sender: SendRequest<Body>) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            match tokio::time::timeout(READY_WITHIN, sender.ready()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock().expect("poisoned");
            let list = idle.entry(key).or_default();
            if list.len() < MAX_IDLE_PER_SERVICE {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }

    /// Drops streams idle for longer than [`IDLE_TIMEOUT`] or already closed. Returns how many
    /// idle streams remain.
    pub fn sweep(&self) -> usize {
        let mut idle = self.idle.lock().expect("poisoned");
        idle.retain(|_, list| {
            list.retain(|i| i.since.elapsed() < IDLE_TIMEOUT && !i.sender.is_closed());
            !list.is_empty()
        });
        idle.values().map(Vec::len).sum()
    }

    /// Drops every idle stream of `node` (its tunnel is gone or replaced).
    pub fn forget_node(&self, node: &str) {
        self.idle
            .lock()
            .expect("poisoned")
            .retain(|k, _| k.node != node);
    }

    /// How many idle streams the pool holds.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .expect("poisoned")
            .values()
            .map(Vec::len)
            .sum()
    }
}
