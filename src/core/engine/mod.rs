//! The mutation engine: pod JSON + resolved identity + settings -> RFC 6902 patch operations.
//! Pure and synchronous; randomness (token-lifetime jitter) comes in as a parameter.
//!
//! Operations are granular (append one env entry, create a list only where absent), so fields
//! the engine does not know, including future Kubernetes fields, pass through untouched, and a
//! second pass over an already-mutated pod yields no operations.

mod container;
mod json_fields;
mod node;
mod patch;
mod pod_view;
mod scan;
mod skip_containers;

use std::collections::HashSet;
use std::ops::RangeInclusive;

use serde_json::Value;

use crate::core::go_syntax;
use crate::core::identity::{parse_expiration, CredentialKind, Identity};
use crate::core::settings::MutationSettings;
use container::{mutate_container, ContainerPlan};
pub use json_fields::{string as string_member, Object, PodShapeError};
#[cfg(test)]
pub(crate) use node::MAX_CONTAINERS;
pub(crate) use node::{read_pod, POD};
pub use node::{Fields, Node};
pub(crate) use patch::Json;
pub use patch::Patch;
use pod_view::PodView;
#[doc(hidden)]
pub use scan::check_scanner_against_serde;
pub(crate) use scan::Scanner;

/// Label set on pods that get EKS Pod Identity credentials; it ignores `--annotation-prefix`.
pub const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
pub(crate) const POD_IDENTITY_LABEL_VALUE: &str = "enabled";
/// Name of the IRSA token volume, and the file inside it.
pub(crate) const WEB_IDENTITY_VOLUME: &str = "aws-iam-token";
pub(crate) const WEB_IDENTITY_TOKEN_PATH: &str = "token";
/// Token lifetimes of exactly one day are spread over [22h, 24h] in container-credentials
/// mode so that a fleet's refreshes do not all land at once.
pub(crate) const JITTERED_EXPIRATION: i64 = 86400;
pub const JITTER_RANGE: RangeInclusive<i64> = 79200..=86400;

/// The pod-specific inputs the engine needs beside the pod itself.
pub struct PodContext<'a> {
    pub identity: &'a Identity,
    pub settings: &'a MutationSettings,
}

/// The engine's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation {
    pub patch: Patch,
    /// Shown to the user as admission warnings.
    pub warnings: Vec<String>,
    /// Names of the containers and init containers that were changed, for the log line.
    pub containers: Vec<String>,
}

/// Reads the engine's fields of an already-parsed pod (the `mutate` command, tests).
pub(crate) fn read_value(pod: &Value) -> Result<Node<'_>, PodShapeError> {
    // A `Value` always has string keys and known types, so reading it cannot fail; the error
    // is mapped rather than unwrapped all the same.
    read_pod(pod).map_err(|err| PodShapeError {
        field: "the object".into(),
        expected: "a JSON value".into(),
        got: err.to_string().into(),
    })
}

/// Checks that a pod read with [`read_pod`] has the shape of a Pod in every field the engine
/// reads, so malformed input is reported whether or not the pod would be mutated.
pub(crate) fn check_node(pod: &Node<'_>, settings: &MutationSettings) -> Result<(), PodShapeError> {
    PodView::read(pod, &settings.keys).map(drop)
}

/// Computes the patch for `pod`. `jitter` draws a uniformly random value from a range.
pub fn mutate_pod(
    pod: &Value,
    context: &PodContext<'_>,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Result<Mutation, PodShapeError> {
    mutate_node(&read_value(pod)?, context, jitter)
}

/// The lifetime a token of `seconds` gets, for warnings: in container-credentials mode one day
/// is spread at random over [`JITTER_RANGE`], so the text names the range actually applied.
pub(crate) fn describe_expiration(seconds: i64, container_credentials: bool) -> String {
    if container_credentials && seconds == JITTERED_EXPIRATION {
        format!(
            "a random lifetime from {} to {} seconds ({JITTERED_EXPIRATION}, spread in container-credentials mode)",
            JITTER_RANGE.start(),
            JITTER_RANGE.end()
        )
    } else {
        seconds.to_string()
    }
}

