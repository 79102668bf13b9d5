//! Whether a pod already running has what the webhook would give it now, asked of the engine
//! itself: the doctor's `pods.injected` check and the cluster audit both judge pods here.
//!
//! A pod's env and volumes never change after creation, so a pod created while no webhook
//! answered (`failurePolicy: Ignore`), or before its ServiceAccount's annotations changed, keeps
//! what it got until it is replaced.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::core::engine::{self, WEB_IDENTITY_VOLUME};
use crate::core::identity::{CredentialKind, Identity};
use crate::core::pod::{Pod, PodError};
use crate::core::settings::MutationSettings;

const ROLE_VARIABLE: &str = "AWS_ROLE_ARN";
const TOKEN_FILE_VARIABLE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
const CONTAINER_CREDENTIALS_VARIABLE: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";

/// How a running pod differs from what the webhook gives now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Staleness {
    /// Some container lacks the credentials themselves: the pod was created while no webhook
    /// answered, or before its ServiceAccount had an identity.
    Missing,
    /// It has credentials, but not the ones the webhook gives now: another role, or settings
    /// added since (regional STS, a region, another credential kind's extras).
    Outdated,
}

/// Why a running pod needs a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    pub staleness: Staleness,
    /// The containers concerned.
    pub containers: Vec<String>,
    /// In words, e.g. `lacks credentials in container(s) app`.
    pub detail: String,
    /// For a role that changed: the one the pod runs with, and the one it would get now (None
    /// when the ServiceAccount no longer resolves to a role).
    pub roles: Option<(String, Option<String>)>,
}

/// Judges one running pod against the identity its ServiceAccount resolves to now (None: no
/// identity). `Ok(None)`: the pod has what the webhook would give it.
pub fn judge(
    pod: &Value,
    identity: Option<&Identity>,
    settings: &MutationSettings,
) -> Result<Option<Stale>, PodError> {
    let read = Pod::from_value(pod)?;
    if let Some(identity) = identity {
        let mutation = engine::mutate(&read, identity, settings, &mut fixed_jitter);
        if !mutation.patch.is_empty() {
            return Ok(Some(lacking(&read, identity, &mutation.patch)));
        }
    }
    Ok(other_role(pod, &read, identity, settings))
}

/// Whether anything is missing does not depend on the drawn token lifetime.
fn fixed_jitter(range: std::ops::RangeInclusive<i64>) -> i64 {
    *range.start()
}

/// What the engine's patch for a running pod adds, in words.
fn lacking(pod: &Pod<'_>, identity: &Identity, patch: &engine::Patch) -> Stale {
    // A region alone is no credential: a pod without it is outdated, not missing anything.
    let credential = match identity.source {
        CredentialKind::WebIdentity { .. } => Some(ROLE_VARIABLE),
        CredentialKind::ContainerCredentials => Some(CONTAINER_CREDENTIALS_VARIABLE),
        CredentialKind::RegionOnly => None,
    };
    let additions = Additions::of(pod, patch);
    let without_credentials: Vec<String> = additions
        .containers
        .iter()
        .filter(|(_, added)| {
            added
                .env
                .iter()
                .any(|name| Some(name.as_str()) == credential)
        })
        .map(|(name, _)| name.clone())
        .collect();
    if !without_credentials.is_empty() {
        let detail = format!(
            "lacks credentials in container(s) {}",
            without_credentials.join(", ")
        );
        return Stale {
            staleness: Staleness::Missing,
            containers: without_credentials,
            detail,
            roles: None,
        };
    }
    let mut parts = Vec::new();
    let mut things: Vec<&str> = Vec::new();
    for (_, added) in &additions.containers {
        for name in &added.env {
            if !things.contains(&name.as_str()) {
                things.push(name);
            }
        }
    }
    if additions.containers.iter().any(|(_, added)| added.mount) {
        things.push("the token mount");
    }
    let containers: Vec<String> = additions
        .containers
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    if !things.is_empty() {
        parts.push(format!(
            "{} in container(s) {}",
            things.join(", "),
            containers.join(", ")
        ));
    }
    if additions.volume {
        parts.push("the token volume".into());
    }
    if additions.label {
        parts.push(format!("the label {}", engine::POD_IDENTITY_LABEL));
    }
    Stale {
        staleness: Staleness::Outdated,
        containers,
        detail: format!("lacks {}", parts.join("; ")),
        roles: None,
    }
}

/// What a patch adds, per container (by name, in the patch's order, which is the pod's) and
/// to the pod.
#[derive(Default)]
struct Additions {
    containers: Vec<(String, Added)>,
    volume: bool,
    label: bool,
}

