//! xpod routing: what a request is for, who owns it, and how it is forwarded there.
//!
//! # Layout
//! - [`decide`]: where a pod request goes (local, missing, a peer center, an edge, via the
//!   center that holds an edge), decided once behind a small directory trait.
//! - [`edge_host`]: edge names (`<service>.<node>.<edge domain>`) from Host or SNI.
//! - [`forward`]: the one forwarder — forwarding headers, the keep-alive stream pool, sending
//!   a request over a QUIC stream with the replay rule.
//! - [`host`]: the one parser of a Host header or server name (name, port, domain suffixes).
//! - [`owners`]: the owner table — pod → (owner, epoch) in memory, single-flight loads,
//!   invalidation by the change feed.
//! - [`path`]: strict parsing of request paths into decoded resource paths (rejects `..`,
//!   encoded slashes, control characters) and the inverse encoding for URLs we emit.
//! - [`sni`]: sans-IO parsing of the server name from a TLS ClientHello (TLS passthrough).
//! - [`target`]: classification of a request by Host and path into every target: an edge's
//!   service, a sandbox's port, a pod resource (path mode and subdomain mode), the cluster API,
//!   the `/api/v1` API or an operations endpoint.
//!
//! Parsing never panics: anything that is not a valid name or path is an error that the node
//! answers with 400.

pub mod decide;
pub mod edge_host;
pub mod forward;
pub mod host;
pub mod owners;
pub mod path;
pub mod sni;
pub mod target;

pub use owners::{Owner, OwnerTable};
pub use path::{encode_path, parse_resource_path, PathError};
pub use target::{classify, OpsRoute, Target, TargetConfig, TargetError};
