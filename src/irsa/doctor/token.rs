//! Doctor checks on what STS will see: a token the cluster issues for the ServiceAccount, its
//! signature against the published keys, its issuer against the published discovery document,
//! and the role's trust policy evaluated against its claims.

use jsonwebtoken::jwk::JwkSet;

use crate::irsa::checklist::Check;
use crate::irsa::discovery::compare_keys;
use crate::irsa::evaluate::{evaluate, RoleHome, WebIdentityRequest};
use crate::irsa::issuer::describe_difference;
use crate::irsa::policy::TrustPolicy;
use crate::irsa::token::{read_claims, verify, Claims};

/// The documents the user publishes at the issuer URL (`--jwks`).
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// Where they were read from, for messages.
    pub source: String,
    /// The discovery document's `issuer`, when the discovery document was given too.
    pub issuer: Option<String>,
    pub jwks: JwkSet,
}

fn timestamp(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

/// The TokenRequest result: the claims, with checks on `sub`, `aud` and `exp`.
pub fn token(
    requested: &Result<String, String>,
    namespace: &str,
    name: &str,
    audience: &str,
    now: i64,
) -> (Check, Option<Claims>) {
    let check = Check::new(
        "token.issued",
        format!("the cluster issues a token for the ServiceAccount with audience {audience}"),
    );
    let token = match requested {
        Ok(token) => token,
        Err(err) => {
            return (
                check.fail(
                    format!("TokenRequest for {namespace}/{name} failed: {err}"),
                    "check that you may create serviceaccounts/token in this namespace and that the API server has --service-account-signing-key-file",
                ),
                None,
            )
        }
    };
    let claims = match read_claims(token) {
        Ok(claims) => claims,
        Err(err) => {
            return (
                check.fail(
                    err,
                    "report this: the API server returned an unreadable token",
                ),
                None,
            )
        }
    };
    let mut check = check
        .detail(format!("iss {}", claims.iss.as_deref().unwrap_or("(none)")))
        .detail(format!("sub {}", claims.sub.as_deref().unwrap_or("(none)")))
        .detail(format!("aud {}", claims.aud.join(", ")))
        .detail(format!(
            "exp {}",
            claims.exp.map(timestamp).unwrap_or_else(|| "(none)".into())
        ))
        .detail(format!("kid {}", claims.kid.as_deref().unwrap_or("(none)")));
    let expected_sub = format!("system:serviceaccount:{namespace}:{name}");
    if claims.sub.as_deref() != Some(expected_sub.as_str()) {
        check = check.fail(
            format!(
                "the token's sub is {:?}, expected {expected_sub}",
                claims.sub
            ),
            "report this: the API server issued a token for another subject",
        );
    }
    if !claims.aud.iter().any(|a| a == audience) {
        check = check.fail(
            format!(
                "the token's aud is {}, not {audience}",
                claims.aud.join(", ")
            ),
            "the API server ignored the requested audience: check its --api-audiences and version",
        );
    }
    if claims.exp.is_some_and(|exp| exp <= now) {
        check = check.fail(
            "the token has already expired",
            "check the clocks of the API server and this machine",
        );
    }
    if claims
        .iss
        .as_deref()
        .is_some_and(|iss| !iss.starts_with("https://"))
    {
        check = check.fail(
            format!("the issuer {:?} is not an https URL: IAM cannot register an OIDC provider for it", claims.iss.as_deref().unwrap_or_default()),
            "set the API server's --service-account-issuer to the https URL where you publish the documents (pod-identity-webhook oidc)",
        );
    }
    (check, Some(claims))
}

/// The signature against the published keys (`--jwks`), else against the cluster's own keys.
pub fn signature(
    token: &str,
    published: Option<&Published>,
    cluster: &Result<JwkSet, String>,
) -> Check {
    let mut check = Check::new(
        "token.signature",
        "the token's signature verifies against the published keys",
    );
    let Some(published) = published else {
        check.title = "the token's signature verifies against the cluster's keys".into();
        return match cluster {
            Ok(keys) => match verify(token, keys) {
                Ok(kid) => check
                    .detail(format!("verified with the cluster's key {kid} (/openid/v1/jwks)"))
                    .detail("pass --jwks FILE|DIR to check the documents you publish"),
                Err(err) => check.fail(format!("against the cluster's own /openid/v1/jwks: {err}"), "the API server's signing and verification keys disagree: check --service-account-key-file and --service-account-signing-key-file"),
            },
            Err(err) => check.skip(format!("the cluster's /openid/v1/jwks is unreadable ({err}); pass --jwks FILE|DIR")),
        };
    };
    match verify(token, &published.jwks) {
        Ok(kid) => check = check.detail(format!("verified with key {kid} of {}", published.source)),
        Err(err) => check = check.fail(format!("{}: {err}", published.source), "regenerate the documents with `pod-identity-webhook oidc` and upload them to the issuer URL"),
    }
    if let Ok(cluster) = cluster {
        let difference = compare_keys(&published.jwks, cluster);
        if !difference.unpublished.is_empty() {
            check = check.warn(
                format!("the cluster has keys that {} does not publish: {}; tokens signed with them will fail", published.source, difference.unpublished.join(", ")),
                "publish every key of the cluster (pod-identity-webhook oidc writes them all)",
            );
        }
        if !difference.stale.is_empty() {
            check = check.detail(format!(
                "published keys the cluster no longer has (removable): {}",
                difference.stale.join(", ")
            ));
        }
    }
    check
}

/// The published discovery document's issuer against the token's `iss`.
pub fn issuer(claims: &Claims, published: Option<&Published>) -> Check {
    let check = Check::new(
        "issuer.published",
        "the published discovery document names the token's issuer",
    );
    let Some(published_issuer) = published.and_then(|p| p.issuer.as_deref()) else {
        return check
            .skip("no discovery document given (pass --jwks DIR, the directory `oidc` wrote)");
    };
    let iss = claims.iss.as_deref().unwrap_or_default();
    match describe_difference(published_issuer, iss) {
        None => check.detail(format!("issuer {iss}")),
        Some(difference) => check.fail(
            format!("published issuer vs the token's iss: {difference}; STS looks the provider up by iss"),
            format!("publish the documents for {iss} (pod-identity-webhook oidc --issuer-url {iss}), or set the API server's --service-account-issuer to the published URL"),
        ),
    }
}

/// The role's trust policy against the token, the way IAM evaluates it.
pub fn trust_policy(policy: Option<&TrustPolicy>, claims: &Claims, role_arn: &str) -> Check {
    let mut check = Check::new(
        "trust-policy",
        "the role's trust policy lets this token assume it",
    );
    let Some(policy) = policy else {
        return check.skip("no trust policy given (pass --trust-policy FILE, e.g. the output of aws iam get-role --role-name NAME)");
    };
    if let Some(policy_role) = &policy.role_arn {
        if policy_role != role_arn {
            check = check.fail(
                format!("the trust policy is role {policy_role}'s, but the ServiceAccount's role is {role_arn}"),
                "pass the trust policy of the role the ServiceAccount names",
            );
        }
    }
    let (Some(iss), Some(sub)) = (claims.iss.as_deref(), claims.sub.as_deref()) else {
        return check.fail(
            "the token lacks iss or sub",
            "report this: the API server issued an incomplete token",
        );
    };
    // The pod assumes the ServiceAccount's role; `get-role` output names one too when that is
    // not an ARN.
    let role = RoleHome::of(role_arn).or_else(|| policy.role_arn.as_deref().and_then(RoleHome::of));
    let evaluation = evaluate(
        policy,
        &WebIdentityRequest {
            iss,
            sub,
            aud: &claims.aud,
            role,
        },
    );
    for note in &evaluation.notes {
        check = check.detail(note.clone());
    }
    if evaluation.allowed() {
        return check.detail(evaluation.summary());
    }
    check = check.detail(evaluation.summary());
    for problem in evaluation.problems() {
        check = check.fail(problem.message, problem.fix);
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irsa::checklist::Status;
    use crate::irsa::keys::{jwks_from_pem, tests::generated};
    use crate::irsa::policy;
    use crate::irsa::token::tests::signed;
    use serde_json::json;

    #[test]
    fn token_claims_are_shown_and_checked() {
        let (private, public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let key = jwks_from_pem("k", public.as_bytes()).unwrap().remove(0);
        let token = signed(
            &private,
            key.common.key_id.clone(),
            &json!({
            "iss": "https://oidc.example.com", "sub": "system:serviceaccount:ns:app",
            "aud": ["sts.amazonaws.com"], "exp": 2000000000}),
        );
        let (check, claims) = token_check(&token, "sts.amazonaws.com", 1900000000);
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(
            check
                .details
                .contains(&"exp 2033-05-18T03:33:20Z".to_string()),
            "{:?}",
            check.details
        );
        let claims = claims.unwrap();
        let (check, _) = token_check(&token, "other", 2100000000);
        assert_eq!(check.problems.len(), 2, "{check:?}");

        let published = Published {
            source: "keys.json".into(),
            issuer: Some("https://oidc.example.com/".into()),
            jwks: JwkSet {
                keys: vec![key.clone()],
            },
        };
        let check = signature(&token, Some(&published), &Ok(JwkSet { keys: vec![key] }));
        assert_eq!(check.status, Status::Pass, "{check:?}");
        let check = issuer(&claims, Some(&published));
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.problems[0].cause.contains("trailing slash"),
            "{:?}",
            check.problems
        );
    }

    fn token_check(jwt: &str, audience: &str, now: i64) -> (Check, Option<Claims>) {
        token(&Ok(jwt.to_string()), "ns", "app", audience, now)
    }

    #[test]
    fn trust_policy_check_lists_each_mismatch_and_the_role_of_the_document() {
        let claims = Claims {
            iss: Some("https://oidc.example.com".into()),
            sub: Some("system:serviceaccount:team-b:app".into()),
            aud: vec!["sts.amazonaws.com".into()],
            ..Default::default()
        };
        let document = json!({"Role": {"Arn": "arn:aws:iam::111122223333:role/other", "AssumeRolePolicyDocument": {
            "Statement": [{"Effect": "Allow", "Principal": {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.example.com"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {"oidc.example.com:sub": "system:serviceaccount:team-a:app"}}}]}}});
        let policy = policy::parse(&document.to_string()).unwrap();
        let check = trust_policy(Some(&policy), &claims, "arn:aws:iam::111122223333:role/app");
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.problems.len(), 2, "{:?}", check.problems);
        assert!(check.problems[0]
            .cause
            .contains("role arn:aws:iam::111122223333:role/other's"));
        assert!(check.problems[1].cause.contains(
            "the policy allows sub system:serviceaccount:team-a:app, this pod's token says system:serviceaccount:team-b:app"
        ));
        assert_eq!(trust_policy(None, &claims, "x").status, Status::Skip);
    }

    #[test]
    fn a_provider_of_another_partition_than_the_role_fails_the_trust_policy_check() {
        let claims = Claims {
            iss: Some("https://oidc.example.com".into()),
            sub: Some("system:serviceaccount:team-a:app".into()),
            aud: vec!["sts.amazonaws.com".into()],
            ..Default::default()
        };
        let document = |role: &str| {
            json!({"Role": {"Arn": role, "AssumeRolePolicyDocument": {
                "Statement": [{"Effect": "Allow", "Principal": {"Federated": "arn:aws-cn:iam::111122223333:oidc-provider/oidc.example.com"},
                "Action": "sts:AssumeRoleWithWebIdentity"}]}}})
            .to_string()
        };
        let china = "arn:aws-cn:iam::111122223333:role/app";
        let commercial = "arn:aws:iam::111122223333:role/app";
        let policy = policy::parse(&document(china)).unwrap();
        assert_eq!(
            trust_policy(Some(&policy), &claims, china).status,
            Status::Pass
        );
        let policy = policy::parse(&document(commercial)).unwrap();
        let check = trust_policy(Some(&policy), &claims, commercial);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.problems[0]
                .cause
                .contains("the provider ARN is in partition aws-cn, the role in partition aws"),
            "{:?}",
            check.problems
        );
        // A ServiceAccount role that is no ARN: the role named by `get-role` output decides.
        let check = trust_policy(Some(&policy), &claims, "app");
        assert!(
            check.problems.iter().any(|p| p
                .cause
                .contains("in partition aws-cn, the role in partition aws")),
            "{:?}",
            check.problems
        );
    }
}
