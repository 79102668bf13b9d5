//! The mutation engine: a pod ([`Pod`]) + its resolved identity + settings -> RFC 6902 patch
//! operations. Pure and synchronous; randomness (token-lifetime jitter) comes in as a parameter.
//!
//! Operations are granular (append one env entry, create a list only where absent), so fields
//! the engine does not know, including future Kubernetes fields, pass through untouched, and a
//! second pass over an already-mutated pod yields no operations.
//!
//! The work is linear in the pod: each container is visited once, and what it is checked
//! against (the skipped names, the token volumes) is a set.

mod container;
mod container_roles;
mod patch;
mod skip_containers;

use std::collections::HashSet;
use std::ops::RangeInclusive;

use crate::core::expiration::{
    describe_expiration, parse_expiration, JITTERED_EXPIRATION, JITTER_RANGE,
};
use crate::core::go_syntax;
use crate::core::identity::{CredentialKind, Identity};
use crate::core::json::{bounded, Warnings};
use crate::core::pod::Pod;
use crate::core::settings::{AnnotationKeys, MutationSettings};
use container::{mutate_container, ContainerPlan, Credentials};
pub use container_roles::ContainerRoles;
pub(crate) use patch::Json;
pub use patch::Patch;

/// Label set on pods that get EKS Pod Identity credentials; it ignores `--annotation-prefix`.
pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
const POD_IDENTITY_LABEL_VALUE: &str = "enabled";
/// Name of the IRSA token volume, and the file inside it.
pub(crate) const WEB_IDENTITY_VOLUME: &str = "aws-iam-token";
pub(crate) const WEB_IDENTITY_TOKEN_PATH: &str = "token";
/// The longest role session name AWS STS accepts; names made from `generateName` are at most
/// 63 characters.
pub(crate) const MAX_SESSION_NAME: usize = 64;

/// The largest patch the engine answers with. The API server takes no request over 3 MiB,
/// and a pod that needs a larger patch would be larger still once patched, so it could not be
/// stored: such a pod (tens of thousands of containers) is left as it is, with a warning. This
/// also bounds the memory one review can take.
pub(crate) const MAX_PATCH_BYTES: usize = 3 * 1024 * 1024;
/// Room the patch is given first, per container and for the pod: more than a container's
/// operations take with every variable and the mount, so a patch is written without growing.
const PATCH_BYTES_PER_CONTAINER: usize = 1024;

/// The engine's answer.
#[derive(Debug, Default)]
pub struct Mutation {
    pub patch: Patch,
    /// Shown to the user as admission warnings.
    pub warnings: Warnings,
    /// Names of the containers and init containers that were changed, for the log line.
    pub containers: Vec<String>,
}