/// [`mutate_pod`] on a pod already read with [`read_pod`]: the server's path.
pub(crate) fn mutate_node(
    pod: &Node<'_>,
    context: &PodContext<'_>,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Result<Mutation, PodShapeError> {
    let settings = context.settings;
    let identity = context.identity;
    let pod = PodView::read(pod, &settings.keys)?;

    let mut warnings = Vec::new();
    let mut token_expiration = identity.token_expiration;
    let container_credentials = identity.source == CredentialKind::ContainerCredentials;
    if let Some(value) = pod.token_expiration {
        match parse_expiration(value) {
            Some(seconds) => token_expiration = seconds,
            None => warnings.push(format!(
                "pod annotation {} has value {value:?}, which is not a whole number of seconds; using {}",
                settings.keys.token_expiration,
                describe_expiration(token_expiration, container_credentials)
            )),
        }
    }
    if container_credentials && token_expiration == JITTERED_EXPIRATION {
        token_expiration = jitter(JITTER_RANGE);
    }
    let skip_value = pod.skip_containers.unwrap_or_default();
    let skip = skip_containers::parse(skip_value).unwrap_or_else(|err| {
        warnings.push(format!(
            "pod annotation {} has value {skip_value:?}, which is not a comma-separated list of names ({err}); no container is skipped",
            settings.keys.skip_containers
        ));
        HashSet::new()
    });

    let projection = TokenProjection::new(identity, settings, pod.windows);
    // About what a container's env entries and mount take, and the volume.
    let mut patch = Patch::with_capacity(512 + 512 * pod.containers.len());

    // Volumes that already hold a token where the identity variables point: the pod's own
    // volume of our name (reinvocation, or a hand-made setup), or another one a container
    // mounts at the mount path.
    let token_volumes: Vec<&str> = pod
        .volumes
        .iter()
        .filter(|volume| holds_token(volume.volume, projection.token_path))
        .map(|volume| volume.name)
        .collect();
    let existing = pod
        .volumes
        .iter()
        .find(|v| v.name == projection.volume_name);
    let volume_usable = existing.is_none() || token_volumes.contains(&projection.volume_name);
    if !volume_usable {
        let [(first, _), (second, _)] = &projection.env_pair();
        warnings.push(format!(
            "the pod's volume {:?} is not a projected service-account token with path {:?}: left as is; no container gets {first}, {second} or a mount of it",
            projection.volume_name, projection.token_path
        ));
    }

    // The volume, prepended as the reference does, unless one of that name exists.
    if existing.is_none() {
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
        if pod.has_volumes {
            patch.add(&["spec", "volumes", "0"], volume);
        } else {
            patch.add(&["spec", "volumes"], Json::Array(&[volume]));
        }
    }

    if container_credentials
        && volume_usable
        && pod.pod_identity_label != Some(POD_IDENTITY_LABEL_VALUE)
    {
        add_label(&mut patch, &pod);
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
    for container in &pod.containers {
        if skip.contains(container.name) {
            continue;
        }
        let outcome = mutate_container(&mut patch, container, &plan);
        if outcome.changed {
            containers.push(container.name.to_string());
        }
        warnings.extend(outcome.warning);
    }

    Ok(Mutation {
        patch,
        warnings,
        containers,
    })
}

/// Whether `volume` is a projected volume with a service-account token at `token_path`, so a
/// token file is where the identity variables point. Read leniently: a volume of another
/// shape is simply not a token volume (the API server validates volume sources itself).
fn holds_token(volume: Object<'_>, token_path: &str) -> bool {
    let sources = volume
        .get("projected")
        .and_then(|projected| projected.get("sources"))
        .and_then(Node::as_array);
    sources.into_iter().flatten().any(|source| {
        source
            .get("serviceAccountToken")
            .and_then(|token| token.get("path"))
            .and_then(Node::as_str)
            == Some(token_path)
    })
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
fn add_label(patch: &mut Patch, pod: &PodView<'_>) {
    let value = Json::Str(POD_IDENTITY_LABEL_VALUE);
    let labels = [(POD_IDENTITY_LABEL, value)];
    if pod.has_labels {
        patch.add(&["metadata", "labels", POD_IDENTITY_LABEL], value);
    } else if pod.has_metadata {
        patch.add(&["metadata", "labels"], Json::Object(&labels));
    } else {
        patch.add(
            &["metadata"],
            Json::Object(&[("labels", Json::Object(&labels))]),
        );
    }
}
