//! The rustls server configuration, built from plain settings: the minimum TLS version, the
//! cipher suites by name, ALPN, and the certificate store as resolver.

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};

use super::cipher_suites::{cipher_suites, CipherSuiteError, CipherSuites};
use super::store::CertificateStore;

/// Minimum TLS version. rustls implements 1.2 and 1.3 only: 1.0 and 1.1 are accepted (the
/// reference accepts them) and served as 1.2, with a warning at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    #[default]
    Tls12,
    Tls13,
}

/// How the admission endpoint speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub min_version: TlsVersion,
    /// TLS 1.2 suites by IANA or Go name; empty means rustls' defaults (see
    /// `super::cipher_suites`).
    pub cipher_suites: Vec<String>,
}

/// The settings cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(transparent)]
    CipherSuites(#[from] CipherSuiteError),
    #[error("TLS configuration rejected by rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The rustls server configuration: the given minimum version and suites, ALPN `h2` and
/// `http/1.1` (the API server speaks HTTP/2 to webhooks), certificates from `store`. What the
/// reference would accept but rustls cannot do (TLS 1.0 and 1.1, CBC and RSA-key-exchange
/// suites) is logged as a warning and left out rather than stopping startup.
pub fn server_config(
    settings: &TlsSettings,
    store: Arc<CertificateStore>,
) -> Result<rustls::ServerConfig, TlsConfigError> {
    let CipherSuites { suites, dropped } = cipher_suites(&settings.cipher_suites)?;
    if !dropped.is_empty() {
        tracing::warn!(
            "dropped from --tls-cipher-suites, as rustls does not implement them (CBC, RC4, 3DES or RSA key exchange): {}",
            dropped.join(", ")
        );
    }
    let provider = CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    };
    let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls10 | TlsVersion::Tls11 => {
            tracing::warn!("--tls-min-version below 1.2: rustls implements TLS 1.2 and 1.3 only, so TLS 1.2 and above are served");
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        }
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::health::Readiness;
    use crate::ops::metrics::Metrics;

    #[test]
    fn server_config_offers_h2_and_http1_and_honours_min_version() {
        let store = Arc::new(CertificateStore::new(
            Arc::new(Metrics::new()),
            &Readiness::default(),
        ));
        let settings = TlsSettings {
            min_version: TlsVersion::Tls13,
            cipher_suites: Vec::new(),
        };
        let config = server_config(&settings, store).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
