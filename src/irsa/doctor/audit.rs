//! The cluster audit behind `doctor --all-namespaces`: every pod that has not finished and that
//! the webhook is called for, judged (`stale`) against the identity its ServiceAccount resolves
//! to now by the webhook's own resolution and engine; the pods that need a restart grouped by
//! the workload that owns them, each with the command that restarts it.
//!
//! The adapter reads the lists a page at a time and hands on one object at a time
//! (namespaces, ServiceAccounts, then pods): the audit keeps the namespaces' labels, the
//! prefixed annotations of annotated ServiceAccounts, counts and the findings, never a list.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::core::identity::{
    resolve_identity, ConfigMapMapping, ContainerCredentialsConfig, IdentityInputs,
    ServiceAccountAnnotations,
};
use crate::core::settings::MutationSettings;

use super::pods::SKIP_LABEL;
use super::stale::{self, Stale, Staleness};
use super::webhook::{handles_pod_create, is_ours, selector_matches};

/// How many namespaces or reasons a note names before it says `...`.
const SHOWN: usize = 10;

/// The annotation the kubelet puts on mirror pods of static pods: they cannot use
/// ServiceAccount tokens, so the webhook has nothing for them.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The controller named in an object's `ownerReferences`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl OwnerRef {
    /// The reference with `controller: true` in an object's metadata, if any.
    pub fn controller_of(metadata: &Value) -> Option<Self> {
        let owner = metadata["ownerReferences"]
            .as_array()?
            .iter()
            .find(|owner| owner["controller"] == true)?;
        Some(Self {
            api_version: owner["apiVersion"].as_str()?.to_string(),
            kind: owner["kind"].as_str()?.to_string(),
            name: owner["name"].as_str()?.to_string(),
        })
    }

    /// ReplicaSets and Jobs are made by other controllers (Deployment, CronJob): their own
    /// owner is the workload to restart.
    fn is_intermediate(&self) -> bool {
        matches!(
            (self.api_version.as_str(), self.kind.as_str()),
            ("apps/v1", "ReplicaSet") | ("batch/v1", "Job")
        )
    }
}

/// An object whose owner the adapter looks up: a ReplicaSet or a Job, in its namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerKey {
    pub namespace: String,
    pub owner: OwnerRef,
}

/// What the adapter found for each [`OwnerKey`]: the object's own controller (None: it has
/// none), or why it could not be read.
pub type Owners = HashMap<OwnerKey, Result<Option<OwnerRef>, String>>;

/// Which pods the API server sends to the webhook: those its webhooks for pod creation select
/// by namespace and by labels. A pod the webhook is never called for gets nothing from a
/// restart, so it is not judged.
pub struct Selection {
    /// (namespaceSelector, objectSelector) of each of the webhook's webhooks.
    webhooks: Vec<(Value, Value)>,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
}

impl Selection {
    /// The webhooks for pod creation of the configurations that are this webhook's (named
    /// `wanted`, or by default containing `pod-identity-webhook`); None when there are none.
    pub fn new(configs: &[Value], wanted: Option<&str>) -> Option<Self> {
        let webhooks: Vec<(Value, Value)> = configs
            .iter()
            .filter(|config| is_ours(config, wanted))
            .flat_map(|config| config["webhooks"].as_array().into_iter().flatten())
            .filter(|webhook| handles_pod_create(webhook))
            .map(|webhook| {
                (
                    webhook["namespaceSelector"].clone(),
                    webhook["objectSelector"].clone(),
                )
            })
            .collect();
        (!webhooks.is_empty()).then(|| Self {
            webhooks,
            namespace_labels: HashMap::new(),
        })
    }

    /// A namespace (its metadata).
    pub fn namespace(&mut self, item: &Value) {
        if let Some(name) = item["metadata"]["name"].as_str() {
            self.namespace_labels
                .insert(name.to_string(), string_map(&item["metadata"]["labels"]));
        }
    }

    /// Whether some webhook selects a pod with these labels in this namespace. A selector the
    /// API server would not have accepted counts as selecting: the pod is judged.
    fn selects(&self, namespace: &str, pod_labels: &Value) -> bool {
        let none = BTreeMap::new();
        let namespace_labels = self.namespace_labels.get(namespace).unwrap_or(&none);
        let pod_labels = string_map(pod_labels);
        self.webhooks.iter().any(|(namespaces, objects)| {
            selector_matches(namespaces, namespace_labels).unwrap_or(true)
                && selector_matches(objects, &pod_labels).unwrap_or(true)
        })
    }
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
        .collect()
}

