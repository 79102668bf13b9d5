//! `doctor --all-namespaces` against the real API server: thousands of pods read a page at a
//! time in a number of requests bounded by the pages, each pod created before its
//! ServiceAccount had a role named under the Deployment that owns it (through its ReplicaSet)
//! with the command that restarts it, and a pod the webhook's configuration does not select
//! left out.

use std::process::Command;

use serde_json::{json, Value};

use super::harness::{self, exclusive, OTHER_WEBHOOK_LABEL, RELEASE_NS};
use crate::support::suite_gate;

const ROLE: &str = "arn:aws:iam::111122223333:role/audited";
const ROLE_KEY: &str = "eks.amazonaws.com/role-arn";
const DEPLOYMENTS: usize = 60;
const PODS_PER_REPLICA_SET: usize = 40;
const PLAIN_PODS: usize = 600;
const PAGE: usize = 50;

fn audit(c: &harness::Cluster, output: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args([
            "doctor",
            "--all-namespaces",
            &format!("--kubeconfig={}", c.env["KUBECONFIG"]),
            "--webhook-namespace",
            RELEASE_NS,
            "--page-size",
            &PAGE.to_string(),
            "--output",
            output,
        ])
        .output()
        .expect("run pod-identity-webhook");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How many objects a list holds now.
fn count(c: &harness::Cluster, path: &str) -> usize {
    c.get(path)["items"].as_array().map_or(0, Vec::len)
}

fn pages(items: usize) -> usize {
    items.div_ceil(PAGE).max(1)
}

fn pod(name: &str, service_account: &str, owner: Option<&Value>) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"serviceAccountName": service_account,
                 "containers": [{"name": "app", "image": "busybox:1.36"}]}});
    if let Some(owner) = owner {
        pod["metadata"]["ownerReferences"] = json!([owner]);
    }
    pod
}

