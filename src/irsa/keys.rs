//! Service-account public keys, from the PEM files the API server is given
//! (`--service-account-key-file`), to JSON Web Keys with the key id the API server puts in
//! each token's header, so published keys and issued tokens can be matched.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, KeyAlgorithm, PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use rustls_pki_types::{alg_id, PrivateKeyDer};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_NIST_EC_P521};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// A key that cannot be published, naming the file, the PEM block and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: {problem}")]
pub(crate) struct KeyError {
    pub source_name: String,
    pub problem: String,
}

/// The JWK of every key in one PEM file, in file order. Accepts what the API server accepts:
/// `PUBLIC KEY`, `RSA PUBLIC KEY`, `CERTIFICATE`, and private keys (`PRIVATE KEY`,
/// `RSA PRIVATE KEY`, `EC PRIVATE KEY`, of which only the public half is used).
pub(crate) fn jwks_from_pem(source_name: &str, content: &[u8]) -> Result<Vec<Jwk>, KeyError> {
    let fail = |problem: String| KeyError {
        source_name: source_name.to_string(),
        problem,
    };
    let blocks = pem::parse_many(content).map_err(|err| {
        fail(format!(
            "is not PEM: {err}; give the API server's --service-account-key-file"
        ))
    })?;
    if blocks.is_empty() {
        return Err(fail(
            "holds no PEM block; give the API server's --service-account-key-file (a PUBLIC KEY PEM)"
                .into(),
        ));
    }
    let mut keys = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let which = format!("PEM block {} ({})", index + 1, block.tag());
        let spki = spki_of_block(block).map_err(|problem| fail(format!("{which}: {problem}")))?;
        keys.push(jwk_from_spki(&spki).map_err(|problem| fail(format!("{which}: {problem}")))?);
    }
    Ok(keys)
}

/// The DER SubjectPublicKeyInfo of one PEM block.
fn spki_of_block(block: &pem::Pem) -> Result<Vec<u8>, String> {
    let der = block.contents();
    match block.tag() {
        "PUBLIC KEY" => Ok(der.to_vec()),
        "RSA PUBLIC KEY" => {
            Ok(rustls::sign::public_key_to_spki(&alg_id::RSA_ENCRYPTION, der).to_vec())
        }
        "CERTIFICATE" => {
            let (_, certificate) = x509_parser::parse_x509_certificate(der)
                .map_err(|err| format!("is not a readable X.509 certificate: {err}"))?;
            Ok(certificate.tbs_certificate.subject_pki.raw.to_vec())
        }
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            let key = match block.tag() {
                "PRIVATE KEY" => PrivateKeyDer::Pkcs8(der.to_vec().into()),
                "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(der.to_vec().into()),
                _ => PrivateKeyDer::Sec1(der.to_vec().into()),
            };
            let signing = rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|err| format!("is not a usable RSA or EC private key: {err}"))?;
            signing
                .public_key()
                .map(|spki| spki.to_vec())
                .ok_or_else(|| "has no public key that can be derived".to_string())
        }
        other => Err(format!(
            "is a {other}, not a key; expected PUBLIC KEY, RSA PUBLIC KEY, CERTIFICATE or a private key"
        )),
    }
}

/// The JWK of a SubjectPublicKeyInfo, with the API server's key id: the unpadded base64url
/// SHA-256 of the DER SubjectPublicKeyInfo.
pub(crate) fn jwk_from_spki(spki_der: &[u8]) -> Result<Jwk, String> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|err| format!("is not a SubjectPublicKeyInfo: {err}"))?;
    if !rest.is_empty() {
        return Err("has trailing bytes after the public key".into());
    }
    let kid = key_id(spki.raw);
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(strip_leading_zeros(bytes));
    let (algorithm, parameters) = match spki
        .parsed()
        .map_err(|err| format!("holds an unreadable public key: {err}"))?
    {
        PublicKey::RSA(rsa) => {
            if rsa.key_size() < 2048 {
                return Err(format!(
                    "is a {}-bit RSA key; the API server and IAM need at least 2048 bits",
                    rsa.key_size()
                ));
            }
            (
                KeyAlgorithm::RS256,
                AlgorithmParameters::RSA(RSAKeyParameters {
                    key_type: RSAKeyType::RSA,
                    n: b64(rsa.modulus),
                    e: b64(rsa.exponent),
                }),
            )
        }
        PublicKey::EC(point) => {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let (curve, algorithm, size) = match curve_oid {
                Some(oid) if oid == OID_EC_P256 => (EllipticCurve::P256, KeyAlgorithm::ES256, 32),
                Some(oid) if oid == OID_NIST_EC_P384 => {
                    (EllipticCurve::P384, KeyAlgorithm::ES384, 48)
                }
                Some(oid) if oid == OID_NIST_EC_P521 => {
                    return Err(
                        "is a P-521 key, which these tools cannot verify; use P-256, P-384 or RSA"
                            .into(),
                    )
                }
                _ => {
                    return Err(
                        "is an EC key on an unsupported curve; use P-256, P-384 or RSA".into(),
                    )
                }
            };
            let data = point.data();
            if data.len() != 1 + 2 * size || data[0] != 4 {
                return Err("holds an EC point that is not uncompressed; re-export it with openssl ec -pubout".into());
            }
            (
                algorithm,
                AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve,
                    x: URL_SAFE_NO_PAD.encode(&data[1..=size]),
                    y: URL_SAFE_NO_PAD.encode(&data[1 + size..]),
                }),
            )
        }
        _ => {
            return Err(
                "is neither an RSA nor an EC key; service-account keys are RSA or EC".into(),
            )
        }
    };
    Ok(Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(algorithm),
            key_id: Some(kid),
            ..Default::default()
        },
        algorithm: parameters,
    })
}

