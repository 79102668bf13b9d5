//! Doctor check on pods already running under the ServiceAccount: the engine itself says
//! whether each would still be changed or runs with an older role (`stale`), so such pods are
//! listed for a restart.

use serde_json::Value;

use crate::core::identity::Identity;
use crate::core::settings::MutationSettings;
use crate::irsa::checklist::Check;

use super::stale;

/// The label that keeps the API server from calling the webhook for a pod.
pub const SKIP_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";

/// Checks `pods` (the namespace's pods of the ServiceAccount) against the identity.
pub(crate) fn running_pods(
    pods: &Result<Vec<Value>, String>,
    identity: Option<&Identity>,
    settings: &MutationSettings,
) -> Check {
    let check = Check::new(
        "pods.injected",
        "pods already running under the ServiceAccount have the injection",
    );
    let Some(identity) = identity else {
        return check.skip("no identity resolved: nothing to inject");
    };
    let pods = match pods {
        Ok(pods) => pods,
        Err(err) => {
            return check.fail(
                format!("cannot list the pods: {err}"),
                "check that you may list pods in this namespace",
            )
        }
    };
    let mut stale = Vec::new();
    let mut considered = 0;
    for pod in pods {
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed")
            || !pod["metadata"]["deletionTimestamp"].is_null()
        {
            continue;
        }
        if pod["metadata"]["labels"][SKIP_LABEL].is_string() {
            continue;
        }
        considered += 1;
        let name = pod["metadata"]["name"].as_str().unwrap_or("(unnamed)");
        let owner = pod["metadata"]["ownerReferences"][0]
            .as_object()
            .map(|o| {
                format!(
                    " (owned by {} {})",
                    o["kind"].as_str().unwrap_or("?"),
                    o["name"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_default();
        match stale::judge(pod, Some(identity), settings) {
            Ok(Some(found)) => stale.push(format!("{name}{owner}: {}", found.detail)),
            Ok(None) => {}
            Err(err) => stale.push(format!("{name}{owner}: unreadable pod ({err})")),
        }
    }
    if stale.is_empty() {
        return check.detail(format!(
            "{considered} running pod(s), all with the injection"
        ));
    }
    let mut check = check.detail(format!(
        "{} of {considered} running pod(s) need a restart:",
        stale.len()
    ));
    for line in &stale {
        check = check.detail(format!("- {line}"));
    }
    check.fail(
        format!("{} pod(s) started without the current injection (created before the annotation, or while the webhook was down with failurePolicy Ignore); a pod's env and volumes never change after creation", stale.len()),
        "restart them: kubectl rollout restart on their Deployment/StatefulSet/DaemonSet, or delete the pods so their controller recreates them",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine;
    use crate::core::pod::Pod;
    use crate::irsa::checklist::Status;
    use serde_json::json;

    fn pod(name: &str, env: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "ns", "ownerReferences": [{"kind": "ReplicaSet", "name": "app-123"}]},
               "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "x", "env": env}]},
               "status": {"phase": "Running"}})
    }

    fn mutated(role: &str) -> Value {
        let settings = MutationSettings::default();
        let identity = Identity::web_identity(role);
        let mut p = pod("new", json!([]));
        let read = p.clone();
        let m = engine::mutate(
            &Pod::from_value(&read).unwrap(),
            &identity,
            &settings,
            &mut |r| *r.start(),
        );
        json_patch::patch(&mut p, &m.patch.operations().unwrap()).unwrap();
        p
    }

    #[test]
    fn pods_without_the_injection_are_listed_with_their_owner() {
        let role = "arn:aws:iam::111122223333:role/app";
        let settings = MutationSettings::default();
        let pods = Ok(vec![pod("old", json!([])), mutated(role)]);
        let check = running_pods(&pods, Some(&Identity::web_identity(role)), &settings);
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.details[0], "1 of 2 running pod(s) need a restart:");
        assert_eq!(
            check.details[1],
            "- old (owned by ReplicaSet app-123): lacks credentials in container(s) app"
        );
        assert!(check.problems[0].fix.contains("rollout restart"));
    }

    #[test]
    fn pods_with_an_old_role_are_listed_and_finished_or_skipped_pods_ignored() {
        let settings = MutationSettings::default();
        let new_role = "arn:aws:iam::111122223333:role/new";
        let mut done = pod("done", json!([]));
        done["status"]["phase"] = json!("Succeeded");
        let mut skipped = pod("skipped", json!([]));
        skipped["metadata"]["labels"] = json!({SKIP_LABEL: "true"});
        let pods = Ok(vec![
            mutated("arn:aws:iam::111122223333:role/old"),
            done,
            skipped,
        ]);
        let check = running_pods(&pods, Some(&Identity::web_identity(new_role)), &settings);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.details[1].contains("runs with role arn:aws:iam::111122223333:role/old in container(s) app, the webhook now gives arn:aws:iam::111122223333:role/new"),
            "{:?}",
            check.details
        );
        let ok = running_pods(
            &Ok(vec![mutated(new_role)]),
            Some(&Identity::web_identity(new_role)),
            &settings,
        );
        assert_eq!(ok.status, Status::Pass);
        assert_eq!(ok.details[0], "1 running pod(s), all with the injection");
    }

    #[test]
    fn a_container_with_its_own_role_is_compared_with_the_pods_annotation() {
        let settings = MutationSettings::default();
        let role = "arn:aws:iam::111122223333:role/app";
        let own = "arn:aws:iam::111122223333:role/own";
        let mut pod = mutated(own);
        pod["metadata"]["annotations"] =
            json!({"eks.amazonaws.com/container-role-arns": format!("app={own}")});
        let ok = running_pods(
            &Ok(vec![pod.clone()]),
            Some(&Identity::web_identity(role)),
            &settings,
        );
        assert_eq!(ok.status, Status::Pass, "{:?}", ok.details);
        pod["metadata"]["annotations"] =
            json!({"eks.amazonaws.com/container-role-arns": format!("app={role}2")});
        let stale = running_pods(
            &Ok(vec![pod]),
            Some(&Identity::web_identity(role)),
            &settings,
        );
        assert_eq!(stale.status, Status::Fail);
        assert!(
            stale.details[1].contains(&format!(
                "runs with role {own} in container(s) app, the webhook now gives {role}2"
            )),
            "{:?}",
            stale.details
        );
    }
}
