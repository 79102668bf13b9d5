//! The serving certificate: a rustls certificate resolver over an `ArcSwap`, so a rotated
//! certificate applies to the next handshake without touching the listener or established
//! connections. Both sources (the files, `super::files`, and the built-in certificate mode,
//! `crate::certs`) feed it through [`CertificateStore::set_pem`]; it alone reports whether a
//! certificate is loaded, to readiness and to the certificate metrics.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ops::health::{Condition, Readiness};
use crate::ops::metrics::Metrics;

/// What `/readyz` says until a serving certificate is loaded.
const NOT_LOADED: &str = "no serving certificate loaded";

/// A certificate and key that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate PEM is not valid: {0}")]
    CertificatePem(String),
    #[error("certificate PEM holds no CERTIFICATE block")]
    NoCertificate,
    #[error("certificate is not a valid X.509 certificate: {0}")]
    Certificate(String),
    #[error("key PEM holds no private key (expected a PKCS#8, PKCS#1 RSA or SEC1 EC PRIVATE KEY block): {0}")]
    KeyPem(String),
    #[error("private key cannot be used for signing: {0}")]
    Key(String),
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
}

/// The certificate and key served to new handshakes. Starts empty: until a pair is loaded,
/// handshakes fail and readiness reports "no serving certificate loaded".
pub struct CertificateStore {
    current: ArcSwapOption<CertifiedKey>,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
    /// "A serving certificate is loaded": this store is its only writer.
    loaded: Condition,
}

impl fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateStore")
            .field("loaded", &self.current.load().is_some())
            .finish()
    }
}

impl CertificateStore {
    /// An empty store; registers its readiness condition, unmet until a pair loads.
    pub fn new(metrics: Arc<Metrics>, readiness: &Readiness) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            provider: Arc::new(ring::default_provider()),
            metrics,
            loaded: readiness.register(NOT_LOADED),
        }
    }

    /// Parses a PEM certificate chain (end-entity first) and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), checks that they belong together, and serves them from the next
    /// handshake on. On error the previous pair keeps serving; the attempt is counted either
    /// way in `certificate_reloads{result}`.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), CertificateError> {
        match self.parse(cert_pem, key_pem) {
            Ok((certified, not_after)) => {
                self.current.store(Some(Arc::new(certified)));
                self.metrics
                    .certificate_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.certificate_expiry.set(not_after as f64);
                self.loaded.set(true);
                if not_after <= crate::ops::clock::unix_now() {
                    tracing::warn!(
                        not_after,
                        "the serving certificate loaded has already expired"
                    );
                } else {
                    tracing::info!(not_after, "serving certificate loaded");
                }
                Ok(())
            }
            Err(err) => {
                self.metrics
                    .certificate_reloads
                    .with_label_values(&["failure"])
                    .inc();
                Err(err)
            }
        }
    }

    /// Whether a pair is being served.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// The end-entity certificate being served (DER).
    #[cfg(test)]
    pub(crate) fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        self.current
            .load()
            .as_ref()
            .and_then(|certified| certified.cert.first().cloned())
    }

    fn parse(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<(CertifiedKey, i64), CertificateError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| CertificateError::CertificatePem(err.to_string()))?;
        let end_entity = chain.first().ok_or(CertificateError::NoCertificate)?;
        let not_after = not_after(end_entity)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|err| CertificateError::KeyPem(err.to_string()))?;
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| CertificateError::Key(err.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => Ok((certified, not_after)),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(CertificateError::KeyMismatch)
            }
            Err(err) => Err(CertificateError::Certificate(err.to_string())),
        }
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// The certificate's notAfter as a Unix timestamp.
fn not_after(der: &CertificateDer<'_>) -> Result<i64, CertificateError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| CertificateError::Certificate(err.to_string()))?;
    Ok(certificate.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> CertificateStore {
        CertificateStore::new(Arc::new(Metrics::new()), &Readiness::default())
    }

    fn pair(name: &str) -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn set_pem_serves_a_matching_pair_and_records_expiry() {
        let readiness = Readiness::default();
        let _cache = readiness.register("ServiceAccount cache not yet synced");
        let store = CertificateStore::new(Arc::new(Metrics::new()), &readiness);
        assert_eq!(readiness.check().unwrap_err().len(), 2);
        let (cert, key) = pair("localhost");
        store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(store.is_loaded());
        assert!(readiness.check().unwrap_err() == vec!["ServiceAccount cache not yet synced"]);
        assert!(store.metrics.certificate_expiry.get() > 1.7e9);
        let text = store.metrics.encode();
        assert!(
            text.contains("certificate_reloads_total{result=\"success\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn mismatched_or_garbage_pair_keeps_the_previous_one() {
        let store = store();
        let (cert, key) = pair("old");
        store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let before = store.current_certificate();
        let (other_cert, _) = pair("new");
        let err = store
            .set_pem(other_cert.as_bytes(), key.as_bytes())
            .unwrap_err();
        assert!(matches!(err, CertificateError::KeyMismatch), "{err}");
        let err = store.set_pem(b"not pem", key.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        let err = store.set_pem(cert.as_bytes(), b"").unwrap_err();
        assert!(err.to_string().contains("no private key"), "{err}");
        assert_eq!(store.current_certificate(), before);
        assert!(store
            .metrics
            .encode()
            .contains("certificate_reloads_total{result=\"failure\"} 3"));
    }

    #[test]
    fn pkcs1_and_sec1_keys_load() {
        // Made with openssl: `genrsa -traditional` and `ecparam -genkey -noout`.
        for (cert, key, block) in [
            (
                include_str!("../../../tests/fixtures/tls/pkcs1.crt"),
                include_str!("../../../tests/fixtures/tls/pkcs1.key"),
                "RSA PRIVATE KEY",
            ),
            (
                include_str!("../../../tests/fixtures/tls/sec1.crt"),
                include_str!("../../../tests/fixtures/tls/sec1.key"),
                "EC PRIVATE KEY",
            ),
        ] {
            assert!(key.contains(block));
            store().set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        }
    }
}
