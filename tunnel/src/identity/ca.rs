//! The cluster CA, node certificates, CSRs and reading a peer's identity from its certificate.
//!
//! This is the only code that writes or reads the identity fields of a certificate (see the
//! layout in the parent module): [`ClusterCa`] issues node certificates and signs edge CSRs with
//! parameters it builds itself, and [`peer_identity`] is the single parser of `xpod://node/<id>`
//! and `xpod://role/<role>` URI SANs. Keeping writer and reader side by side keeps them in step.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::time::ASN1Time;

use super::{IdentityError, Result};

/// URI SAN prefix that carries a node id: `xpod://node/<node id>`.
pub const NODE_URI_PREFIX: &str = "xpod://node/";
/// URI SAN prefix that carries a node role: `xpod://role/<center|edge>`.
pub const ROLE_URI_PREFIX: &str = "xpod://role/";
/// Validity of a new cluster CA, in days (ten years).
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Longest validity a node certificate may be issued with, in days.
pub const MAX_NODE_VALIDITY_DAYS: u32 = 3650;

/// Certificates start this many seconds in the past, to tolerate clock skew between nodes.
const BACKDATE_SECS: i64 = 5 * 60;
const ORGANIZATION: &str = "xpod";
const CA_CN_PREFIX: &str = "xpod cluster CA: ";

/// What a node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A center: accepts edge tunnels and mesh connections, serves public traffic.
    Center,
    /// An edge: dials out to centers, opens no ports.
    Edge,
}

impl NodeRole {
    /// The wire/certificate spelling: `center` or `edge`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Center => "center",
            NodeRole::Edge => "edge",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeRole {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "center" => Ok(NodeRole::Center),
            "edge" => Ok(NodeRole::Edge),
            other => Err(IdentityError::InvalidRole(other.to_string())),
        }
    }
}

/// Who a peer is, as read from its (already verified) certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerIdentity {
    /// The node id from the `xpod://node/<id>` URI SAN.
    pub node_id: String,
    /// The role from the `xpod://role/<role>` URI SAN.
    pub role: NodeRole,
}

/// Checks a node id: 1–63 characters of `[a-z0-9-]`, not starting or ending with `-`.
pub fn validate_node_id(node_id: &str) -> Result<()> {
    let ok = !node_id.is_empty()
        && node_id.len() <= 63
        && node_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !node_id.starts_with('-')
        && !node_id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidNodeId(node_id.to_string()))
    }
}

/// `sha256:<lowercase hex>` of a certificate's DER bytes.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(cert_der)))
}

/// `sha256:<hex>` of the first certificate in a PEM text (e.g. the cluster CA's `ca.crt`).
pub fn fingerprint_of_pem(cert_pem: &str) -> Result<String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| IdentityError::InvalidCertificate(format!("CA: {e}")))?;
    Ok(fingerprint_of(&der))
}

/// Parses a CA fingerprint, `sha256:<64 hex>` or bare `<64 hex>` (either case), to its digest.
pub fn parse_fingerprint(fingerprint: &str) -> Result<[u8; 32]> {
    let invalid = || IdentityError::InvalidFingerprint(fingerprint.to_string());
    let hex_part = fingerprint.strip_prefix("sha256:").unwrap_or(fingerprint);
    if hex_part.len() != 64 {
        return Err(invalid());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| invalid())?;
    Ok(out)
}

/// Reads the node id and role from a peer's end-entity certificate (DER).
///
/// This does **not** verify the certificate: call it on a certificate that the TLS handshake has
/// already verified against the cluster CA (e.g. `conn.peer_certificates()[0]`). It fails when the
/// node id or role is absent, duplicated or malformed, when an unknown `xpod:` URI is present, or
/// when the certificate claims to be a CA.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity> {
    let (rest, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::InvalidCertificate(
            "trailing bytes after certificate".into(),
        ));
    }
    // Errors on a duplicated basicConstraints/SAN extension, which is what we want.
    let bc = cert
        .basic_constraints()
        .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(IdentityError::NodeCertIsCa);
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
    let uris = san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    identity_from_uris(uris)
}

