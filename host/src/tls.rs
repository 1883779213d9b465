//! TLS for the host's own client connections. A leaf: the runtime (a
//! plugin's outbound requests) and the store (a managed PostgreSQL) both
//! connect with it, and neither reaches into the other for it.

use std::sync::{Arc, OnceLock};

/// The TLS client configuration every outbound connection uses (a
/// plugin's requests, the PostgreSQL store's connections): the Mozilla
/// roots, ring, the safe protocol versions.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}
