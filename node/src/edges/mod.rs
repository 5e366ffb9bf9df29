//! Edges and their tunnels, node side: what the tunnel crate's endpoints need from a node.
//!
//! - [`authority`]: joining — a token from the metadata store admits a node id (hash checked in
//!   constant time, expiry, single use) and the center's CA signs the edge's CSR.
//! - [`center`]: a center's QUIC endpoint: accepts edges' tunnels (and other centers' mesh
//!   connections, handed to `crate::mesh`), runs edges' control sessions, records the pods they
//!   host, and keeps their presence in `nodes` (online on register and heartbeat; a sweeper marks edges
//!   inactive after 60 s and offline after 5 min without a heartbeat, also after a disconnect).
//! - [`edge`]: an edge's side: join once (identity saved in the data dir), then keep a tunnel to
//!   each configured center.
//! - [`learned`]: the cluster's centers, told to an edge when it registers, dialed by it when
//!   its own centers stay unreachable.
//!
//! - [`registry`]: the edge connections a center holds, their relay budgets and the pool of idle
//!   exchanges to their services.
//! - [`forward`]: a center's side of HTTP forwarding: the handler for `<service>.<node>.<edge_domain>` / `<node>.<edge_domain>` requests
//!   (sent by the one forwarder, `xpod_routing::forward`, on pooled keep-alive streams).
//! - (TLS passthrough — a connection on `tunnel.tls_listen` routed by the SNI of its ClientHello
//!   to an edge's `kind = "tls"` service as raw bytes — is served by `crate::front::https`.)
//! - [`bandwidth`]: per-edge bandwidth limits a center enforces (token buckets, paced bodies and
//!   connections).
//! - [`relay`]: relaying raw bytes between a client connection and a stream, with an idle
//!   timeout.
//! - [`tcp_forward`]: a center's TCP port forwards (`[[tunnel.forwards]]`) to edges'
//!   `kind = "tcp"` services.
//! - [`services`]: an edge's side: the services it publishes (`[[tunnel.services]]`) and its
//!   own pods, served on the data streams its centers open.
//! - [`pod_move`]: a pod moves from an edge to the cluster (released and exported by the
//!   edge, adopted by the shared store, its blobs read through the tunnel until copied).
//! - [`pod_adopt`]: a pod moves onto an edge (offered, fenced in the cluster, its rows pulled
//!   by the edge, its blobs read through a center until copied).
//! - [`uplink`]: requests an edge opens to the cluster on its own tunnels;
//!   [`cluster_api`]: the center's answers, for that edge's identity and its pods only.
//! - [`terminal`]: a terminal on an edge device (`xpod nodes shell`, `/{pod}/-/terminal`),
//!   only when the edge's own configuration allows it.
//!
//! Identity files in the data dir: `node.crt`, `node.key` (0600), `ca.crt`; centers that sign
//! joins also hold `ca.key`. HTTP forwarding (with WebSocket upgrades), TLS passthrough and TCP
//! port forwards (with optional PROXY protocol v2 towards the service) work.

pub mod authority;
pub mod bandwidth;
pub mod center;
pub mod cluster_api;
pub mod edge;
pub mod forward;
pub mod learned;
pub mod pod_adopt;
pub mod pod_move;
pub mod registry;
pub mod relay;
pub mod services;
pub mod tcp_forward;
pub mod terminal;
pub mod uplink;

use std::path::Path;

use anyhow::Context as _;
use xpod_tunnel::identity::NodeIdentity;

pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";

/// The node's identity from its data dir, if it has one. A present but unusable identity (key
/// not matching, certificate from another CA) is an error naming the file.
pub fn load_identity(data_dir: &Path) -> anyhow::Result<Option<NodeIdentity>> {
    let (cert, key, ca) = (
        data_dir.join(NODE_CERT),
        data_dir.join(NODE_KEY),
        data_dir.join(crate::cluster_ca::CA_CERT),
    );
    if !cert.exists() {
        return Ok(None);
    }
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let id = NodeIdentity::from_pem(&read(&cert)?, &read(&key)?, &read(&ca)?)
        .with_context(|| format!("loading the node identity in {}", data_dir.display()))?;
    Ok(Some(id))
}

/// Session timings from `[tunnel.presence]` (the seed's 15 s / 60 s / 5 min by default).
pub fn presence_timers(p: &xpod_config::PresenceConfig) -> xpod_tunnel::proto::Timers {
    use std::time::Duration;
    xpod_tunnel::proto::Timers {
        heartbeat_interval: Duration::from_secs(p.heartbeat_secs),
        inactive_after: Duration::from_secs(p.inactive_after_secs),
        offline_after: Duration::from_secs(p.offline_after_secs),
        ..Default::default()
    }
}
