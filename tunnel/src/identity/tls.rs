//! rustls configurations that enforce mutual TLS against the cluster CA, and the pinned-CA
//! configuration a joining edge uses before it has the CA.
//!
//! Everything here is TLS 1.3 only (QUIC requires it) and built on the ring provider passed
//! explicitly, so no process-global provider is ever installed or relied upon. Verification is
//! always done by webpki through rustls's helpers; the custom verifiers only *add* checks
//! (node-certificate shape, role, pinned CA) on top of a full chain verification and never skip
//! one. The TLS server name is not checked because centers are dialed by address: what
//! identifies a peer is its node certificate, read with [`peer_identity`].

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::ca::{parse_fingerprint, peer_identity, NodeIdentity, NodeRole};
use super::{IdentityError, Result};

use super::provider::provider;

fn alpn_list(alpn: &[&[u8]]) -> Vec<Vec<u8>> {
    alpn.iter().map(|p| p.to_vec()).collect()
}

fn ca_roots(identity: &NodeIdentity) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca_der()?)
        .map_err(|e| IdentityError::InvalidCertificate(format!("CA: {e}")))?;
    Ok(roots)
}

/// Rejects a handshake with an [`IdentityError`] carried inside the rustls error, so the reason
/// (e.g. "peer is a edge node, expected a center") reaches the logs.
fn refuse(e: IdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Checks that a chain-verified end-entity certificate is a node certificate (and of `role`).
fn check_node(
    end_entity: &CertificateDer<'_>,
    role: Option<NodeRole>,
) -> Result<(), rustls::Error> {
    let peer = peer_identity(end_entity).map_err(refuse)?;
    match role {
        Some(expected) if peer.role != expected => Err(refuse(IdentityError::WrongRole {
            expected,
            actual: peer.role,
        })),
        _ => Ok(()),
    }
}

/// Server side of node-to-node mutual TLS (a center's QUIC endpoint).
///
/// Presents the node certificate followed by the CA certificate, and requires a client
/// certificate that chains to the cluster CA (webpki, the CA as the only root, EKU clientAuth)
/// and is a node certificate (center or edge). Which node connected is read afterwards with
/// `peer_identity(&conn.peer_certificates()[0])`.
pub fn server_config(identity: &NodeIdentity, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(
        Arc::new(ca_roots(identity)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| IdentityError::Tls(e.to_string()))?;
    let verifier = Arc::new(NodeClientVerifier { inner });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![identity.cert_der()?, identity.ca_der()?],
            identity.key_der()?,
        )?;
    config.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(config))
}

/// Server config for the join endpoint only: presents the node certificate and the CA (so a
/// joining edge can check the CA against its token's fingerprint) and asks for no client
/// certificate, since a joining edge has none yet. The join request must be authenticated by
/// its token; never serve anything else with this config.
pub fn join_server_config(identity: &NodeIdentity, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![identity.cert_der()?, identity.ca_der()?],
            identity.key_der()?,
        )?;
    config.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(config))
}

/// Client side of node-to-node mutual TLS (an edge or a center dialing a center).
///
/// Presents the node certificate; accepts the server only if its certificate chains to the
/// cluster CA (webpki, the CA as the only root, EKU serverAuth) and is a node certificate with
/// role **center** — edges open no ports, so a client never has reason to accept an edge. The
/// server name is not checked (centers are dialed by address); when the caller expects a
/// particular center it compares `peer_identity(&conn.peer_certificates()[0])?.node_id`.
pub fn client_config(identity: &NodeIdentity, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = Arc::new(CaServerVerifier {
        roots: Arc::new(ca_roots(identity)?),
        algs: provider.signature_verification_algorithms,
        role: Some(NodeRole::Center),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert_der()?], identity.key_der()?)?;
    config.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(config))
}

/// Client config for a joining edge that has only its token's CA fingerprint
/// (`sha256:<hex>` or bare hex).
///
/// Accepts the server only if the chain it sends contains a certificate whose SHA-256 equals the
/// fingerprint, the server's certificate verifies (webpki, signatures and validity) with that
/// certificate as the only root, and it is a center node certificate. Presents no client
/// certificate.
pub fn bootstrap_client_config(ca_fingerprint: &str, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: parse_fingerprint(ca_fingerprint)?,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn_list(alpn);
    Ok(Arc::new(config))
}

/// webpki client verification against the cluster CA, plus "is a node certificate".
#[derive(Debug)]
struct NodeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_node(end_entity, None)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server verification against the cluster CA without a host name check.
pub(super) struct CaServerVerifier {
    pub(super) roots: Arc<RootCertStore>,
    pub(super) algs: WebPkiSupportedAlgorithms,
    pub(super) role: Option<NodeRole>,
}

impl fmt::Debug for CaServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaServerVerifier")
            .field("roots", &self.roots.len())
            .field("role", &self.role)
            .finish()
    }
}

impl ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        check_node(end_entity, self.role)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Server verification for a joining edge: the CA is pinned by fingerprint and must be sent by
/// the server in its chain.
struct PinnedCaVerifier {
    fingerprint: [u8; 32],
    algs: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinnedCaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedCaVerifier")
            .field("fingerprint", &hex::encode(self.fingerprint))
            .finish()
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use sha2::{Digest, Sha256};
        let ca = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.fingerprint)
            .ok_or_else(|| refuse(IdentityError::FingerprintMismatch))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        check_node(end_entity, Some(NodeRole::Center))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
