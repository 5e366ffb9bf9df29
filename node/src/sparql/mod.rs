//! SPARQL 1.1 Query over a pod's RDF documents (`/{pod}/-/sparql`, the protocol in
//! `crate::http::sparql`). Each RDF document is a named graph, named by its URL under the pod's
//! base URL (`PodRecord::base_url`, also the base its relative IRIs resolve against); the
//! default graph is the union of the graphs the caller may read, and only those are named.
//!
//! - [`index`]: one in-memory dataset per pod, built on the first query on the node that owns
//!   the pod and kept in step by entity tag: each query lists the pod's documents (one
//!   metadata query) and re-reads only those whose tag changed, so writes through any node,
//!   and a move of the pod, are seen at the next query without rebuilding. Bounded: triples per
//!   pod and pods per node (the least recently queried is dropped).
//! - [`view`]: the pod's dataset as the caller may read it (other graphs do not exist in it);
//! - [`query`]: evaluation (Oxigraph's `spareval`) in a blocking thread, with a deadline and a
//!   result-size limit, answered in the format the client accepts.

pub mod index;
pub mod query;
pub mod view;

pub use index::{Indexes, PodIndex};

/// Queries a node evaluates at once (each holds a blocking thread); more wait for none: 503.
pub const MAX_RUNNING: usize = 4;
