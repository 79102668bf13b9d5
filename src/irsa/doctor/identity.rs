//! Doctor checks on the ServiceAccount: it exists, its annotations read exactly as the webhook
//! reads them (same parser, same resolution, same warnings), and the identity a pod would get.

use std::collections::BTreeMap;

use crate::core::identity::{
    resolve_identity, ConfigMapMapping, ContainerCredentialsConfig, CredentialKind, Identity,
    Resolution, ServiceAccountAnnotations, NO_REGION,
};
use crate::core::settings::MutationSettings;
use crate::irsa::checklist::Check;

/// What the cluster said about the ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found<T> {
    Yes(T),
    NotFound,
    Error(String),
}

/// Everything identity resolution reads, as the webhook would have it.
pub struct IdentityInputs<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The ServiceAccount's annotations.
    pub annotations: &'a Found<BTreeMap<String, String>>,
    pub mapping: Option<&'a ConfigMapMapping>,
    pub container_credentials: Option<&'a ContainerCredentialsConfig>,
    pub settings: &'a MutationSettings,
}

/// The ServiceAccount check, and the resolution (None when the ServiceAccount is missing).
pub fn service_account(inputs: &IdentityInputs<'_>) -> (Check, Option<Resolution>) {
    let IdentityInputs {
        namespace, name, ..
    } = *inputs;
    let check = Check::new(
        "service-account.exists",
        format!("ServiceAccount {namespace}/{name} exists"),
    );
    let annotations = match inputs.annotations {
        Found::Yes(annotations) => annotations,
        Found::NotFound => {
            return (
                check.fail(
                    format!("ServiceAccount {name} does not exist in namespace {namespace}"),
                    format!("create it (kubectl create serviceaccount -n {namespace} {name}) or fix the name in the pod spec"),
                ),
                None,
            )
        }
        Found::Error(err) => {
            return (
                check.fail(
                    format!("cannot read ServiceAccount {namespace}/{name}: {err}"),
                    "check the kubeconfig and that it may get serviceaccounts in this namespace",
                ),
                None,
            )
        }
    };
    let cached = ServiceAccountAnnotations::from_annotations(annotations, &inputs.settings.keys);
    let resolution = resolve_identity(
        namespace,
        name,
        crate::core::identity::IdentityInputs {
            service_account: Some(&cached),
            mapping: inputs.mapping,
            container_credentials: inputs.container_credentials,
        },
        inputs.settings,
    );
    let mut check = check;
    let prefix = inputs
        .settings
        .keys
        .role_arn
        .trim_end_matches("/role-arn")
        .to_string();
    let read: Vec<String> = annotations
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{prefix}/")))
        .map(|(key, value)| format!("{key}: {value}"))
        .collect();
    if read.is_empty() {
        check = check.detail(format!("no {prefix}/ annotations"));
    } else {
        for line in read {
            check = check.detail(line);
        }
    }
    (check, Some(resolution))
}

/// The identity check: what a pod of this ServiceAccount gets, and the webhook's warnings.
pub fn identity(inputs: &IdentityInputs<'_>, resolution: &Resolution) -> Check {
    let IdentityInputs {
        namespace,
        name,
        settings,
        ..
    } = *inputs;
    let mut check = Check::new(
        "identity",
        "the webhook resolves an AWS identity for its pods",
    );
    let annotation = |key: &str| match inputs.annotations {
        Found::Yes(annotations) => annotations.get(key).map(String::as_str),
        _ => None,
    };
    let identity = match &resolution.identity {
        Some(identity) if identity.source != CredentialKind::RegionOnly => identity,
        region_only => {
            check = check.fail(
                format!(
                    "ServiceAccount {namespace}/{name} has no {} annotation, no entry in the role mapping and is not listed for EKS Pod Identity: its pods get no AWS credentials",
                    settings.keys.role_arn
                ),
                format!(
                    "kubectl annotate serviceaccount -n {namespace} {name} {}=arn:aws:iam::<account>:role/<role>, then restart its pods",
                    settings.keys.role_arn
                ),
            );
            if let Some(identity) = region_only {
                check = check.detail(format!(
                    "its pods get only the region: {} (--inject-region-without-role)",
                    describe_region(identity, settings, annotation(&settings.keys.region))
                ));
            }
            return check;
        }
    };
    match &identity.source {
        CredentialKind::WebIdentity { role_arn, audience } => {
            let annotated = annotation(&settings.keys.role_arn).is_some_and(|r| !r.is_empty());
            let origin = if annotated {
                format!("annotation {}", settings.keys.role_arn)
            } else {
                "the ConfigMap role mapping".to_string()
            };
            check = check
                .detail(format!("IRSA: role {role_arn} (from {origin})"))
                .detail(format!("token audience {audience}"));
            let session = if identity.session_name_from_pod {
                let origin = match annotation(&settings.keys.role_session_name_from_pod) {
                    Some(_) => format!("annotation {}", settings.keys.role_session_name_from_pod),
                    None => "--role-session-name-from-pod".to_string(),
                };
                format!("the pod's name, through the downward API (from {origin}); left out, with an admission warning, for a pod whose own name is over 64 characters")
            } else {
                format!(
                    "not set: the SDKs name the session (annotate {}=true for the pod's name)",
                    settings.keys.role_session_name_from_pod
                )
            };
            check = check.detail(format!("AWS_ROLE_SESSION_NAME: {session}"));
        }
        CredentialKind::ContainerCredentials => {
            check = check.detail(
                "EKS Pod Identity: listed in the container-credentials file; credentials come from the node agent, not from an IAM OIDC trust policy",
            );
        }
        CredentialKind::RegionOnly => {}
    }
    check = check
        .detail(format!("token lifetime {} s", identity.token_expiration))
        .detail(format!(
            "regional STS endpoint: {}",
            if identity.regional_sts { "yes" } else { "no" }
        ))
        .detail(format!(
            "region: {}",
            describe_region(identity, settings, annotation(&settings.keys.region))
        ));
    for warning in &resolution.warnings {
        check = check.warn(
            warning.clone(),
            "correct the annotation value; until then the webhook uses the value it names",
        );
    }
    check
}

