//! The serving certificate and the TLS settings of the admission endpoint.
//!
//! [`CertificateStore`] is the rustls certificate resolver: each handshake reads the current
//! pair from an `ArcSwap`, so a rotated certificate applies to the next handshake without
//! touching the listener or established connections. Both certificate sources feed it: the
//! files (`--tls-cert`/`--tls-key`, watched by [`watch_files`]) and the built-in certificate
//! mode (`crate::certs`), through [`CertificateStore::set_pem`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SupportedCipherSuite;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::cli::TlsVersion;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::sources::file_watch::{self, FileState, FileWatch, WatchOptions};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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
    #[error("unknown cipher suite {0:?} in --tls-cipher-suites; supported: {supported}", supported = supported_names())]
    UnknownCipherSuite(String),
    #[error("no usable cipher suite in --tls-cipher-suites: {} not implemented by rustls (CBC, RC4, 3DES or RSA key exchange); name at least one of: {supported}", .0.join(", "), supported = supported_names())]
    NoUsableCipherSuite(Vec<String>),
    #[error("TLS configuration rejected by rustls: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate and key served to new handshakes. Starts empty: until a pair is loaded,
/// handshakes fail and readiness reports "no serving certificate loaded".
pub struct CertificateStore {
    current: ArcSwapOption<CertifiedKey>,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateStore")
            .field("loaded", &self.current.load().is_some())
            .finish()
    }
}

impl CertificateStore {
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            provider: Arc::new(ring::default_provider()),
            metrics,
            readiness,
        }
    }

    /// Parses a PEM certificate chain (end-entity first) and its PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), checks that they belong together, and serves them from the next
    /// handshake on. On error the previous pair keeps serving; the attempt is counted either
    /// way in `certificate_reloads{result}`.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        match self.parse(cert_pem, key_pem) {
            Ok((certified, not_after)) => {
                self.current.store(Some(Arc::new(certified)));
                self.metrics
                    .certificate_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.certificate_expiry.set(not_after as f64);
                self.readiness.set_certificate_loaded(true);
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

    /// The end-entity certificate being served (DER), for tests and diagnostics.
    pub fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        self.current
            .load()
            .as_ref()
            .and_then(|certified| certified.cert.first().cloned())
    }

    fn parse(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(CertifiedKey, i64), TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| TlsError::CertificatePem(err.to_string()))?;
        let end_entity = chain.first().ok_or(TlsError::NoCertificate)?;
        let not_after = not_after(end_entity)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|err| TlsError::KeyPem(err.to_string()))?;
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| TlsError::Key(err.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => Ok((certified, not_after)),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(TlsError::KeyMismatch)
            }
            Err(err) => Err(TlsError::Certificate(err.to_string())),
        }
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// The certificate's notAfter as a Unix timestamp.
fn not_after(der: &CertificateDer<'_>) -> Result<i64, TlsError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| TlsError::Certificate(err.to_string()))?;
    Ok(certificate.validity().not_after.timestamp())
}

/// Loads the pair from files now and again whenever either changes (including the kubelet's
/// `..data` symlink swap). Missing files are waited for (readiness stays false until a pair
/// loads); a pair that does not load is logged and counted, and the previous one keeps serving.
pub fn watch_files(
    cert_path: PathBuf,
    key_path: PathBuf,
    store: Arc<CertificateStore>,
    options: WatchOptions,
) -> FileWatch {
    let paths = vec![cert_path.clone(), key_path.clone()];
    file_watch::watch(paths, options, move |states| {
        load_files(&store, &cert_path, &key_path, &states[0], &states[1]);
    })
}

