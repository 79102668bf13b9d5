//! Property tests of the engine over arbitrary pods: the patch always applies, it only ever
//! adds the credentials (removing what it added gives back the original pod, unknown fields
//! included), and a second pass over the patched pod is empty.

use std::ops::RangeInclusive;

use crate::support::engine::credential_source;
use pod_identity_webhook::core::engine::{self, Mutation, POD_IDENTITY_LABEL};
use pod_identity_webhook::core::identity::{CredentialKind, Identity};
use pod_identity_webhook::core::pod::Pod;
use pod_identity_webhook::core::settings::MutationSettings;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NAMES: &[&str] = &["app", "sidecar", "init", "proxy", "aws-iam-token", "x"];
const ENV_NAMES: &[&str] = &[
    "A",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
];
const VOLUME_NAMES: &[&str] = &["data", "aws-iam-token", "eks-pod-identity-token"];

fn unknown_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z~/]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z~/]{1,5}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn named_list(
    names: &'static [&'static str],
    extra: &'static str,
) -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop::collection::vec(
        (prop::sample::select(names), "[a-z]{0,4}"),
        0..4,
    ))
    .prop_map(move |items| {
        items.map(|items| {
            Value::Array(
                items
                    .into_iter()
                    .map(|(name, value)| json!({"name": name, extra: value}))
                    .collect(),
            )
        })
    })
}

fn container() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(NAMES),
        named_list(ENV_NAMES, "value"),
        named_list(VOLUME_NAMES, "mountPath"),
        prop::option::of(unknown_value()),
    )
        .prop_map(|(name, env, mounts, unknown)| {
            let mut c = Map::new();
            c.insert("name".into(), json!(name));
            c.insert("image".into(), json!("img"));
            if let Some(env) = env {
                c.insert("env".into(), env);
            }
            if let Some(mounts) = mounts {
                c.insert("volumeMounts".into(), mounts);
            }
            if let Some(unknown) = unknown {
                c.insert("futureField".into(), unknown);
            }
            Value::Object(c)
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(container(), 0..4),
        prop::option::of(prop::collection::vec(container(), 0..3)),
        named_list(VOLUME_NAMES, "emptyDir"),
        prop::option::of(prop::collection::btree_map(
            prop::sample::select(vec![POD_IDENTITY_LABEL, "app", "a~b/c"]),
            "[a-z]{0,7}",
            0..3,
        )),
        prop::option::of("[ a-z,]{0,20}"),
        prop::option::of(prop_oneof!["[0-9]{1,6}".boxed(), "[a-z0-9]{0,4}".boxed()]),
        prop::sample::select(vec!["", "linux", "windows"]),
        prop::option::of(unknown_value()),
        (
            prop::option::of(
                "((app|sidecar|init|nope) ?= ?arn:aws:iam::111122223333:role/[a-z]{1,3},? ?){0,3}",
            ),
            prop::sample::select(vec!["report", "", LONG_NAME]),
        ),
    )
        .prop_map(
            |(containers, init, volumes, labels, skip, expiration, os, unknown, (roles, name))| {
                let mut metadata = Map::new();
                metadata.insert("name".into(), json!(name));
                if name.is_empty() {
                    metadata.insert("generateName".into(), json!("p-"));
                }
                let mut annotations = Map::new();
                if let Some(roles) = roles {
                    annotations
                        .insert("eks.amazonaws.com/container-role-arns".into(), json!(roles));
                }
                if let Some(skip) = skip {
                    annotations.insert("eks.amazonaws.com/skip-containers".into(), json!(skip));
                }
                if let Some(expiration) = expiration {
                    annotations.insert(
                        "eks.amazonaws.com/token-expiration".into(),
                        json!(expiration),
                    );
                }
                if !annotations.is_empty() {
                    metadata.insert("annotations".into(), Value::Object(annotations));
                }
                if let Some(labels) = labels {
                    metadata.insert("labels".into(), json!(labels));
                }
                let mut spec = Map::new();
                spec.insert("containers".into(), Value::Array(containers));
                if let Some(init) = init {
                    spec.insert("initContainers".into(), Value::Array(init));
                }
                if let Some(volumes) = volumes {
                    spec.insert("volumes".into(), volumes);
                }
                if !os.is_empty() {
                    spec.insert("os".into(), json!({"name": os}));
                }
                if let Some(unknown) = unknown {
                    spec.insert("futureSpec".into(), unknown);
                }
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
            },
        )
}

