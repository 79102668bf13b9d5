//! The cipher-suite names `--tls-cipher-suites` accepts (IANA names, as Go uses, plus Go's short
//! ChaCha20 aliases), mapped onto rustls' suites. Names Go knows but rustls deliberately lacks
//! are dropped with a warning rather than stopping startup.

use rustls::crypto::ring;
use rustls::SupportedCipherSuite;

/// A list of cipher-suite names that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CipherSuiteError {
    #[error("unknown cipher suite {0:?} in --tls-cipher-suites; supported: {supported}", supported = supported_names())]
    Unknown(String),
    #[error("no usable cipher suite in --tls-cipher-suites: {} not implemented by rustls (CBC, RC4, 3DES or RSA key exchange); name at least one of: {supported}", .0.join(", "), supported = supported_names())]
    NoneUsable(Vec<String>),
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
pub fn cipher_suites(names: &[String]) -> Result<CipherSuites, CipherSuiteError> {
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
            return Err(CipherSuiteError::Unknown(name.to_string()));
        }
    }
    if usable == 0 {
        return Err(CipherSuiteError::NoneUsable(dropped));
    }
    Ok(CipherSuites { suites, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS 1.2 suites of `suites`, in order (TLS 1.3 suites are always on).
    fn tls12_suites(suites: &[SupportedCipherSuite]) -> Vec<rustls::CipherSuite> {
        suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| s.suite())
            .collect()
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
        assert!(matches!(err, CipherSuiteError::NoneUsable(_)));
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
}