/// When a certificate (DER) expires, in milliseconds since the Unix epoch. Like
/// [`peer_identity`], it does not verify the certificate.
pub fn not_after_ms(cert_der: &[u8]) -> Result<i64> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp() * 1000)
}

/// The identity carried by a set of URI SANs (shared by certificate parsing and tests).
fn identity_from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<PeerIdentity> {
    let mut node_id: Option<&str> = None;
    let mut role: Option<NodeRole> = None;
    for uri in uris {
        if let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) {
            validate_node_id(id)?;
            if node_id.replace(id).is_some() {
                return Err(IdentityError::DuplicateNodeId);
            }
        } else if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
            let r = r.parse::<NodeRole>()?;
            if role.replace(r).is_some() {
                return Err(IdentityError::DuplicateRole);
            }
        } else if uri
            .get(..5)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("xpod:"))
        {
            return Err(IdentityError::UnknownXpodUri(uri.to_string()));
        }
    }
    Ok(PeerIdentity {
        node_id: node_id.ok_or(IdentityError::MissingNodeId)?.to_string(),
        role: role.ok_or(IdentityError::MissingRole)?,
    })
}

/// The cluster certificate authority: signs node certificates.
///
/// Holds the CA private key; its `Debug` shows only the fingerprint.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ClusterCa {
    /// Creates a new cluster CA: ECDSA P-256, `CA:true`, `pathlen:0`, valid for
    /// [`CA_VALIDITY_DAYS`], subject `CN=xpod cluster CA: <cluster_name>, O=xpod`.
    pub fn generate(cluster_name: &str) -> Result<ClusterCa> {
        if cluster_name.is_empty()
            || cluster_name.chars().count() > 64
            || cluster_name.chars().any(char::is_control)
        {
            return Err(IdentityError::InvalidClusterName(cluster_name.to_string()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{CA_CN_PREFIX}{cluster_name}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        set_validity(&mut params, CA_VALIDITY_DAYS)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key (PEM). Fails if the certificate is not a
    /// CA or the key does not belong to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(IdentityError::NotCa);
        }
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| IdentityError::InvalidKey(e.to_string()))?;
        if key.subject_public_key_info() != cert.tbs_certificate.subject_pki.raw {
            return Err(IdentityError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
        Ok(ClusterCa {
            cert_pem: pem_of_cert(&cert_der),
            cert_der,
            issuer,
        })
    }

    /// The CA certificate and private key as PEM: `(cert_pem, key_pem)`. The key is secret.
    pub fn to_pem(&self) -> (String, String) {
        (self.cert_pem.clone(), self.issuer.key().serialize_pem())
    }

    /// The CA certificate as PEM (public; what nodes trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// `sha256:<hex>` of the CA certificate's DER: what join tokens carry.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.cert_der)
    }

    /// Issues a node certificate with a freshly generated ECDSA P-256 key (for centers, or
    /// `xpod ca issue`). `dns_names` and `ip_addrs` are extra SANs for nodes also reached by name.
    pub fn issue_node(
        &self,
        node_id: &str,
        role: NodeRole,
        dns_names: &[String],
        ip_addrs: &[IpAddr],
        validity_days: u32,
    ) -> Result<NodeIdentity> {
        let params = node_params(node_id, role, dns_names, ip_addrs, validity_days)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }

    /// Signs an edge's CSR (PEM) as node `expected_node_id` with `role`, returning the
    /// certificate PEM.
    ///
    /// The center decides the identity: the CSR must name `expected_node_id` in its
    /// `xpod://node/<id>` URI SAN (and, if it has a common name, there too), otherwise it is
    /// refused. Everything else the CSR asks for — CA bit, key usages, other SANs, the role — is
    /// ignored: the certificate is built from the center's own parameters plus the CSR's public
    /// key only. The CSR's self-signature is verified.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected_node_id: &str,
        role: NodeRole,
        validity_days: u32,
    ) -> Result<String> {
        validate_node_id(expected_node_id)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IdentityError::InvalidCsr(e.to_string()))?;
        check_csr_identity(&csr.params, expected_node_id)?;

        let params = node_params(expected_node_id, role, &[], &[], validity_days)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;

        // rcgen re-encodes the CSR key from the signature algorithm; make sure the certificate
        // carries exactly the key the edge holds (e.g. not a P-384 key mislabelled as P-256).
        let csr_der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
                .map_err(|e| IdentityError::InvalidCsr(e.to_string()))?;
        let (_, parsed_csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
                .map_err(|e| IdentityError::InvalidCsr(e.to_string()))?;
        let (_, parsed_cert) = X509Certificate::from_der(cert.der())
            .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
        if parsed_csr.certification_request_info.subject_pki.raw
            != parsed_cert.tbs_certificate.subject_pki.raw
        {
            return Err(IdentityError::InvalidCsr(
                "unsupported public key (key and signature algorithm do not match)".into(),
            ));
        }
        Ok(cert.pem())
    }
}

