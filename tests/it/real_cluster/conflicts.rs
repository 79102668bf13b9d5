//! Pods whose own setup conflicts with the injection (the reference's bugs #159 and #315): the
//! API server creates them, with what could be injected safely, and the creator sees a
//! warning naming what was left out.

use serde_json::{json, Value};

use super::harness::{self, shared, Cluster, SKIP_LABEL};
use super::pods::{add, assert_same, normalize, pod, Irsa, IRSA_MOUNT, ROLE_KEY};
use super::ROLE;
use crate::support::suite_gate;

/// Creates `manifest` and its opt-out twin; asserts the stored pod equals the twin plus what
/// `expect` adds, and returns the warnings the API server passed on from the webhook.
fn create_with_warnings(
    cluster: &Cluster,
    namespace: &str,
    manifest: &Value,
    expect: impl FnOnce(&mut Value),
) -> Vec<String> {
    let name = manifest["metadata"]["name"].as_str().expect("a named pod");
    let mut control = manifest.clone();
    control["metadata"]["name"] = json!(format!("{name}-control"));
    control["metadata"]["labels"][SKIP_LABEL] = json!("true");
    let (control, _) = cluster.create_pod(namespace, &control);
    let (stored, warnings) = cluster.create_pod(namespace, manifest);
    let mut expected = normalize(&control);
    expect(&mut expected);
    assert_same(
        &normalize(&stored),
        &expected,
        &format!("pod {namespace}/{name}"),
    );
    warnings
}

fn assert_one_warning(warnings: &[String], parts: &[&str]) {
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    for part in parts {
        assert!(warnings[0].contains(part), "{part:?} not in {warnings:?}");
    }
}

#[test]
fn conflicting_pods_are_created_with_what_can_be_injected() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("conflicting_pods_are_created_with_what_can_be_injected");
    let _lock = shared();
    let ns = "conflicts";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let irsa = Irsa::role(ROLE);

    // The reference's patch for this pod (a second mount at the same path) is refused.
    let mut duplicate = pod("duplicate-mount", "app", &["mesh"]);
    duplicate["metadata"]["labels"] = json!({SKIP_LABEL: "true"});
    duplicate["spec"]["volumes"] = json!([{"name": "certs", "emptyDir": {}}, irsa.volume()]);
    duplicate["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "certs", "mountPath": IRSA_MOUNT},
        irsa.mount(),
    ]);
    let refused = c.post(&format!("/api/v1/namespaces/{ns}/pods"), &duplicate);
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("must be unique"), "{}", refused.text);

    // Another volume at the mount path (here with a trailing /) in one container; the other
    // container gets everything.
    let mut manifest = pod("mount-conflict", "app", &["mesh", "app"]);
    manifest["spec"]["volumes"] = json!([{"name": "certs", "emptyDir": {}}]);
    manifest["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "certs", "mountPath": format!("{IRSA_MOUNT}/")}]);
    let warnings = create_with_warnings(c, ns, &manifest, |expected| {
        irsa.add_to(expected, &["app"]);
    });
    assert_one_warning(
        &warnings,
        &[
            "container \\\"mesh\\\" already mounts volume \\\"certs\\\"",
            "not added: AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, the token mount",
        ],
    );

    // The same in a native sidecar, at exactly the mount path.
    let mut manifest = pod("sidecar-conflict", "app", &["app"]);
    manifest["spec"]["volumes"] = json!([{"name": "certs", "emptyDir": {}}]);
    manifest["spec"]["initContainers"] = json!([{
        "name": "proxy", "image": "busybox:1.36", "command": ["sleep", "3600"],
        "restartPolicy": "Always",
        "volumeMounts": [{"name": "certs", "mountPath": IRSA_MOUNT}],
    }]);
    let warnings = create_with_warnings(c, ns, &manifest, |expected| {
        irsa.add_to(expected, &["app"]);
    });
    assert_one_warning(&warnings, &["container \\\"proxy\\\""]);

    // The container's own projected token at the mount path: variables point into it, no
    // second mount.
    let mut manifest = pod("own-token", "app", &["app"]);
    manifest["spec"]["volumes"] = json!([{"name": "my-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "token"}}
    ]}}]);
    manifest["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "my-token", "mountPath": IRSA_MOUNT, "readOnly": true}]);
    let warnings = create_with_warnings(c, ns, &manifest, |expected| {
        add(expected, irsa.volume(), &irsa.env(), &json!(null), &[]);
        expected["spec"]["containers"][0]["env"] = json!(irsa.env());
    });
    assert_one_warning(
        &warnings,
        &[
            "service-account token volume \\\"my-token\\\"",
            "not added: the token mount",
        ],
    );

    // The pod's own volume named aws-iam-token that is no token: left alone, nothing points
    // into it.
    let mut manifest = pod("own-volume", "app", &["app"]);
    manifest["spec"]["volumes"] = json!([{"name": "aws-iam-token", "emptyDir": {}}]);
    manifest["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "aws-iam-token", "mountPath": "/cache"}]);
    let warnings = create_with_warnings(c, ns, &manifest, |_| {});
    assert_one_warning(
        &warnings,
        &["the pod's volume \\\"aws-iam-token\\\" is not a projected service-account token"],
    );

    // A raw block device at the mount path.
    let mut manifest = pod("device-conflict", "app", &["app"]);
    manifest["spec"]["volumes"] = json!([
        {"name": "disk", "persistentVolumeClaim": {"claimName": "disk"}}
    ]);
    manifest["spec"]["containers"][0]["volumeDevices"] =
        json!([{"name": "disk", "devicePath": IRSA_MOUNT}]);
    let warnings = create_with_warnings(c, ns, &manifest, |expected| {
        add(expected, irsa.volume(), &[], &json!(null), &[]);
    });
    assert_one_warning(&warnings, &["has a volume device at"]);
}