fn load_files(
    store: &CertificateStore,
    cert_path: &Path,
    key_path: &Path,
    cert: &FileState,
    key: &FileState,
) {
    let fallback = if store.is_loaded() {
        "the previous certificate keeps serving"
    } else {
        "no certificate is served until one loads"
    };
    let unusable = |path: &Path, state: &FileState| match state {
        FileState::Content(_) => None,
        FileState::Missing => Some(format!("{} is missing", path.display())),
        FileState::Unreadable(err) => Some(format!("cannot read {}: {err}", path.display())),
    };
    match (cert, key) {
        (FileState::Content(cert_pem), FileState::Content(key_pem)) => {
            if let Err(err) = store.set_pem(cert_pem, key_pem) {
                tracing::error!(
                    cert = %cert_path.display(),
                    key = %key_path.display(),
                    "serving certificate not loaded: {err}; {fallback}"
                );
            }
        }
        _ => {
            let problems: Vec<String> = [unusable(cert_path, cert), unusable(key_path, key)]
                .into_iter()
                .flatten()
                .collect();
            tracing::warn!(
                "waiting for the serving certificate: {}; {fallback}",
                problems.join(", ")
            );
        }
    }
}

/// TLS 1.2 suites by name: IANA names, which Go uses too, plus Go's short ChaCha20 aliases.
const TLS12_SUITES: &[(&str, SupportedCipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.3 suites are always enabled (as in Go); naming them is accepted and changes nothing.
const TLS13_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Suites Go knows that rustls deliberately does not implement (CBC, RC4, 3DES, static RSA).
const GO_ONLY_NAMES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The names `--tls-cipher-suites` accepts, for error messages; read from the tables so the
/// list cannot drift from what is accepted.
fn supported_names() -> String {
    let tls12: Vec<&str> = TLS12_SUITES.iter().map(|(name, _)| *name).collect();
    format!(
        "{}, and the TLS 1.3 suites, which are always on ({})",
        tls12.join(", "),
        TLS13_NAMES.join(", ")
    )
}

/// The suites to offer, and the named suites left out because rustls does not implement them.
#[derive(Debug)]
pub struct CipherSuites {
    pub suites: Vec<SupportedCipherSuite>,
    /// Names Go knows but rustls lacks (CBC, RC4, 3DES, RSA key exchange), in the given order.
    pub dropped: Vec<String>,
}

/// The cipher suites to offer: all TLS 1.3 suites, plus the named TLS 1.2 suites (all of
/// rustls' when `names` is empty). Names are trimmed; empty entries are ignored. Suites Go
/// knows but rustls lacks are dropped (the caller warns), so the reference's settings still
/// start; a name nobody knows is an error (most likely a typo), and so is a list of which
/// nothing usable remains.
pub fn cipher_suites(names: &[String]) -> Result<CipherSuites, TlsError> {
    let names: Vec<&str> = names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(CipherSuites {
            suites: ring::DEFAULT_CIPHER_SUITES.to_vec(),
            dropped: Vec::new(),
        });
    }
    let mut suites: Vec<SupportedCipherSuite> = ring::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .filter(|suite| matches!(suite, SupportedCipherSuite::Tls13(_)))
        .collect();
    let mut dropped = Vec::new();
    let mut usable = 0;
    for name in names {
        if let Some((_, suite)) = TLS12_SUITES.iter().find(|(known, _)| *known == name) {
            usable += 1;
            if !suites.iter().any(|s| s.suite() == suite.suite()) {
                suites.push(*suite);
            }
        } else if TLS13_NAMES.contains(&name) {
            usable += 1;
        } else if GO_ONLY_NAMES.contains(&name) {
            if !dropped.iter().any(|known| known == name) {
                dropped.push(name.to_string());
            }
        } else {
            return Err(TlsError::UnknownCipherSuite(name.to_string()));
        }
    }
    if usable == 0 {
        return Err(TlsError::NoUsableCipherSuite(dropped));
    }
    Ok(CipherSuites { suites, dropped })
}

/// The rustls server configuration: the given minimum version and suites, ALPN `h2` and
/// `http/1.1` (the API server speaks HTTP/2 to webhooks), certificates from `store`. What the
/// reference would accept but rustls cannot do (TLS 1.0 and 1.1, CBC and RSA-key-exchange
/// suites) is logged as a warning and left out rather than stopping startup.
pub fn server_config(
    min_version: TlsVersion,
    cipher_suite_names: &[String],
    store: Arc<CertificateStore>,
) -> Result<rustls::ServerConfig, TlsError> {
    let CipherSuites { suites, dropped } = cipher_suites(cipher_suite_names)?;
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
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
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

    fn store() -> CertificateStore {
        CertificateStore::new(Arc::new(Metrics::new()), Arc::new(Readiness::default()))
    }

    fn pair(name: &str) -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    /// The TLS 1.2 suites of `suites`, in order (TLS 1.3 suites are always on).
    fn tls12_suites(suites: &[SupportedCipherSuite]) -> Vec<rustls::CipherSuite> {
        suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite())
            .collect()
    }
    #[test]
    fn set_pem_serves_a_matching_pair_and_records_expiry() {
        let store = store();
        let (cert, key) = pair("localhost");
        store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert!(store.is_loaded());
        assert!(
            store.readiness.check().unwrap_err() == vec!["ServiceAccount cache not yet synced"]
        );
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
        assert!(matches!(err, TlsError::KeyMismatch), "{err}");
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
                include_str!("../../tests/fixtures/tls/pkcs1.crt"),
                include_str!("../../tests/fixtures/tls/pkcs1.key"),
                "RSA PRIVATE KEY",
            ),
            (
                include_str!("../../tests/fixtures/tls/sec1.crt"),
                include_str!("../../tests/fixtures/tls/sec1.key"),
                "EC PRIVATE KEY",
            ),
        ] {
            assert!(key.contains(block));
            store().set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        }
    }

    #[test]
    fn cipher_suite_names_map_to_rustls_suites() {
        let CipherSuites { suites, dropped } = cipher_suites(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            " TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into(),
            "TLS_AES_128_GCM_SHA256".into(),
            "".into(),
        ])
        .unwrap();
        assert!(dropped.is_empty());
        let tls12 = tls12_suites(&suites);
        assert_eq!(
            tls12,
            vec![
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        assert_eq!(suites.len(), 5, "three TLS 1.3 suites always on");
        assert_eq!(
            cipher_suites(&[]).unwrap().suites.len(),
            ring::ALL_CIPHER_SUITES.len()
        );
    }

    #[test]
    fn suites_rustls_lacks_are_dropped_and_named() {
        let CipherSuites { suites, dropped } = cipher_suites(&[
            "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA".into(),
            "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
        ])
        .unwrap();
        assert_eq!(
            dropped,
            vec![
                "TLS_RSA_WITH_AES_128_CBC_SHA",
                "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
            ]
        );
        let tls12 = tls12_suites(&suites);
        assert_eq!(
            tls12,
            vec![rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
        );
    }

    #[test]
    fn unknown_suites_and_lists_with_nothing_usable_fail_naming_them() {
        let err = cipher_suites(&[
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into(),
            "TLS_RSA_WITH_AES_128_GCM_SHA256".into(),
        ])
        .unwrap_err();
        assert!(matches!(err, TlsError::NoUsableCipherSuite(_)));
        assert!(
            err.to_string().starts_with(
                "no usable cipher suite in --tls-cipher-suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_RSA_WITH_AES_128_GCM_SHA256 not implemented"
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            "{err} names what to use instead"
        );
        let err = cipher_suites(&["TLS_MADE_UP".into()]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown cipher suite \"TLS_MADE_UP\""),
            "{err}"
        );
        for (name, _) in TLS12_SUITES {
            assert!(err.to_string().contains(name), "{err} does not list {name}");
        }
        assert!(err.to_string().contains("TLS_AES_128_GCM_SHA256"), "{err}");
    }

    #[test]
    fn server_config_offers_h2_and_http1_and_honours_min_version() {
        let store = Arc::new(store());
        let config = server_config(TlsVersion::Tls13, &[], store).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