/// A pod name longer than AWS STS takes as a session name.
const LONG_NAME: &str = "a-pod-name-of-seventy-characters-which-aws-sts-refuses-as-session-name";

/// Web identity, container credentials or only the region, with or without a region and the
/// session name.
fn identity() -> impl Strategy<Value = Identity> {
    (
        0..3u8,
        any::<bool>(),
        prop::sample::select(vec![600i64, 3600, 86400]),
        prop::option::of(Just("eu-west-1".to_string())),
        any::<bool>(),
    )
        .prop_map(
            |(kind, regional_sts, token_expiration, region, session_name_from_pod)| {
                let source = match kind {
                    0 => credential_source(false),
                    1 => credential_source(true),
                    _ => CredentialKind::RegionOnly,
                };
                let region_only = source == CredentialKind::RegionOnly;
                Identity {
                    source,
                    regional_sts: regional_sts && !region_only,
                    token_expiration,
                    region: if region_only {
                        Some("us-east-2".into())
                    } else {
                        region
                    },
                    session_name_from_pod,
                }
            },
        )
}

fn low(range: RangeInclusive<i64>) -> i64 {
    *range.start()
}

/// The volumes the engine may add, by name.
const OUR_VOLUMES: &[&str] = &["aws-iam-token", "eks-pod-identity-token"];

fn names(list: Option<&Value>) -> Vec<&str> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item["name"].as_str())
        .collect()
}

/// Checks that `patched` differs from `original` only by what the engine may add, and returns
/// `patched` with those additions removed (for the caller to compare with `original`).
///
/// Labels: the original's, plus (or with its value changed to "enabled") the pod-identity
/// label; every other key as it was. Volumes: the original list, in order, with at most one
/// of each of our volumes the original did not have. Containers: each env and volumeMounts
/// list starts with the original entries.
fn strip_additions(original: &Value, patched: &Value) -> Result<Value, String> {
    let mut stripped = patched.clone();

    let without_ours = |labels: Option<&Value>| -> Map<String, Value> {
        let mut labels = labels
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.remove(POD_IDENTITY_LABEL);
        labels
    };
    let labels_before = original["metadata"].get("labels");
    let labels_after = patched["metadata"].get("labels");
    if without_ours(labels_before) != without_ours(labels_after) {
        return Err(format!(
            "labels other than {POD_IDENTITY_LABEL} changed: {labels_before:?} -> {labels_after:?}"
        ));
    }
    let ours_before = labels_before.and_then(|l| l.get(POD_IDENTITY_LABEL));
    let ours_after = labels_after.and_then(|l| l.get(POD_IDENTITY_LABEL));
    if ours_after != ours_before && ours_after != Some(&json!("enabled")) {
        return Err(format!(
            "{POD_IDENTITY_LABEL}: {ours_before:?} -> {ours_after:?}"
        ));
    }
    match labels_before {
        None => {
            if let Some(metadata) = stripped["metadata"].as_object_mut() {
                metadata.remove("labels");
            }
        }
        Some(labels) => stripped["metadata"]["labels"] = labels.clone(),
    }
    if original.get("metadata").is_none() {
        stripped.as_object_mut().unwrap().remove("metadata");
    }

    let volumes_before = original["spec"].get("volumes");
    let had = names(volumes_before);
    let added: Vec<&str> = OUR_VOLUMES
        .iter()
        .copied()
        .filter(|name| !had.contains(name))
        .collect();
    let after = patched["spec"]
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for name in &added {
        let count = after.iter().filter(|v| v["name"] == *name).count();
        if count > 1 {
            return Err(format!("volume {name} added {count} times"));
        }
    }
    let kept: Vec<Value> = after
        .into_iter()
        .filter(|v| !v["name"].as_str().is_some_and(|name| added.contains(&name)))
        .collect();
    let expected = volumes_before
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if kept != expected {
        return Err(format!(
            "volumes, ours removed, differ from the original: {kept:?} != {expected:?}"
        ));
    }
    match volumes_before {
        None => {
            stripped["spec"].as_object_mut().unwrap().remove("volumes");
        }
        Some(volumes) => stripped["spec"]["volumes"] = volumes.clone(),
    }

    for list in ["containers", "initContainers"] {
        let Some(containers) = original["spec"].get(list).and_then(Value::as_array) else {
            continue;
        };
        for (index, before) in containers.iter().enumerate() {
            let after = stripped["spec"][list][index]
                .as_object_mut()
                .ok_or_else(|| format!("{list}[{index}] is gone"))?;
            for field in ["env", "volumeMounts"] {
                match before.get(field) {
                    None => {
                        after.remove(field);
                    }
                    Some(Value::Array(items)) => {
                        after
                            .get_mut(field)
                            .and_then(Value::as_array_mut)
                            .ok_or_else(|| format!("{list}[{index}].{field} is gone"))?
                            .truncate(items.len());
                    }
                    Some(other) => panic!("unexpected {other}"),
                }
            }
        }
    }
    Ok(stripped)
}

