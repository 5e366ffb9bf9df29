//! The one crypto provider of every TLS config and certificate check here: ring, passed
//! explicitly (no process-global provider is installed or relied upon).

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The ring crypto provider, shared by every config this module builds.
pub(super) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
