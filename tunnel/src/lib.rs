//! xpod tunnel: the QUIC mesh between centers and the tunnels that edges dial out.
//!
//! Built so far: the sans-IO wire protocol ([`proto`]) with its session state machine, and node
//! identities ([`identity`]: cluster CA, node certificates, CSRs, join tokens, rustls configs for
//! mutual TLS). The quinn endpoints, the reconnecting dialer and forwarding come next; see
//! ARCHITECTURE.md §2, §3, §8.
//!
//! # Layout
//! - [`proto`]: frames (version preface, length-prefixed, capped), typed control messages, the
//!   data-stream header, and the session state machine (handshake, heartbeats, liveness) driven
//!   by an explicit clock.
//! - [`identity`]: CA creation, certificate issuing and CSR signing, fingerprints, join tokens,
//!   and the rustls client/server configurations that enforce mutual TLS against the cluster CA.

pub mod identity;
pub mod proto;
