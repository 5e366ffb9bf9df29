//! xpod tunnel: the QUIC mesh between centers and the tunnels that edges dial out.
//!
//! Built so far: the sans-IO wire protocol ([`proto`]) with its session state machine, node
//! identities ([`identity`]: cluster CA, node certificates, CSRs, join tokens, rustls configs for
//! mutual TLS), and the quinn endpoints ([`endpoint`]: the center's port, joining, the
//! control-stream driver, the edge's reconnecting dialer). Forwarding comes next; see
//! ARCHITECTURE.md §2, §3, §8.
//!
//! # Layout
//! - [`proto`]: frames (version preface, length-prefixed, capped), typed control messages, the
//!   data-stream header, and the session state machine (handshake, heartbeats, liveness) driven
//!   by an explicit clock.
//! - [`identity`]: CA creation, certificate issuing and CSR signing, fingerprints, join tokens,
//!   and the rustls client/server configurations that enforce mutual TLS against the cluster CA.
//! - [`plane`]: the dedicated runtime (one thread by default) that runs every endpoint and
//!   relay, away from the HTTP workers.
//! - [`endpoint`]: the quinn endpoints — a center's one UDP port serving `xpod/1` (mutual TLS)
//!   and `xpod-join/1` (token-authenticated joins), the control-stream driver that runs a
//!   session over a connection, and the edge's reconnecting dialer (one connection per center).
//! - [`stream`]: opening a data stream (`open_bi` + its header), for every forwarder.

pub mod endpoint;
pub mod identity;
pub mod plane;
pub mod proto;
pub mod stream;
