//! The one forwarder: how a request leaves this node for another (a center, an edge, a
//! sandbox's port), whoever forwards it.
//!
//! - [`headers`]: what a forwarded request and its response look like — hop-by-hop headers
//!   stripped both ways (RFC 9110 §7.6.1), `Forwarded`/`X-Forwarded-*` added on the first hop,
//!   origin-form HTTP/1.1, the upgrade handshake kept; the internal per-request headers of pod
//!   streams ([`headers::HOP`], [`headers::CLIENT`]); the replay rule.
//! - [`pool`]: idle HTTP/1.1 exchanges over QUIC streams kept for reuse (keep-alive), LIFO,
//!   bounded per key and in total, swept when idle.
//! - [`exchange`]: sending one request — on a pooled stream when there is one, else on a new
//!   stream ([`xpod_tunnel::stream::open`] + an HTTP/1.1 handshake); a pooled stream that closes
//!   under the request is retried on a new one when the request went out unsent or may be
//!   replayed.
//!
//! Errors are a [`ForwardError`]; the node maps them to its JSON errors once.

pub mod exchange;
pub mod headers;
pub mod pool;

pub use exchange::{handshake, open, send, ForwardError, Sent, OPEN_TIMEOUT};
pub use headers::{
    prepare, public_origin, replay_of, replayable, strip_hop_by_hop, upgrade_protocol, Https,
    MeshHop,
};
pub use pool::StreamPool;

/// A request forwarded this many times is in a loop (508).
pub const MAX_HOPS: u8 = 4;