#[test]
fn audit_pages_through_thousands_of_pods_in_requests_bounded_by_the_pages() {
    let _gate = suite_gate::enter("real_cluster");
    let Some(c) =
        harness::cluster("audit_pages_through_thousands_of_pods_in_requests_bounded_by_the_pages")
    else {
        return;
    };
    // The cluster's counts below must not move while the audit reads it.
    let _lock = exclusive();
    let ns = "audit-paging";
    c.namespace(ns, &[]);
    // No role yet: the webhook leaves the pods as they are.
    c.service_account(ns, "app", &[]);
    c.service_account(ns, "plain", &[]);

    // Deployments and their ReplicaSets as the controllers would make them (no controller
    // manager runs here, so nothing else creates or removes anything).
    let mut pods = Vec::new();
    for i in 0..DEPLOYMENTS {
        let labels = json!({"app": format!("web-{i}")});
        let template = json!({"metadata": {"labels": labels},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "busybox:1.36"}]}});
        let deployment = c
            .post(
                &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
                &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("web-{i}")},
                        "spec": {"selector": {"matchLabels": labels}, "template": template}}),
            )
            .ok("create Deployment");
        let replica_set = c
            .post(
                &format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
                &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": format!("web-{i}-5d9c"), "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "Deployment", "name": format!("web-{i}"),
                            "uid": deployment["metadata"]["uid"], "controller": true}]},
                        "spec": {"selector": {"matchLabels": labels}, "template": template}}),
            )
            .ok("create ReplicaSet");
        let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("web-{i}-5d9c"),
                           "uid": replica_set["metadata"]["uid"], "controller": true});
        for j in 0..PODS_PER_REPLICA_SET {
            pods.push(pod(&format!("web-{i}-5d9c-{j:05}"), "app", Some(&owner)));
        }
    }
    for j in 0..PLAIN_PODS {
        pods.push(pod(&format!("plain-{j:05}"), "plain", None));
    }
    pods.push(pod("bare", "app", None));
    c.create_all(&format!("/api/v1/namespaces/{ns}/pods"), &pods, 16);
    // A namespace the chart's webhook leaves out: its pod never gets a role, and a restart
    // would not change that.
    let left_out = "audit-left-out";
    c.namespace(left_out, &[(OTHER_WEBHOOK_LABEL, "nobody")]);
    c.service_account(left_out, "app", &[(ROLE_KEY, ROLE)]);
    c.create_pod(left_out, &pod("never-called", "app", None));
    c.merge_patch(
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/app"),
        &json!({"metadata": {"annotations": {ROLE_KEY: ROLE}}}),
    )
    .ok("annotate");

    let namespaces = count(c, "/api/v1/namespaces");
    let service_accounts = count(c, "/api/v1/serviceaccounts");
    let running = count(
        c,
        "/api/v1/pods?fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed",
    );
    let replica_sets = count(c, "/apis/apps/v1/replicasets");
    assert!(running >= pods.len(), "{running} pods listed");

    let (code, stdout, stderr) = audit(c, "json");
    assert_eq!(code, 1, "{stderr}");
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));

    // The ConfigMap and the webhook configurations, then one request per page of each list:
    // the namespaces, the ServiceAccounts, the pods and (more owners than it reads one by one)
    // the ReplicaSets; a list may end with an empty page.
    let requests = report["summary"]["requests"].as_u64().unwrap() as usize;
    let least =
        2 + pages(namespaces) + pages(service_accounts) + pages(running) + pages(replica_sets);
    let most = least + 4;
    assert!(
        (least..=most).contains(&requests),
        "{requests} requests for {namespaces} namespaces, {service_accounts} ServiceAccounts, {running} pods and {replica_sets} ReplicaSets in pages of {PAGE}: expected {least}..={most}"
    );
    assert_eq!(report["summary"]["serviceAccounts"], service_accounts);
    assert!(
        report["notes"].as_array().unwrap().iter().any(|note| {
            let note = note.as_str().unwrap();
            note.contains("the webhook's configuration does not select") && note.contains(left_out)
        }),
        "{:#}",
        report["notes"]
    );

    let ours: Vec<&Value> = report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["namespace"] == ns)
        .collect();
    assert_eq!(ours.len(), DEPLOYMENTS + 1, "{:#}", report["summary"]);
    assert!(
        !report["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["namespace"] == left_out),
        "a pod the webhook is never called for was judged"
    );
    for workload in &ours[..DEPLOYMENTS] {
        let name = workload["name"].as_str().unwrap();
        assert_eq!(workload["kind"], "Deployment", "{workload:#}");
        assert_eq!(workload["via"], format!("ReplicaSet {name}-5d9c"));
        assert_eq!(
            workload["restart"],
            format!("kubectl rollout restart deployment/{name} -n {ns}")
        );
        let pods = workload["pods"].as_array().unwrap();
        assert_eq!(pods.len(), PODS_PER_REPLICA_SET, "{name}");
        for pod in pods {
            assert_eq!(pod["problem"], "missing", "{pod:#}");
            assert_eq!(pod["serviceAccount"], "app");
            assert_eq!(pod["detail"], "lacks credentials in container(s) app");
        }
    }
    let bare = ours[DEPLOYMENTS];
    assert_eq!(
        (&bare["kind"], &bare["name"], &bare["restart"]),
        (
            &json!("Pod"),
            &json!("bare"),
            &json!(format!("kubectl delete pod bare -n {ns}"))
        )
    );

    // The same as text: a line per workload, a line per pod, the fix.
    let (code, text, _) = audit(c, "text");
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!(
            "  [FAIL] Deployment {ns}/web-7 (via ReplicaSet web-7-5d9c), ServiceAccount app: {PODS_PER_REPLICA_SET} pod(s)\n\
             \x20        - web-7-5d9c-00000: lacks credentials in container(s) app\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "         fix:   kubectl rollout restart deployment/web-7 -n {ns}\n"
        )),
        "{text}"
    );

    // One by one: a deletecollection of thousands of pods outlasts the client's timeout.
    let deletions: Vec<(String, Option<&Value>)> = pods
        .iter()
        .map(|pod| {
            let name = pod["metadata"]["name"].as_str().unwrap();
            (
                format!("/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=0"),
                None,
            )
        })
        .collect();
    c.send_all("DELETE", &deletions, 16);
    c.request(
        "DELETE",
        &format!("/api/v1/namespaces/{left_out}/pods/never-called?gracePeriodSeconds=0"),
        "application/json",
        None,
    )
    .ok("delete the left-out pod");
    for collection in ["replicasets", "deployments"] {
        c.request(
            "DELETE",
            &format!("/apis/apps/v1/namespaces/{ns}/{collection}"),
            "application/json",
            None,
        )
        .ok("delete the audited owners");
    }
}
