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
mod patch;
mod skip_containers;

use std::collections::HashSet;
use std::ops::RangeInclusive;

use crate::core::expiration::{
    describe_expiration, parse_expiration, JITTERED_EXPIRATION, JITTER_RANGE,
};
use crate::core::go_syntax;
use crate::core::identity::{CredentialKind, Identity};
use crate::core::json::Warnings;
use crate::core::pod::Pod;
use crate::core::settings::MutationSettings;
use container::{mutate_container, ContainerPlan};
pub(crate) use patch::Json;
pub use patch::Patch;

/// Label set on pods that get EKS Pod Identity credentials; it ignores `--annotation-prefix`.
pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
const POD_IDENTITY_LABEL_VALUE: &str = "enabled";
/// Name of the IRSA token volume, and the file inside it.
pub(crate) const WEB_IDENTITY_VOLUME: &str = "aws-iam-token";
pub(crate) const WEB_IDENTITY_TOKEN_PATH: &str = "token";

/// The largest patch the engine answers with. The API server takes no request over 3 MiB,
/// and a pod that needs a larger patch would be larger still once patched, so it could not be
/// stored: such a pod (tens of thousands of containers) is left as it is, with a warning. This
/// also bounds the memory one review can take.
pub(crate) const MAX_PATCH_BYTES: usize = 3 * 1024 * 1024;

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
    let skip_value = pod.annotation(&keys.skip_containers).unwrap_or_default();
    let skip = skip_containers::parse(skip_value).unwrap_or_else(|err| {
        warnings.push(format!(
            "pod annotation {} has value {skip_value:?}, which is not a comma-separated list of names ({err}); no container is skipped",
            keys.skip_containers
        ));
        HashSet::new()
    });

    let projection = TokenProjection::new(identity, settings, pod.is_windows());
    let mut patch = Patch::with_limit(MAX_PATCH_BYTES);

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
        let [(first, _), (second, _)] = &projection.env_pair();
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
        add_label(&mut patch, pod);
    }

    let plan = ContainerPlan {
        env_pair: projection.env_pair(),
        regional_sts: identity.regional_sts,
        region: settings.aws_default_region.as_deref(),
        volume_name: projection.volume_name,
        mount_path: projection.mount_path,
        volume_usable,
        token_volumes: &token_volumes,
    };
    let mut containers = Vec::new();
    for (list, index, container) in pod.containers() {
        if patch.is_over_limit() {
            break;
        }
        if skip.contains(container.name()) {
            continue;
        }
        let outcome = mutate_container(&mut patch, list, index, container, &plan);
        if outcome.changed {
            containers.push(container.name().to_string());
        }
        if let Some(warning) = outcome.warning {
            warnings.push(warning);
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

/// What the engine projects into the pod for one credential kind: the token volume, where it is
/// mounted, its audience, and the environment that points the SDKs at it.
struct TokenProjection<'a> {
    volume_name: &'a str,
    mount_path: &'a str,
    token_path: &'a str,
    audience: &'a str,
    token_file: String,
    identity: &'a Identity,
    settings: &'a MutationSettings,
}

impl<'a> TokenProjection<'a> {
    fn new(identity: &'a Identity, settings: &'a MutationSettings, windows: bool) -> Self {
        let (volume_name, mount_path, token_path, audience) = match &identity.source {
            CredentialKind::WebIdentity { audience, .. } => (
                WEB_IDENTITY_VOLUME,
                settings.token_mount_path.as_str(),
                WEB_IDENTITY_TOKEN_PATH,
                audience.as_str(),
            ),
            CredentialKind::ContainerCredentials => {
                let cc = &settings.container_credentials;
                (
                    cc.volume_name.as_str(),
                    cc.mount_path.as_str(),
                    cc.token_path.as_str(),
                    cc.audience.as_str(),
                )
            }
        };
        let mut token_file = go_syntax::join_path(mount_path, token_path);
        if windows {
            token_file = format!("C:{}", token_file.replace('/', "\\"));
        }
        Self {
            volume_name,
            mount_path,
            token_path,
            audience,
            token_file,
            identity,
            settings,
        }
    }

    /// The two variables that carry the identity: (name, value) twice.
    fn env_pair(&self) -> [(&'a str, String); 2] {
        match &self.identity.source {
            CredentialKind::WebIdentity { role_arn, .. } => [
                ("AWS_ROLE_ARN", role_arn.clone()),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", self.token_file.clone()),
            ],
            CredentialKind::ContainerCredentials => [
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    self.settings.container_credentials.full_uri.clone(),
                ),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    self.token_file.clone(),
                ),
            ],
        }
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
        }
    }

    #[test]
    fn bad_pod_expiration_in_container_credentials_mode_names_the_spread_actually_applied() {
        let identity = Identity {
            source: CredentialKind::ContainerCredentials,
            regional_sts: false,
            token_expiration: 86400,
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
