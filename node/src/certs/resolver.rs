//! The certificates a center serves, picked by SNI from memory and swapped whole when a new
//! set is loaded (no restart; connections already open keep the certificate they started with).

use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

/// Where a served certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Obtained by ACME (this center or another).
    Acme,
    /// Generated at start-up until an ACME certificate exists.
    SelfSigned,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Acme => "acme",
            Source::SelfSigned => "self-signed",
        }
    }
}

/// One certificate and the names it covers.
#[derive(Clone, Debug)]
pub struct Served {
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    pub source: Source,
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf's serial number, hex.
    pub serial: String,
}

/// The SNI → certificate map.
#[derive(Debug, Default)]
pub struct Certs {
    served: RwLock<Option<Arc<Served>>>,
}

impl Certs {
    /// Serves `s` from now on.
    pub fn install(&self, s: Served) {
        *self.served.write().expect("certs lock") = Some(Arc::new(s));
    }

    /// What is served now.
    pub fn current(&self) -> Option<Arc<Served>> {
        self.served.read().expect("certs lock").clone()
    }

    /// The certificate for `sni`, if one covers it.
    pub fn for_name(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let s = self.current()?;
        covers(&s.names, sni).then(|| s.key.clone())
    }

    /// Whether a served certificate covers `host` (for the HTTP → HTTPS redirect).
    pub fn covers(&self, host: &str) -> bool {
        self.current().is_some_and(|s| covers(&s.names, host))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI or a name no certificate covers: no certificate, so the handshake fails
        // cleanly (rustls sends an alert) instead of presenting a wrong one.
        self.for_name(hello.server_name()?)
    }
}

/// Whether `names` (exact names and `*.suffix` wildcards, one label deep as in RFC 6125)
/// cover `host`.
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        match n.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => n == host,
        }
    })
}

/// Parses a PEM chain and a PEM (PKCS#8) key into what rustls serves, plus the leaf's validity
/// (Unix ms) and serial.
pub fn certified_key(
    chain_pem: &str,
    key_pem: &str,
) -> anyhow::Result<(CertifiedKey, i64, i64, String)> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the certificate chain is not PEM: {e}"))?;
    let leaf = chain.first().context("the certificate chain is empty")?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| anyhow::anyhow!("the leaf certificate does not parse: {e}"))?;
    let v = x509.validity();
    let not_before = v.not_before.timestamp() * 1000;
    let not_after = v.not_after.timestamp() * 1000;
    let serial = x509.raw_serial_as_string().replace(':', "");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the private key is not PEM: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("the private key is not usable: {e}"))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()
        .map_err(|e| anyhow::anyhow!("the private key does not match the certificate: {e}"))?;
    Ok((ck, not_before, not_after, serial))
}

/// A self-signed certificate for `names`, served until an ACME one exists.
pub fn self_signed(names: &[String]) -> anyhow::Result<Served> {
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("certificate names")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "xpod self-signed (no ACME certificate yet)",
    );
    let cert = params.self_signed(&key).context("self-signing")?;
    let (ck, not_before, not_after, serial) = certified_key(&cert.pem(), &key.serialize_pem())?;
    Ok(Served {
        names: names.to_vec(),
        key: Arc::new(ck),
        source: Source::SelfSigned,
        not_before,
        not_after,
        serial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec![
            "example.test".to_string(),
            "*.pods.example.test".to_string(),
        ];
        assert!(covers(&names, "example.test"));
        assert!(covers(&names, "Alice.Pods.Example.Test."));
        assert!(
            !covers(&names, "pods.example.test"),
            "a wildcard does not cover its base"
        );
        assert!(!covers(&names, "a.b.pods.example.test"), "one label only");
        assert!(!covers(&names, "other.test"));
        assert!(!covers(&names, ".pods.example.test"));
    }

    #[test]
    fn self_signed_installs_and_resolves_by_name() {
        let certs = Certs::default();
        assert!(certs.for_name("example.test").is_none());
        let s = self_signed(&["example.test".into(), "*.pods.example.test".into()]).unwrap();
        assert_eq!(s.source, Source::SelfSigned);
        assert!(s.not_after > s.not_before);
        certs.install(s);
        assert!(certs.for_name("a.pods.example.test").is_some());
        assert!(certs.for_name("nope.test").is_none());
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = rcgen::KeyPair::generate().unwrap();
        let b = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.test".into()])
            .unwrap()
            .self_signed(&a)
            .unwrap();
        let err = certified_key(&cert.pem(), &b.serialize_pem()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(certified_key("", &a.serialize_pem()).is_err());
    }
}