/// One pod that needs a restart.
struct Finding {
    namespace: String,
    pod: String,
    service_account: String,
    stale: Stale,
    controller: Option<OwnerRef>,
}

/// The audit in progress.
pub struct Audit<'a> {
    settings: &'a MutationSettings,
    mapping: Option<&'a ConfigMapMapping>,
    container_credentials: Option<&'a ContainerCredentialsConfig>,
    /// None: every pod is judged as if the webhook were called for it.
    selection: Option<Selection>,
    /// namespace -> name -> the annotations the webhook reads; only ServiceAccounts that have
    /// some (the others resolve as an unknown one does).
    service_accounts: HashMap<String, HashMap<String, ServiceAccountAnnotations>>,
    service_accounts_listed: usize,
    pods: usize,
    namespaces: HashSet<String>,
    skipped_label: usize,
    skipped_mirror: usize,
    /// Pods the webhook is not called for, and the namespaces they are in.
    unselected: usize,
    unselected_namespaces: BTreeSet<String>,
    findings: Vec<Finding>,
    /// Pods the engine could not read (none, from an API server), and the first few reasons.
    unreadable: usize,
    unreadable_reasons: Vec<String>,
}

impl<'a> Audit<'a> {
    pub fn new(
        settings: &'a MutationSettings,
        mapping: Option<&'a ConfigMapMapping>,
        container_credentials: Option<&'a ContainerCredentialsConfig>,
        selection: Option<Selection>,
    ) -> Self {
        Self {
            settings,
            mapping,
            container_credentials,
            selection,
            service_accounts: HashMap::new(),
            service_accounts_listed: 0,
            pods: 0,
            namespaces: HashSet::new(),
            skipped_label: 0,
            skipped_mirror: 0,
            unselected: 0,
            unselected_namespaces: BTreeSet::new(),
            findings: Vec::new(),
            unreadable: 0,
            unreadable_reasons: Vec::new(),
        }
    }

    /// A namespace (its metadata), for the webhook's namespace selectors.
    pub fn namespace(&mut self, item: &Value) {
        if let Some(selection) = &mut self.selection {
            selection.namespace(item);
        }
    }

    /// Whether the audit needs the namespaces' labels.
    pub fn selects_by_namespace(&self) -> bool {
        self.selection.is_some()
    }

