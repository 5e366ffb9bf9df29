//! The connections of this center to the other centers: discovery from the `nodes` rows, dials
//! (one connection per peer, from this node's own QUIC endpoint), revocation, and the pool of
//! idle pod-request streams per peer. Knows nothing of requests: [`super::forward`] sends them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use xpod_routing::forward::StreamPool;
use xpod_storage::meta::{self, NodeRecord, NodeStatus, NodeStore, NodeType};

use crate::node_policy::Policies;
use crate::reply::body::Body;

/// How often the list of centers is reread and missing connections dialed.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How long a row read for a request is kept after it was read (see [`Mesh::node`]).
const KEEP_ROWS: Duration = Duration::from_secs(600);
/// A center whose heartbeat is older than this is not dialed.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// After a failed dial, or a connection that died, the request path does not dial the same
/// peer again for this long (requests answer 503 at once instead of waiting for a dial that
/// will likely fail); the refresh loop keeps dialing every [`REFRESH`] and clears it when a
/// dial succeeds.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Upper bound for a dial on the request path.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// The most idle pod-request streams kept per next hop (and connection).
pub const MAX_IDLE_PER_PEER: usize = 256;

/// Identifies the streams that can carry a pod request: same next hop, same connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct PeerKey {
    pub node: String,
    /// `quinn::Connection::stable_id`.
    pub conn: usize,
}

/// The mesh state of one node. Empty (and never dialing) on nodes without a QUIC endpoint.
pub struct Mesh {
    dialer: OnceLock<Dialer>,
    state: Mutex<State>,
    /// Idle keep-alive streams of pod requests, per next hop ([`super::forward`]).
    pub pool: Arc<StreamPool<PeerKey, Body>>,
}

impl Default for Mesh {
    fn default() -> Self {
        Mesh {
            dialer: OnceLock::new(),
            state: Mutex::default(),
            pool: Arc::new(StreamPool::new(MAX_IDLE_PER_PEER)),
        }
    }
}

struct Dialer {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
}

#[derive(Default)]
struct State {
    /// Connections this node dialed, by peer node id.
    peers: HashMap<String, quinn::Connection>,
    /// The last known `nodes` rows, by node id, and when each was read: every center's at
    /// each refresh, an edge's when it was last asked for (kept for [`KEEP_ROWS`], to route
    /// by while the store is unreachable).
    nodes: HashMap<String, (NodeRecord, Instant)>,
    /// The centers among them, sorted by id.
    centers: Arc<Vec<NodeRecord>>,
    /// When a dial to a peer last failed.
    failed: HashMap<String, Instant>,
    /// Peers the refresh loop is dialing now (so a slow dial is not started twice).
    dialing: std::collections::HashSet<String>,
}

impl Mesh {
    /// Enables dialing from `endpoint` (a center's own QUIC endpoint) with `client`.
    pub fn enable(&self, endpoint: quinn::Endpoint, client: quinn::ClientConfig) {
        let _ = self.dialer.set(Dialer { endpoint, client });
    }

    /// Whether this node can dial other centers.
    pub fn enabled(&self) -> bool {
        self.dialer.get().is_some()
    }

    /// The live connection to center `node_id`, dialing it now if there is none (unless a dial
    /// failed less than [`RETRY_AFTER`] ago).
    pub async fn connection(
        &self,
        policies: &Policies,
        nodes: &dyn NodeStore,
        node_id: &str,
    ) -> Result<quinn::Connection, String> {
        if policies.is_revoked(node_id) {
            return Err(format!("center {node_id} is revoked"));
        }
        if let Some(c) = self.live(node_id) {
            return Ok(c);
        }
        let recent_failure = {
            let state = self.state.lock().expect("poisoned");
            state
                .failed
                .get(node_id)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        };
        if recent_failure {
            return Err(format!("center {node_id} was unreachable moments ago"));
        }
        let node = self.node(nodes, node_id).await?;
        self.dial(&node).await
    }

    fn live(&self, node_id: &str) -> Option<quinn::Connection> {
        let mut state = self.state.lock().expect("poisoned");
        let conn = state.peers.get(node_id)?;
        if conn.close_reason().is_none() {
            return Some(conn.clone());
        }
        // It died (idle timeout, an unresponsive peer, a restart): remember it as a failure.
        state.peers.remove(node_id);
        state.failed.insert(node_id.to_string(), Instant::now());
        None
    }

    /// The `nodes` row of `node_id`, as read less than [`REFRESH`] ago, else read now; while
    /// the store cannot be read, the last known row (a PostgreSQL outage must not cut the
    /// mesh's routes).
    pub async fn node(&self, nodes: &dyn NodeStore, node_id: &str) -> Result<NodeRecord, String> {
        let known = self
            .state
            .lock()
            .expect("poisoned")
            .nodes
            .get(node_id)
            .cloned();
        if let Some((n, at)) = &known {
            if at.elapsed() < REFRESH {
                return Ok(n.clone());
            }
        }
        let n = match nodes.get_node(node_id).await {
            Ok(Some(n)) => n,
            Ok(None) => return Err(format!("node {node_id} is not known to the cluster")),
            Err(e) => {
                return match known {
                    Some((n, _)) => Ok(n),
                    None => Err(format!("reading node {node_id}: {e}")),
                }
            }
        };
        self.state
            .lock()
            .expect("poisoned")
            .nodes
            .insert(node_id.to_string(), (n.clone(), Instant::now()));
        Ok(n)
    }

