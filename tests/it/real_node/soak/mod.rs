//! The soak: pods created without pause through the node's API server while the webhook's pods
//! are restarted (a rollout, a pod deleted, its container killed with SIGKILL, in turn), the
//! ServiceAccounts change role and the API server restarts once; then every stored pod is
//! checked, and what the API server and the webhook counted meanwhile is reported.
//!
//! `make soak` runs 10 minutes (a webhook restart every minute, each ServiceAccount's role
//! changing every 30 s); under `make test` the same runs on a short schedule. The settings,
//! the bounds and the figures of a run are in docs/hardening.md ("The soak").
//!
//! Pods name a scheduler that does not exist: they stay Pending and unbound, so admission is
//! all that happens to them and deleting them is immediate. They carry deterministic names,
//! so a creation whose answer was lost (the API server went away) is retried and answered
//! `AlreadyExists`, and every stored pod is one a client knows. Each batch of pods (by the
//! time of their creation) is read back from the store once every client has moved past it,
//! checked, and deleted: the store holds a few batches at most.

mod disrupt;
mod load;
mod observe;
mod report;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::node::{self, Node, POLL, RELEASE_NS};
use super::{wait_two_replicas, webhook_pods, WebhookPod, ROLE_KEY};
use crate::support::process::run;
use crate::support::{eventually, promql, suite_gate};
use disrupt::disrupt;
use load::{change_roles, create_pods, prepare, role_name, verify_batches};
use observe::{observe, scrape_fail_open, scrape_webhooks};
use report::{FailOpenLog, Report};

const NAMESPACE: &str = "soak";
/// ServiceAccounts the pods alternate between; their roles change half a period apart.
const SERVICE_ACCOUNTS: [&str; 2] = ["soak-a", "soak-b"];
/// Clients creating pods, each with its own connections and one creation in flight.
const CLIENTS: usize = 5;
/// Pods are read back and deleted in batches of this many seconds of creation.
const BATCH_SECONDS: f64 = 10.0;
const BATCH_LABEL: &str = "piw-soak/batch";
/// One creation attempt may take this long; a pod not created within `POD_DEADLINE` of its
/// first attempt (the API server gone that long) is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const POD_DEADLINE: Duration = Duration::from_secs(90);
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often the webhook's and the API server's /metrics are read between disruptions.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// After a disruption has recovered (both replicas ready, none terminating), how long its
/// window goes on: what a recovery leaves behind (a draining replica, a watch reconnecting)
/// is counted in the window.
const SETTLE: Duration = Duration::from_secs(3);
/// The webhook's name in the chart's MutatingWebhookConfiguration (webhook.name), the label
/// the API server counts its calls under.
const WEBHOOK_NAME: &str = "pod-identity-webhook.amazonaws.com";
/// A pod may carry the role its ServiceAccount had before the last change for this long
/// after the change was stored: the time the change takes to reach both replicas' caches
/// (measured: docs/hardening.md). A change stored during an API server restart may wait
/// longer, for the watch's next attempt ([`propagation_bound`]).
const PROPAGATION_BOUND: f64 = 5.0;
/// A sample of the webhook's memory counts toward the trend once its process is this old
/// (caches filled, connections up).
const WARM_SECONDS: f64 = 15.0;
/// The largest rise of the webhook's resident memory across the run (the least-squares line
/// through every warm sample) that still counts as no upward trend.
const MEMORY_RISE_LIMIT_MIB: f64 = 4.0;
/// Refusals of the webhook that turn nobody away: a keep-alive connection closed after
/// `--idle-timeout` without a request (the client opens another when it has one).
const HARMLESS_REFUSALS: [&str; 1] = ["idle"];

/// The run's settings, from the environment.
#[derive(Clone, Debug)]
struct Settings {
    /// How long pods are created (longer when the last disruption runs late).
    load: Duration,
    /// A webhook restart this often, the kinds in turn.
    restart_every: Duration,
    /// Each ServiceAccount's role changes this often.
    role_every: Duration,
    /// Pods created per second, all clients together.
    rate: f64,
}