/// The engine on a pod that must read as one.
fn mutate(pod: &Value, identity: &Identity, settings: &MutationSettings) -> Mutation {
    let read = Pod::from_value(pod).unwrap_or_else(|err| panic!("{err}: {pod}"));
    engine::mutate(&read, identity, settings, &mut low)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn patch_applies_adds_only_credentials_and_is_idempotent(
        pod in pod(),
        identity in identity(),
    ) {
        let settings = MutationSettings::default();
        let mutation = mutate(&pod, &identity, &settings);

        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &mutation.patch.operations().unwrap()).unwrap();
        match strip_additions(&pod, &patched) {
            Ok(stripped) => prop_assert_eq!(stripped, pod.clone()),
            Err(reason) => prop_assert!(false, "{}\npod: {}\npatched: {}", reason, pod, patched),
        }

        // Every added env entry is one of ours.
        for op in &mutation.patch.operations().unwrap().0 {
            let json_patch::PatchOperation::Add(add) = op else { panic!("only add is emitted") };
            let path = add.path.to_string();
            if path.contains("/env") {
                let entries = match &add.value { Value::Array(items) => items.clone(), one => vec![one.clone()] };
                for entry in entries {
                    prop_assert!(ENV_NAMES[1..].contains(&entry["name"].as_str().unwrap()), "{}", entry);
                }
            }
        }

        let again = mutate(&patched, &identity, &settings);
        prop_assert!(again.patch.is_empty(), "second pass: {:?}", again.patch);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic(value in unknown_value(), key in prop::sample::select(vec!["spec", "metadata", "containers", "env", "volumes", "nodeSelector", "os", "labels"])) {
        let identity = Identity {
            source: CredentialKind::ContainerCredentials,
            regional_sts: true,
            token_expiration: 86400,
            region: Some("eu-west-1".into()),
            session_name_from_pod: true,
        };
        let settings = MutationSettings::default();
        let pods = [
            value.clone(),
            json!({"spec": {key: value.clone()}}),
            json!({"metadata": {key: value.clone()}, "spec": {"containers": [{"name": "a", key: value.clone()}]}}),
            json!({"spec": {"containers": value.clone(), "initContainers": [value.clone()]}}),
        ];
        for pod in pods {
            if let Ok(read) = Pod::from_value(&pod) {
                let mutation = engine::mutate(&read, &identity, &settings, &mut low);
                let mut patched = pod.clone();
                let applied = json_patch::patch(&mut patched, &mutation.patch.operations().unwrap());
                prop_assert!(applied.is_ok(), "what reads as a pod takes its patch: {:?}\npod: {}", applied, pod);
            }
        }
    }
}

/// Found by the `engine` fuzz target (input `AHsic3BlYyI6ClsKCl19Cg==`, the pod after its first
/// byte): serde's derive read an array as a struct, so `{"spec":[]}` read as a pod with an
/// empty spec and got `add /spec/volumes`, which cannot apply to an array. Each object the
/// reader reads is now refused as an array, naming the field.
#[test]
fn an_array_where_an_object_belongs_is_refused_naming_the_field() {
    for (pod, field) in [
        (json!({"spec": []}), "spec"),
        (json!({"metadata": [null, "n"], "spec": {}}), "metadata"),
        (json!({"spec": {"containers": [[]]}}), "spec.containers[0]"),
        (
            json!({"spec": {"initContainers": [{"env": [["A"]]}]}}),
            "spec.initContainers[0].env[0]",
        ),
        (json!({"spec": {"volumes": [[]]}}), "spec.volumes[0]"),
        (
            json!({"spec": {"volumes": [{"projected": []}]}}),
            "spec.volumes[0].projected",
        ),
    ] {
        let err = Pod::from_value(&pod).expect_err(&pod.to_string());
        assert_eq!(err.field, field, "{pod}");
        assert_eq!(
            err.message, "invalid type: sequence, expected an object",
            "{pod}"
        );
        let err = Pod::from_json(&pod.to_string()).expect_err(&pod.to_string());
        assert_eq!(err.field, field, "{pod}");
    }
}
