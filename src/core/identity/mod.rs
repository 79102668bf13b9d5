//! Where a pod's AWS identity comes from: its ServiceAccount's annotations, the ConfigMap
//! mapping, or the container-credentials file, merged with the flags by fixed precedence.

mod config_map;
mod container_credentials;
mod service_account;

pub(crate) use config_map::CONFIG_KEY;
pub use config_map::{ConfigMapMapping, MappingEntry, MappingError, ParsedMapping};
pub use container_credentials::{ContainerCredentialsConfig, ContainerCredentialsError};
pub use service_account::ServiceAccountAnnotations;

use crate::core::expiration::{describe_expiration, parse_expiration};
use crate::core::go_syntax;
use crate::core::settings::MutationSettings;

/// How the pod's SDKs will obtain credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// IRSA: `sts:AssumeRoleWithWebIdentity` with a projected token.
    WebIdentity { role_arn: String, audience: String },
    /// EKS Pod Identity: the node agent at `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    ContainerCredentials,
    /// No credentials: a ServiceAccount without a role whose pods get only the region
    /// (`--inject-region-without-role`).
    RegionOnly,
}

/// The resolved identity of a ServiceAccount, before pod-level annotations apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub source: CredentialKind,
    pub regional_sts: bool,
    /// Seconds, already clamped.
    pub token_expiration: i64,
    /// `AWS_DEFAULT_REGION` and `AWS_REGION`: the ServiceAccount's `region` annotation, else
    /// `--aws-default-region`; `None` sets neither.
    pub region: Option<String>,
    /// `AWS_ROLE_SESSION_NAME` from the pod's name (IRSA only).
    pub session_name_from_pod: bool,
}

#[cfg(test)]
impl Identity {
    /// IRSA with `role`, the default audience and lifetime and nothing else: what most tests
    /// of the engine and the doctor start from.
    pub(crate) fn web_identity(role: &str) -> Self {
        Self {
            source: CredentialKind::WebIdentity {
                role_arn: role.into(),
                audience: "sts.amazonaws.com".into(),
            },
            regional_sts: false,
            token_expiration: 86400,
            region: None,
            session_name_from_pod: false,
        }
    }
}

/// What resolution found, with warnings for values it had to ignore or doubts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub identity: Option<Identity>,
    pub warnings: Vec<String>,
}

/// Everything known about one ServiceAccount at admission time.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityInputs<'a> {
    /// `None` when the ServiceAccount is not known (not in the cache, not found).
    pub service_account: Option<&'a ServiceAccountAnnotations>,
    pub mapping: Option<&'a ConfigMapMapping>,
    pub container_credentials: Option<&'a ContainerCredentialsConfig>,
}

