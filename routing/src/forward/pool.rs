//! Keep-alive for forwarding: idle HTTP/1.1 exchanges over QUIC streams, kept per key (for
//! example (edge, service, tunnel connection), or (center, mesh connection)) for reuse by
//! later requests.
//!
//! A forwarded request would otherwise cost a new QUIC stream, an HTTP handshake on it and —
//! on an edge, which relays each stream to its own TCP connection — a new TCP connection to
//! the service. A stream whose response has been read to the end goes back to the pool, so one
//! stream is one keep-alive connection, end to end:
//!
//! - LIFO: the most recently used stream is taken first, so under a light load few stay open.
//! - A stream is reusable only when hyper says its connection is ready (the previous response
//!   read to the end, no `Connection: close` from the far side, not upgraded). A far side that
//!   closes an idle keep-alive connection finishes the stream, and the pooled exchange notices
//!   it is closed.
//! - Streams idle longer than [`IDLE_TIMEOUT`] are dropped by [`StreamPool::sweep`] (called
//!   every few seconds by whoever owns the pool); dropping one finishes the stream.
//! - At most `max_per_key` idle streams per key and [`MAX_IDLE_TOTAL`] in all: idle streams
//!   count against the peer's concurrent-stream limit, so they may never starve new ones.
//! - Keys include the QUIC connection's id: after a reconnect, streams of the old connection
//!   are never handed out (they fail anyway when their connection ends).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

/// How long an idle stream is kept for reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The most idle streams kept by one pool (a fraction of a connection's stream limit).
pub const MAX_IDLE_TOTAL: usize = 512;
/// How long a returned stream may take to become reusable (its response body read to the end)
/// before it is given up; long downloads simply do not come back.
const READY_WITHIN: Duration = Duration::from_secs(300);

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// The idle streams, by key. See the module docs.
pub struct StreamPool<K, B> {
    idle: Mutex<HashMap<K, Vec<Idle<B>>>>,
    max_per_key: usize,
}

impl<K, B> StreamPool<K, B>
where
    K: Hash + Eq + Clone + Send + 'static,
    B: http_body::Body + Send + 'static,
{
    /// A pool that keeps at most `max_per_key` idle streams per key.
    pub fn new(max_per_key: usize) -> StreamPool<K, B> {
        StreamPool {
            idle: Mutex::new(HashMap::new()),
            max_per_key,
        }
    }

    /// An idle, ready stream for `key`, if there is one (the most recently returned).
    pub fn checkout(&self, key: &K) -> Option<SendRequest<B>> {
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
    pub fn checkin_when_ready(self: &Arc<Self>, key: K, mut sender: SendRequest<B>) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            match tokio::time::timeout(READY_WITHIN, sender.ready()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock().expect("poisoned");
            let total: usize = idle.values().map(Vec::len).sum();
            let list = idle.entry(key).or_default();
            if list.len() < pool.max_per_key && total < MAX_IDLE_TOTAL {
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

    /// Drops every idle stream whose key matches (its connection is gone or replaced).
    pub fn forget(&self, matches: impl Fn(&K) -> bool) {
        self.idle
            .lock()
            .expect("poisoned")
            .retain(|k, _| !matches(k));
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