impl Settings {
    /// `PIW_SOAK_SECONDS` (default 70), `PIW_SOAK_RESTART_EVERY` (20), `PIW_SOAK_ROLE_EVERY`
    /// (10), `PIW_SOAK_RATE` (20): the short schedule `make test` runs.
    fn from_env() -> Result<Self, String> {
        let number = |name: &str, default: u64, range: Range<u64>| -> Result<u64, String> {
            let value = match std::env::var(name) {
                Ok(text) => text.trim().parse().map_err(|_| {
                    format!("{name}={text:?}: want a whole number of seconds or pods per second")
                })?,
                Err(_) => default,
            };
            if range.contains(&value) {
                Ok(value)
            } else {
                Err(format!(
                    "{name}={value}: want {} to {}",
                    range.start,
                    range.end - 1
                ))
            }
        };
        let settings = Settings {
            load: Duration::from_secs(number("PIW_SOAK_SECONDS", 70, 30..86_401)?),
            restart_every: Duration::from_secs(number("PIW_SOAK_RESTART_EVERY", 20, 15..3601)?),
            role_every: Duration::from_secs(number("PIW_SOAK_ROLE_EVERY", 10, 4..3601)?),
            rate: number("PIW_SOAK_RATE", 20, 1..201)? as f64,
        };
        if settings.load < 3 * settings.restart_every {
            return Err(format!(
                "PIW_SOAK_SECONDS={} is too short for each kind of webhook restart once: \
                 want at least 3 × PIW_SOAK_RESTART_EVERY ({} s)",
                settings.load.as_secs(),
                3 * settings.restart_every.as_secs()
            ));
        }
        Ok(settings)
    }

    /// The disruptions and when they start (seconds into the run): a webhook restart every
    /// `restart_every` from half a period in, the kinds in turn, and the API server's restart
    /// halfway between two of them near the middle.
    fn schedule(&self) -> Vec<(f64, Disruption)> {
        let period = self.restart_every.as_secs_f64();
        let kinds = [
            Disruption::Rollout,
            Disruption::PodDeleted,
            Disruption::ContainerKilled,
        ];
        let mut schedule: Vec<(f64, Disruption)> = (0..)
            .map(|k| period / 2.0 + k as f64 * period)
            .take_while(|&at| at <= self.load.as_secs_f64() - period / 2.0)
            .zip(kinds.into_iter().cycle())
            .collect();
        let middle = (schedule.len() / 2) as f64 * period;
        schedule.push((middle, Disruption::ApiServerRestart));
        schedule.sort_by(|a, b| a.0.total_cmp(&b.0));
        schedule
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Disruption {
    /// `kubectl rollout restart`: both replicas replaced, one at a time.
    Rollout,
    /// One webhook pod deleted (graceful: SIGTERM); its ReplicaSet makes another.
    PodDeleted,
    /// One webhook container's process killed with SIGKILL; the kubelet restarts it.
    ContainerKilled,
    /// kube-apiserver stopped (SIGTERM) and started again.
    ApiServerRestart,
}

impl Disruption {
    fn describe(self) -> &'static str {
        match self {
            Disruption::Rollout => "rollout",
            Disruption::PodDeleted => "pod deleted",
            Disruption::ContainerKilled => "container SIGKILLed",
            Disruption::ApiServerRestart => "API server restart",
        }
    }
}

/// Seconds since the load started.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> f64 {
        self.at(Instant::now())
    }

    fn at(self, instant: Instant) -> f64 {
        instant.saturating_duration_since(self.0).as_secs_f64()
    }

    fn instant(self, seconds: f64) -> Instant {
        self.0 + Duration::from_secs_f64(seconds.max(0.0))
    }
}

/// A pod a client created: when it was first sent and when the API server said it stored it.
#[derive(Clone, Debug)]
struct Created {
    name: String,
    account: usize,
    sent: f64,
    answered: f64,
}