/// The key id the API server gives a key (and writes in each token's `kid` header).
pub fn key_id(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[first..]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh key pair's PEMs: (private PKCS#8, public SPKI).
    pub(crate) fn generated(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let pair = rcgen::KeyPair::generate_for(alg).unwrap();
        (pair.serialize_pem(), pair.public_key_pem())
    }

    #[test]
    fn ec_public_key_becomes_a_p256_jwk_with_the_api_servers_key_id() {
        let (_, public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let keys = jwks_from_pem("sa.pub", public.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        let der = pem::parse(&public).unwrap().into_contents();
        assert_eq!(
            keys[0].common.key_id.as_deref(),
            Some(key_id(&der).as_str())
        );
        assert_eq!(keys[0].common.key_algorithm, Some(KeyAlgorithm::ES256));
        let AlgorithmParameters::EllipticCurve(ec) = &keys[0].algorithm else {
            panic!("not EC")
        };
        assert_eq!(URL_SAFE_NO_PAD.decode(&ec.x).unwrap().len(), 32);
        assert_eq!(URL_SAFE_NO_PAD.decode(&ec.y).unwrap().len(), 32);
        // 43 characters: an unpadded base64url SHA-256.
        assert_eq!(keys[0].common.key_id.as_ref().unwrap().len(), 43);
    }

    #[test]
    fn private_key_and_public_key_give_the_same_jwk() {
        let (private, public) = generated(&rcgen::PKCS_ECDSA_P384_SHA384);
        let from_private = jwks_from_pem("sa.key", private.as_bytes()).unwrap();
        let from_public = jwks_from_pem("sa.pub", public.as_bytes()).unwrap();
        assert_eq!(from_private, from_public);
        assert_eq!(
            from_public[0].common.key_algorithm,
            Some(KeyAlgorithm::ES384)
        );
    }

    #[test]
    fn several_blocks_give_several_keys_in_order() {
        let (_, a) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, b) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let keys = jwks_from_pem("rotation.pub", format!("{a}{b}").as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0].common.key_id, keys[1].common.key_id);
        assert_eq!(keys[0], jwks_from_pem("a", a.as_bytes()).unwrap()[0]);
    }

    #[test]
    fn certificate_gives_its_subject_key() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sa.example.com".into()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let from_cert = jwks_from_pem("sa.crt", cert.pem().as_bytes()).unwrap();
        let from_key = jwks_from_pem("sa.pub", pair.public_key_pem().as_bytes()).unwrap();
        assert_eq!(from_cert, from_key);
    }

    #[test]
    fn unusable_input_names_the_file_and_block() {
        let err = jwks_from_pem("empty.pem", b"").unwrap_err().to_string();
        assert!(err.starts_with("empty.pem: holds no PEM block"), "{err}");
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        let err = jwks_from_pem("x.pem", csr.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("PEM block 1 (CERTIFICATE REQUEST)"), "{err}");
        assert!(err.contains("expected PUBLIC KEY"), "{err}");
        let junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let err = jwks_from_pem("junk.pem", junk.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a SubjectPublicKeyInfo"), "{err}");
    }

    #[test]
    fn leading_zeros_are_stripped_but_zero_stays() {
        assert_eq!(strip_leading_zeros(&[0, 0, 1, 0]), &[1, 0]);
        assert_eq!(strip_leading_zeros(&[0]), &[0]);
        assert_eq!(strip_leading_zeros(&[]), &[] as &[u8]);
    }
}
