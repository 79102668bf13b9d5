//! A projected service-account token as IAM reads it: its claims, and whether its signature
//! verifies against a published key set (the check STS makes before anything else).

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Serialize;
use serde_json::Value;

/// The claims IAM evaluates, read without trusting the token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    /// Always a list: Kubernetes writes `aud` as an array.
    pub aud: Vec<String>,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    /// From the header: which key signed it.
    pub kid: Option<String>,
    pub alg: String,
}

/// Reads the header and claims; the signature is checked separately by [`verify`].
pub(crate) fn read_claims(token: &str) -> Result<Claims, String> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|err| format!("the token is not a JWT: {err}"))?;
    let mut validation = Validation::new(header.alg);
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(&[]), &validation)
        .map_err(|err| format!("the token's claims are unreadable: {err}"))?;
    let claims = data.claims;
    let string = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let aud = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Claims {
        iss: string("iss"),
        sub: string("sub"),
        aud,
        exp: claims.get("exp").and_then(Value::as_i64),
        iat: claims.get("iat").and_then(Value::as_i64),
        kid: header.kid,
        alg: format!("{:?}", header.alg),
    })
}

/// Why a token does not verify against a key set, in words with the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No published key has the token's key id.
    UnknownKey {
        kid: String,
        published: Vec<String>,
    },
    /// A key with that id exists but the signature does not verify with it.
    BadSignature {
        kid: String,
        problem: String,
    },
    /// The token carries no key id and no published key verifies it.
    NoKeyVerifies {
        published: Vec<String>,
    },
    Unreadable(String),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKey { kid, published } => write!(
                f,
                "the token is signed with key id {kid}, which is not among the published keys ({}): \
                 the cluster signs with a key that is not published; regenerate the documents with \
                 `pod-identity-webhook oidc` and upload them",
                list(published)
            ),
            Self::BadSignature { kid, problem } => write!(
                f,
                "the published key {kid} does not verify the token's signature ({problem}): the \
                 published key has the right id but other material; regenerate the documents with \
                 `pod-identity-webhook oidc` from the cluster's current keys"
            ),
            Self::NoKeyVerifies { published } => write!(
                f,
                "the token has no key id and none of the published keys ({}) verifies it; publish \
                 the cluster's current keys with `pod-identity-webhook oidc`",
                list(published)
            ),
            Self::Unreadable(problem) => f.write_str(problem),
        }
    }
}

fn list(kids: &[String]) -> String {
    if kids.is_empty() {
        "none".into()
    } else {
        kids.join(", ")
    }
}

/// Verifies the signature with the published key of the token's key id (or, without one,
/// with any published key). Returns the key id that verified it. Expiry and claims are not
/// checked here: the caller reports them.
pub fn verify(token: &str, keys: &JwkSet) -> Result<String, VerifyError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|err| VerifyError::Unreadable(format!("the token is not a JWT: {err}")))?;
    let published: Vec<String> = keys
        .keys
        .iter()
        .filter_map(|key| key.common.key_id.clone())
        .collect();
    match &header.kid {
        Some(kid) => {
            let key = keys.find(kid).ok_or_else(|| VerifyError::UnknownKey {
                kid: kid.clone(),
                published: published.clone(),
            })?;
            check_signature(token, key, header.alg).map_err(|problem| {
                VerifyError::BadSignature {
                    kid: kid.clone(),
                    problem,
                }
            })?;
            Ok(kid.clone())
        }
        None => keys
            .keys
            .iter()
            .find(|key| check_signature(token, key, header.alg).is_ok())
            .map(|key| key.common.key_id.clone().unwrap_or_default())
            .ok_or(VerifyError::NoKeyVerifies { published }),
    }
}

