//! Writes the trust policy a role needs so that pods of given ServiceAccounts can assume it
//! through the cluster's OIDC provider; wildcards switch the subject condition to StringLike.

use serde_json::{json, Map, Value};

use crate::core::identity::{split_iam_arn, IamArn};

use super::evaluate::ACTION;
use super::issuer::Issuer;

/// The OIDC provider a policy trusts: its ARN and the name used in condition keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub arn: String,
    pub name: String,
}

impl Provider {
    /// `arn:<partition>:iam::<account>:oidc-provider/<issuer without https://>`.
    pub(crate) fn for_account(
        partition: &str,
        account: &str,
        issuer: &Issuer,
    ) -> Result<Self, String> {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "account {account:?} is not a 12-digit AWS account id"
            ));
        }
        if partition.is_empty()
            || !partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "partition {partition:?} is not an AWS partition such as aws, aws-cn or aws-us-gov"
            ));
        }
        let name = issuer.provider_name().to_string();
        Ok(Self {
            arn: format!("arn:{partition}:iam::{account}:oidc-provider/{name}"),
            name,
        })
    }

    /// Reads a provider ARN; when `issuer` is given too, the two must name the same provider.
    pub(crate) fn from_arn(arn: &str, issuer: Option<&Issuer>) -> Result<Self, String> {
        let Some(IamArn {
            partition,
            account,
            resource,
        }) = split_iam_arn(arn)
        else {
            return Err(format!(
                "provider ARN {arn:?} is not arn:<partition>:iam::<account>:oidc-provider/<host/path>"
            ));
        };
        let Some(name) = resource
            .strip_prefix("oidc-provider/")
            .filter(|n| !n.is_empty())
        else {
            return Err(format!(
                "provider ARN {arn:?} does not name an oidc-provider/<host/path>"
            ));
        };
        if name.starts_with("https://") || name.starts_with("http://") {
            return Err(format!(
                "provider ARN {arn:?} includes the URL scheme; IAM names providers without it: oidc-provider/{}",
                name.split_once("://").map(|(_, rest)| rest).unwrap_or(name)
            ));
        }
        let from_arn = Self::for_account(
            partition,
            account,
            &Issuer::parse(&format!("https://{name}")).map_err(|e| e.to_string())?,
        )?;
        if let Some(issuer) = issuer {
            if issuer.provider_name() != name {
                return Err(format!(
                    "provider ARN {arn:?} names provider {name}, but --issuer-url {issuer} is provider {}; give matching values",
                    issuer.provider_name()
                ));
            }
        }
        Ok(from_arn)
    }
}

/// A `namespace:serviceaccount` pattern; `*` and `?` are wildcards in either part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectPattern {
    pub namespace: String,
    pub name: String,
}

impl SubjectPattern {
    pub fn parse(value: &str) -> Result<Self, String> {
        let Some((namespace, name)) = value.split_once(':') else {
            return Err(format!(
                "service account {value:?} is not NAMESPACE:SERVICEACCOUNT (e.g. team-a:app, team-a:*)"
            ));
        };
        let valid = |part: &str, dots: bool| {
            !part.is_empty()
                && part.len() <= if dots { 253 } else { 63 }
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'*'
                        || b == b'?'
                        || (dots && b == b'.')
                })
        };
        if !valid(namespace, false) {
            return Err(format!(
                "namespace {namespace:?} in {value:?} is not a Kubernetes namespace name (lowercase letters, digits, '-'; '*' and '?' as wildcards)"
            ));
        }
        if !valid(name, true) {
            return Err(format!(
                "ServiceAccount name {name:?} in {value:?} is not a Kubernetes name (lowercase letters, digits, '-', '.'; '*' and '?' as wildcards)"
            ));
        }
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    pub(crate) fn has_wildcard(&self) -> bool {
        self.namespace.contains(['*', '?']) || self.name.contains(['*', '?'])
    }

    /// The token's `sub` for this ServiceAccount.
    pub fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// The trust policy document: one statement, the subjects under StringEquals (StringLike