/// A created pod as the store holds it: the role its first container carries, if any.
#[derive(Clone, Debug)]
struct Stored {
    created: Created,
    role: Option<String>,
}

/// A role given to a ServiceAccount: first sent, and stored (the answer came).
#[derive(Clone, Debug)]
struct RoleChange {
    role: String,
    sent: f64,
    answered: f64,
}

/// One disruption as it happened: from just before the action to `SETTLE` after recovery,
/// with the API server log written meanwhile (byte offsets).
#[derive(Clone, Debug)]
struct Window {
    kind: Disruption,
    start: f64,
    recovered: f64,
    end: f64,
    log: Range<u64>,
    detail: String,
}

impl Window {
    fn overlaps(&self, from: f64, to: f64) -> bool {
        from <= self.end && to >= self.start
    }
}

/// One read of a webhook process's /metrics.
#[derive(Clone, Debug)]
struct WebhookSample {
    at: f64,
    pod: String,
    /// process_start_time_seconds: tells a restarted container's process from the last.
    process_start: f64,
    rss: f64,
    /// RssAnon of the process (its heap: what a leak grows), read on the node.
    anon: Option<f64>,
    rejected: BTreeMap<String, f64>,
}

/// What the clients, the role changers and the observers share.
struct Shared {
    clock: Clock,
    settings: Settings,
    client: Client,
    /// The node's containerd socket: the webhook processes' pids.
    containerd: String,
    stop_creating: AtomicBool,
    stop_observing: AtomicBool,
    /// The batch each client is creating a pod of; `u64::MAX` once it stopped.
    in_progress: Vec<AtomicU64>,
    created: Mutex<BTreeMap<u64, Vec<Created>>>,
    failures: Mutex<Vec<String>>,
    /// Creation attempts that found no API server (it was restarting) or no answer in time.
    retried: AtomicUsize,
    roles: Vec<Mutex<Vec<RoleChange>>>,
    /// The API server's fail-open count for the webhook: (when, its process's start, value).
    fail_open: Mutex<Vec<(f64, f64, f64)>>,
    webhook: Mutex<Vec<WebhookSample>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn fail(&self, problem: String) {
        locked(&self.failures).push(problem);
    }
}

#[test]
fn soak_every_pod_keeps_its_identity_through_webhook_restarts_role_changes_and_an_api_server_restart(
) {
    let _gate = suite_gate::enter("real_node");
    let test = "soak_every_pod_keeps_its_identity_through_webhook_restarts_role_changes_and_an_api_server_restart";
    let Some(node) = node::node(test) else {
        return;
    };
    let settings = Settings::from_env().unwrap_or_else(|e| panic!("{e}"));
    // Restarts and an API server restart: nobody else's test may run meanwhile.
    let _exclusive = node.exclusive_with_chart();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = run_soak(node, &settings, &runtime);
    let _ = run(node
        .kubectl()
        .args(["delete", "namespace", NAMESPACE, "--wait=false"]));
    let report = outcome.unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(NAMESPACE)));
    let text = report.to_string();
    let path = node.artifacts.join("soak-report.md");
    let _ = std::fs::write(&path, &text);
    // Straight to stderr: libtest's capture would hide it when the test passes.
    eprintln!("{text}\n(also in {})", path.display());
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "the soak failed:\n- {}\n\n{text}",
        problems.join("\n- ")
    );
    wait_two_replicas(node);
}