#[derive(Default)]
struct Added {
    env: Vec<String>,
    mount: bool,
}

impl Additions {
    fn of(pod: &Pod<'_>, patch: &engine::Patch) -> Self {
        let names: BTreeMap<(&str, String), &str> = pod
            .containers()
            .map(|(list, index, container)| ((list.field(), index.to_string()), container.name()))
            .collect();
        let mut additions = Self::default();
        for (path, value) in adds(patch) {
            let tokens: Vec<&str> = path.iter().map(String::as_str).collect();
            match tokens.as_slice() {
                ["metadata", ..] => additions.label = true,
                ["spec", "volumes", ..] => additions.volume = true,
                ["spec", list, index, field, ..] => {
                    let Some(name) = names.get(&(*list, index.to_string())) else {
                        continue;
                    };
                    let added = match additions.containers.iter().position(|(n, _)| n == name) {
                        Some(at) => &mut additions.containers[at].1,
                        None => {
                            additions
                                .containers
                                .push((name.to_string(), Added::default()));
                            &mut additions.containers.last_mut().expect("just pushed").1
                        }
                    };
                    match *field {
                        "env" => added.env.extend(env_names(&value)),
                        _ => added.mount = true,
                    }
                }
                _ => {}
            }
        }
        additions
    }
}

/// Each `add` of a patch the engine wrote: its path, token by token (decoded), and its value.
fn adds(patch: &engine::Patch) -> Vec<(Vec<String>, Value)> {
    // The engine writes the patch; it always reads back.
    let operations = patch.operations().unwrap_or_default();
    operations
        .0
        .into_iter()
        .filter_map(|operation| match operation {
            json_patch::PatchOperation::Add(add) => Some((
                add.path.tokens().map(|t| t.decoded().into()).collect(),
                add.value,
            )),
            _ => None,
        })
        .collect()
}

/// The env entries an `add` to a container's env carries: one entry, or a new list of them.
fn env_entries(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(entries) => entries.iter().collect(),
        entry => vec![entry],
    }
}

/// The names of the env entries an `add` carries.
fn env_names(value: &Value) -> Vec<String> {
    env_entries(value)
        .into_iter()
        .filter_map(|entry| entry["name"].as_str().map(str::to_string))
        .collect()
}

/// A pod that lacks nothing may still run with a role the webhook no longer gives: its
/// containers keep the role they were created with. The engine says which role each container
/// would get now: it runs on the pod with the injected role variables taken out.
fn other_role(
    pod: &Value,
    read: &Pod<'_>,
    identity: Option<&Identity>,
    settings: &MutationSettings,
) -> Option<Stale> {
    let running = injected_roles(pod);
    if running.is_empty() {
        return None;
    }
    // A region given without a role is no role: the pod's containers ran with one that is gone.
    let identity = identity.filter(|i| !matches!(i.source, CredentialKind::RegionOnly));
    let current: BTreeMap<(String, usize), String> = match identity.map(|i| &i.source) {
        Some(CredentialKind::WebIdentity { .. }) => {
            let mut bare = pod.clone();
            for (list, index) in running.keys() {
                if let Some(env) = bare["spec"][list.as_str()][*index]["env"].as_array_mut() {
                    env.retain(|e| e["name"] != ROLE_VARIABLE && e["name"] != TOKEN_FILE_VARIABLE);
                }
            }
            let bare_read = Pod::from_value(&bare).ok()?;
            let identity = identity?;
            let mutation = engine::mutate(&bare_read, identity, settings, &mut fixed_jitter);
            roles_added(&mutation.patch)
        }
        // Container credentials: the engine wanted its own variables, so `lacking` answered.
        Some(CredentialKind::ContainerCredentials | CredentialKind::RegionOnly) => return None,
        // No identity now: a pod with the webhook's token volume ran with one.
        None if read
            .volumes()
            .iter()
            .any(|v| v.name.as_deref() == Some(WEB_IDENTITY_VOLUME)) =>
        {
            BTreeMap::new()
        }
        None => return None,
    };
    // (running role, role now) -> containers
    let mut changes: BTreeMap<(String, Option<String>), Vec<String>> = BTreeMap::new();
    for (place, (name, role)) in &running {
        let now = current.get(place);
        let changed = match (identity, now) {
            (None, _) => true,
            (Some(_), Some(now)) => now != role,
            // The webhook would not give this container a role now (skipped, or its own setup
            // in the way): nothing to compare.
            (Some(_), None) => false,
        };
        if changed {
            changes
                .entry((role.clone(), now.cloned()))
                .or_default()
                .push(name.clone());
        }
    }
    if changes.is_empty() {
        return None;
    }
    let mut containers = Vec::new();
    let mut parts = Vec::new();
    for ((role, now), names) in &changes {
        let now = match now {
            Some(now) => format!("the webhook now gives {now}"),
            None => "its ServiceAccount no longer resolves to a role".into(),
        };
        parts.push(format!(
            "runs with role {role} in container(s) {}, {now}",
            names.join(", ")
        ));
        containers.extend(names.iter().cloned());
    }
    let mut unique = BTreeSet::new();
    containers.retain(|c| unique.insert(c.clone()));
    let ((role, now), _) = changes.into_iter().next()?;
    Some(Stale {
        staleness: Staleness::Outdated,
        containers,
        detail: parts.join("; "),
        roles: Some((role, now)),
    })
}