/// Computes the patch for `pod`. `jitter` draws a uniformly random value from a range.
pub fn mutate(
    pod: &Pod<'_>,
    identity: &Identity,
    settings: &MutationSettings,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Mutation {
    let keys = &settings.keys;
    let mut warnings = Warnings::default();
    let skip_value = pod.annotation(&keys.skip_containers).unwrap_or_default();
    let skip = skip_containers::parse(skip_value).unwrap_or_else(|err| {
        warnings.push(format!(
            "pod annotation {} is not a comma-separated list of names ({err}): no container is skipped",
            keys.skip_containers
        ));
        HashSet::new()
    });
    let roles = container_roles(pod, identity, keys, &mut warnings);
    let expected = (1 + pod.containers().count()).saturating_mul(PATCH_BYTES_PER_CONTAINER);
    let mut patch = Patch::with_limit(expected, MAX_PATCH_BYTES);

    let projection = TokenProjection::new(identity, settings, pod.is_windows());
    let token = projection
        .as_ref()
        .map(|projection| add_token(pod, identity, projection, &mut patch, &mut warnings, jitter));
    let credentials = projection
        .as_ref()
        .zip(token.as_ref())
        .map(|(projection, token)| Credentials {
            env_pair: projection.env_pair(),
            session_name: session_name(pod, identity, &mut warnings),
            volume_name: projection.volume_name,
            mount_path: projection.mount_path,
            volume_usable: token.volume_usable,
            token_volumes: &token.volumes,
        });
    let plan = ContainerPlan {
        credentials,
        regional_sts: identity.regional_sts,
        region: identity.region.as_deref(),
    };

    let mut containers = Vec::new();
    let mut named = HashSet::new();
    for (list, index, container) in pod.containers() {
        if patch.is_over_limit() {
            break;
        }
        let role = roles.get(container.name());
        if role.is_some() {
            named.insert(container.name());
        }
        if skip.contains(container.name()) {
            continue;
        }
        let outcome = mutate_container(&mut patch, list, index, container, &plan, role);
        if outcome.changed {
            containers.push(container.name().to_string());
        }
        for warning in outcome.warnings {
            warnings.push(warning);
        }
    }
    for (name, _) in roles.entries() {
        if skip.contains(name) {
            warnings.push(format!(
                "container {name:?} is named in both {} and {}: left untouched",
                keys.skip_containers, keys.container_role_arns
            ));
        } else if !named.contains(name) {
            warnings.push(format!(
                "pod annotation {} names {name:?}, which is no container or init container of the pod",
                keys.container_role_arns
            ));
        }
    }

    if patch.is_over_limit() {
        let mut warnings = Warnings::default();
        warnings.push(format!(
            "the pod needs a patch of more than {MAX_PATCH_BYTES} bytes (it has {} containers and init containers), more than the API server takes: left unchanged, without AWS credentials",
            pod.containers().count()
        ));
        return Mutation {
            warnings,
            ..Mutation::default()
        };
    }
    Mutation {
        patch,
        warnings,
        containers,
    }
}

/// The roles the pod's `container-role-arns` annotation assigns, read only for IRSA: under
/// container credentials, or without a role, the annotation is reported and left unused.
fn container_roles<'p>(
    pod: &'p Pod<'_>,
    identity: &Identity,
    keys: &AnnotationKeys,
    warnings: &mut Warnings,
) -> ContainerRoles<'p> {
    let Some(value) = pod.annotation(&keys.container_role_arns) else {
        return ContainerRoles::default();
    };
    match &identity.source {
        CredentialKind::WebIdentity { .. } => {
            let roles = ContainerRoles::parse(value, &keys.container_role_arns);
            for warning in &roles.warnings {
                warnings.push(warning.clone());
            }
            roles
        }
        CredentialKind::ContainerCredentials => {
            warnings.push(format!(
                "pod annotation {} is ignored: the pod gets EKS Pod Identity credentials, whose role is the ServiceAccount's association",
                keys.container_role_arns
            ));
            ContainerRoles::default()
        }
        CredentialKind::RegionOnly => {
            warnings.push(roles_without_role(keys));
            ContainerRoles::default()
        }
    }
}

/// The warning for a pod that assigns container roles while its ServiceAccount has no role
/// (per-container roles are an exception to the ServiceAccount's role, not a way to get one).
pub(crate) fn roles_without_role(keys: &AnnotationKeys) -> String {
    format!(
        "pod annotation {} is ignored: the pod's ServiceAccount has no role ({} annotation or role mapping), so no container gets a token",
        keys.container_role_arns, keys.role_arn
    )
}

/// Whether the pod's containers get `AWS_ROLE_SESSION_NAME` from its name: asked for, IRSA,
/// and a name STS accepts. A pod of `generateName` has no name yet and always gets one STS
/// accepts; a given name that STS would refuse is left out with a warning, since the variable
/// would make every AWS call of the pod fail.
fn session_name(pod: &Pod<'_>, identity: &Identity, warnings: &mut Warnings) -> bool {
    let web_identity = matches!(identity.source, CredentialKind::WebIdentity { .. });
    if !identity.session_name_from_pod || !web_identity {
        return false;
    }
    match pod.given_name() {
        Some(name) if !is_session_name(name) => {
            warnings.push(format!(
                "pod name {:?} has {} characters; AWS STS takes 2 to {MAX_SESSION_NAME} of [\\w+=,.@-] as a session name: AWS_ROLE_SESSION_NAME not set, the SDKs name the session",
                bounded(name, 40),
                name.chars().count(),
            ));
            false
        }
        _ => true,
    }
}

