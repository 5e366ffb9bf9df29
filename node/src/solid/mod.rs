//! What makes a pod a Solid storage, as pure functions the pod handlers call (issue 17):
//! - [`rdf`]: RDF media types, content negotiation, parsing (errors with line and column) and
//!   serialising Turtle, JSON-LD and N-Triples;
//! - [`patch`]: N3 Patch and SPARQL Update, parsed into one patch and applied to a graph;
//! - [`wac`]: Web Access Control — the modes an ACL document grants an agent;
//! - [`dpop`]: Solid-OIDC — verifying a DPoP proof and an access token (no I/O);
//! - [`jose`]: ring as jsonwebtoken's crypto provider.

pub mod dpop;
pub mod jose;
pub mod patch;
pub mod rdf;
pub mod wac;
