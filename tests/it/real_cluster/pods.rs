//! Pods as the API server stores them: what a mutation is expected to add, and the comparison
//! that proves nothing else changed — a mutated pod must equal its unmutated twin (the same
//! manifest, created with the opt-out label so the webhook is not called) plus exactly the
//! expected additions.

use serde_json::{json, Value};

use super::harness::{Cluster, SKIP_LABEL};

pub const ROLE_KEY: &str = "eks.amazonaws.com/role-arn";
pub const IRSA_VOLUME: &str = "aws-iam-token";
pub const IRSA_MOUNT: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
pub const IRSA_TOKEN_FILE: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
pub const WINDOWS_TOKEN_FILE: &str =
    "C:\\var\\run\\secrets\\eks.amazonaws.com\\serviceaccount\\token";
pub const CC_VOLUME: &str = "eks-pod-identity-token";
pub const CC_MOUNT: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";

/// A pod manifest: `name`, `service_account`, and one busybox container per name.
pub fn pod(name: &str, service_account: &str, containers: &[&str]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": service_account,
            "containers": containers
                .iter()
                .map(|c| json!({"name": c, "image": "busybox:1.36", "command": ["sleep", "3600"]}))
                .collect::<Vec<_>>(),
        },
    })
}

/// What IRSA adds.
#[derive(Clone, Debug)]
pub struct Irsa {
    pub role: String,
    pub audience: String,
    pub expiration: i64,
    pub regional_sts: bool,
    pub token_file: String,
}

impl Irsa {
    pub fn role(role: &str) -> Self {
        Self {
            role: role.into(),
            audience: "sts.amazonaws.com".into(),
            expiration: 86400,
            regional_sts: false,
            token_file: IRSA_TOKEN_FILE.into(),
        }
    }

    pub fn env(&self) -> Vec<Value> {
        let mut env = Vec::new();
        if self.regional_sts {
            env.push(json!({"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}));
        }
        env.push(json!({"name": "AWS_ROLE_ARN", "value": self.role}));
        env.push(json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": self.token_file}));
        env
    }

    /// The volume as stored (the API server defaults `defaultMode`).
    pub fn volume(&self) -> Value {
        json!({
            "name": IRSA_VOLUME,
            "projected": {
                "defaultMode": 420,
                "sources": [{"serviceAccountToken": {
                    "audience": self.audience,
                    "expirationSeconds": self.expiration,
                    "path": "token",
                }}],
            },
        })
    }

    pub fn mount(&self) -> Value {
        json!({"mountPath": IRSA_MOUNT, "name": IRSA_VOLUME, "readOnly": true})
    }

    /// Applies the expected additions to `pod` (normalized), for the named containers (init
    /// containers included).
    pub fn add_to(&self, pod: &mut Value, containers: &[&str]) {
        add(pod, self.volume(), &self.env(), &self.mount(), containers);
    }
}

/// Adds `volume` first, and `env` and `mount` to each named container, as the engine does.
pub fn add(pod: &mut Value, volume: Value, env: &[Value], mount: &Value, containers: &[&str]) {
    let spec = &mut pod["spec"];
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.insert(0, volume),
        None => spec["volumes"] = json!([volume]),
    }
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let name = container["name"].as_str().unwrap_or_default();
            if !containers.contains(&name) {
                continue;
            }
            match container["env"].as_array_mut() {
                Some(existing) => existing.extend(env.iter().cloned()),
                None => container["env"] = json!(env),
            }
            match container["volumeMounts"].as_array_mut() {
                Some(existing) => existing.push(mount.clone()),
                None => container["volumeMounts"] = json!([mount]),
            }
        }
    }
}

/// A stored pod with what differs between two creations of the same manifest removed: name,
/// uid, timestamps (the status conditions' too), managed fields, the opt-out label of the
/// twin, and the random suffix of the API server's `kube-api-access-xxxxx` volume.
pub fn normalize(pod: &Value) -> Value {
    let mut pod = pod.clone();
    if let Some(meta) = pod["metadata"].as_object_mut() {
        for key in [
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            meta.remove(key);
        }
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(SKIP_LABEL);
            if labels.is_empty() {
                meta.remove("labels");
            }
        }
    }
    // Set at creation for a pod with scheduling gates (PodScheduled false): two creations
    // may fall in different seconds. Looked up with `get_mut`, as indexing would add a
    // `status` to a pod that has none.
    let conditions = pod
        .get_mut("status")
        .and_then(|status| status.get_mut("conditions"))
        .and_then(Value::as_array_mut);
    for condition in conditions.into_iter().flatten() {
        if let Some(condition) = condition.as_object_mut() {
            condition.remove("lastTransitionTime");
        }
    }
    rename_api_access(&mut pod);
    pod
}