/// when any has a wildcard) and the audiences under StringEquals.
pub fn trust_policy(
    provider: &Provider,
    subjects: &[SubjectPattern],
    audiences: &[String],
) -> Value {
    let one_or_many = |values: Vec<String>| match values.as_slice() {
        [one] => json!(one),
        _ => json!(values),
    };
    let sub_key = format!("{}:sub", provider.name);
    let aud_key = format!("{}:aud", provider.name);
    let subs = one_or_many(subjects.iter().map(SubjectPattern::subject).collect());
    let mut equals = Map::new();
    let mut conditions = Map::new();
    let like = subjects.iter().any(SubjectPattern::has_wildcard);
    if !like {
        equals.insert(sub_key.clone(), subs.clone());
    }
    equals.insert(aud_key, one_or_many(audiences.to_vec()));
    conditions.insert("StringEquals".into(), Value::Object(equals));
    if like {
        conditions.insert("StringLike".into(), json!({ sub_key: subs }));
    }
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider.arn},
            "Action": ACTION,
            "Condition": conditions,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irsa::evaluate::{evaluate, RoleHome, Verdict, WebIdentityRequest};
    use crate::irsa::policy;

    fn issuer() -> Issuer {
        Issuer::parse("https://oidc.example.com/c1").unwrap()
    }

    #[test]
    fn exact_subjects_use_string_equals() {
        let provider = Provider::for_account("aws", "111122223333", &issuer()).unwrap();
        let doc = trust_policy(
            &provider,
            &[SubjectPattern::parse("team-a:app").unwrap()],
            &["sts.amazonaws.com".into()],
        );
        assert_eq!(
            doc,
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.example.com/c1"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    "oidc.example.com/c1:sub": "system:serviceaccount:team-a:app",
                    "oidc.example.com/c1:aud": "sts.amazonaws.com"}}}]})
        );
    }

    #[test]
    fn a_wildcard_switches_subjects_to_string_like_and_the_result_evaluates_as_allowed() {
        let provider = Provider::for_account("aws-cn", "111122223333", &issuer()).unwrap();
        let subjects = [
            SubjectPattern::parse("team-a:*").unwrap(),
            SubjectPattern::parse("team-b:app").unwrap(),
        ];
        let doc = trust_policy(&provider, &subjects, &["sts.amazonaws.com".into()]);
        let condition = &doc["Statement"][0]["Condition"];
        assert_eq!(
            condition["StringLike"]["oidc.example.com/c1:sub"],
            json!([
                "system:serviceaccount:team-a:*",
                "system:serviceaccount:team-b:app"
            ])
        );
        assert!(condition["StringEquals"]
            .get("oidc.example.com/c1:sub")
            .is_none());
        let policy = policy::parse(&doc.to_string()).unwrap();
        let aud = vec!["sts.amazonaws.com".to_string()];
        for (sub, allowed) in [
            ("system:serviceaccount:team-a:anything", true),
            ("system:serviceaccount:team-b:app", true),
            ("system:serviceaccount:team-b:other", false),
        ] {
            let verdict = evaluate(
                &policy,
                &WebIdentityRequest {
                    iss: "https://oidc.example.com/c1",
                    sub,
                    aud: &aud,
                    role: RoleHome::of("arn:aws-cn:iam::111122223333:role/app"),
                },
            )
            .verdict;
            assert_eq!(verdict == Verdict::Allowed(1), allowed, "{sub}");
        }
        // Written for aws-cn, the policy lets no role of the aws partition be assumed.
        let verdict = evaluate(
            &policy,
            &WebIdentityRequest {
                iss: "https://oidc.example.com/c1",
                sub: "system:serviceaccount:team-b:app",
                aud: &aud,
                role: RoleHome::of("arn:aws:iam::111122223333:role/app"),
            },
        )
        .verdict;
        assert_eq!(verdict, Verdict::ImplicitDeny);
    }

    #[test]
    fn provider_arn_is_checked_against_the_issuer() {
        let arn = "arn:aws:iam::111122223333:oidc-provider/oidc.example.com/c1";
        let provider = Provider::from_arn(arn, Some(&issuer())).unwrap();
        assert_eq!(provider.name, "oidc.example.com/c1");
        assert_eq!(provider.arn, arn);
        let other = Issuer::parse("https://oidc.example.com/c2").unwrap();
        assert!(Provider::from_arn(arn, Some(&other))
            .unwrap_err()
            .contains("give matching values"));
        let err = Provider::from_arn(
            "arn:aws:iam::111122223333:oidc-provider/https://x.example.com",
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("without it: oidc-provider/x.example.com"),
            "{err}"
        );
        assert!(Provider::from_arn("arn:aws:iam::1:role/x", None).is_err());
        assert!(Provider::for_account("aws", "1234", &issuer())
            .unwrap_err()
            .contains("12-digit"));
    }

    #[test]
    fn subject_patterns_are_validated() {
        assert!(SubjectPattern::parse("team-a")
            .unwrap_err()
            .contains("NAMESPACE:SERVICEACCOUNT"));
        assert!(SubjectPattern::parse("Team:app")
            .unwrap_err()
            .contains("namespace \"Team\""));
        assert!(SubjectPattern::parse("a:b_c")
            .unwrap_err()
            .contains("ServiceAccount name \"b_c\""));
        let pattern = SubjectPattern::parse("a:my.sa").unwrap();
        assert!(!pattern.has_wildcard());
        assert!(SubjectPattern::parse("*:app").unwrap().has_wildcard());
    }
}