    async fn dial(&self, node: &NodeRecord) -> Result<quinn::Connection, String> {
        let id = &node.node_id;
        let result = self.try_dial(node).await;
        let mut state = self.state.lock().expect("poisoned");
        match &result {
            Ok(conn) => {
                state.failed.remove(id);
                // Another dial may have won meanwhile; keep the newer one, close neither.
                state.peers.insert(id.clone(), conn.clone());
                tracing::info!(peer = %id, remote = %conn.remote_address(), "mesh connection up");
            }
            Err(e) => {
                state.failed.insert(id.clone(), Instant::now());
                tracing::debug!(peer = %id, error = %e, "mesh dial failed");
            }
        }
        result
    }

    async fn try_dial(&self, node: &NodeRecord) -> Result<quinn::Connection, String> {
        let dialer = self
            .dialer
            .get()
            .ok_or("this node has no QUIC endpoint (no node certificate), so it cannot reach other centers")?;
        if node.node_type != NodeType::Center {
            return Err(format!("node {} is not a center", node.node_id));
        }
        let text = node
            .quic_address
            .as_deref()
            .ok_or_else(|| format!("center {} has not published a QUIC address", node.node_id))?;
        let addr = resolve(text).await?;
        let connecting = dialer
            .endpoint
            .connect_with(dialer.client.clone(), addr, "xpod")
            .map_err(|e| format!("cannot dial {} at {addr}: {e}", node.node_id))?;
        let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                format!(
                    "center {} at {addr} did not answer within {DIAL_TIMEOUT:?}",
                    node.node_id
                )
            })?
            .map_err(|e| format!("connecting to center {} at {addr}: {e}", node.node_id))?;
        let peer = peer_id(&conn)?;
        if peer != node.node_id {
            conn.close(0u32.into(), b"not the center that was dialed");
            return Err(format!(
                "{addr} presented a certificate for {peer}, not {}",
                node.node_id
            ));
        }
        Ok(conn)
    }

    /// The centers' rows as of the last refresh (every [`REFRESH`]; empty before the first),
    /// sorted by id: for callers that need the list often and can take it a moment old.
    pub fn known_centers(&self) -> Arc<Vec<NodeRecord>> {
        self.state.lock().expect("poisoned").centers.clone()
    }

    /// Closes the connection this node dialed to `node_id` (a revoked node); whether there was one.
    pub fn close_peer(&self, node_id: &str, reason: &[u8]) -> bool {
        let conn = self.state.lock().expect("poisoned").peers.remove(node_id);
        self.pool.forget(|k| k.node == node_id);
        match conn {
            Some(c) => {
                c.close(crate::node_policy::REVOKED_CODE.into(), reason);
                true
            }
            None => false,
        }
    }

    /// How many live connections this node dialed.
    pub fn live_peers(&self) -> usize {
        let state = self.state.lock().expect("poisoned");
        state
            .peers
            .values()
            .filter(|c| c.close_reason().is_none())
            .count()
    }

    /// Rereads the nodes and dials every online center without a live connection, every
    /// [`REFRESH`], until `shutdown`; then closes the connections it dialed.
    /// `self_id` is this node's id (never dialed).
    pub async fn run(
        self: Arc<Self>,
        nodes_store: Arc<dyn NodeStore>,
        self_id: String,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(REFRESH);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            self.pool.sweep();
            // Centers only: edges' rows are read when a request needs one (thousands of
            // them would cost a listing every refresh).
            let nodes = match nodes_store.list_centers().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "mesh: cannot list nodes");
                    continue;
                }
            };
            let now = meta::now_millis();
            let wanted: Vec<NodeRecord> = nodes
                .iter()
                .filter(|n| {
                    n.node_type == NodeType::Center
                        && n.node_id != self_id
                        && n.status == NodeStatus::Online
                        && n.quic_address.is_some()
                        && now - n.last_heartbeat < STALE_AFTER.as_millis() as i64
                })
                .cloned()
                .collect();
            {
                let mut state = self.state.lock().expect("poisoned");
                let mut centers: Vec<NodeRecord> = nodes
                    .iter()
                    .filter(|n| n.node_type == NodeType::Center)
                    .cloned()
                    .collect();
                centers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                state.centers = Arc::new(centers);
                let read = Instant::now();
                state.nodes.retain(|_, (_, at)| at.elapsed() < KEEP_ROWS);
                state
                    .nodes
                    .extend(nodes.into_iter().map(|n| (n.node_id.clone(), (n, read))));
                let died: Vec<String> = state
                    .peers
                    .iter()
                    .filter(|(_, c)| c.close_reason().is_some())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in died {
                    state.peers.remove(&id);
                    state.failed.insert(id, Instant::now());
                }
            }
            if !self.enabled() {
                continue;
            }
            for node in wanted {
                if self.live(&node.node_id).is_some() {
                    continue;
                }
                if !self
                    .state
                    .lock()
                    .expect("poisoned")
                    .dialing
                    .insert(node.node_id.clone())
                {
                    continue;
                }
                let mesh = self.clone();
                tokio::spawn(async move {
                    let _ = mesh.dial(&node).await;
                    mesh.state
                        .lock()
                        .expect("poisoned")
                        .dialing
                        .remove(&node.node_id);
                });
            }
        }
        let peers: Vec<_> = self.state.lock().expect("poisoned").peers.drain().collect();
        for (_, c) in peers {
            c.close(0u32.into(), b"center shutting down");
        }
    }
}

/// The node id in the verified certificate of `conn`'s peer.
pub fn peer_id(conn: &quinn::Connection) -> Result<String, String> {
    xpod_tunnel::endpoint::verified_peer(conn).map(|p| p.node_id)
}

async fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(text)
        .await
        .map_err(|e| format!("resolving {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("{text} resolves to no address"))
}
