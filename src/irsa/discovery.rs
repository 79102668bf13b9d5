//! The two documents an issuer publishes for IAM: the OpenID discovery document and the JWKS
//! it points to, and how two key sets (published and the cluster's) differ.

use std::collections::BTreeSet;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde_json::{json, Value};

use super::issuer::Issuer;

/// What to write at `<issuer>/.well-known/openid-configuration` and at its `jwks_uri`.
#[derive(Clone, Debug, PartialEq)]
pub struct Documents {
    pub discovery: Value,
    pub jwks: JwkSet,
}

/// The documents for `issuer` with these keys; a key given twice (same key id and material)
/// is published once, as the API server does during a rotation with overlapping files.
pub fn documents(issuer: &Issuer, keys: Vec<Jwk>) -> Result<Documents, String> {
    let mut unique: Vec<Jwk> = Vec::new();
    for key in keys {
        match unique
            .iter()
            .find(|known| known.common.key_id == key.common.key_id)
        {
            Some(known) if known.algorithm == key.algorithm => {}
            Some(_) => {
                return Err(format!(
                    "two different keys have the key id {:?}; give each key once",
                    key.common.key_id.as_deref().unwrap_or_default()
                ))
            }
            None => unique.push(key),
        }
    }
    if unique.is_empty() {
        return Err("no keys to publish; give at least one service-account public key".into());
    }
    let algorithms: BTreeSet<String> = unique
        .iter()
        .filter_map(|key| key.common.key_algorithm.map(|alg| alg.to_string()))
        .collect();
    let discovery = json!({
        "issuer": issuer.as_str(),
        "jwks_uri": issuer.jwks_uri(),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
    });
    Ok(Documents {
        discovery,
        jwks: JwkSet { keys: unique },
    })
}

/// Key ids present on one side only; keys with the same id but other material count as
/// different.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyDifference {
    /// Keys the cluster signs with (or may) that are not published: tokens fail to verify.
    pub unpublished: Vec<String>,
    /// Published keys the cluster no longer has: harmless, removable after a rotation.
    pub stale: Vec<String>,
}

pub(crate) fn compare_keys(published: &JwkSet, cluster: &JwkSet) -> KeyDifference {
    let contains = |set: &JwkSet, key: &Jwk| {
        set.keys.iter().any(|other| {
            other.common.key_id == key.common.key_id && other.algorithm == key.algorithm
        })
    };
    let name = |key: &Jwk| {
        key.common
            .key_id
            .clone()
            .unwrap_or_else(|| "(no kid)".into())
    };
    KeyDifference {
        unpublished: cluster
            .keys
            .iter()
            .filter(|key| !contains(published, key))
            .map(name)
            .collect(),
        stale: published
            .keys
            .iter()
            .filter(|key| !contains(cluster, key))
            .map(name)
            .collect(),
    }
}

/// Parses a JWKS document, naming what is wrong.
pub(crate) fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    serde_json::from_str(text)
        .map_err(|err| format!("is not a JWKS ({{\"keys\": [...]}} with RSA or EC keys): {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irsa::keys::{jwks_from_pem, tests::generated};

    fn key() -> Jwk {
        let (_, public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        jwks_from_pem("k", public.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn discovery_points_at_the_jwks_under_the_issuer() {
        let issuer = Issuer::parse("https://oidc.example.com/c1").unwrap();
        let key = key();
        let docs = documents(&issuer, vec![key.clone(), key.clone()]).unwrap();
        assert_eq!(docs.discovery["issuer"], "https://oidc.example.com/c1");
        assert_eq!(
            docs.discovery["jwks_uri"],
            "https://oidc.example.com/c1/openid/v1/jwks"
        );
        assert_eq!(
            docs.discovery["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
        assert_eq!(
            docs.jwks.keys,
            vec![key],
            "a repeated key is published once"
        );
        let text = serde_json::to_value(&docs.jwks).unwrap();
        assert_eq!(text["keys"][0]["use"], "sig");
        assert_eq!(text["keys"][0]["kty"], "EC");
        assert_eq!(text["keys"][0]["crv"], "P-256");
    }

    #[test]
    fn no_keys_is_an_error() {
        let issuer = Issuer::parse("https://a.example.com").unwrap();
        assert!(documents(&issuer, vec![]).unwrap_err().contains("no keys"));
    }

    #[test]
    fn comparison_names_unpublished_and_stale_keys() {
        let (a, b, c) = (key(), key(), key());
        let published = JwkSet {
            keys: vec![a.clone(), b.clone()],
        };
        let cluster = JwkSet {
            keys: vec![b.clone(), c.clone()],
        };
        let diff = compare_keys(&published, &cluster);
        assert_eq!(diff.unpublished, vec![c.common.key_id.clone().unwrap()]);
        assert_eq!(diff.stale, vec![a.common.key_id.clone().unwrap()]);
        let same = compare_keys(&cluster, &cluster);
        assert!(same.unpublished.is_empty() && same.stale.is_empty());
    }
}
