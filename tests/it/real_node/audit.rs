//! `doctor --all-namespaces` on the real node: pods created while the webhook was scaled to
//! zero (failurePolicy Ignore lets them start without credentials) and a pod whose
//! ServiceAccount changed role since are exactly what the audit names, each under its
//! workload; the commands it prints replace them, and the audit then passes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::node::{self, env_of, Node, POD_IDENTITY_NAMESPACE, POD_IDENTITY_SA, POLL, RELEASE_NS};
use super::{wait_two_replicas, ROLE_KEY};
use crate::support::process::run;
use crate::support::{eventually, suite_gate};

const NAMESPACE: &str = "audit";
const ROLE: &str = "arn:aws:iam::111122223333:role/audited";
const OLD_ROLE: &str = "arn:aws:iam::111122223333:role/before";
const NEW_ROLE: &str = "arn:aws:iam::111122223333:role/after";

/// `doctor --all-namespaces` with the flags the shared release runs with.
fn audit(node: &Node, output: &str) -> (i32, String) {
    let identities = node.artifacts.join("audit-container-credentials.json");
    std::fs::write(
        &identities,
        json!({"identities": [{"namespace": POD_IDENTITY_NAMESPACE, "serviceAccount": POD_IDENTITY_SA}]})
            .to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args(["doctor", "--all-namespaces", "--output", output])
        .arg(format!("--kubeconfig={}", node.env["KUBECONFIG"]))
        .args(["--webhook-namespace", RELEASE_NS])
        .arg("--watch-container-credentials-config")
        .arg(&identities)
        .output()
        .expect("run pod-identity-webhook");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

fn sleeper_spec(node: &Node, service_account: &str) -> Value {
    json!({"serviceAccountName": service_account, "terminationGracePeriodSeconds": 0,
           "containers": [{"name": "app", "image": node.test_image(), "command": ["sleep", "3600"]}]})
}

fn deployment(node: &Node, name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": sleeper_spec(node, "app")}}})
}

fn bare_pod(node: &Node, name: &str, service_account: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": sleeper_spec(node, service_account)})
}

fn rolled_out(node: &Node, name: &str) {
    node.rollout_status(NAMESPACE, &format!("deployment/{name}"), "120s")
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(NAMESPACE)));
}

/// The names of the pods of the namespace that are not being deleted, by whether they have a
/// role.
fn pods_by_role(node: &Node) -> (BTreeSet<String>, BTreeSet<String>) {
    let pods = node.get(&["-n", NAMESPACE, "pods"]).unwrap();
    let mut with = BTreeSet::new();
    let mut without = BTreeSet::new();
    for pod in pods["items"].as_array().unwrap() {
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        match env_of(pod, 0, "AWS_ROLE_ARN") {
            Some(_) => with.insert(name),
            None => without.insert(name),
        };
    }
    (with, without)
}

/// Runs a command the audit printed (`kubectl ...`) with the node's kubectl.
fn run_printed(node: &Node, command: &str) {
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("kubectl"), "{command}");
    run(node.kubectl().args(words)).unwrap_or_else(|e| panic!("{command}: {e}"));
}