/// The containers that carry the injected pair (a role and a token file), by place in the
/// pod: (list field, index) -> (name, role).
fn injected_roles(pod: &Value) -> BTreeMap<(String, usize), (String, String)> {
    let mut roles = BTreeMap::new();
    for list in ["containers", "initContainers"] {
        let containers = pod["spec"][list].as_array().into_iter().flatten();
        for (index, container) in containers.enumerate() {
            let env = container["env"].as_array().into_iter().flatten();
            let value = |name: &str| {
                env.clone()
                    .find(|e| e["name"] == name)
                    .and_then(|e| e["value"].as_str())
            };
            if let (Some(role), Some(_)) = (value(ROLE_VARIABLE), value(TOKEN_FILE_VARIABLE)) {
                let name = container["name"].as_str().unwrap_or_default();
                roles.insert(
                    (list.to_string(), index),
                    (name.to_string(), role.to_string()),
                );
            }
        }
    }
    roles
}

/// The role each container gets in a patch: (list field, index) -> role.
fn roles_added(patch: &engine::Patch) -> BTreeMap<(String, usize), String> {
    let mut roles = BTreeMap::new();
    for (path, value) in adds(patch) {
        let [_, list, index, env, ..] = path.as_slice() else {
            continue;
        };
        let (Ok(index), "env") = (index.parse::<usize>(), env.as_str()) else {
            continue;
        };
        for entry in env_entries(&value) {
            if entry["name"] == ROLE_VARIABLE {
                if let Some(role) = entry["value"].as_str() {
                    roles.insert((list.clone(), index), role.to_string());
                }
            }
        }
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OLD: &str = "arn:aws:iam::111122223333:role/old";
    const NEW: &str = "arn:aws:iam::111122223333:role/new";

    fn pod(containers: &[&str]) -> Value {
        let containers: Vec<Value> = containers
            .iter()
            .map(|name| json!({"name": name, "image": "x"}))
            .collect();
        json!({"metadata": {"name": "p", "namespace": "ns"},
               "spec": {"serviceAccountName": "app", "containers": containers}})
    }

    /// `pod` as the webhook would have created it with `identity` and `settings`.
    fn admitted(mut pod: Value, identity: &Identity, settings: &MutationSettings) -> Value {
        let copy = pod.clone();
        let mutation = engine::mutate(
            &Pod::from_value(&copy).unwrap(),
            identity,
            settings,
            &mut fixed_jitter,
        );
        json_patch::patch(&mut pod, &mutation.patch.operations().unwrap()).unwrap();
        pod
    }

    #[test]
    fn a_pod_created_without_the_webhook_lacks_its_credentials() {
        let settings = MutationSettings::default();
        let stale = judge(
            &pod(&["app", "sidecar"]),
            Some(&Identity::web_identity(NEW)),
            &settings,
        )
        .unwrap()
        .unwrap();
        assert_eq!(stale.staleness, Staleness::Missing);
        assert_eq!(stale.containers, ["app", "sidecar"]);
        assert_eq!(
            stale.detail,
            "lacks credentials in container(s) app, sidecar"
        );
    }

    #[test]
    fn a_pod_the_webhook_admitted_with_the_current_identity_is_fine() {
        let settings = MutationSettings::default();
        let identity = Identity::web_identity(NEW);
        let pod = admitted(pod(&["app"]), &identity, &settings);
        assert_eq!(judge(&pod, Some(&identity), &settings).unwrap(), None);
        // A pod without any identity, under a ServiceAccount without one, is fine too.
        assert_eq!(judge(&self::pod(&["app"]), None, &settings).unwrap(), None);
    }

    #[test]
    fn a_pod_admitted_with_an_older_role_names_both_roles() {
        let settings = MutationSettings::default();
        let pod = admitted(
            pod(&["app", "sidecar"]),
            &Identity::web_identity(OLD),
            &settings,
        );
        let stale = judge(&pod, Some(&Identity::web_identity(NEW)), &settings)
            .unwrap()
            .unwrap();
        assert_eq!(stale.staleness, Staleness::Outdated);
        assert_eq!(
            stale.detail,
            format!(
                "runs with role {OLD} in container(s) app, sidecar, the webhook now gives {NEW}"
            )
        );
        assert_eq!(stale.roles, Some((OLD.into(), Some(NEW.into()))));
    }

    #[test]
    fn a_role_removed_from_the_service_account_is_an_older_identity() {
        let settings = MutationSettings::default();
        let pod = admitted(pod(&["app"]), &Identity::web_identity(OLD), &settings);
        let stale = judge(&pod, None, &settings).unwrap().unwrap();
        assert_eq!(stale.staleness, Staleness::Outdated);
        assert_eq!(
            stale.detail,
            format!("runs with role {OLD} in container(s) app, its ServiceAccount no longer resolves to a role")
        );
    }

    #[test]
    fn a_container_the_webhook_skips_or_that_set_its_own_role_is_not_compared() {
        let settings = MutationSettings::default();
        let mut pod = admitted(pod(&["app"]), &Identity::web_identity(NEW), &settings);
        // A container that brought its own pair, skipped by annotation.
        pod["spec"]["containers"].as_array_mut().unwrap().push(
            json!({"name": "own", "image": "x", "env": [
                {"name": ROLE_VARIABLE, "value": OLD},
                {"name": TOKEN_FILE_VARIABLE, "value": "/elsewhere/token"}]}),
        );
        pod["metadata"]["annotations"] = json!({"eks.amazonaws.com/skip-containers": "own"});
        assert_eq!(
            judge(&pod, Some(&Identity::web_identity(NEW)), &settings).unwrap(),
            None
        );
        // Without the annotation, the webhook would give it the token mount (and leave its
        // own pair alone).
        pod["metadata"]["annotations"] = json!({});
        let stale = judge(&pod, Some(&Identity::web_identity(NEW)), &settings)
            .unwrap()
            .unwrap();
        assert_eq!(stale.containers, ["own"]);
        assert_eq!(stale.detail, "lacks the token mount in container(s) own");
    }

    #[test]
    fn settings_added_since_creation_make_the_pod_outdated_and_are_named() {
        let identity = Identity::web_identity(NEW);
        let pod = admitted(pod(&["app"]), &identity, &MutationSettings::default());
        let settings = MutationSettings {
            aws_default_region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let regional = Identity {
            regional_sts: true,
            region: Some("eu-west-1".into()),
            ..identity
        };
        let stale = judge(&pod, Some(&regional), &settings).unwrap().unwrap();
        assert_eq!(stale.staleness, Staleness::Outdated);
        assert_eq!(
            stale.detail,
            "lacks AWS_STS_REGIONAL_ENDPOINTS, AWS_DEFAULT_REGION, AWS_REGION in container(s) app"
        );
    }

    #[test]
    fn a_pod_moved_to_container_credentials_lacks_them_and_the_label() {
        let settings = MutationSettings::default();
        let pod = admitted(pod(&["app"]), &Identity::web_identity(OLD), &settings);
        let identity = Identity {
            source: CredentialKind::ContainerCredentials,
            regional_sts: false,
            token_expiration: 86400,
            region: None,
            session_name_from_pod: false,
        };
        let stale = judge(&pod, Some(&identity), &settings).unwrap().unwrap();
        assert_eq!(stale.staleness, Staleness::Missing);
        assert_eq!(stale.detail, "lacks credentials in container(s) app");
        let pod = admitted(self::pod(&["app"]), &identity, &settings);
        assert_eq!(judge(&pod, Some(&identity), &settings).unwrap(), None);
        let mut unlabelled = pod.clone();
        unlabelled["metadata"]["labels"] = json!({});
        let stale = judge(&unlabelled, Some(&identity), &settings)
            .unwrap()
            .unwrap();
        assert_eq!(
            stale.detail,
            "lacks the label eks.amazonaws.com/pod-identity"
        );
    }

    #[test]
    fn an_unreadable_pod_is_an_error_naming_the_field() {
        let err = judge(
            &json!({"spec": {"containers": "x"}}),
            Some(&Identity::web_identity(NEW)),
            &MutationSettings::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("spec.containers"), "{err}");
    }
}
