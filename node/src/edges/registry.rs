//! The edges whose tunnel a center holds: node id → the QUIC connection, each edge's budget of
//! relayed connections, and the pool of idle HTTP exchanges to edges' services; and, on an
//! edge, its own tunnels to the centers ([`Uplinks`], for `super::uplink`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use xpod_routing::forward::StreamPool;

use crate::reply::body::Body;

/// Relayed connections (TCP forwards, TLS passthrough) one edge's tunnel carries at most: the
/// rest of its streams ([`xpod_tunnel::endpoint::MAX_STREAMS`]) stay free for HTTP, pods and
/// sandboxes, however many clients hold connections open.
pub const RELAYS_PER_EDGE: usize = 3072;
/// The most idle streams kept per (edge, service, connection).
pub const MAX_IDLE_PER_SERVICE: usize = 64;

/// Identifies the streams that can serve a request: same edge, same service, same connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    pub node: String,
    pub service: String,
    /// `quinn::Connection::stable_id` of the tunnel.
    pub conn: usize,
}

/// The edges whose tunnel this center holds: node id → the QUIC connection.
pub struct EdgeRegistry {
    conns: Mutex<HashMap<String, quinn::Connection>>,
    /// Per edge, the budget of relayed connections ([`RELAYS_PER_EDGE`]).
    relays: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Idle HTTP exchanges to the edges' services, for reuse.
    pub pool: Arc<StreamPool<Key, Body>>,
    /// What each edge was last told of the cluster's centers (a digest), and when
    /// (`crate::edges::learned`): an edge that reconnects often is not told again and again.
    told: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    /// Edges whose heartbeat is to be written with the next batch
    /// (`crate::edges::center::sweep` flushes it every [`TOUCH_EVERY`]): at most one entry per
    /// edge.
    touched: Mutex<std::collections::HashSet<String>>,
}

/// How often the batched heartbeats ([`EdgeRegistry::touch`]) are written.
pub const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The most edges [`EdgeRegistry::first_telling`] remembers (then it starts over).
const MAX_TOLD: usize = 100_000;

impl Default for EdgeRegistry {
    fn default() -> Self {
        EdgeRegistry {
            conns: Mutex::default(),
            relays: Mutex::default(),
            pool: Arc::new(StreamPool::new(MAX_IDLE_PER_SERVICE)),
            told: Mutex::default(),
            touched: Mutex::default(),
        }
    }
}

impl EdgeRegistry {
    /// Whether edge `node_id` should be told the list with `digest` now: not if it was told
    /// the same within `every`. Records it as told (see [`EdgeRegistry::untold`]).
    pub fn first_telling(&self, node_id: &str, digest: u64, every: std::time::Duration) -> bool {
        let mut told = self.told.lock().expect("poisoned");
        if told
            .get(node_id)
            .is_some_and(|(d, at)| *d == digest && at.elapsed() < every)
        {
            return false;
        }
        if told.len() >= MAX_TOLD {
            told.clear();
        }
        told.insert(node_id.to_string(), (digest, std::time::Instant::now()));
        true
    }

    /// Queues a heartbeat of `node_id` (nothing else of its row changed) for the next batch.
    pub fn touch(&self, node_id: &str) {
        let mut touched = self.touched.lock().expect("poisoned");
        if !touched.contains(node_id) {
            touched.insert(node_id.to_string());
        }
    }

    /// Drops a queued heartbeat of `node_id` (its session ended).
    pub fn untouch(&self, node_id: &str) {
        self.touched.lock().expect("poisoned").remove(node_id);
    }

    /// The queued heartbeats, emptying the queue.
    pub fn take_touched(&self) -> Vec<String> {
        std::mem::take(&mut *self.touched.lock().expect("poisoned"))
            .into_iter()
            .collect()
    }

    /// Forgets that `node_id` was told (the telling failed).
    pub fn untold(&self, node_id: &str) {
        self.told.lock().expect("poisoned").remove(node_id);
    }

    /// Per connected edge: its node id and the bytes its tunnel sent and received (QUIC's own
    /// counters of the connection, over UDP or carried over TCP).
    pub fn traffic(&self) -> Vec<(String, u64, u64)> {
        let conns = self.conns.lock().expect("poisoned");
        conns
            .iter()
            .map(|(id, c)| {
                let s = c.stats();
                (id.clone(), s.udp_tx.bytes, s.udp_rx.bytes)
            })
            .collect()
    }

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
            self.pool.forget(|k| k.node == node_id);
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

/// An edge's live tunnel connections, one per center it dialed.
#[derive(Default)]
pub struct Uplinks {
    conns: Mutex<Vec<quinn::Connection>>,
}

impl Uplinks {
    /// Records a connection whose tunnel just came up (closed ones are dropped).
    pub fn add(&self, conn: quinn::Connection) {
        let mut v = self.conns.lock().expect("poisoned");
        v.retain(|c| c.close_reason().is_none() && c.stable_id() != conn.stable_id());
        v.push(conn);
    }

    pub fn live(&self) -> Vec<quinn::Connection> {
        let mut v = self.conns.lock().expect("poisoned");
        v.retain(|c| c.close_reason().is_none());
        v.clone()
    }
}