#[test]
fn audit_names_exactly_the_pods_created_while_the_webhook_was_scaled_to_zero() {
    let _gate = suite_gate::enter("real_node");
    let node = node!("audit_names_exactly_the_pods_created_while_the_webhook_was_scaled_to_zero");
    let _exclusive = node.exclusive_with_chart();
    node.service_account(NAMESPACE, "app", &[(ROLE_KEY, ROLE)]);
    node.service_account(NAMESPACE, "moved", &[(ROLE_KEY, OLD_ROLE)]);

    // With the webhook up: pods get their role.
    node.apply(&deployment(node, "before", 1));
    node.apply(&bare_pod(node, "moved", "moved"));
    rolled_out(node, "before");
    let (injected, _) = pods_by_role(node);
    assert_eq!(injected.len(), 2, "{injected:?}");
    // A role changed since: the running pod keeps the old one.
    node.service_account(NAMESPACE, "moved", &[(ROLE_KEY, NEW_ROLE)]);

    // No webhook answers: failurePolicy Ignore admits pods as they are.
    run(node.kubectl().args([
        "-n",
        RELEASE_NS,
        "scale",
        "deployment",
        "--all",
        "--replicas=0",
    ]))
    .unwrap();
    eventually("no webhook pod left", Duration::from_secs(60), POLL, || {
        let pods = node.get(&["-n", RELEASE_NS, "pods"])?;
        match pods["items"].as_array().map_or(0, Vec::len) {
            0 => Ok(()),
            n => Err(format!("{n} pods")),
        }
    })
    .unwrap();
    node.apply(&deployment(node, "during", 2));
    node.apply(&bare_pod(node, "bare-during", "app"));
    rolled_out(node, "during");
    let (_, unmutated) = pods_by_role(node);
    assert_eq!(unmutated.len(), 3, "{unmutated:?}");

    run(node.kubectl().args([
        "-n",
        RELEASE_NS,
        "scale",
        "deployment",
        "--all",
        "--replicas=2",
    ]))
    .unwrap();
    wait_two_replicas(node);
    node.wait_webhook_answers("audit-probe").unwrap();

    let (code, text) = audit(node, "text");
    let _ = std::fs::write(node.artifacts.join("audit.txt"), &text);
    assert_eq!(code, 1, "{text}");
    let (code, stdout) = audit(node, "json");
    assert_eq!(code, 1, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let named: BTreeSet<(String, String)> = report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| {
            w["pods"].as_array().unwrap().iter().map(move |p| {
                (
                    w["namespace"].as_str().unwrap().to_string(),
                    p["name"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    let mut expected: BTreeSet<(String, String)> = unmutated
        .iter()
        .map(|name| (NAMESPACE.to_string(), name.clone()))
        .collect();
    expected.insert((NAMESPACE.to_string(), "moved".to_string()));
    assert_eq!(named, expected, "{text}");

    let workloads = report["workloads"].as_array().unwrap();
    let during = workloads
        .iter()
        .find(|w| w["name"] == "during")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(during["kind"], "Deployment");
    assert!(
        during["via"]
            .as_str()
            .is_some_and(|via| via.starts_with("ReplicaSet during-")),
        "{during:#}"
    );
    assert_eq!(
        during["restart"],
        format!("kubectl rollout restart deployment/during -n {NAMESPACE}")
    );
    for pod in during["pods"].as_array().unwrap() {
        assert_eq!(pod["problem"], "missing");
        assert_eq!(pod["detail"], "lacks credentials in container(s) app");
    }
    let moved = workloads.iter().find(|w| w["name"] == "moved").unwrap();
    assert_eq!(moved["kind"], "Pod");
    assert_eq!(moved["pods"][0]["problem"], "outdated");
    assert_eq!(
        moved["pods"][0]["roles"],
        json!({"running": OLD_ROLE, "current": NEW_ROLE})
    );
    assert!(
        text.contains(&format!(
            "         - moved: runs with role {OLD_ROLE} in container(s) app, the webhook now gives {NEW_ROLE}\n"
        )),
        "{text}"
    );

    // The printed fixes replace every one of them; then the audit passes.
    for workload in workloads {
        run_printed(node, workload["restart"].as_str().unwrap());
    }
    rolled_out(node, "during");
    node.apply(&bare_pod(node, "bare-during", "app"));
    node.apply(&bare_pod(node, "moved", "moved"));
    let (code, text) = audit(node, "text");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("pod(s) have the identity the webhook gives now ("),
        "{text}"
    );
    let _ = run(node
        .kubectl()
        .args(["delete", "namespace", NAMESPACE, "--wait=false"]));
}