/// Refuses a CSR that asks for an identity other than `expected`.
fn check_csr_identity(params: &CertificateParams, expected: &str) -> Result<()> {
    let mismatch = |requested: &str| IdentityError::CsrIdentityMismatch {
        expected: expected.to_string(),
        requested: requested.to_string(),
    };
    let mut named = false;
    for san in &params.subject_alt_names {
        if let SanType::URI(uri) = san {
            if let Some(id) = uri.as_str().strip_prefix(NODE_URI_PREFIX) {
                if id != expected {
                    return Err(mismatch(id));
                }
                named = true;
            }
        }
    }
    if let Some(cn) = params.distinguished_name.get(&DnType::CommonName) {
        let cn = match cn {
            DnValue::Utf8String(s) => s.as_str(),
            DnValue::PrintableString(s) => s.as_str(),
            DnValue::Ia5String(s) => s.as_str(),
            _ => {
                return Err(IdentityError::InvalidCsr(
                    "unsupported common name encoding".into(),
                ))
            }
        };
        if cn != expected {
            return Err(mismatch(cn));
        }
    }
    if named {
        Ok(())
    } else {
        Err(IdentityError::CsrNoIdentity)
    }
}

/// The parameters of every node certificate, built only from what the issuer decided.
fn node_params(
    node_id: &str,
    role: NodeRole,
    dns_names: &[String],
    ip_addrs: &[IpAddr],
    validity_days: u32,
) -> Result<CertificateParams> {
    validate_node_id(node_id)?;
    if validity_days == 0 || validity_days > MAX_NODE_VALIDITY_DAYS {
        return Err(IdentityError::InvalidValidity(validity_days));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, node_id);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.subject_alt_names = vec![
        SanType::URI(ia5(&format!("{NODE_URI_PREFIX}{node_id}"))?),
        SanType::URI(ia5(&format!("{ROLE_URI_PREFIX}{role}"))?),
    ];
    for name in dns_names {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
        if !valid {
            return Err(IdentityError::InvalidDnsName(name.clone()));
        }
        params.subject_alt_names.push(SanType::DnsName(
            ia5(name).map_err(|_| IdentityError::InvalidDnsName(name.clone()))?,
        ));
    }
    params
        .subject_alt_names
        .extend(ip_addrs.iter().copied().map(SanType::IpAddress));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, validity_days)?;
    Ok(params)
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String> {
    rcgen::string::Ia5String::try_from(s).map_err(|e| IdentityError::Generate(e.to_string()))
}

/// A random positive 128-bit serial number (never derived from the key, so re-issuing for the
/// same key gives a distinct certificate).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40; // positive, and no leading zero byte
    SerialNumber::from_slice(&bytes)
}