/// The region a pod gets and where it comes from: the ServiceAccount's `region` annotation
/// (`annotated`, its value), or `--aws-default-region`.
fn describe_region(
    identity: &Identity,
    settings: &MutationSettings,
    annotated: Option<&str>,
) -> String {
    let key = &settings.keys.region;
    match (&identity.region, annotated) {
        (Some(region), Some(value)) if value == region => {
            format!("AWS_REGION and AWS_DEFAULT_REGION={region} (from annotation {key})")
        }
        (Some(region), _) => {
            format!("AWS_REGION and AWS_DEFAULT_REGION={region} (from --aws-default-region)")
        }
        (None, Some(value)) if value.is_empty() || value.eq_ignore_ascii_case(NO_REGION) => {
            format!("none: annotation {key} opts out of --aws-default-region")
        }
        (None, _) => format!("none (set --aws-default-region, or annotate {key}=<region>)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irsa::checklist::Status;

    fn annotations(pairs: &[(&str, &str)]) -> Found<BTreeMap<String, String>> {
        Found::Yes(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn run(found: &Found<BTreeMap<String, String>>) -> (Check, Option<Check>) {
        let settings = MutationSettings::default();
        let inputs = IdentityInputs {
            namespace: "team-a",
            name: "app",
            annotations: found,
            mapping: None,
            container_credentials: None,
            settings: &settings,
        };
        let (sa, resolution) = service_account(&inputs);
        (sa, resolution.map(|r| identity(&inputs, &r)))
    }

    #[test]
    fn annotated_service_account_gives_the_role_with_the_webhooks_warnings() {
        let found = annotations(&[
            (
                "eks.amazonaws.com/role-arn",
                "arn:aws:iam::111122223333:role/app",
            ),
            ("eks.amazonaws.com/token-expiration", "1h"),
        ]);
        let (sa, identity) = run(&found);
        assert_eq!(sa.status, Status::Pass);
        let identity = identity.unwrap();
        assert_eq!(identity.status, Status::Warn);
        assert!(identity.details[0].contains(
            "role arn:aws:iam::111122223333:role/app (from annotation eks.amazonaws.com/role-arn)"
        ));
        assert!(
            identity.problems[0].cause.contains("\"1h\""),
            "{:?}",
            identity.problems
        );
    }

    #[test]
    fn session_name_and_region_are_explained_with_where_they_come_from() {
        let found = annotations(&[
            (
                "eks.amazonaws.com/role-arn",
                "arn:aws:iam::111122223333:role/app",
            ),
            ("eks.amazonaws.com/role-session-name-from-pod", "true"),
            ("eks.amazonaws.com/region", "none"),
        ]);
        let (_, identity) = run(&found);
        let details = identity.unwrap().details;
        assert!(details.contains(&"AWS_ROLE_SESSION_NAME: the pod's name, through the downward API (from annotation eks.amazonaws.com/role-session-name-from-pod); left out, with an admission warning, for a pod whose own name is over 64 characters".to_string()), "{details:?}");
        assert!(
            details.contains(&"region: none: annotation eks.amazonaws.com/region opts out of --aws-default-region".to_string()),
            "{details:?}"
        );

        let found = annotations(&[(
            "eks.amazonaws.com/role-arn",
            "arn:aws:iam::111122223333:role/app",
        )]);
        let (_, identity) = run(&found);
        let details = identity.unwrap().details;
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("AWS_ROLE_SESSION_NAME: not set")),
            "{details:?}"
        );
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("region: none (set --aws-default-region")),
            "{details:?}"
        );
    }

    #[test]
    fn a_service_account_without_a_role_fails_and_says_its_pods_get_only_the_region() {
        let settings = MutationSettings {
            aws_default_region: Some("eu-west-1".into()),
            inject_region_without_role: true,
            ..Default::default()
        };
        let found = annotations(&[]);
        let inputs = IdentityInputs {
            namespace: "team-a",
            name: "agent",
            annotations: &found,
            mapping: None,
            container_credentials: None,
            settings: &settings,
        };
        let (_, resolution) = service_account(&inputs);
        let check = identity(&inputs, &resolution.unwrap());
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.details,
            ["its pods get only the region: AWS_REGION and AWS_DEFAULT_REGION=eu-west-1 (from --aws-default-region) (--inject-region-without-role)"]
        );
    }

    #[test]
    fn missing_service_account_and_missing_role_fail_with_the_command_to_fix() {
        let (sa, identity) = run(&Found::NotFound);
        assert_eq!(sa.status, Status::Fail);
        assert!(identity.is_none());
        assert!(sa.problems[0]
            .fix
            .contains("kubectl create serviceaccount -n team-a app"));

        let (sa, identity) = run(&annotations(&[("other", "x")]));
        assert_eq!(sa.status, Status::Pass);
        let identity = identity.unwrap();
        assert_eq!(identity.status, Status::Fail);
        assert!(identity.problems[0].fix.starts_with(
            "kubectl annotate serviceaccount -n team-a app eks.amazonaws.com/role-arn="
        ));
    }
}