/// `RoleSessionName` as STS checks it: 2 to 64 characters of `[\w+=,.@-]`.
pub(crate) fn is_session_name(name: &str) -> bool {
    (2..=MAX_SESSION_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

/// The pod's token volume as the engine found or added it.
struct TokenVolume<'p> {
    /// Names of the pod's volumes that hold a token where the identity variables point.
    volumes: HashSet<&'p str>,
    /// False when the pod has its own non-token volume of the token volume's name.
    volume_usable: bool,
}

/// The pod-level part of the credentials: the token's lifetime (the pod's annotation, jitter),
/// the token volume unless one of its name exists, and the pod-identity label.
fn add_token<'p>(
    pod: &'p Pod<'_>,
    identity: &Identity,
    projection: &TokenProjection<'_>,
    patch: &mut Patch,
    warnings: &mut Warnings,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> TokenVolume<'p> {
    let keys = &projection.settings.keys;
    let mut token_expiration = identity.token_expiration;
    let container_credentials = identity.source == CredentialKind::ContainerCredentials;
    if let Some(value) = pod.annotation(&keys.token_expiration) {
        match parse_expiration(value) {
            Some(seconds) => token_expiration = seconds,
            None => warnings.push(format!(
                "pod annotation {} has value {value:?}, which is not a whole number of seconds; using {}",
                keys.token_expiration,
                describe_expiration(token_expiration, container_credentials)
            )),
        }
    }
    if container_credentials && token_expiration == JITTERED_EXPIRATION {
        token_expiration = jitter(JITTER_RANGE);
    }

    // Volumes that already hold a token where the identity variables point: the pod's own
    // volume of our name (reinvocation, or a hand-made setup), or another one a container
    // mounts at the mount path.
    let volumes = pod.volumes();
    let token_volumes: HashSet<&str> = volumes
        .iter()
        .filter(|volume| volume.holds_token(projection.token_path))
        .filter_map(|volume| volume.name.as_deref())
        .collect();
    let existing = volumes
        .iter()
        .any(|v| v.name.as_deref() == Some(projection.volume_name));
    let volume_usable = !existing || token_volumes.contains(projection.volume_name);
    if !volume_usable {
        let [(first, _), (second, _)] = projection.env_pair();
        warnings.push(format!(
            "the pod's volume {:?} is not a projected service-account token with path {:?}: left as is; no container gets {first}, {second} or a mount of it",
            projection.volume_name, projection.token_path
        ));
    }

    // The volume, prepended as the reference does, unless one of that name exists.
    if !existing {
        let token = [
            ("audience", Json::Str(projection.audience)),
            ("expirationSeconds", Json::Int(token_expiration)),
            ("path", Json::Str(projection.token_path)),
        ];
        let source = [("serviceAccountToken", Json::Object(&token))];
        let sources = [Json::Object(&source)];
        let projected = [("sources", Json::Array(&sources))];
        let volume = Json::Object(&[
            ("name", Json::Str(projection.volume_name)),
            ("projected", Json::Object(&projected)),
        ]);
        if pod.spec.volumes.is_some() {
            patch.add(&["spec", "volumes", "0"], volume);
        } else {
            patch.add(&["spec", "volumes"], Json::Array(&[volume]));
        }
    }

    if container_credentials
        && volume_usable
        && pod.label(POD_IDENTITY_LABEL) != Some(POD_IDENTITY_LABEL_VALUE)
    {
        add_label(patch, pod);
    }
    TokenVolume {
        volumes: token_volumes,
        volume_usable,
    }
}

/// What the engine projects into the pod for one credential kind: the token volume, where it is
/// mounted, its audience, and the environment that points the SDKs at it.
struct TokenProjection<'a> {
    volume_name: &'a str,
    mount_path: &'a str,
    token_path: &'a str,
    audience: &'a str,
    /// The variable naming the credentials (the role, or the node agent's URI) and its value.
    credentials_variable: (&'static str, &'a str),
    /// The variable naming the token file, and the file.
    token_variable: &'static str,
    token_file: String,
    settings: &'a MutationSettings,
}

impl<'a> TokenProjection<'a> {
    /// `None` for an identity without credentials (only the region).
    fn new(identity: &'a Identity, settings: &'a MutationSettings, windows: bool) -> Option<Self> {
        let cc = &settings.container_credentials;
        let (volume_name, mount_path, token_path, audience, credentials_variable, token_variable) =
            match &identity.source {
                CredentialKind::WebIdentity { role_arn, audience } => (
                    WEB_IDENTITY_VOLUME,
                    settings.token_mount_path.as_str(),
                    WEB_IDENTITY_TOKEN_PATH,
                    audience.as_str(),
                    ("AWS_ROLE_ARN", role_arn.as_str()),
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                ),
                CredentialKind::ContainerCredentials => (
                    cc.volume_name.as_str(),
                    cc.mount_path.as_str(),
                    cc.token_path.as_str(),
                    cc.audience.as_str(),
                    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", cc.full_uri.as_str()),
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                ),
                CredentialKind::RegionOnly => return None,
            };
        let mut token_file = go_syntax::join_path(mount_path, token_path);
        if windows {
            token_file = format!("C:{}", token_file.replace('/', "\\"));
        }
        Some(Self {
            volume_name,
            mount_path,
            token_path,
            audience,
            credentials_variable,
            token_variable,
            token_file,
            settings,
        })
    }

