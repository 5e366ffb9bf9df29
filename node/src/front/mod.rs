//! The fronts: where requests enter the node, each handing them to the one request path
//! (`crate::http::handle`). Nothing else in the node calls into it.
//! - [`http`]: the TCP listener — accept loop, HTTP/1.1 or HTTP/2 per connection, connection
//!   limits, graceful drain.
//! - [`https`]: the TLS port — HTTPS for the node's own names, TLS passthrough to edges by SNI.
//! - [`quic`]: a center's QUIC endpoint — edges' tunnels (to `crate::edges::center`) and other
//!   centers' mesh connections (to [`streams`]).
//! - [`streams`]: QUIC data streams from other nodes — pod requests over the mesh (and on an
//!   edge's tunnel from its center), runner requests.

pub mod http;
pub mod https;
pub mod quic;
pub mod streams;
