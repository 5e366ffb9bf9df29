//! Node identities and trust for the xpod tunnel (ARCHITECTURE.md §3).
//!
//! This module owns everything that decides *who a peer is*: the cluster CA, node certificates and
//! the CSRs edges send to get one, the join tokens edges present when they first join, and the
//! rustls configurations that enforce mutual TLS against the cluster CA. It exists as one place so
//! that the rule "a peer's node id comes only from its verified certificate, never from a message
//! it sends" has exactly one implementation.
//!
//! # Certificate layout
//! - The **cluster CA** is a self-signed ECDSA P-256 certificate, `CA:true, pathlen:0` (it signs
//!   node certificates only, never intermediates), valid for ten years, subject
//!   `CN=xpod cluster CA: <cluster name>, O=xpod`. Its fingerprint is `sha256:<hex>` of its DER.
//! - A **node certificate** (ECDSA P-256, `CA:false`, EKU serverAuth + clientAuth) carries its
//!   identity in URI subject alternative names, which cannot be confused with a hostname:
//!   `xpod://node/<node id>` and `xpod://role/<center|edge>`. The subject CN repeats the node id
//!   for humans only; nothing reads it. Centers may additionally get DNS/IP SANs chosen by the
//!   operator. [`peer_identity`] is the only reader of a certificate's identity.
//! - Node ids are 1–63 characters of `[a-z0-9-]`, not starting or ending with `-` (a DNS label,
//!   so a node id can appear in `<node>.<edge-domain>` host names).
//!
//! # Joining
//! An operator creates a [`JoinToken`] (`xpt_<id>.<secret>.<CA fingerprint hex>`); only its
//! [`TokenRecord`] (with the SHA-256 of the secret) is stored. The joining edge connects with
//! [`bootstrap_client_config`], which trusts the center only if the center's chain contains a CA
//! whose fingerprint equals the token's and the center's certificate verifies against that CA.
//! The edge then sends a CSR made by [`NodeIdentity::generate_csr`] (its private key never leaves
//! it) together with the token; the center checks the token, decides the node id and signs with
//! [`ClusterCa::sign_csr`], which refuses a CSR asking for another id and ignores every other
//! request in it (CA bit, extra names, key usages).
//!
//! # Mutual TLS
//! [`server_config`] requires a client certificate that chains to the cluster CA and is a node
//! certificate; [`client_config`] requires the server to chain to the cluster CA and be a
//! *center* node certificate (edges open no ports, so a client only ever dials centers). Centers
//! are dialed by address, so the TLS server name is not checked; when the caller knows which node
//! it expects, it compares [`peer_identity`] of the peer's end-entity certificate after the
//! handshake. All configs are TLS 1.3 only (QUIC requires it) and use the ring provider
//! explicitly, never a process-global default.
//!
//! # Secrets
//! No `Debug` implementation here prints a private key or a token secret.

mod ca;
mod provider;
mod tls;
mod token;

#[cfg(test)]
mod tests;

pub use ca::{
    fingerprint_of, fingerprint_of_pem, not_after_ms, parse_fingerprint, peer_identity,
    validate_node_id, ClusterCa, NodeIdentity, NodeRole, PeerIdentity, CA_VALIDITY_DAYS,
    MAX_NODE_VALIDITY_DAYS, NODE_URI_PREFIX, ROLE_URI_PREFIX,
};
pub use tls::{bootstrap_client_config, client_config, join_server_config, server_config};
pub use token::{JoinToken, TokenError, TokenRecord, TOKEN_PREFIX};

/// Errors from building, loading, issuing or checking identities.
///
/// Every payload is a plain string so the error is `Clone + Eq` and can travel inside a rustls
/// error (see the TLS verifiers) without borrowing anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A node id that is not 1–63 of `[a-z0-9-]` without a leading or trailing `-`.
    #[error("invalid node id {0:?}: expected 1-63 characters of [a-z0-9-], not starting or ending with '-'")]
    InvalidNodeId(String),
    /// A role that is neither `center` nor `edge`.
    #[error("invalid node role {0:?}: expected \"center\" or \"edge\"")]
    InvalidRole(String),
    /// An invalid cluster name given to [`ClusterCa::generate`].
    #[error("invalid cluster name {0:?}: expected 1-64 printable characters")]
    InvalidClusterName(String),
    /// The certificate has no `xpod://node/<id>` URI SAN.
    #[error("certificate carries no node id (URI SAN xpod://node/<id>)")]
    MissingNodeId,
    /// The certificate has more than one `xpod://node/<id>` URI SAN.
    #[error("certificate carries more than one node id")]
    DuplicateNodeId,
    /// The certificate has no `xpod://role/<role>` URI SAN.
    #[error("certificate carries no node role (URI SAN xpod://role/<role>)")]
    MissingRole,
    /// The certificate has more than one `xpod://role/<role>` URI SAN.
    #[error("certificate carries more than one node role")]
    DuplicateRole,
    /// An `xpod:` URI SAN of an unknown form.
    #[error("certificate carries an unrecognised xpod URI {0:?}")]
    UnknownXpodUri(String),
    /// A node certificate that claims to be a CA.
    #[error("a node certificate must not be a CA certificate")]
    NodeCertIsCa,
    /// The peer is a node of the wrong role (an edge where a center was required).
    #[error("peer is a {actual} node, expected a {expected}")]
    WrongRole {
        /// The role that was required.
        expected: NodeRole,
        /// The role the certificate carries.
        actual: NodeRole,
    },
    /// The CSR asks for another node id than the one the center assigned.
    #[error("CSR requests node id {requested:?} but the center assigned {expected:?}")]
    CsrIdentityMismatch {
        /// The id the center decided.
        expected: String,
        /// What the CSR asked for.
        requested: String,
    },
    /// The CSR names no node id at all.
    #[error("CSR requests no node id (expected URI SAN xpod://node/<id>)")]
    CsrNoIdentity,
    /// The CSR cannot be parsed, its signature is bad, or it asks for something unsupported.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
    /// A certificate that cannot be parsed or is not usable here.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A private key that cannot be parsed.
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// The private key does not belong to the certificate.
    #[error("private key does not match the certificate")]
    KeyMismatch,
    /// The certificate given as the cluster CA is not a CA.
    #[error("certificate is not a CA certificate")]
    NotCa,
    /// A fingerprint that is not `sha256:<64 hex>` (or bare 64 hex).
    #[error("invalid CA fingerprint {0:?}: expected sha256:<64 hex characters>")]
    InvalidFingerprint(String),
    /// No certificate in the server's chain has the pinned CA fingerprint.
    #[error("no certificate in the peer's chain matches the pinned CA fingerprint")]
    FingerprintMismatch,
    /// A validity period of zero days or more than allowed.
    #[error("invalid validity of {0} days")]
    InvalidValidity(u32),
    /// A DNS name that cannot go into a certificate.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// Certificate generation failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A rustls configuration could not be built.
    #[error("TLS configuration error: {0}")]
    Tls(String),
}

/// Result type of this module.
pub type Result<T, E = IdentityError> = std::result::Result<T, E>;

impl From<rcgen::Error> for IdentityError {
    fn from(e: rcgen::Error) -> Self {
        IdentityError::Generate(e.to_string())
    }
}

impl From<rustls::Error> for IdentityError {
    fn from(e: rustls::Error) -> Self {
        IdentityError::Tls(e.to_string())
    }
}