fn run_soak(
    node: &'static Node,
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
) -> Result<Report, String> {
    let client = runtime.block_on(client_for(node))?;
    runtime.block_on(prepare(&client))?;
    let apiserver_log =
        PathBuf::from(&node.env["NODE_DIR"]).join("control-plane/kube-apiserver.log");
    let log_start = log_size(&apiserver_log);
    let shared = Arc::new(Shared {
        clock: Clock(Instant::now()),
        settings: settings.clone(),
        client: client.clone(),
        containerd: node.env["CONTAINERD_ADDRESS"].clone(),
        stop_creating: AtomicBool::new(false),
        stop_observing: AtomicBool::new(false),
        in_progress: (0..CLIENTS).map(|_| AtomicU64::new(0)).collect(),
        created: Mutex::new(BTreeMap::new()),
        failures: Mutex::new(Vec::new()),
        retried: AtomicUsize::new(0),
        roles: SERVICE_ACCOUNTS
            .iter()
            .enumerate()
            .map(|(account, _)| {
                Mutex::new(vec![RoleChange {
                    role: role_name(account, 0),
                    sent: 0.0,
                    answered: 0.0,
                }])
            })
            .collect(),
        fail_open: Mutex::new(Vec::new()),
        webhook: Mutex::new(Vec::new()),
    });

    let mut clients = Vec::new();
    for index in 0..CLIENTS {
        // A client of its own: its own connections, as separate controllers would have.
        let client = runtime.block_on(client_for(node))?;
        clients.push(runtime.spawn(create_pods(shared.clone(), client, index)));
    }
    let role_changers: Vec<_> = (0..SERVICE_ACCOUNTS.len())
        .map(|account| runtime.spawn(change_roles(shared.clone(), account)))
        .collect();
    let verifier = runtime.spawn(verify_batches(shared.clone()));
    let observer = runtime.spawn(observe(shared.clone()));

    let orchestrator = {
        let shared = shared.clone();
        let handle = runtime.handle().clone();
        let log = apiserver_log.clone();
        std::thread::spawn(move || disrupt(node, &shared, &handle, &log))
    };
    std::thread::sleep(settings.load);
    let windows = orchestrator.join();
    shared.stop_creating.store(true, Ordering::Relaxed);
    let load_seconds = shared.clock.now();
    let windows = windows.map_err(|_| "the disruptions' thread panicked".to_string())??;
    for task in clients.into_iter().chain(role_changers) {
        runtime
            .block_on(task)
            .map_err(|e| format!("a client task failed: {e}"))?;
    }
    let stored = runtime
        .block_on(verifier)
        .map_err(|e| format!("the verifier failed: {e}"))?;
    shared.stop_observing.store(true, Ordering::Relaxed);
    runtime
        .block_on(observer)
        .map_err(|e| format!("the observer failed: {e}"))?;
    // The last count, after every pod was created.
    runtime.block_on(scrape_fail_open(&shared));

    let log = std::fs::read(&apiserver_log).unwrap_or_default();
    let log_end = log.len() as u64;
    Ok(Report::new(
        settings.clone(),
        load_seconds,
        stored,
        windows,
        &shared,
        FailOpenLog::read(&log, log_start..log_end),
    ))
}

/// A kube client for the node's API server, with bounded timeouts.
async fn client_for(node: &Node) -> Result<Client, String> {
    let path = PathBuf::from(&node.env["KUBECONFIG"]);
    let mut config = pod_identity_webhook::commands::cluster::config_from_kubeconfig(&path).await?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    Client::try_from(config).map_err(|e| e.to_string())
}

/// How long the API server's log is: where what it logs next begins.
fn log_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_each_kind_of_restart_and_one_api_server_restart_between_two() {
        let settings = |load, every| Settings {
            load: Duration::from_secs(load),
            restart_every: Duration::from_secs(every),
            role_every: Duration::from_secs(30),
            rate: 20.0,
        };
        let long = settings(600, 60).schedule();
        assert_eq!(long.len(), 11, "{long:?}");
        assert_eq!(long[0], (30.0, Disruption::Rollout));
        assert!(
            long.contains(&(300.0, Disruption::ApiServerRestart)),
            "{long:?}"
        );
        assert_eq!(long.last(), Some(&(570.0, Disruption::Rollout)));
        let short = settings(70, 20).schedule();
        assert_eq!(
            short,
            [
                (10.0, Disruption::Rollout),
                (20.0, Disruption::ApiServerRestart),
                (30.0, Disruption::PodDeleted),
                (50.0, Disruption::ContainerKilled),
            ]
        );
    }
}
