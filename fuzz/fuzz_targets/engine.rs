//! The pod reader and the engine on any JSON text, with the properties the webhook promises:
//! whatever reads as a pod gets a patch that applies, holds only `add` operations on the paths
//! the engine may touch, and a second pass over the patched pod changes nothing. The first
//! byte picks the identity and the jitter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_identity_webhook::core::engine;
use pod_identity_webhook::core::identity::{CredentialKind, Identity};
use pod_identity_webhook::core::pod::Pod;
use pod_identity_webhook::core::settings::MutationSettings;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(json) else {
        return;
    };
    let Ok(read) = Pod::from_json(text) else {
        return;
    };
    // The reader skips the fields it does not use without decoding their strings, so it
    // reads past an escape that is valid JSON but no Rust string (a lone surrogate, `\udddd`),
    // which `Value` refuses: such a pod has no `Value` to apply the patch to.
    let Ok(pod) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let source = match (pick & 1 == 0, pick & 64 == 0) {
        (true, _) => CredentialKind::WebIdentity {
            role_arn: "arn:aws:iam::111122223333:role/r".into(),
            audience: "sts.amazonaws.com".into(),
        },
        (false, true) => CredentialKind::ContainerCredentials,
        (false, false) => CredentialKind::RegionOnly,
    };
    let identity = Identity {
        source,
        regional_sts: pick & 2 != 0,
        token_expiration: if pick & 4 != 0 { 86400 } else { 3600 },
        region: (pick & 8 != 0).then(|| "eu-west-1".to_string()),
        session_name_from_pod: pick & 32 != 0,
    };
    let settings = MutationSettings::default();
    let high = pick & 16 != 0;
    let mut jitter = |range: std::ops::RangeInclusive<i64>| {
        if high {
            *range.end()
        } else {
            *range.start()
        }
    };
    let mutation = engine::mutate(&read, &identity, &settings, &mut jitter);
    for operation in &mutation.patch.operations().unwrap().0 {
        let json_patch::PatchOperation::Add(add) = operation else {
            panic!("only add operations: {operation:?}");
        };
        let path = add.path.to_string();
        if path == "/metadata" {
            // A pod without metadata gets one holding only the pod-identity label.
            let keys: Vec<&String> = add
                .value
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            assert_eq!(keys, ["labels"], "{}", add.value);
            continue;
        }
        assert!(
            allowed(&path),
            "{path} is outside what the engine may touch"
        );
    }
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch.operations().unwrap())
        .unwrap_or_else(|err| panic!("the patch does not apply: {err}\n{:?}", mutation.patch));
    let patched_pod = Pod::from_value(&patched).expect("a patched pod is still a pod");
    let again = engine::mutate(&patched_pod, &identity, &settings, &mut jitter);
    assert!(again.patch.is_empty(), "second pass: {:?}", again.patch);
});

/// `/metadata/labels[/eks.amazonaws.com~1pod-identity]`, `/spec/volumes` or its first entry
/// (the token volume is prepended, as the reference does), and a container's or init
/// container's `env` or `volumeMounts` list or an entry appended to it.
fn allowed(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    match parts.as_slice() {
        ["metadata", "labels"] | ["metadata", "labels", "eks.amazonaws.com~1pod-identity"] => true,
        ["spec", "volumes"] | ["spec", "volumes", "0"] => true,
        ["spec", "containers" | "initContainers", index, list, rest @ ..] => {
            index.parse::<usize>().is_ok()
                && matches!(*list, "env" | "volumeMounts")
                && matches!(rest, [] | ["-"])
        }
        _ => false,
    }
}