fn rename_api_access(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "name" {
                    if let Some(name) = child.as_str() {
                        if name.starts_with("kube-api-access-") {
                            *child = json!("kube-api-access-*");
                        }
                    }
                } else {
                    rename_api_access(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rename_api_access),
        _ => {}
    }
}

/// Creates `manifest` twice in `namespace`: as is, and as `<name>-control` carrying the opt-out
/// label (so the webhook is not called). Asserts that the first, as stored, equals the
/// control plus what `expect` adds (it also sees the stored pod, normalized, for values that
/// are random by design). Returns the stored mutated pod.
pub fn assert_mutation(
    cluster: &Cluster,
    namespace: &str,
    manifest: &Value,
    expect: impl FnOnce(&mut Value, &Value),
) -> Value {
    let mut control = manifest.clone();
    let name = manifest["metadata"]["name"]
        .as_str()
        .expect("a named manifest");
    control["metadata"]["name"] = json!(format!("{name}-control"));
    control["metadata"]["labels"][SKIP_LABEL] = json!("true");
    let (control, _) = cluster.create_pod(namespace, &control);
    let (stored, _) = cluster.create_pod(namespace, manifest);
    let mut expected = normalize(&control);
    let actual = normalize(&stored);
    expect(&mut expected, &actual);
    assert_same(&actual, &expected, &format!("pod {namespace}/{name}"));
    stored
}

/// Equality with a readable failure: the differing JSON paths, then both documents.
pub fn assert_same(actual: &Value, expected: &Value, what: &str) {
    if actual == expected {
        return;
    }
    let mut differences = Vec::new();
    diff("", actual, expected, &mut differences);
    panic!(
        "{what}: stored pod differs from the expectation at:\n  {}\n--- stored:\n{}\n--- expected:\n{}",
        differences.join("\n  "),
        serde_json::to_string_pretty(actual).unwrap_or_default(),
        serde_json::to_string_pretty(expected).unwrap_or_default(),
    );
}

fn diff(path: &str, actual: &Value, expected: &Value, out: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (key, value) in a {
                match e.get(key) {
                    Some(other) => diff(&format!("{path}/{key}"), value, other, out),
                    None => out.push(format!("{path}/{key}: unexpected {value}")),
                }
            }
            for key in e.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}/{key}: missing {}", e[key]));
            }
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => {
            for (index, (x, y)) in a.iter().zip(e).enumerate() {
                diff(&format!("{path}/{index}"), x, y, out);
            }
        }
        _ if actual != expected => out.push(format!("{path}: {actual} != expected {expected}")),
        _ => {}
    }
}

/// The `env` of container `name` (init containers included) as `(name, value)` pairs.
pub fn env_of(pod: &Value, container: &str) -> Vec<(String, String)> {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == container)
        .and_then(|c| c["env"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The value of env variable `var` in container `name`.
pub fn env_value(pod: &Value, container: &str, var: &str) -> Option<String> {
    env_of(pod, container)
        .into_iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v)
}

pub fn containers(pod: &Value) -> Vec<Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The volume named `name`.
pub fn volume(pod: &Value, name: &str) -> Option<Value> {
    pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
        .cloned()
}

/// Whether any container got IRSA or container credentials.
pub fn is_mutated(pod: &Value) -> bool {
    volume(pod, IRSA_VOLUME).is_some() || volume(pod, CC_VOLUME).is_some()
}