fn check_signature(token: &str, key: &Jwk, alg: Algorithm) -> Result<(), String> {
    let decoding = DecodingKey::from_jwk(key).map_err(|err| format!("unusable key: {err}"))?;
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .map(drop)
        .map_err(|err| err.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::irsa::keys::{jwks_from_pem, tests::generated};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    /// A token signed by `private_pem` (PKCS#8 EC) with the key id of its public half.
    pub(crate) fn signed(private_pem: &str, kid: Option<String>, claims: &Value) -> String {
        let der = pem::parse(private_pem).unwrap().into_contents();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid;
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&der)).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": "https://oidc.example.com", "sub": "system:serviceaccount:ns:app",
               "aud": ["sts.amazonaws.com"], "exp": 2000000000, "iat": 1999996400})
    }

    #[test]
    fn claims_are_read_with_aud_as_a_list() {
        let (private, public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = jwks_from_pem("k", public.as_bytes()).unwrap().remove(0);
        let token = signed(&private, key.common.key_id.clone(), &claims());
        let read = read_claims(&token).unwrap();
        assert_eq!(read.iss.as_deref(), Some("https://oidc.example.com"));
        assert_eq!(read.sub.as_deref(), Some("system:serviceaccount:ns:app"));
        assert_eq!(read.aud, vec!["sts.amazonaws.com"]);
        assert_eq!(read.exp, Some(2000000000));
        assert_eq!(read.kid, key.common.key_id);
        assert_eq!(read.alg, "ES256");
        let mut one = claims();
        one["aud"] = json!("single");
        assert_eq!(
            read_claims(&signed(&private, None, &one)).unwrap().aud,
            vec!["single"]
        );
        assert!(read_claims("not.a.jwt").unwrap_err().contains("not a JWT"));
    }

    #[test]
    fn verifies_with_the_matching_key_and_names_a_missing_or_wrong_one() {
        let (private, public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, other_public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = jwks_from_pem("k", public.as_bytes()).unwrap().remove(0);
        let other = jwks_from_pem("o", other_public.as_bytes())
            .unwrap()
            .remove(0);
        let kid = key.common.key_id.clone().unwrap();
        let token = signed(&private, Some(kid.clone()), &claims());

        let good = JwkSet {
            keys: vec![other.clone(), key.clone()],
        };
        assert_eq!(verify(&token, &good), Ok(kid.clone()));

        let missing = JwkSet {
            keys: vec![other.clone()],
        };
        let err = verify(&token, &missing).unwrap_err();
        assert!(matches!(err, VerifyError::UnknownKey { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&kid) && text.contains(other.common.key_id.as_ref().unwrap()),
            "{text}"
        );
        assert!(text.contains("pod-identity-webhook oidc"), "{text}");

        // Same id, other material: a key file swapped behind the same name.
        let mut impostor = other.clone();
        impostor.common.key_id = Some(kid.clone());
        let err = verify(
            &token,
            &JwkSet {
                keys: vec![impostor],
            },
        )
        .unwrap_err();
        assert!(matches!(err, VerifyError::BadSignature { .. }), "{err:?}");
        assert!(err.to_string().contains("other material"), "{err}");

        let no_kid = signed(&private, None, &claims());
        assert_eq!(verify(&no_kid, &good), Ok(kid));
        assert!(matches!(
            verify(&no_kid, &missing),
            Err(VerifyError::NoKeyVerifies { .. })
        ));
    }

    #[test]
    fn rsa_tokens_verify_against_the_jwk_of_the_public_key_file() {
        let private = include_str!("../../tests/fixtures/irsa/rsa-2048.key");
        let public = include_str!("../../tests/fixtures/irsa/rsa-2048.pub");
        let pkcs1 = include_str!("../../tests/fixtures/irsa/rsa-2048.pkcs1.pub");
        let key = jwks_from_pem("sa.pub", public.as_bytes())
            .unwrap()
            .remove(0);
        assert_eq!(jwks_from_pem("sa.key", private.as_bytes()).unwrap()[0], key);
        assert_eq!(jwks_from_pem("sa.pkcs1", pkcs1.as_bytes()).unwrap()[0], key);
        let der = pem::parse(private).unwrap().into_contents();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = key.common.key_id.clone();
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_rsa_der(&der)).unwrap();
        assert_eq!(
            verify(
                &token,
                &JwkSet {
                    keys: vec![key.clone()]
                }
            ),
            Ok(key.common.key_id.unwrap())
        );
    }
}