    /// A ServiceAccount (the object or its metadata).
    pub fn service_account(&mut self, item: &Value) {
        self.service_accounts_listed += 1;
        let metadata = &item["metadata"];
        let (Some(namespace), Some(name)) =
            (metadata["namespace"].as_str(), metadata["name"].as_str())
        else {
            return;
        };
        let annotations = metadata["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(key, value)| match value {
                Value::String(value) => Some((key, value)),
                _ => None,
            });
        let kept = ServiceAccountAnnotations::from_annotations(annotations, &self.settings.keys);
        if kept != ServiceAccountAnnotations::default() {
            self.service_accounts
                .entry(namespace.to_string())
                .or_default()
                .insert(name.to_string(), kept);
        }
    }

    /// A pod: judged unless finished (the adapter asks the API server to leave finished
    /// ones out, and they are skipped here too).
    pub fn pod(&mut self, pod: &Value) {
        let metadata = &pod["metadata"];
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") || !metadata["deletionTimestamp"].is_null() {
            return;
        }
        let namespace = metadata["namespace"].as_str().unwrap_or_default();
        let name = metadata["name"].as_str().unwrap_or_default();
        if metadata["labels"][SKIP_LABEL].is_string() {
            self.skipped_label += 1;
            return;
        }
        if metadata["annotations"][MIRROR_ANNOTATION].is_string() {
            self.skipped_mirror += 1;
            return;
        }
        if let Some(selection) = &self.selection {
            if !selection.selects(namespace, &metadata["labels"]) {
                self.unselected += 1;
                if !self.unselected_namespaces.contains(namespace) {
                    self.unselected_namespaces.insert(namespace.to_string());
                }
                return;
            }
        }
        self.pods += 1;
        if !self.namespaces.contains(namespace) {
            self.namespaces.insert(namespace.to_string());
        }
        let service_account = match pod["spec"]["serviceAccountName"].as_str() {
            None | Some("") => "default",
            Some(name) => name,
        };
        let annotations = self
            .service_accounts
            .get(namespace)
            .and_then(|names| names.get(service_account));
        let resolution = resolve_identity(
            namespace,
            service_account,
            IdentityInputs {
                service_account: annotations,
                mapping: self.mapping,
                container_credentials: self.container_credentials,
            },
            self.settings,
        );
        match stale::judge(pod, resolution.identity.as_ref(), self.settings) {
            Ok(None) => {}
            Ok(Some(stale)) => self.findings.push(Finding {
                namespace: namespace.to_string(),
                pod: name.to_string(),
                service_account: service_account.to_string(),
                stale,
                controller: OwnerRef::controller_of(metadata),
            }),
            Err(err) => {
                self.unreadable += 1;
                if self.unreadable_reasons.len() < SHOWN {
                    self.unreadable_reasons
                        .push(format!("pod {namespace}/{name}: {err}"));
                }
            }
        }
    }

    /// The ReplicaSets and Jobs that own pods needing a restart: their own owner names the
    /// workload to restart.
    pub fn owners_to_look_up(&self) -> BTreeSet<OwnerKey> {
        self.findings
            .iter()
            .filter_map(|finding| {
                let owner = finding.controller.as_ref()?;
                owner.is_intermediate().then(|| OwnerKey {
                    namespace: finding.namespace.clone(),
                    owner: owner.clone(),
                })
            })
            .collect()
    }

    /// The report, with the owners the adapter found, the number of API requests it made and
    /// its notes (the role mapping read, ...).
    pub fn finish(self, owners: &Owners, requests: usize, mut notes: Vec<String>) -> AuditReport {
        let mut workloads: BTreeMap<(String, String, String), Workload> = BTreeMap::new();
        let mut summary = Summary {
            pods: self.pods,
            namespaces: self.namespaces.len(),
            service_accounts: self.service_accounts_listed,
            skipped: self.skipped_label + self.skipped_mirror + self.unselected,
            missing: 0,
            outdated: 0,
            requests,
        };
        for finding in self.findings {
            match finding.stale.staleness {
                Staleness::Missing => summary.missing += 1,
                Staleness::Outdated => summary.outdated += 1,
            }
            let (workload, via, lookup_error) =
                workload_of(&finding.namespace, &finding.pod, finding.controller, owners);
            let entry = workloads
                .entry((
                    finding.namespace.clone(),
                    workload.kind.clone(),
                    workload.name.clone(),
                ))
                .or_insert_with(|| Workload {
                    namespace: finding.namespace.clone(),
                    kind: workload.kind.clone(),
                    api_version: workload.api_version.clone(),
                    name: workload.name.clone(),
                    via: via.clone(),
                    restart: String::new(),
                    note: lookup_error,
                    pods: Vec::new(),
                });
            let roles = finding
                .stale
                .roles
                .map(|(running, current)| Roles { running, current });
            entry.pods.push(PodFinding {
                name: finding.pod,
                service_account: finding.service_account,
                problem: finding.stale.staleness,
                containers: finding.stale.containers,
                detail: finding.stale.detail,
                roles,
            });
        }
        let mut workloads: Vec<Workload> = workloads.into_values().collect();
        for workload in &mut workloads {
            workload.pods.sort_by(|a, b| a.name.cmp(&b.name));
            let (restart, note) = restart(workload);
            workload.restart = restart;
            workload.note = match (workload.note.take(), note) {
                (Some(error), Some(note)) => Some(format!("{error}; {note}")),
                (error, note) => error.or(note),
            };
        }
        if self.skipped_label > 0 {
            notes.push(format!(
                "{} pod(s) labelled {SKIP_LABEL} not judged: the webhook is never called for them",
                self.skipped_label
            ));
        }
        if self.unselected > 0 {
            let mut namespaces: Vec<&str> = self
                .unselected_namespaces
                .iter()
                .take(SHOWN)
                .map(String::as_str)
                .collect();
            if self.unselected_namespaces.len() > SHOWN {
                namespaces.push("...");
            }
            notes.push(format!(
                "{} pod(s) the webhook's configuration does not select not judged: the API server never calls it for them, so a restart gives them nothing (namespaces: {})",
                self.unselected,
                namespaces.join(", ")
            ));
        }
        if self.skipped_mirror > 0 {
            notes.push(format!(
                "{} mirror pod(s) of static pods not judged: they cannot use ServiceAccount tokens",
                self.skipped_mirror
            ));
        }
        if self.unreadable > 0 {
            notes.push(format!(
                "{} pod(s) could not be read, so not judged: {}{}",
                self.unreadable,
                self.unreadable_reasons.join("; "),
                if self.unreadable > SHOWN { "; ..." } else { "" }
            ));
        }
        AuditReport {
            summary,
            notes,
            workloads,
        }
    }
}

