//! The QUIC endpoints: quinn + rustls around the sans-IO [`proto`](crate::proto) session and
//! the [`identity`](crate::identity) configs (ARCHITECTURE §2, §3, §8).
//!
//! This module owns every socket and task of the tunnel layer. It decides *who may connect on
//! which ALPN*, runs the one control stream of each `xpod/1` connection, lets a fresh edge join
//! the cluster, and keeps an edge connected to each of its centers. It encodes no frame itself
//! (that is `proto`'s job) and never reads a node id from anything but a verified certificate.
//!
//! # One UDP port, two ALPNs
//! A center's QUIC endpoint ([`CenterEndpoint`]) speaks:
//! - [`ALPN_MESH`] (`xpod/1`): mutual TLS. The client must present a node certificate that
//!   chains to the cluster CA; the peer's id is read from it with
//!   [`peer_identity`](crate::identity::peer_identity).
//! - [`ALPN_JOIN`] (`xpod-join/1`): a joining edge, which has no certificate yet; the join token
//!   in its request authenticates it ([`join`](join::join), [`JoinAuthority`]).
//!
//! quinn takes one rustls `ServerConfig` per endpoint, so the client-certificate verifier
//! *offers* client auth and verifies any certificate presented (chain to the CA + node
//! certificate shape) but lets a client without one finish the handshake. Right after the
//! handshake the endpoint closes every `xpod/1` connection that has no verified certificate with
//! [`close_code::UNAUTHENTICATED`]. A certificate from another CA still fails the handshake.
//!
//! # Close codes
//! Application close codes used on connections are in [`close_code`]; reasons are short
//! human-readable strings.
//!
//! # Tasks
//! Every task spawned here ends with the connection or endpoint it serves; [`TaskGauge`] counts
//! live tasks so tests (and `/metrics`) can prove it.
//!
//! # Layout
//! - `server.rs` — [`CenterEndpoint`]: bind, the ALPN split, the post-handshake certificate
//!   check, [`Accepted`].
//! - `join.rs` — the join exchange on `xpod-join/1`: [`JoinAuthority`] (implemented by the node),
//!   the center's handler, and the edge's [`join`](join::join).
//! - `driver.rs` — runs a [`Session`](crate::proto::Session) over the first bidirectional
//!   stream of a connection ([`driver::spawn`], [`DriverHandle`]).
//! - `dialer.rs` — [`EdgeDialer`]: one connection per center with jittered exponential
//!   backoff and re-registration ([`DialerHandle`]).
//! - `proxy.rs` — the TCP transport through an HTTP proxy (`HTTPS_PROXY`, `CONNECT`).
//! - `remembered.rs` — which transport got through, per network and center, across restarts.
//! - `tcp.rs` — the same QUIC connections over TLS on TCP when UDP is blocked
//!   ([`tcp::Bridge`], [`tcp::connect`]).

pub mod dialer;
pub mod driver;
pub mod join;
pub mod proxy;
pub mod remembered;
pub mod server;
pub mod tcp;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use dialer::{
    Backoff, CenterState, CenterStatus, DialerConfig, DialerEvent, DialerHandle, EdgeDialer,
};
pub use driver::{DriverError, DriverHandle};
pub use join::{
    join, join_with_timeout, join_with_transport, BoxFuture, JoinAuthority, JoinError,
    DEFAULT_EDGE_CERT_DAYS, JOIN_STEP_TIMEOUT, MAX_JOIN_MESSAGE,
};
pub use server::{
    peer_not_after, verified_peer, Accepted, CenterEndpoint, EndpointError, TcpEntry,
    MAX_CONCURRENT_JOINS,
};

/// ALPN of the mesh/tunnel protocol (mutual TLS).
pub const ALPN_MESH: &[u8] = b"xpod/1";
/// ALPN of the join exchange (no client certificate; a join token authenticates).
pub const ALPN_JOIN: &[u8] = b"xpod-join/1";

/// Application error codes this module closes QUIC connections with.
pub mod close_code {
    use quinn::VarInt;

    /// Normal end: the session closed, the join finished, or the node shut down.
    pub const DONE: VarInt = VarInt::from_u32(0);
    /// An `xpod/1` connection without a verified client certificate.
    pub const UNAUTHENTICATED: VarInt = VarInt::from_u32(1);
    /// A protocol error on the connection (bad frame, bad join message, wrong ALPN).
    pub const PROTOCOL: VarInt = VarInt::from_u32(2);
    /// The join was refused (bad token, bad CSR, or joins disabled on this center).
    pub const JOIN_REFUSED: VarInt = VarInt::from_u32(3);
    /// The node is shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(4);
    /// Too many joins in progress; try again later.
    pub const BUSY: VarInt = VarInt::from_u32(5);
    /// The peer sent nothing for seconds while a request waited on it (probed): dead.
    pub const UNRESPONSIVE: VarInt = VarInt::from_u32(6);
}

/// Counts live tasks. Each spawned task holds a [`TaskGuard`]; dropping it (when the task ends,
/// however it ends) decrements the count.
#[derive(Debug, Clone, Default)]
pub struct TaskGauge(Arc<AtomicUsize>);