/// Merges the sources. Audience and regional STS: ServiceAccount annotation, then ConfigMap
/// entry, then flag. Expiration: ServiceAccount annotation or ConfigMap entry, then flag (pod
/// annotations are applied later by the engine). Container credentials win over a role.
pub(crate) fn resolve_identity(
    namespace: &str,
    service_account: &str,
    inputs: IdentityInputs<'_>,
    settings: &MutationSettings,
) -> Resolution {
    let mut warnings = Vec::new();
    let annotations = inputs.service_account;
    let annotated_role = annotations.and_then(ServiceAccountAnnotations::role);
    // The mapping is consulted only for ServiceAccounts that carry no role of their own.
    let entry = match annotated_role {
        Some(_) => None,
        None => inputs
            .mapping
            .and_then(|mapping| mapping.lookup(namespace, service_account)),
    };
    let who = || format!("ServiceAccount {namespace}/{service_account}");
    let region = resolve_region(annotations, settings, &who);
    warnings.extend(region.warnings.iter().cloned());

    let regional_sts = boolean_annotation(
        annotations.and_then(|a| a.sts_regional_endpoints.as_deref()),
        &settings.keys.sts_regional_endpoints,
        entry
            .and_then(|e| e.use_regional_sts)
            .unwrap_or(settings.sts_regional_endpoint),
        &who,
        &mut warnings,
    );

    let fallback_expiration = entry
        .and_then(|e| e.token_expiration)
        .unwrap_or(settings.token_expiration);
    let container_credentials =
        listed_for_container_credentials(inputs.container_credentials, namespace, service_account);
    let token_expiration = match annotations.and_then(|a| a.token_expiration.as_deref()) {
        Some(value) => parse_expiration(value).unwrap_or_else(|| {
            warnings.push(format!(
                "{}: annotation {} has value {value:?}, which is not a whole number of seconds; using {}",
                who(),
                settings.keys.token_expiration,
                describe_expiration(fallback_expiration, container_credentials)
            ));
            fallback_expiration
        }),
        None => fallback_expiration,
    };

    let source = if container_credentials {
        CredentialKind::ContainerCredentials
    } else {
        let role = annotated_role.or_else(|| entry.and_then(|e| e.role_arn.as_deref()));
        let Some(role) = role else {
            return without_role(region, warnings, settings);
        };
        if !is_iam_role_arn(role) {
            warnings.push(format!(
                "{}: role {role:?} is not an IAM role ARN (arn:<partition>:iam::<12-digit account>:role/<name>); it is injected as given",
                who()
            ));
        }
        let annotated_audience = annotations.and_then(|a| a.audience.as_deref());
        let audience = annotated_audience
            .filter(|a| !a.is_empty())
            .or_else(|| entry.and_then(|e| e.audience.as_deref()))
            .unwrap_or(&settings.token_audience);
        // The reference leaves an empty audience empty, so the API server puts its own
        // audiences in the token; here the default audience is used, and the user is told.
        if annotated_audience == Some("") {
            warnings.push(format!(
                "{}: annotation {} is empty; the token's audience is {audience:?}",
                who(),
                settings.keys.audience
            ));
        }
        CredentialKind::WebIdentity {
            role_arn: role.to_string(),
            audience: audience.to_string(),
        }
    };
    let session_name_from_pod = boolean_annotation(
        annotations.and_then(|a| a.role_session_name_from_pod.as_deref()),
        &settings.keys.role_session_name_from_pod,
        settings.role_session_name_from_pod,
        &who,
        &mut warnings,
    );
    Resolution {
        identity: Some(Identity {
            source,
            regional_sts,
            token_expiration,
            region: region.value,
            session_name_from_pod,
        }),
        warnings,
    }
}

/// A boolean annotation read as Go's `strconv.ParseBool` reads it; `fallback` when it is
/// absent, and with a warning naming the value when it is not a boolean.
fn boolean_annotation(
    value: Option<&str>,
    key: &str,
    fallback: bool,
    who: &dyn Fn() -> String,
    warnings: &mut Vec<String>,
) -> bool {
    let Some(value) = value else {
        return fallback;
    };
    go_syntax::parse_bool(value).unwrap_or_else(|| {
        warnings.push(format!(
            "{}: annotation {key} has value {value:?}, which is not a boolean (true/false/1/0/t/f); using {fallback}",
            who()
        ));
        fallback
    })
}

/// The region, and the warnings about it, kept apart: a ServiceAccount without a role keeps
/// only these.
struct ResolvedRegion {
    value: Option<String>,
    warnings: Vec<String>,
}

/// The ServiceAccount's `region` annotation, else the flag. An empty or `none` value opts out
/// of the flag's region; a value that is not shaped like a region is reported and the flag's
/// region used.
fn resolve_region(
    annotations: Option<&ServiceAccountAnnotations>,
    settings: &MutationSettings,
    who: &dyn Fn() -> String,
) -> ResolvedRegion {
    let flag = || settings.aws_default_region.clone();
    let mut own = Vec::new();
    let value = match annotations.and_then(|a| a.region.as_deref()) {
        None => flag(),
        Some(value) if value.is_empty() || value.eq_ignore_ascii_case(NO_REGION) => None,
        Some(value) if is_region(value) => Some(value.to_string()),
        Some(value) => {
            own.push(format!(
                "{}: annotation {} has value {value:?}, which is not a region (like eu-west-1) or {NO_REGION:?}; using {}",
                who(),
                settings.keys.region,
                settings
                    .aws_default_region
                    .as_deref()
                    .map_or("no region".to_string(), |region| format!("--aws-default-region {region}"))
            ));
            flag()
        }
    };
    ResolvedRegion {
        value,
        warnings: own,
    }
}

