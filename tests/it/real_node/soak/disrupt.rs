//! The disruptions: a rollout, a pod deleted, a container killed, the API server restarted,
//! each waited out until the webhook runs as before.

use super::*;

/// Runs the schedule: each disruption at its time (or when the one before has recovered,
/// if later), with the counts read just before it and at the end of its window.
pub(super) fn disrupt(
    node: &'static Node,
    shared: &Shared,
    runtime: &tokio::runtime::Handle,
    apiserver_log: &std::path::Path,
) -> Result<Vec<Window>, String> {
    let mut windows = Vec::new();
    let mut victim = 0usize;
    for (at, kind) in shared.settings.schedule() {
        std::thread::sleep(
            shared
                .clock
                .instant(at)
                .saturating_duration_since(Instant::now()),
        );
        runtime.block_on(async {
            scrape_webhooks(shared).await;
            scrape_fail_open(shared).await;
        });
        let log_start = log_size(apiserver_log);
        let start = shared.clock.now();
        let detail = match kind {
            Disruption::Rollout => rollout(node)?,
            Disruption::PodDeleted => {
                victim += 1;
                delete_pod(node, victim)?
            }
            Disruption::ContainerKilled => {
                victim += 1;
                kill_container(node, victim)?
            }
            Disruption::ApiServerRestart => restart_apiserver(node)?,
        };
        let recovered = shared.clock.now();
        std::thread::sleep(SETTLE);
        runtime.block_on(scrape_fail_open(shared));
        windows.push(Window {
            kind,
            start,
            recovered,
            end: shared.clock.now(),
            log: log_start..log_size(apiserver_log),
            detail,
        });
    }
    Ok(windows)
}

/// Waits until the webhook runs as before a disruption: two ready pods, none terminating.
pub(super) fn wait_recovered(node: &Node, what: &str) -> Result<(), String> {
    eventually(
        &format!("two ready webhook pods, none terminating, after {what}"),
        Duration::from_secs(180),
        POLL,
        || {
            let pods = webhook_pods(node)?;
            if pods.len() == 2 && pods.iter().all(|p| p.ready && !p.terminating) {
                Ok(())
            } else {
                Err(format!("{pods:?}"))
            }
        },
    )
}

pub(super) fn rollout(node: &Node) -> Result<String, String> {
    run(node
        .kubectl()
        .args(["-n", RELEASE_NS, "rollout", "restart", "deployment"]))?;
    node.rollout_status(RELEASE_NS, "deployment", "180s")?;
    wait_recovered(node, "a rollout")?;
    Ok("both replicas replaced".to_string())
}

/// The `turn`-th victim among the webhook's pods (by name), so the two take turns.
pub(super) fn pick(node: &Node, turn: usize) -> Result<WebhookPod, String> {
    let mut pods = webhook_pods(node)?;
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.get(turn % pods.len().max(1))
        .cloned()
        .ok_or_else(|| "no webhook pod to disrupt".to_string())
}

pub(super) fn delete_pod(node: &Node, turn: usize) -> Result<String, String> {
    let name = pick(node, turn)?.name;
    run(node
        .kubectl()
        .args(["-n", RELEASE_NS, "delete", "pod", &name, "--wait=false"]))?;
    eventually(
        &format!("pod {name} gone"),
        Duration::from_secs(120),
        POLL,
        || {
            let pods = webhook_pods(node)?;
            if pods.iter().any(|p| p.name == name) {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        },
    )?;
    wait_recovered(node, "a pod deletion")?;
    Ok(name)
}

pub(super) fn kill_container(node: &Node, turn: usize) -> Result<String, String> {
    let WebhookPod {
        name,
        restarts,
        container,
        ..
    } = pick(node, turn)?;
    let id = container
        .strip_prefix("containerd://")
        .ok_or_else(|| format!("pod {name} has no containerd container id: {container:?}"))?;
    run(Command::new("ctr").args([
        "--address",
        &node.env["CONTAINERD_ADDRESS"],
        "-n",
        "k8s.io",
        "tasks",
        "kill",
        "--signal",
        "SIGKILL",
        id,
    ]))?;
    eventually(
        &format!("pod {name}'s container restarted and ready"),
        Duration::from_secs(120),
        POLL,
        || {
            let pods = webhook_pods(node)?;
            match pods.iter().find(|p| p.name == name) {
                Some(p) if p.restarts > restarts && p.ready => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )?;
    wait_recovered(node, "a container kill")?;
    Ok(name)
}

pub(super) fn restart_apiserver(node: &Node) -> Result<String, String> {
    let started = Instant::now();
    run(Command::new(node::repo_root().join("hack/node.sh"))
        .args(["restart-apiserver", "--dir"])
        .arg(&node.env["NODE_DIR"]))?;
    let ready = started.elapsed();
    wait_recovered(node, "the API server's restart")?;
    Ok(format!("ready again after {:.1} s", ready.as_secs_f64()))
}
