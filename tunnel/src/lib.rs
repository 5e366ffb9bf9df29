//! xpod tunnel: the QUIC mesh between centers and the tunnels that edges dial out.
//!
//! Not built yet. This crate will own the sans-IO wire protocol (`proto`), the cluster CA and
//! node identities (join tokens, CSRs), the quinn endpoints with mutual TLS, the session
//! (control stream + data streams) and the reconnecting dialer. Until then a node runs alone or
//! as a center that shares PostgreSQL with others; see ARCHITECTURE.md §2, §3, §8.
//!
//! # Layout
//! (empty: the crate exists so that the layering `config → tunnel, storage → routing → node`
//! is fixed from the start.)