/// The value of the `region` annotation that opts a ServiceAccount out of the flag's region.
pub const NO_REGION: &str = "none";

/// `<2 letters>(-<letters>)+-<digits>`: every AWS region's name (`eu-west-1`, `us-gov-east-1`,
/// `cn-northwest-1`), the same shape the chart's schema checks `--aws-default-region` against.
pub(crate) fn is_region(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return false;
    };
    let letters = |part: &&str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase());
    first.len() == 2
        && letters(first)
        && !middle.is_empty()
        && middle.iter().all(letters)
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
}

/// What a ServiceAccount without a role gives: nothing, or with `--inject-region-without-role`
/// the region alone. Only the region's warnings are kept then: the other annotations affect
/// nothing that is applied.
fn without_role(
    region: ResolvedRegion,
    warnings: Vec<String>,
    settings: &MutationSettings,
) -> Resolution {
    match region.value {
        Some(value) if settings.inject_region_without_role => Resolution {
            identity: Some(Identity {
                source: CredentialKind::RegionOnly,
                regional_sts: false,
                token_expiration: settings.token_expiration,
                region: Some(value),
                session_name_from_pod: false,
            }),
            warnings: region.warnings,
        },
        _ => Resolution {
            identity: None,
            warnings,
        },
    }
}

/// Whether the container-credentials file lists the ServiceAccount: then it gets container
/// credentials whatever its annotations say.
pub(crate) fn listed_for_container_credentials(
    config: Option<&ContainerCredentialsConfig>,
    namespace: &str,
    service_account: &str,
) -> bool {
    config.is_some_and(|config| config.contains(namespace, service_account))
}

/// How admission obtains a ServiceAccount's annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServiceAccountNeed {
    /// Needed for a role: wait for the cache (and its fallback to the API server).
    Wait,
    /// As the reference: a ServiceAccount listed for container credentials needs no role, so
    /// its annotations (regional STS, expiration) are taken only if already cached; admission
    /// neither waits for it nor asks the API server, and its absence is not counted missing.
    CachedOnly,
}

impl ServiceAccountNeed {
    /// The one place the rule above is decided.
    pub fn of(
        config: Option<&ContainerCredentialsConfig>,
        namespace: &str,
        service_account: &str,
    ) -> Self {
        if listed_for_container_credentials(config, namespace, service_account) {
            Self::CachedOnly
        } else {
            Self::Wait
        }
    }
}

/// The fields of an IAM ARN, `arn:<partition>:iam::<account>:<resource>`, unchecked beyond their places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IamArn<'a> {
    pub partition: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

/// Splits an IAM ARN into its fields; None when `value` is not `arn:…:iam::…:…` (IAM is global, so
/// the region field must be empty). Role ARNs and OIDC-provider ARNs are read the same way.
pub(crate) fn split_iam_arn(value: &str) -> Option<IamArn<'_>> {
    let mut parts = value.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some(IamArn {
        partition,
        account,
        resource,
    })
}