    /// The two variables that carry the identity: (name, value) twice.
    fn env_pair(&self) -> [(&'static str, &str); 2] {
        [
            self.credentials_variable,
            (self.token_variable, self.token_file.as_str()),
        ]
    }
}

/// Sets the pod-identity label, creating `labels` (or `metadata`) only where absent.
fn add_label(patch: &mut Patch, pod: &Pod<'_>) {
    let value = Json::Str(POD_IDENTITY_LABEL_VALUE);
    let labels = [(POD_IDENTITY_LABEL, value)];
    match &pod.metadata {
        Some(metadata) if metadata.labels.is_some() => {
            patch.add(&["metadata", "labels", POD_IDENTITY_LABEL], value);
        }
        Some(_) => patch.add(&["metadata", "labels"], Json::Object(&labels)),
        None => patch.add(
            &["metadata"],
            Json::Object(&[("labels", Json::Object(&labels))]),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn run(pod: &Value, identity: &Identity) -> Mutation {
        let pod = Pod::from_value(pod).unwrap();
        mutate(&pod, identity, &MutationSettings::default(), &mut |_| 80000)
    }

    fn web_identity() -> Identity {
        Identity {
            source: CredentialKind::WebIdentity {
                role_arn: "arn:aws:iam::111122223333:role/r".into(),
                audience: "sts.amazonaws.com".into(),
            },
            regional_sts: false,
            token_expiration: 86400,
            region: None,
            session_name_from_pod: false,
        }
    }

    #[test]
    fn bad_pod_expiration_in_container_credentials_mode_names_the_spread_actually_applied() {
        let identity = Identity {
            source: CredentialKind::ContainerCredentials,
            regional_sts: false,
            token_expiration: 86400,
            region: None,
            session_name_from_pod: false,
        };
        let pod = json!({
            "metadata": {"annotations": {"eks.amazonaws.com/token-expiration": "1e400"}},
            "spec": {"containers": [{"name": "app", "image": "a"}]}
        });
        let mutation = run(&pod, &identity);
        let warnings = mutation.warnings.into_vec();
        assert!(
            warnings[0].ends_with("using a random lifetime from 79200 to 86400 seconds (86400, spread in container-credentials mode)"),
            "{warnings:?}"
        );
        let patch = mutation.patch.as_json();
        assert!(patch.contains("\"expirationSeconds\":80000"), "{patch}");
    }

    #[test]
    fn session_names_are_what_sts_accepts() {
        let longest = "a".repeat(64);
        for good in [
            "ab",
            "web-7d9f8c6b5-x2x9z",
            "a.b@c=d,e+f_g",
            longest.as_str(),
        ] {
            assert!(is_session_name(good), "{good}");
        }
        let too_long = "a".repeat(65);
        for bad in ["", "a", too_long.as_str(), "a b", "a/b", "é1"] {
            assert!(!is_session_name(bad), "{bad}");
        }
    }

    #[test]
    fn many_containers_are_all_mutated() {
        let containers: Vec<Value> = (0..300)
            .map(|i| json!({"name": format!("c{i}"), "image": "app", "env": (0..5000).map(|e| json!({"name": format!("E{e}")})).take(if i == 0 { 5000 } else { 1 }).collect::<Vec<_>>()}))
            .collect();
        let mutation = run(
            &json!({"spec": {"containers": containers}}),
            &web_identity(),
        );
        assert_eq!(mutation.containers.len(), 300);
        assert!(mutation.warnings.is_empty());
        let operations = mutation.patch.operations().unwrap();
        assert_eq!(
            operations.0.len(),
            1 + 300 * 3,
            "the volume, then two variables and a mount per container"
        );
    }

    #[test]
    fn a_pod_whose_patch_would_be_too_large_is_left_unchanged_with_a_warning() {
        let containers: Vec<Value> = (0..12_000)
            .map(|i| json!({"name": format!("c{i}")}))
            .collect();
        let mutation = run(
            &json!({"spec": {"containers": containers}}),
            &web_identity(),
        );
        assert!(mutation.patch.is_empty());
        assert!(mutation.containers.is_empty());
        let warnings = mutation.warnings.into_vec();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("12000 containers"), "{warnings:?}");
        assert!(warnings[0].contains("left unchanged"), "{warnings:?}");
    }
}