/// The workload to restart for a pod with this controller, the ReplicaSet or Job in between,
/// and why its owner is not known when the lookup failed.
fn workload_of(
    namespace: &str,
    pod: &str,
    controller: Option<OwnerRef>,
    owners: &Owners,
) -> (OwnerRef, Option<String>, Option<String>) {
    let Some(controller) = controller else {
        let bare = OwnerRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: pod.into(),
        };
        return (bare, None, None);
    };
    if !controller.is_intermediate() {
        return (controller, None, None);
    }
    let key = OwnerKey {
        namespace: namespace.to_string(),
        owner: controller,
    };
    match owners.get(&key) {
        Some(Ok(Some(owner))) => {
            let via = format!("{} {}", key.owner.kind, key.owner.name);
            (owner.clone(), Some(via), None)
        }
        Some(Ok(None)) => (key.owner, None, None),
        Some(Err(err)) => {
            let error = format!(
                "the owner of {} {} could not be read ({err})",
                key.owner.kind, key.owner.name
            );
            (key.owner, None, Some(error))
        }
        None => (key.owner, None, None),
    }
}

/// The command that replaces a workload's pods, and a note when it needs one.
fn restart(workload: &Workload) -> (String, Option<String>) {
    let Workload {
        namespace,
        kind,
        name,
        api_version,
        via,
        pods,
        ..
    } = workload;
    if api_version == "apps/v1"
        && matches!(kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet")
    {
        return (
            format!(
                "kubectl rollout restart {}/{name} -n {namespace}",
                kind.to_ascii_lowercase()
            ),
            None,
        );
    }
    let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    let delete = format!("kubectl delete pod {} -n {namespace}", names.join(" "));
    let note = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => {
            "no controller recreates it: create it again from its manifest".to_string()
        }
        ("batch/v1", "CronJob") => format!(
            "{} of CronJob {name} starts new pods; its later runs get the current identity anyway",
            via.as_deref().unwrap_or("its Job")
        ),
        ("apps/v1", "ReplicaSet") | ("v1", "ReplicationController") | ("batch/v1", "Job") => {
            format!("{kind} {name} replaces the deleted pods")
        }
        _ => format!(
            "{kind} {name} ({api_version}) owns them: restart it as its controller allows, or delete the pods if it replaces them"
        ),
    };
    (delete, Some(note))
}

/// What the audit found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub summary: Summary,
    pub notes: Vec<String>,
    pub workloads: Vec<Workload>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Running (and pending) pods judged.
    pub pods: usize,
    pub namespaces: usize,
    /// ServiceAccounts listed.
    pub service_accounts: usize,
    /// Pods not judged: labelled to skip the webhook, or mirror pods.
    pub skipped: usize,
    /// Pods without credentials.
    pub missing: usize,
    /// Pods with an older identity.
    pub outdated: usize,
    /// API requests made.
    pub requests: usize,
}