impl TaskGauge {
    /// A gauge at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers one live task until the guard is dropped.
    pub fn guard(&self) -> TaskGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        TaskGuard(self.0.clone())
    }

    /// Tasks alive now.
    pub fn live(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Held by a live task; see [`TaskGauge`].
#[derive(Debug)]
pub struct TaskGuard(Arc<AtomicUsize>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bidirectional streams a peer may have open at once on one connection.
pub const MAX_STREAMS: u32 = 4096;
/// Bytes received but not yet read that one connection may buffer, over all its streams.
pub const RECEIVE_WINDOW: u32 = 64 << 20;

/// Upper bound for a QUIC handshake, here and in the dialer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a tunnel connection may go without any packet before it is dead: two
/// [`EDGE_KEEP_ALIVE`]s. Idle edges are noticed this late; a request forwarded into a tunnel
/// whose edge died does not wait for it (the forwarder probes the connection while it waits
/// and closes it after 2 s of silence, issue 18), so this only bounds how long an idle dead
/// edge is shown as connected, and how long an edge waits on a center that went silent
/// before it dials another.
pub const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an edge stays silent before it sends a keep-alive. quinn counts from the last
/// packet sent, so with the default heartbeat every 15 s one keep-alive goes between two
/// heartbeats. It holds NAT mappings open (NATs forget UDP flows after 30 s or more) and
/// lets an edge learn within this long that its center restarted (the new process answers
/// with a stateless reset). Only the edge sends them: the center's acknowledgement keeps both
/// ends alive, so an idle edge costs its center few packets (issue 18: 10,000 idle edges,
/// little of a core).
pub const EDGE_KEEP_ALIVE: Duration = Duration::from_millis(7_500);

/// Transport settings shared by both ends: a connection without any packet for
/// [`TUNNEL_IDLE_TIMEOUT`] is dead; no keep-alives (the dialing side adds its own:
/// [`EDGE_KEEP_ALIVE`] for an edge, [`MESH_KEEP_ALIVE`] between centers).
///
/// Streams: each end lets its peer open up to [`MAX_STREAMS`] bidirectional streams at once
/// (quinn's default, 100, let ~100 idle relayed connections block every other request to an
/// edge), and buffers at most [`RECEIVE_WINDOW`] per connection however many are open, so a
/// hostile peer's streams cannot grow a node's memory.
pub(crate) fn transport_config() -> Arc<quinn::TransportConfig> {
    Arc::new(transport_settings())
}

/// [`transport_config`], to adjust.
pub(crate) fn transport_settings() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    // No unidirectional streams are used (quinn would set up state for 100 by default).
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(TUNNEL_IDLE_TIMEOUT).expect("a valid idle timeout"),
    ));
    t.keep_alive_interval(None);
    // Datagrams only carry the forwarder's liveness probes, which nobody reads: a peer may
    // make this node buffer at most this much of them (quinn's default is 1.25 MB per
    // connection).
    t.datagram_receive_buffer_size(Some(PROBE_BUFFER));
    t
}

/// The datagram receive buffer of a connection (see [`transport_config`]).
pub const PROBE_BUFFER: usize = 256;

/// How long a mesh connection (center to center) may go without a packet before it is dead.
/// Shorter than a tunnel's: centers are few and on good networks, and a request forwarded to a
/// center that died must fail within seconds (issue 18: a clear 503 within 3 s, not a hang).
pub const MESH_IDLE_TIMEOUT: Duration = Duration::from_millis(2500);
/// The keep-alive of a mesh connection: three in every [`MESH_IDLE_TIMEOUT`].
pub const MESH_KEEP_ALIVE: Duration = Duration::from_millis(800);

/// The client config a center uses to dial another center over `xpod/1` (the mesh): mutual
/// TLS with this node's certificate, the peer accepted only with a center certificate from the
/// cluster CA, and the tunnels' transport settings but for a shorter idle timeout
/// ([`MESH_IDLE_TIMEOUT`]; QUIC uses the smaller of both ends' values, so the dialed center
/// applies it too) and keep-alive ([`MESH_KEEP_ALIVE`]).
pub fn mesh_client_config(
    identity: &crate::identity::NodeIdentity,
) -> Result<quinn::ClientConfig, EndpointError> {
    let tls = crate::identity::client_config(identity, &[ALPN_MESH])?;
    let mut cfg = quinn_client_config(tls).map_err(EndpointError::Tls)?;
    let mut t = transport_settings();
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(MESH_IDLE_TIMEOUT).expect("a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(MESH_KEEP_ALIVE));
    cfg.transport_config(Arc::new(t));
    Ok(cfg)
}

/// The client config an edge dials its centers with over `xpod/1`: mutual TLS with its node
/// certificate, and the tunnels' transport settings with the edge's keep-alive
/// ([`EDGE_KEEP_ALIVE`]).
pub fn edge_client_config(
    identity: &crate::identity::NodeIdentity,
) -> Result<quinn::ClientConfig, EndpointError> {
    let tls = crate::identity::client_config(identity, &[ALPN_MESH])?;
    let mut cfg = quinn_client_config(tls).map_err(EndpointError::Tls)?;
    let mut t = transport_settings();
    t.keep_alive_interval(Some(EDGE_KEEP_ALIVE));
    cfg.transport_config(Arc::new(t));
    Ok(cfg)
}

/// A quinn client config from a rustls client config.
pub(crate) fn quinn_client_config(
    tls: Arc<rustls::ClientConfig>,
) -> Result<quinn::ClientConfig, String> {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

/// The unspecified address of `addr`'s family, port 0: where a client endpoint binds.
pub(crate) fn unspecified_for(addr: &std::net::SocketAddr) -> std::net::SocketAddr {
    match addr {
        std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}
