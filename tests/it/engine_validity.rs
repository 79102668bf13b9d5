//! Property test: injection never turns a valid pod into an invalid one, and never points the
//! identity variables at a file that is not a token. Pods are generated valid (unique volume
//! names, unique mount paths per container, mounts of existing volumes) but crowded with what
//! conflicts with the injection: volumes named like ours, other volumes and devices at the
//! token mount path (spelled with trailing or doubled slashes), subPath mounts, preset env.

use std::collections::HashSet;

use crate::support::engine::credential_source;
use pod_identity_webhook::core::engine;
use pod_identity_webhook::core::identity::Identity;
use pod_identity_webhook::core::pod::Pod;
use pod_identity_webhook::core::settings::MutationSettings;
use proptest::prelude::*;
use serde_json::{json, Value};

const IRSA_MOUNT: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const CC_MOUNT: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
const MOUNT_PATHS: &[&str] = &[
    IRSA_MOUNT,
    "/var/run/secrets/eks.amazonaws.com/serviceaccount/",
    "/var/run/secrets//eks.amazonaws.com/serviceaccount",
    CC_MOUNT,
    "/var/run/secrets/eks.amazonaws.com",
    "/data",
];
const VOLUME_NAMES: &[&str] = &["aws-iam-token", "eks-pod-identity-token", "mine", "data"];
const ENV_NAMES: &[&str] = &[
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ROLE_SESSION_NAME",
    "OTHER",
];

/// `/a//b/` and `/a/b` are one path.
fn normalized(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", segments.join("/"))
}

fn volume(name: &'static str, kind: u8) -> Value {
    let token = |path: &str| json!({"name": name, "projected": {"sources": [{"serviceAccountToken": {"path": path}}]}});
    match kind {
        0 => json!({"name": name, "emptyDir": {}}),
        1 => token("token"),
        2 => token("eks-pod-identity-token"),
        3 => token("other"),
        _ => json!({"name": name, "persistentVolumeClaim": {"claimName": name}}),
    }
}

/// A container with mounts of `volumes` only and unique normalized mount paths.
fn container(index: usize, volumes: Vec<&'static str>) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            (
                prop::sample::select(volumes.clone()),
                prop::sample::select(MOUNT_PATHS),
                any::<bool>(),
            ),
            0..4,
        ),
        prop::sample::subsequence(ENV_NAMES, 0..3),
        prop::option::of(prop::sample::select(volumes)),
    )
        .prop_map(move |(mounts, env, device)| {
            let mut seen = HashSet::new();
            let mounts: Vec<Value> = mounts
                .into_iter()
                .filter(|(_, path, _)| seen.insert(normalized(path)))
                .map(|(name, path, sub_path)| {
                    let mut mount = json!({"name": name, "mountPath": path});
                    if sub_path {
                        mount["subPath"] = json!("nested");
                    }
                    mount
                })
                .collect();
            let mut c =
                json!({"name": format!("c{index}"), "image": "img", "volumeMounts": mounts});
            if !env.is_empty() {
                c["env"] = json!(env
                    .iter()
                    .map(|name| json!({"name": name, "value": "preset"}))
                    .collect::<Vec<_>>());
            }
            if let Some(device) = device {
                if seen.insert(normalized(IRSA_MOUNT)) {
                    c["volumeDevices"] = json!([{"name": device, "devicePath": IRSA_MOUNT}]);
                }
            }
            c
        })
}

fn pod() -> impl Strategy<Value = Value> {
    prop::sample::subsequence(VOLUME_NAMES, 1..=VOLUME_NAMES.len())
        .prop_flat_map(|names| {
            let kinds = prop::collection::vec(0u8..5, names.len());
            (Just(names), kinds)
        })
        .prop_flat_map(|(names, kinds)| {
            let volumes: Vec<Value> = names
                .iter()
                .zip(&kinds)
                .map(|(name, kind)| volume(name, *kind))
                .collect();
            (
                Just(volumes),
                prop::collection::vec(container(0, names.clone()), 1..3),
                prop::collection::vec(container(10, names), 0..2),
            )
        })
        .prop_map(|(volumes, containers, init)| {
            let rename = |list: Vec<Value>, base: usize| -> Vec<Value> {
                list.into_iter()
                    .enumerate()
                    .map(|(i, mut c)| {
                        c["name"] = json!(format!("c{}", base + i));
                        c
                    })
                    .collect()
            };
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": {
                    "volumes": volumes,
                    "containers": rename(containers, 0),
                    "initContainers": rename(init, 10),
                },
            })
        })
}

/// Every rule the API server (and the container runtime, for `/a` against `/a/`) applies to
/// what the engine touches; `original` tells which identity variables the engine added.
fn check_valid(original: &Value, patched: &Value, token_var: &str, mount: &str, token_path: &str) {
    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    let mut names = HashSet::new();
    for volume in volumes {
        assert!(
            names.insert(volume["name"].as_str().unwrap()),
            "duplicate volume: {patched}"
        );
    }
    let holds_token = |name: &str| {
        volumes.iter().any(|v| {
            v["name"] == name
                && v["projected"]["sources"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|s| s["serviceAccountToken"]["path"] == token_path)
                })
        })
    };
    for list in ["containers", "initContainers"] {
        let before = original["spec"][list].as_array().unwrap();
        for (index, container) in patched["spec"][list].as_array().unwrap().iter().enumerate() {
            let mut paths = HashSet::new();
            for device in container["volumeDevices"].as_array().into_iter().flatten() {
                paths.insert(normalized(device["devicePath"].as_str().unwrap()));
            }
            for m in container["volumeMounts"].as_array().into_iter().flatten() {
                let name = m["name"].as_str().unwrap();
                assert!(
                    names.contains(name),
                    "mount of a missing volume {name}: {patched}"
                );
                assert!(
                    paths.insert(normalized(m["mountPath"].as_str().unwrap())),
                    "two mounts or a mount and a device at one path in {list}[{index}]: {patched}"
                );
            }
            let env: Vec<&str> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            let unique: HashSet<&str> = env.iter().copied().collect();
            assert_eq!(
                unique.len(),
                env.len(),
                "duplicate env in {list}[{index}]: {patched}"
            );
            let had = before[index]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == token_var);
            if env.contains(&token_var) && !had {
                let backed = container["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| {
                        normalized(m["mountPath"].as_str().unwrap()) == normalized(mount)
                            && m.get("subPath").is_none()
                            && holds_token(m["name"].as_str().unwrap())
                    });
                assert!(
                    backed,
                    "{token_var} added without a token at {mount} in {list}[{index}]: {patched}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn injection_keeps_pods_valid_and_tokens_where_the_variables_point(
        pod in pod(),
        container_credentials in any::<bool>(),
        region in any::<bool>(),
    ) {
        let settings = MutationSettings::default();
        let identity = Identity {
            source: credential_source(container_credentials),
            regional_sts: true,
            token_expiration: 3600,
            region: region.then(|| "eu-west-1".to_string()),
            session_name_from_pod: true,
        };
        let read = Pod::from_value(&pod).unwrap();
        let mutation = engine::mutate(&read, &identity, &settings, &mut |range| *range.start());
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &mutation.patch.operations().unwrap()).unwrap();
        let (token_var, mount, token_path) = if container_credentials {
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", CC_MOUNT, "eks-pod-identity-token")
        } else {
            ("AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_MOUNT, "token")
        };
        check_valid(&pod, &patched, token_var, mount, token_path);
        for warning in mutation.warnings.into_vec() {
            prop_assert!(warning.len() <= 256, "the API server may truncate: {}", warning);
        }
    }
}