/// `arn:<partition>:iam::<12 digits>:role/<path-and-name>`.
pub(crate) fn is_iam_role_arn(value: &str) -> bool {
    let Some(IamArn {
        partition,
        account,
        resource,
    }) = split_iam_arn(value)
    else {
        return false;
    };
    let partition_ok = !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let role_ok = resource
        .strip_prefix("role/")
        .is_some_and(|name| !name.is_empty() && !name.ends_with('/'));
    partition_ok && account_ok && role_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::111122223333:role/app";

    #[test]
    fn only_a_service_account_listed_for_container_credentials_skips_the_wait() {
        let config = ContainerCredentialsConfig::parse(
            br#"{"identities":[{"namespace":"ns","serviceAccount":"sa"}]}"#,
        );
        let Ok(config) = config else {
            panic!("{config:?}");
        };
        assert_eq!(
            ServiceAccountNeed::of(Some(&config), "ns", "sa"),
            ServiceAccountNeed::CachedOnly
        );
        assert_eq!(
            ServiceAccountNeed::of(Some(&config), "ns", "other"),
            ServiceAccountNeed::Wait
        );
        assert_eq!(
            ServiceAccountNeed::of(None, "ns", "sa"),
            ServiceAccountNeed::Wait
        );
    }

    fn annotations(pairs: &[(&str, &str)]) -> ServiceAccountAnnotations {
        let mut a = ServiceAccountAnnotations::default();
        for (k, v) in pairs {
            let slot = match *k {
                "role-arn" => &mut a.role_arn,
                "audience" => &mut a.audience,
                "sts-regional-endpoints" => &mut a.sts_regional_endpoints,
                "token-expiration" => &mut a.token_expiration,
                "region" => &mut a.region,
                "role-session-name-from-pod" => &mut a.role_session_name_from_pod,
                other => panic!("unknown {other}"),
            };
            *slot = Some((*v).into());
        }
        a
    }

    fn resolve(sa: Option<&ServiceAccountAnnotations>, settings: &MutationSettings) -> Resolution {
        resolve_identity(
            "ns",
            "sa",
            IdentityInputs {
                service_account: sa,
                ..Default::default()
            },
            settings,
        )
    }

    #[test]
    fn role_arn_annotation_gives_web_identity_with_flag_defaults() {
        let sa = annotations(&[("role-arn", ROLE)]);
        let r = resolve(Some(&sa), &MutationSettings::default());
        assert!(r.warnings.is_empty());
        assert_eq!(
            r.identity.unwrap(),
            Identity {
                source: CredentialKind::WebIdentity {
                    role_arn: ROLE.into(),
                    audience: "sts.amazonaws.com".into()
                },
                regional_sts: false,
                token_expiration: 86400,
                region: None,
                session_name_from_pod: false,
            }
        );
    }

    #[test]
    fn empty_audience_annotation_uses_the_flag_and_says_so() {
        let settings = MutationSettings {
            token_audience: "flag-audience".into(),
            ..Default::default()
        };
        let sa = annotations(&[("role-arn", ROLE), ("audience", "")]);
        let r = resolve(Some(&sa), &settings);
        let Some(CredentialKind::WebIdentity { audience, .. }) = r.identity.map(|i| i.source)
        else {
            panic!("no web identity");
        };
        assert_eq!(audience, "flag-audience");
        assert_eq!(
            r.warnings,
            [
                "ServiceAccount ns/sa: annotation eks.amazonaws.com/audience is empty; the token's audience is \"flag-audience\""
            ]
        );
    }

    #[test]
    fn missing_or_empty_role_gives_no_identity() {
        assert_eq!(resolve(None, &MutationSettings::default()).identity, None);
        let sa = annotations(&[("role-arn", ""), ("audience", "x")]);
        assert_eq!(
            resolve(Some(&sa), &MutationSettings::default()).identity,
            None
        );
    }

    #[test]
    fn non_arn_role_is_used_with_a_warning() {
        let sa = annotations(&[("role-arn", "my-role")]);
        let r = resolve(Some(&sa), &MutationSettings::default());
        assert!(r.identity.is_some());
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("\"my-role\""), "{}", r.warnings[0]);
    }

    #[test]
    fn service_account_false_beats_flag_true_for_regional_sts() {
        let settings = MutationSettings {
            sts_regional_endpoint: true,
            ..Default::default()
        };
        let sa = annotations(&[("role-arn", ROLE), ("sts-regional-endpoints", "false")]);
        assert!(!resolve(Some(&sa), &settings).identity.unwrap().regional_sts);
    }

    #[test]
    fn bad_sts_and_expiration_values_warn_and_use_flags() {
        let settings = MutationSettings {
            sts_regional_endpoint: true,
            token_expiration: 7200,
            ..Default::default()
        };
        let sa = annotations(&[
            ("role-arn", ROLE),
            ("sts-regional-endpoints", "yes"),
            ("token-expiration", "1h"),
        ]);
        let r = resolve(Some(&sa), &settings);
        let identity = r.identity.unwrap();
        assert!(identity.regional_sts);
        assert_eq!(identity.token_expiration, 7200);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("\"yes\""));
        assert!(r.warnings[1].contains("\"1h\""));
    }

    #[test]
    fn bad_expiration_in_container_credentials_mode_names_the_spread_actually_applied() {
        let config = ContainerCredentialsConfig::parse(
            br#"{"identities":[{"namespace":"ns","serviceAccount":"sa"}]}"#,
        )
        .unwrap();
        let sa = annotations(&[("token-expiration", "1e400")]);
        let inputs = IdentityInputs {
            service_account: Some(&sa),
            mapping: None,
            container_credentials: Some(&config),
        };
        let r = resolve_identity("ns", "sa", inputs, &MutationSettings::default());
        assert_eq!(r.identity.unwrap().token_expiration, 86400);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].ends_with("using a random lifetime from 79200 to 86400 seconds (86400, spread in container-credentials mode)"),
            "{}",
            r.warnings[0]
        );
    }

    #[test]
    fn expiration_annotation_is_clamped_without_upper_bound() {
        let sa = annotations(&[("role-arn", ROLE), ("token-expiration", "100")]);
        let r = resolve(Some(&sa), &MutationSettings::default());
        assert_eq!(r.identity.unwrap().token_expiration, 600);
        let sa = annotations(&[("role-arn", ROLE), ("token-expiration", "999999")]);
        let r = resolve(Some(&sa), &MutationSettings::default());
        assert_eq!(r.identity.unwrap().token_expiration, 999999);
    }

    #[test]
    fn mapping_is_used_only_without_annotated_role_and_annotations_win() {
        let mapping = ConfigMapMapping::parse(
            r#"{"ns/sa": {"RoleARN": "arn:aws:iam::111122223333:role/mapped", "Audience": "mapped-aud",
                "UseRegionalSTS": true, "TokenExpiration": 3600}}"#,
        )
        .unwrap()
        .mapping;
        let settings = MutationSettings::default();
        let sa = annotations(&[("audience", "sa-aud")]);
        let r = resolve_identity(
            "ns",
            "sa",
            IdentityInputs {
                service_account: Some(&sa),
                mapping: Some(&mapping),
                container_credentials: None,
            },
            &settings,
        );
        let identity = r.identity.unwrap();
        assert_eq!(
            identity.source,
            CredentialKind::WebIdentity {
                role_arn: "arn:aws:iam::111122223333:role/mapped".into(),
                audience: "sa-aud".into()
            }
        );
        assert!(identity.regional_sts);
        assert_eq!(identity.token_expiration, 3600);

        let annotated = annotations(&[("role-arn", ROLE)]);
        let r = resolve_identity(
            "ns",
            "sa",
            IdentityInputs {
                service_account: Some(&annotated),
                mapping: Some(&mapping),
                container_credentials: None,
            },
            &settings,
        );
        let identity = r.identity.unwrap();
        assert_eq!(
            identity.token_expiration, 86400,
            "mapping ignored when SA has a role"
        );
        assert!(!identity.regional_sts);
    }

    #[test]
    fn container_credentials_win_over_role() {
        let config = ContainerCredentialsConfig::parse(
            br#"{"identities":[{"namespace":"ns","serviceAccount":"sa"}]}"#,
        )
        .unwrap();
        let sa = annotations(&[("role-arn", ROLE), ("sts-regional-endpoints", "true")]);
        let r = resolve_identity(
            "ns",
            "sa",
            IdentityInputs {
                service_account: Some(&sa),
                mapping: None,
                container_credentials: Some(&config),
            },
            &MutationSettings::default(),
        );
        let identity = r.identity.unwrap();
        assert_eq!(identity.source, CredentialKind::ContainerCredentials);
        assert!(identity.regional_sts);
    }

    #[test]
    fn region_annotation_beats_the_flag_and_none_or_empty_opts_out() {
        let settings = MutationSettings {
            aws_default_region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let region = |value: Option<&str>| {
            let mut pairs = vec![("role-arn", ROLE)];
            pairs.extend(value.map(|v| ("region", v)));
            let r = resolve(Some(&annotations(&pairs)), &settings);
            (r.identity.unwrap().region, r.warnings)
        };
        assert_eq!(region(None), (Some("eu-west-1".into()), vec![]));
        assert_eq!(
            region(Some("us-gov-west-1")),
            (Some("us-gov-west-1".into()), vec![])
        );
        for opt_out in ["", "none", "None"] {
            assert_eq!(region(Some(opt_out)), (None, vec![]), "{opt_out:?}");
        }
        let (value, warnings) = region(Some("eu-west"));
        assert_eq!(value.as_deref(), Some("eu-west-1"));
        assert!(
            warnings[0].contains("\"eu-west\", which is not a region"),
            "{warnings:?}"
        );
    }

    #[test]
    fn without_a_role_only_the_opt_in_flag_gives_the_region_alone() {
        let sa = annotations(&[("region", "us-east-2"), ("token-expiration", "1h")]);
        let mut settings = MutationSettings::default();
        assert_eq!(resolve(Some(&sa), &settings).identity, None);
        settings.inject_region_without_role = true;
        let r = resolve(Some(&sa), &settings);
        assert!(
            r.warnings.is_empty(),
            "only the region's warnings count: {:?}",
            r.warnings
        );
        let identity = r.identity.unwrap();
        assert_eq!(identity.source, CredentialKind::RegionOnly);
        assert_eq!(identity.region.as_deref(), Some("us-east-2"));
        // No region at all: nothing to inject.
        assert_eq!(resolve(None, &settings).identity, None);
        settings.aws_default_region = Some("eu-west-1".into());
        let unknown = resolve(None, &settings).identity.unwrap();
        assert_eq!(unknown.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn session_name_annotation_beats_the_flag_and_a_bad_value_warns() {
        let mut settings = MutationSettings::default();
        let session = |value: &str, settings: &MutationSettings| {
            let sa = annotations(&[("role-arn", ROLE), ("role-session-name-from-pod", value)]);
            let r = resolve(Some(&sa), settings);
            (r.identity.unwrap().session_name_from_pod, r.warnings.len())
        };
        assert_eq!(session("true", &settings), (true, 0));
        assert_eq!(session("maybe", &settings), (false, 1));
        settings.role_session_name_from_pod = true;
        assert_eq!(session("f", &settings), (false, 0));
        assert_eq!(session("maybe", &settings), (true, 1));
    }

    #[test]
    fn region_names_have_the_shape_of_aws_regions() {
        for good in [
            "eu-west-1",
            "us-gov-east-1",
            "cn-northwest-1",
            "eu-isoe-west-1",
            "ap-southeast-10",
        ] {
            assert!(is_region(good), "{good}");
        }
        for bad in [
            "",
            "none",
            "eu",
            "eu-west",
            "EU-WEST-1",
            "eu-west-1a",
            "e-west-1",
            "eu--1",
            " eu-west-1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
    }

    #[test]
    fn iam_role_arn_shapes() {
        for good in [
            ROLE,
            "arn:aws-cn:iam::111122223333:role/path/to/name",
            "arn:aws-us-gov:iam::000000000000:role/x",
        ] {
            assert!(is_iam_role_arn(good), "{good}");
        }
        for bad in [
            "",
            "my-role",
            "arn:aws:iam::11112222333:role/x",
            "arn:aws:iam::111122223333:user/x",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:s3::111122223333:role/x",
            "arn::iam::111122223333:role/x",
            "arn:aws:iam:us-east-1:111122223333:role/x",
        ] {
            assert!(!is_iam_role_arn(bad), "{bad}");
        }
    }

    #[test]
    fn iam_arn_splits_into_partition_account_and_resource() {
        assert_eq!(
            split_iam_arn("arn:aws-cn:iam::111122223333:oidc-provider/oidc.example.com/id:x"),
            Some(IamArn {
                partition: "aws-cn",
                account: "111122223333",
                resource: "oidc-provider/oidc.example.com/id:x",
            })
        );
        for not_iam in [
            "",
            "arn:aws:iam::111122223333",
            "arn:aws:s3::111122223333:bucket",
            "arn:aws:iam:us-east-1:111122223333:role/x",
            "urn:aws:iam::111122223333:role/x",
        ] {
            assert_eq!(split_iam_arn(not_iam), None, "{not_iam}");
        }
    }
}