/// Valid from a few minutes ago (clock skew) until `days` from now.
fn set_validity(params: &mut CertificateParams, days: u32) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| IdentityError::Generate("system clock before 1970".into()))?
        .as_secs() as i64;
    let at = |secs: i64| {
        ASN1Time::from_timestamp(secs)
            .map(|t| t.to_datetime())
            .map_err(|e| IdentityError::Generate(e.to_string()))
    };
    params.not_before = at(now - BACKDATE_SECS)?;
    params.not_after = at(now + i64::from(days) * 86_400)?;
    Ok(())
}

fn pem_of_cert(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A node's certificate, private key and the cluster CA certificate, all PEM.
///
/// `Debug` redacts the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node certificate (PEM), signed by the cluster CA.
    pub cert_pem: String,
    /// The node's private key (PKCS#8 PEM). Secret.
    pub key_pem: String,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.identity().ok();
        f.debug_struct("NodeIdentity")
            .field("node_id", &id.as_ref().map(|i| i.node_id.as_str()))
            .field("role", &id.as_ref().map(|i| i.role))
            .field("ca_fingerprint", &self.ca_fingerprint().ok())
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

impl NodeIdentity {
    /// Builds an identity from PEM parts and checks it: the key belongs to the certificate, the
    /// certificate carries a valid node identity, and it verifies against the CA now.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<NodeIdentity> {
        let id = NodeIdentity {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            ca_pem: ca_pem.to_string(),
        };
        id.validate()?;
        Ok(id)
    }

    /// Checks the identity as [`NodeIdentity::from_pem`] does.
    pub fn validate(&self) -> Result<()> {
        let cert = self.cert_der()?;
        let ca = self.ca_der()?;
        let key = self.key_der()?;
        self.identity()?;
        let provider = super::provider::provider();
        rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key, &provider).map_err(|e| {
            match e {
                rustls::Error::InconsistentKeys(_) => IdentityError::KeyMismatch,
                other => IdentityError::InvalidKey(other.to_string()),
            }
        })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca)
            .map_err(|e| IdentityError::InvalidCertificate(format!("CA: {e}")))?;
        let parsed = rustls::server::ParsedCertificate::try_from(&cert)
            .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &[],
            rustls_pki_types::UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .map_err(|e| IdentityError::InvalidCertificate(format!("not issued by the CA: {e}")))?;
        Ok(())
    }

    /// Makes a key pair and a CSR asking for node id `node_id`, for a joining edge:
    /// `(csr_pem, key_pem)`. Keep the key; send only the CSR.
    pub fn generate_csr(node_id: &str) -> Result<(String, String)> {
        validate_node_id(node_id)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params.subject_alt_names = vec![SanType::URI(ia5(&format!("{NODE_URI_PREFIX}{node_id}"))?)];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let csr = params.serialize_request(&key)?;
        Ok((csr.pem()?, key.serialize_pem()))
    }

    /// This node's own id and role, read from its certificate.
    pub fn identity(&self) -> Result<PeerIdentity> {
        peer_identity(&self.cert_der()?)
    }

    /// The node certificate as DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| IdentityError::InvalidCertificate(e.to_string()))
    }

    /// The cluster CA certificate as DER.
    pub fn ca_der(&self) -> Result<CertificateDer<'static>> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|e| IdentityError::InvalidCertificate(format!("CA: {e}")))
    }

    /// The private key as DER (secret).
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| IdentityError::InvalidKey(e.to_string()))
    }

    /// `sha256:<hex>` of the cluster CA certificate.
    pub fn ca_fingerprint(&self) -> Result<String> {
        Ok(fingerprint_of(&self.ca_der()?))
    }
}

#[cfg(test)]
pub(super) fn identity_from_uris_for_test<'a>(
    uris: impl IntoIterator<Item = &'a str>,
) -> Result<PeerIdentity> {
    identity_from_uris(uris)
}

#[cfg(test)]
pub(super) fn issuer_of(ca: &ClusterCa) -> &Issuer<'static, KeyPair> {
    &ca.issuer
}

#[cfg(test)]
pub(super) fn node_params_for_test(node_id: &str, role: NodeRole) -> Result<CertificateParams> {
    node_params(node_id, role, &[], &[], 30)
}
