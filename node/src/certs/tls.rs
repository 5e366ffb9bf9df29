//! The TLS state the HTTPS listener, the API and the certificate manager share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;
use xpod_storage::meta::Millis;

use super::resolver::{Certs, Source};

/// TLS state shared by the listener, the API and the manager.
#[derive(Debug, Default)]
pub struct Tls {
    /// What the HTTPS listener serves.
    pub certs: Certs,
    pub(super) status: Mutex<Status>,
    /// Wakes the manager (a renewal request).
    pub(super) wake: Notify,
    /// Certificates this node obtained.
    pub issued: AtomicU64,
    /// Orders that failed on this node.
    pub failed: AtomicU64,
}

/// The manager's view, for `GET /.cluster/certs`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CertManager)]
pub struct Status {
    /// The names the centers' certificate should cover.
    pub names: Vec<String>,
    /// Failed orders in a row (0 after a success).
    pub failures: u32,
    pub last_error: Option<String>,
    /// When this node tries again after a failure (Unix ms).
    pub next_attempt_at: Option<Millis>,
}

impl rustls::server::ResolvesServerCert for Tls {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.certs.resolve(hello)
    }
}

impl Tls {
    pub fn status(&self) -> Status {
        self.status.lock().expect("tls status").clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("tls status"))
    }

    /// Asks the manager to look now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// ACME and certificate figures for `/metrics`.
    pub fn figures(&self) -> Vec<crate::metrics::Figure> {
        use crate::metrics::Figure;
        let mut out = vec![
            Figure::counter(
                "xpod_acme_issued_total",
                "Certificates issued through ACME.",
                self.issued.load(Ordering::Relaxed),
            ),
            Figure::counter(
                "xpod_acme_failures_total",
                "ACME issuances that failed.",
                self.failed.load(Ordering::Relaxed),
            ),
        ];
        if let Some(s) = self.certs.current() {
            out.push(
                Figure::gauge(
                    "xpod_tls_certificate_expiry_seconds",
                    "When the served certificate expires (Unix seconds).",
                    (s.not_after / 1000) as f64,
                )
                .with(
                    "source",
                    match s.source {
                        Source::Acme => "acme",
                        Source::SelfSigned => "self-signed",
                    },
                ),
            );
        }
        out
    }
}

/// The rustls configuration of the HTTPS side: certificates from `tls`; ALPN offers HTTP/2
/// (`h2`) when `h2` (this node's own handlers), else only HTTP/1.1 (an edge terminating TLS for
/// a service it relays bytes to, which speaks HTTP/1.1).
pub fn server_config(tls: Arc<Tls>, h2: bool) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(tls);
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