/// A workload whose pods need a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub namespace: String,
    pub kind: String,
    pub api_version: String,
    pub name: String,
    /// The ReplicaSet or Job between the pods and the workload, e.g. `ReplicaSet web-7d4b9c`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The command that replaces its pods.
    pub restart: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub pods: Vec<PodFinding>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodFinding {
    pub name: String,
    pub service_account: String,
    pub problem: Staleness,
    pub containers: Vec<String>,
    pub detail: String,
    /// For a role that changed: the one it runs with, and the one it would get now (null: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Roles>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Roles {
    pub running: String,
    pub current: Option<String>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.workloads.is_empty()
    }

    /// 0 when every pod has the identity the webhook gives now, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.passed())
    }

    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "subject": "all namespaces",
            "passed": self.passed(),
            "summary": self.summary,
            "notes": self.notes,
            "workloads": self.workloads,
        });
        serde_json::to_string_pretty(&value).expect("JSON values always serialize")
    }

    pub fn to_text(&self) -> String {
        let Summary {
            pods,
            namespaces,
            missing,
            outdated,
            requests,
            ..
        } = self.summary;
        let mut out = String::from(
            "All namespaces: running pods against the identity the webhook gives now\n",
        );
        out.push_str(&format!(
            "  {pods} pod(s) in {namespaces} namespace(s) judged\n"
        ));
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        for workload in &self.workloads {
            let mut accounts: Vec<&str> = workload
                .pods
                .iter()
                .map(|p| p.service_account.as_str())
                .collect();
            accounts.sort_unstable();
            accounts.dedup();
            let via = workload
                .via
                .as_ref()
                .map(|via| format!(" (via {via})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  [FAIL] {} {}/{}{via}, ServiceAccount {}: {} pod(s)\n",
                workload.kind,
                workload.namespace,
                workload.name,
                accounts.join(", "),
                workload.pods.len()
            ));
            for pod in &workload.pods {
                out.push_str(&format!("         - {}: {}\n", pod.name, pod.detail));
            }
            out.push_str(&format!("         fix:   {}\n", workload.restart));
            if let Some(note) = &workload.note {
                out.push_str(&format!("                ({note})\n"));
            }
        }
        if self.passed() {
            out.push_str(&format!(
                "all {pods} pod(s) have the identity the webhook gives now ({requests} API requests)\n"
            ));
        } else {
            out.push_str(&format!(
                "{} pod(s) in {} workload(s) need a restart: {missing} without credentials, {outdated} with an older identity ({requests} API requests)\n",
                missing + outdated,
                self.workloads.len()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine;
    use crate::core::identity::Identity;
    use crate::core::pod::Pod;
    use serde_json::json;

    const ROLE: &str = "arn:aws:iam::111122223333:role/web";
    const OLD: &str = "arn:aws:iam::111122223333:role/old";
    const ROLE_KEY: &str = "eks.amazonaws.com/role-arn";

    fn service_account(namespace: &str, name: &str, role: Option<&str>) -> Value {
        let annotations = match role {
            Some(role) => {
                json!({ROLE_KEY: role, "kubectl.kubernetes.io/last-applied-configuration": "{}"})
            }
            None => json!({"example.com/other": "x"}),
        };
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
               "metadata": {"namespace": namespace, "name": name, "annotations": annotations}})
    }

    fn owner(api_version: &str, kind: &str, name: &str) -> Value {
        json!([{"apiVersion": api_version, "kind": kind, "name": name, "controller": true, "uid": "u"}])
    }

    /// A running pod of `sa`, owned by `owners` (a JSON list, or null).
    fn pod(namespace: &str, name: &str, sa: &str, owners: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"namespace": namespace, "name": name, "ownerReferences": owners},
               "spec": {"serviceAccountName": sa,
                        "containers": [{"name": "app", "image": "x"}]},
               "status": {"phase": "Running"}})
    }

    /// `pod` as the webhook admits it with `role`.
    fn admitted(mut pod: Value, role: &str) -> Value {
        let identity = Identity::web_identity(role);
        let copy = pod.clone();
        let mutation = engine::mutate(
            &Pod::from_value(&copy).unwrap(),
            &identity,
            &MutationSettings::default(),
            &mut |range| *range.start(),
        );
        json_patch::patch(&mut pod, &mutation.patch.operations().unwrap()).unwrap();
        pod
    }

    /// A cluster with one pod of each kind of owner and of each outcome.
    fn cluster_pages() -> (Vec<Value>, Vec<Vec<Value>>) {
        let accounts = vec![
            service_account("team-a", "web", Some(ROLE)),
            service_account("team-a", "plain", None),
            service_account("team-b", "db", Some(ROLE)),
        ];
        let rs = owner("apps/v1", "ReplicaSet", "web-7d4b9c");
        let mut skipped = pod("team-a", "skipped", "web", json!(null));
        skipped["metadata"]["labels"] = json!({SKIP_LABEL: "true"});
        let mut mirror = pod("team-a", "static", "web", owner("v1", "Node", "node-1"));
        mirror["metadata"]["annotations"] = json!({MIRROR_ANNOTATION: "x"});
        let mut finished = pod("team-a", "finished", "web", json!(null));
        finished["status"]["phase"] = json!("Succeeded");
        let mut leaving = pod("team-a", "leaving", "web", json!(null));
        leaving["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
        let first = vec![
            pod("team-a", "web-7d4b9c-x2x9k", "web", rs.clone()),
            admitted(pod("team-a", "web-7d4b9c-fine", "web", rs.clone()), ROLE),
            pod("team-a", "web-7d4b9c-a1b2c", "web", rs),
            pod("team-a", "plain", "plain", json!(null)),
            skipped,
            mirror,
            finished,
            leaving,
        ];
        let second = vec![
            admitted(
                pod(
                    "team-b",
                    "db-0",
                    "db",
                    owner("apps/v1", "StatefulSet", "db"),
                ),
                OLD,
            ),
            pod("team-b", "debug", "db", json!(null)),
            pod(
                "team-b",
                "nightly-28000000-abcde",
                "db",
                owner("batch/v1", "Job", "nightly-28000000"),
            ),
            pod(
                "team-b",
                "canary-5f6d7-zzzzz",
                "db",
                owner("argoproj.io/v1alpha1", "Rollout", "canary"),
            ),
            pod("team-c", "orphan-1", "default", json!(null)),
        ];
        (accounts, vec![first, second])
    }

    fn owners_found() -> Owners {
        let key = |kind: &str, api: &str, name: &str, namespace: &str| OwnerKey {
            namespace: namespace.into(),
            owner: OwnerRef {
                api_version: api.into(),
                kind: kind.into(),
                name: name.into(),
            },
        };
        let owner = |api: &str, kind: &str, name: &str| OwnerRef {
            api_version: api.into(),
            kind: kind.into(),
            name: name.into(),
        };
        Owners::from([
            (
                key("ReplicaSet", "apps/v1", "web-7d4b9c", "team-a"),
                Ok(Some(owner("apps/v1", "Deployment", "web"))),
            ),
            (
                key("Job", "batch/v1", "nightly-28000000", "team-b"),
                Ok(Some(owner("batch/v1", "CronJob", "nightly"))),
            ),
        ])
    }

    fn run(settings: &MutationSettings, owners: &Owners) -> (AuditReport, BTreeSet<OwnerKey>) {
        let (accounts, pages) = cluster_pages();
        let mut audit = Audit::new(settings, None, None, None);
        for account in &accounts {
            audit.service_account(account);
        }
        // Pages of pods, as the adapter hands them on, one pod at a time.
        for pod in pages.iter().flatten() {
            audit.pod(pod);
        }
        let wanted = audit.owners_to_look_up();
        (audit.finish(owners, 7, vec!["a note".into()]), wanted)
    }

    #[test]
    fn only_the_replica_sets_and_jobs_of_pods_needing_a_restart_are_looked_up() {
        let (_, wanted) = run(&MutationSettings::default(), &Owners::new());
        let wanted: Vec<(String, String)> = wanted
            .into_iter()
            .map(|k| (k.namespace, k.owner.name))
            .collect();
        assert_eq!(
            wanted,
            [
                ("team-a".to_string(), "web-7d4b9c".to_string()),
                ("team-b".to_string(), "nightly-28000000".to_string())
            ]
        );
    }

    #[test]
    fn the_text_report_names_each_workload_its_pods_and_the_command_that_restarts_it() {
        let (report, _) = run(&MutationSettings::default(), &owners_found());
        assert_eq!(report.exit_code(), 1);
        assert_eq!(
            report.to_text(),
            format!(
                "All namespaces: running pods against the identity the webhook gives now\n\
                 \x20 9 pod(s) in 3 namespace(s) judged\n\
                 \x20 note: a note\n\
                 \x20 note: 1 pod(s) labelled eks.amazonaws.com/skip-pod-identity-webhook not judged: the webhook is never called for them\n\
                 \x20 note: 1 mirror pod(s) of static pods not judged: they cannot use ServiceAccount tokens\n\
                 \x20 [FAIL] Deployment team-a/web (via ReplicaSet web-7d4b9c), ServiceAccount web: 2 pod(s)\n\
                 \x20        - web-7d4b9c-a1b2c: lacks credentials in container(s) app\n\
                 \x20        - web-7d4b9c-x2x9k: lacks credentials in container(s) app\n\
                 \x20        fix:   kubectl rollout restart deployment/web -n team-a\n\
                 \x20 [FAIL] CronJob team-b/nightly (via Job nightly-28000000), ServiceAccount db: 1 pod(s)\n\
                 \x20        - nightly-28000000-abcde: lacks credentials in container(s) app\n\
                 \x20        fix:   kubectl delete pod nightly-28000000-abcde -n team-b\n\
                 \x20               (Job nightly-28000000 of CronJob nightly starts new pods; its later runs get the current identity anyway)\n\
                 \x20 [FAIL] Pod team-b/debug, ServiceAccount db: 1 pod(s)\n\
                 \x20        - debug: lacks credentials in container(s) app\n\
                 \x20        fix:   kubectl delete pod debug -n team-b\n\
                 \x20               (no controller recreates it: create it again from its manifest)\n\
                 \x20 [FAIL] Rollout team-b/canary, ServiceAccount db: 1 pod(s)\n\
                 \x20        - canary-5f6d7-zzzzz: lacks credentials in container(s) app\n\
                 \x20        fix:   kubectl delete pod canary-5f6d7-zzzzz -n team-b\n\
                 \x20               (Rollout canary (argoproj.io/v1alpha1) owns them: restart it as its controller allows, or delete the pods if it replaces them)\n\
                 \x20 [FAIL] StatefulSet team-b/db, ServiceAccount db: 1 pod(s)\n\
                 \x20        - db-0: runs with role {OLD} in container(s) app, the webhook now gives {ROLE}\n\
                 \x20        fix:   kubectl rollout restart statefulset/db -n team-b\n\
                 6 pod(s) in 5 workload(s) need a restart: 5 without credentials, 1 with an older identity (7 API requests)\n"
            )
        );
    }

    #[test]
    fn the_json_report_carries_the_summary_workloads_and_pods() {
        let (report, _) = run(&MutationSettings::default(), &owners_found());
        let json: Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["subject"], "all namespaces");
        assert_eq!(json["passed"], false);
        assert_eq!(
            json["summary"],
            json!({"pods": 9, "namespaces": 3, "serviceAccounts": 3, "skipped": 2,
                   "missing": 5, "outdated": 1, "requests": 7})
        );
        assert_eq!(
            json["workloads"][0],
            json!({"namespace": "team-a", "kind": "Deployment", "apiVersion": "apps/v1", "name": "web",
                   "via": "ReplicaSet web-7d4b9c",
                   "restart": "kubectl rollout restart deployment/web -n team-a",
                   "pods": [
                       {"name": "web-7d4b9c-a1b2c", "serviceAccount": "web", "problem": "missing",
                        "containers": ["app"], "detail": "lacks credentials in container(s) app"},
                       {"name": "web-7d4b9c-x2x9k", "serviceAccount": "web", "problem": "missing",
                        "containers": ["app"], "detail": "lacks credentials in container(s) app"}]})
        );
        assert_eq!(
            json["workloads"][4]["pods"][0]["roles"],
            json!({"running": OLD, "current": ROLE})
        );
        assert_eq!(json["workloads"][4]["pods"][0]["problem"], "outdated");
        assert!(json["workloads"][2]["note"]
            .as_str()
            .unwrap()
            .starts_with("no controller recreates it"));
    }

    #[test]
    fn an_owner_that_could_not_be_read_leaves_its_replica_set_to_delete_pods_from() {
        let mut owners = owners_found();
        owners.insert(
            OwnerKey {
                namespace: "team-a".into(),
                owner: OwnerRef {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "web-7d4b9c".into(),
                },
            },
            Err("GET ...: forbidden".into()),
        );
        let (report, _) = run(&MutationSettings::default(), &owners);
        let web = &report.workloads[0];
        assert_eq!(
            (web.kind.as_str(), web.name.as_str()),
            ("ReplicaSet", "web-7d4b9c")
        );
        assert_eq!(
            web.restart,
            "kubectl delete pod web-7d4b9c-a1b2c web-7d4b9c-x2x9k -n team-a"
        );
        assert_eq!(
            web.note.as_deref(),
            Some("the owner of ReplicaSet web-7d4b9c could not be read (GET ...: forbidden); ReplicaSet web-7d4b9c replaces the deleted pods")
        );
    }

    #[test]
    fn identities_from_the_role_mapping_and_another_prefix_are_resolved_as_the_webhook_does() {
        let mapping =
            ConfigMapMapping::parse(&format!(r#"{{"team-c/default": {{"RoleARN": "{ROLE}"}}}}"#))
                .unwrap()
                .mapping;
        let settings = MutationSettings::default();
        let mut audit = Audit::new(&settings, Some(&mapping), None, None);
        audit.pod(&pod("team-c", "orphan-1", "default", json!(null)));
        let report = audit.finish(&Owners::new(), 1, Vec::new());
        assert_eq!(report.summary.missing, 1);

        // With --annotation-prefix, the eks.amazonaws.com annotations mean nothing: no pod
        // lacks credentials, and the two that have a role run with one they would no longer get.
        let settings = MutationSettings::with_prefix("example.com");
        let (report, _) = run(&settings, &owners_found());
        assert_eq!((report.summary.missing, report.summary.outdated), (0, 2));
        let details: Vec<&str> = report
            .workloads
            .iter()
            .flat_map(|w| w.pods.iter().map(|p| p.detail.as_str()))
            .collect();
        assert_eq!(
            details,
            [
                format!("runs with role {ROLE} in container(s) app, its ServiceAccount no longer resolves to a role"),
                format!("runs with role {OLD} in container(s) app, its ServiceAccount no longer resolves to a role"),
            ]
        );
    }

    /// The chart's configuration: namespaces and pods opt out by label, its own namespace is
    /// left out.
    fn chart_configuration(name: &str) -> Value {
        let skip = json!({"matchExpressions": [{"key": SKIP_LABEL, "operator": "DoesNotExist"}]});
        json!({"metadata": {"name": name}, "webhooks": [{
            "name": "pod-identity-webhook.amazonaws.com",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchExpressions": [
                {"key": SKIP_LABEL, "operator": "DoesNotExist"},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["piw"]}]},
            "objectSelector": skip}]})
    }

    #[test]
    fn pods_the_webhook_configuration_does_not_select_are_not_judged() {
        let settings = MutationSettings::default();
        let other = json!({"metadata": {"name": "something-else"}, "webhooks": [{
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}]});
        assert!(Selection::new(std::slice::from_ref(&other), None).is_none());
        assert!(Selection::new(
            &[chart_configuration("piw-pod-identity-webhook-mutating")],
            Some("other")
        )
        .is_none());
        let selection = Selection::new(
            &[
                other,
                chart_configuration("piw-pod-identity-webhook-mutating"),
            ],
            None,
        );
        let mut audit = Audit::new(&settings, None, None, selection);
        assert!(audit.selects_by_namespace());
        let namespace = |name: &str, labels: Value| {
            let mut labels = labels;
            labels["kubernetes.io/metadata.name"] = json!(name);
            json!({"metadata": {"name": name, "labels": labels}})
        };
        for item in [
            namespace("team-a", json!({})),
            namespace("opted-out", json!({SKIP_LABEL: "true"})),
            namespace("piw", json!({})),
        ] {
            audit.namespace(&item);
        }
        for item in [
            service_account("team-a", "web", Some(ROLE)),
            service_account("opted-out", "web", Some(ROLE)),
            service_account("piw", "web", Some(ROLE)),
        ] {
            audit.service_account(&item);
        }
        for item in [
            pod("team-a", "judged", "web", json!(null)),
            pod("opted-out", "left-out", "web", json!(null)),
            pod("piw", "own", "web", json!(null)),
        ] {
            audit.pod(&item);
        }
        let report = audit.finish(&Owners::new(), 4, Vec::new());
        assert_eq!(report.summary.missing, 1);
        assert_eq!(report.workloads[0].pods[0].name, "judged");
        assert_eq!(report.summary.skipped, 2);
        assert_eq!(
            report.notes,
            ["2 pod(s) the webhook's configuration does not select not judged: the API server never calls it for them, so a restart gives them nothing (namespaces: opted-out, piw)"]
        );
    }

    #[test]
    fn a_pod_the_engine_cannot_read_is_a_note_not_a_finding() {
        let settings = MutationSettings::default();
        let mut audit = Audit::new(&settings, None, None, None);
        let mut odd = pod("team-a", "odd", "web", json!(null));
        odd["spec"]["containers"] = json!("not a list");
        audit.pod(&odd);
        let report = audit.finish(&Owners::new(), 1, Vec::new());
        assert!(report.passed());
        assert_eq!(report.notes.len(), 1);
        assert!(
            report.notes[0]
                .starts_with("1 pod(s) could not be read, so not judged: pod team-a/odd: "),
            "{}",
            report.notes[0]
        );
        assert!(
            report.notes[0].contains("spec.containers"),
            "{}",
            report.notes[0]
        );
    }

    #[test]
    fn a_cluster_whose_pods_all_have_their_identity_passes() {
        let settings = MutationSettings::default();
        let mut audit = Audit::new(&settings, None, None, None);
        audit.service_account(&service_account("team-a", "web", Some(ROLE)));
        for item in [
            admitted(pod("team-a", "web-1", "web", json!(null)), ROLE),
            pod("team-a", "other", "default", json!(null)),
        ] {
            audit.pod(&item);
        }
        let report = audit.finish(&Owners::new(), 3, Vec::new());
        assert!(report.passed());
        assert_eq!(report.exit_code(), 0);
        assert_eq!(
            report.to_text(),
            "All namespaces: running pods against the identity the webhook gives now\n\
             \x20 2 pod(s) in 1 namespace(s) judged\n\
             all 2 pod(s) have the identity the webhook gives now (3 API requests)\n"
        );
        let json: Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["passed"], true);
        assert_eq!(json["workloads"], json!([]));
    }
}
