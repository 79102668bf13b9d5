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
use super::{wait_two_replicas, ROLE_KEY};
use crate::support::process::run;
use crate::support::{eventually, promql, suite_gate};

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
/// (measured: docs/hardening.md).
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

fn role_name(account: usize, change: usize) -> String {
    format!(
        "arn:aws:iam::111122223333:role/{}-{change}",
        SERVICE_ACCOUNTS[account]
    )
}

/// The namespace (a new one: an earlier run's may still be terminating) and the
/// ServiceAccounts with their first roles, then waits until the webhook answers with them.
async fn prepare(client: &Client) -> Result<(), String> {
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}
    }))
    .expect("a valid namespace");
    let started = Instant::now();
    loop {
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => break,
            // Left by an earlier run: gone once its pods are.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
            }
            Err(e) => return Err(format!("creating namespace {NAMESPACE}: {e}")),
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "namespace {NAMESPACE} from an earlier run still there after 120 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE);
    for (account, name) in SERVICE_ACCOUNTS.iter().enumerate() {
        let object = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "annotations": {ROLE_KEY: role_name(account, 0)}}
        }))
        .expect("a valid ServiceAccount");
        accounts
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("creating ServiceAccount {name}: {e}"))?;
    }
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for account in 0..SERVICE_ACCOUNTS.len() {
        let want = role_name(account, 0);
        let started = Instant::now();
        loop {
            let answer = pods
                .create(&dry_run, &soak_pod(&format!("probe-{account}"), account, 0))
                .await;
            let seen = answer.as_ref().ok().and_then(role_of);
            if seen.as_deref() == Some(want.as_str()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "a dry-run pod under {} does not get {want} after 60 s: {:?}",
                    SERVICE_ACCOUNTS[account],
                    answer.map(|_| seen)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// A pod of `batch` under ServiceAccount `account`, which no scheduler takes.
fn soak_pod(name: &str, account: usize, batch: u64) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {BATCH_LABEL: batch.to_string()}},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNTS[account],
            // No such scheduler: the pod stays Pending and unbound.
            "schedulerName": "piw-soak-unscheduled",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "registry.example.com/soak/app:1"}]
        }
    }))
    .expect("a valid pod")
}

/// The AWS_ROLE_ARN the webhook put in the first container, if any.
fn role_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|env| env.name == "AWS_ROLE_ARN")?
        .value
        .clone()
}

/// One client: a pod every `CLIENTS / rate` seconds (its own offset), each retried until the
/// API server stored it; when a creation runs late the next starts at once, without bursts.
async fn create_pods(shared: Arc<Shared>, client: Client, index: usize) {
    let pods = Api::<Pod>::namespaced(client, NAMESPACE);
    let interval = Duration::from_secs_f64(CLIENTS as f64 / shared.settings.rate);
    let mut next = shared.clock.0 + interval.mul_f64(index as f64 / CLIENTS as f64);
    let mut sequence = 0usize;
    while !shared.stop_creating.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        let sent = shared.clock.now();
        let batch = (sent / BATCH_SECONDS) as u64;
        shared.in_progress[index].store(batch, Ordering::Relaxed);
        let name = format!("soak-{index}-{sequence}");
        let account = (index + sequence) % SERVICE_ACCOUNTS.len();
        let pod = soak_pod(&name, account, batch);
        match create_pod(&shared, &pods, &pod).await {
            Ok(()) => {
                let created = Created {
                    name,
                    account,
                    sent,
                    answered: shared.clock.now(),
                };
                locked(&shared.created)
                    .entry(batch)
                    .or_default()
                    .push(created);
            }
            Err(problem) => shared.fail(format!("pod {name} (sent at {sent:.1} s): {problem}")),
        }
        sequence += 1;
        next = (next + interval).max(Instant::now());
    }
    shared.in_progress[index].store(u64::MAX, Ordering::Relaxed);
}

/// Creates `pod`, trying again while the API server is away or overloaded; Err when it
/// refused the pod or did not take it within `POD_DEADLINE`.
async fn create_pod(shared: &Shared, pods: &Api<Pod>, pod: &Pod) -> Result<(), String> {
    let first = Instant::now();
    loop {
        let attempt =
            tokio::time::timeout(REQUEST_TIMEOUT, pods.create(&PostParams::default(), pod)).await;
        let last = match attempt {
            Ok(Ok(_)) => return Ok(()),
            // An earlier attempt was stored and its answer lost (the API server went away).
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => return Ok(()),
            // The API server shutting down or starting (429 with Retry-After, 5xx), unless
            // the webhook's call is what failed: with failurePolicy Ignore it never should.
            Ok(Err(kube::Error::Api(status)))
                if (status.code == 429 || status.code >= 500)
                    && !status.message.contains("webhook") =>
            {
                format!("{} {}", status.code, status.message)
            }
            Ok(Err(kube::Error::Api(status))) => {
                return Err(format!("refused: {} {}", status.code, status.message))
            }
            Ok(Err(other)) => other.to_string(),
            Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
        };
        shared.retried.fetch_add(1, Ordering::Relaxed);
        if first.elapsed() > POD_DEADLINE {
            return Err(format!("not created within {POD_DEADLINE:?}; last: {last}"));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Changes `account`'s role every `role_every` (the second account half a period later),
/// each change retried until the API server stored it.
async fn change_roles(shared: Arc<Shared>, account: usize) {
    let accounts = Api::<ServiceAccount>::namespaced(shared.client.clone(), NAMESPACE);
    let period = shared.settings.role_every.as_secs_f64();
    let offset = period * account as f64 / SERVICE_ACCOUNTS.len() as f64;
    for change in 1.. {
        let at = offset + change as f64 * period;
        if at >= shared.settings.load.as_secs_f64() || shared.stop_creating.load(Ordering::Relaxed)
        {
            return;
        }
        tokio::time::sleep_until(shared.clock.instant(at).into()).await;
        let role = role_name(account, change);
        let patch = json!({"metadata": {"annotations": {ROLE_KEY: role}}});
        let sent = shared.clock.now();
        let started = Instant::now();
        loop {
            let attempt = tokio::time::timeout(
                REQUEST_TIMEOUT,
                accounts.patch(
                    SERVICE_ACCOUNTS[account],
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ),
            )
            .await;
            if matches!(attempt, Ok(Ok(_))) {
                break;
            }
            if started.elapsed() > POD_DEADLINE {
                shared.fail(format!(
                    "the role change to {role} was not stored within {POD_DEADLINE:?}: {attempt:?}"
                ));
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let answered = shared.clock.now();
        locked(&shared.roles[account]).push(RoleChange {
            role,
            sent,
            answered,
        });
    }
}

/// Reads each batch back from the store once every client has moved past it, pairs every
/// stored pod with its creation, and deletes the batch; returns every pod so read.
async fn verify_batches(shared: Arc<Shared>) -> Vec<Stored> {
    let pods = Api::<Pod>::namespaced(shared.client.clone(), NAMESPACE);
    let mut stored = Vec::new();
    let mut batch = 0u64;
    loop {
        let oldest_in_progress = shared
            .in_progress
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        let last = locked(&shared.created).keys().next_back().copied();
        if batch < oldest_in_progress && last.is_some_and(|last| batch <= last) {
            let created = locked(&shared.created).remove(&batch).unwrap_or_default();
            match read_batch(&pods, batch, created).await {
                Ok(mut read) => stored.append(&mut read),
                Err(problem) => shared.fail(problem),
            }
            batch += 1;
            continue;
        }
        if oldest_in_progress == u64::MAX && last.is_none_or(|last| batch > last) {
            return stored;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn read_batch(
    pods: &Api<Pod>,
    batch: u64,
    created: Vec<Created>,
) -> Result<Vec<Stored>, String> {
    let selector = ListParams::default().labels(&format!("{BATCH_LABEL}={batch}"));
    let started = Instant::now();
    let list = loop {
        match pods.list(&selector).await {
            Ok(list) => break list,
            Err(e) if started.elapsed() > POD_DEADLINE => {
                return Err(format!("listing batch {batch}: {e}"))
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    };
    let mut by_name: BTreeMap<String, Pod> = list
        .items
        .into_iter()
        .filter_map(|pod| Some((pod.metadata.name.clone()?, pod)))
        .collect();
    let mut stored = Vec::with_capacity(created.len());
    let mut missing = Vec::new();
    for pod in created {
        match by_name.remove(&pod.name) {
            Some(object) => stored.push(Stored {
                role: role_of(&object),
                created: pod,
            }),
            None => missing.push(pod.name),
        }
    }
    let started = Instant::now();
    while let Err(e) = pods
        .delete_collection(&DeleteParams::default(), &selector)
        .await
    {
        if started.elapsed() > POD_DEADLINE {
            return Err(format!("deleting batch {batch}: {e}"));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    if !missing.is_empty() || !by_name.is_empty() {
        return Err(format!(
            "batch {batch}: created but not stored {missing:?}; stored but not created {:?}",
            by_name.keys().collect::<Vec<_>>()
        ));
    }
    Ok(stored)
}

/// Reads the API server's and the webhook's /metrics every `SCRAPE_EVERY` until told to stop.
async fn observe(shared: Arc<Shared>) {
    while !shared.stop_observing.load(Ordering::Relaxed) {
        scrape_fail_open(&shared).await;
        scrape_webhooks(&shared).await;
        let next = Instant::now() + SCRAPE_EVERY;
        while Instant::now() < next && !shared.stop_observing.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn get_text(client: &Client, path: &str) -> Result<String, String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(REQUEST_TIMEOUT, client.request_text(request))
        .await
        .map_err(|_| format!("GET {path}: no answer"))?
        .map_err(|e| format!("GET {path}: {e}"))
}

/// The API server's fail-open count for the webhook, recorded when it answers (not while it
/// restarts).
async fn scrape_fail_open(shared: &Shared) {
    let Ok(text) = get_text(&shared.client, "/metrics").await else {
        return;
    };
    let Ok(samples) = promql::samples(&text) else {
        return;
    };
    let count: f64 = samples
        .iter()
        .filter(|(series, _)| {
            series.metric == "apiserver_admission_webhook_fail_open_count"
                && series.labels.get("name").map(String::as_str) == Some(WEBHOOK_NAME)
        })
        .map(|(_, value)| value)
        .sum();
    let started = samples
        .iter()
        .find(|(series, _)| series.metric == "process_start_time_seconds")
        .map_or(0.0, |(_, value)| *value);
    locked(&shared.fail_open).push((shared.clock.now(), started, count));
}

/// The pid on the node of each running container task, by container id.
async fn task_pids(containerd: &str) -> BTreeMap<String, u32> {
    let containerd = containerd.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ctr")
            .args(["--address", &containerd, "-n", "k8s.io", "tasks", "ls"])
            .output()
    })
    .await;
    let Ok(Ok(out)) = out else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?.to_string();
            Some((id, fields.next()?.parse().ok()?))
        })
        .collect()
}

/// `RssAnon` of process `pid`, bytes.
fn anonymous_memory(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// Each running webhook process's memory and refusal counts, through the API server's proxy,
/// and its anonymous memory on the node.
async fn scrape_webhooks(shared: &Shared) {
    let pods = Api::<Pod>::namespaced(shared.client.clone(), RELEASE_NS);
    let selector = ListParams::default().labels("app.kubernetes.io/name=pod-identity-webhook");
    let Ok(list) = pods.list(&selector).await else {
        return;
    };
    let pids = task_pids(&shared.containerd).await;
    for pod in list.items {
        let Some(name) = pod.metadata.name else {
            continue;
        };
        let container = pod
            .status
            .as_ref()
            .and_then(|status| {
                status
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .container_id
                    .clone()
            })
            .unwrap_or_default();
        let pid = container
            .strip_prefix("containerd://")
            .and_then(|id| pids.get(id));
        let path = format!("/api/v1/namespaces/{RELEASE_NS}/pods/{name}:9999/proxy/metrics");
        let Ok(text) = get_text(&shared.client, &path).await else {
            continue;
        };
        let Ok(samples) = promql::samples(&text) else {
            continue;
        };
        let value = |metric: &str| {
            samples
                .iter()
                .find(|(series, _)| series.metric == metric)
                .map(|(_, value)| *value)
        };
        let (Some(rss), Some(process_start)) = (
            value("process_resident_memory_bytes"),
            value("process_start_time_seconds"),
        ) else {
            continue;
        };
        let rejected = samples
            .iter()
            .filter(|(series, _)| series.metric == "pod_identity_webhook_rejected_total")
            .filter_map(|(series, value)| Some((series.labels.get("reason")?.clone(), *value)))
            .collect();
        locked(&shared.webhook).push(WebhookSample {
            at: shared.clock.now(),
            pod: name,
            process_start,
            rss,
            anon: pid.and_then(|&pid| anonymous_memory(pid)),
            rejected,
        });
    }
}

fn log_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Runs the schedule: each disruption at its time (or when the one before has recovered,
/// if later), with the counts read just before it and at the end of its window.
fn disrupt(
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

/// The webhook's pods: (name, ready, terminating, restarts of its container, container id).
fn webhook_pods(node: &Node) -> Result<Vec<(String, bool, bool, u64, String)>, String> {
    let pods = node.get(&[
        "-n",
        RELEASE_NS,
        "pods",
        "-l",
        "app.kubernetes.io/name=pod-identity-webhook",
    ])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pod| {
            let status = &pod["status"]["containerStatuses"][0];
            (
                pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
                status["ready"] == true,
                pod["metadata"]["deletionTimestamp"].is_string(),
                status["restartCount"].as_u64().unwrap_or(0),
                status["containerID"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// Waits until the webhook runs as before a disruption: two ready pods, none terminating.
fn wait_recovered(node: &Node, what: &str) -> Result<(), String> {
    eventually(
        &format!("two ready webhook pods, none terminating, after {what}"),
        Duration::from_secs(180),
        POLL,
        || {
            let pods = webhook_pods(node)?;
            if pods.len() == 2 && pods.iter().all(|p| p.1 && !p.2) {
                Ok(())
            } else {
                Err(format!("{pods:?}"))
            }
        },
    )
}

fn rollout(node: &Node) -> Result<String, String> {
    run(node
        .kubectl()
        .args(["-n", RELEASE_NS, "rollout", "restart", "deployment"]))?;
    run(node.kubectl().args([
        "-n",
        RELEASE_NS,
        "rollout",
        "status",
        "deployment",
        "--timeout=180s",
    ]))?;
    wait_recovered(node, "a rollout")?;
    Ok("both replicas replaced".to_string())
}

/// The `turn`-th victim among the webhook's pods (by name), so the two take turns.
fn pick(node: &Node, turn: usize) -> Result<(String, u64, String), String> {
    let mut pods = webhook_pods(node)?;
    pods.sort();
    let (name, _, _, restarts, id) = pods
        .get(turn % pods.len().max(1))
        .cloned()
        .ok_or("no webhook pod to disrupt")?;
    Ok((name, restarts, id))
}

fn delete_pod(node: &Node, turn: usize) -> Result<String, String> {
    let (name, _, _) = pick(node, turn)?;
    run(node
        .kubectl()
        .args(["-n", RELEASE_NS, "delete", "pod", &name, "--wait=false"]))?;
    eventually(
        &format!("pod {name} gone"),
        Duration::from_secs(120),
        POLL,
        || {
            let pods = webhook_pods(node)?;
            if pods.iter().any(|p| p.0 == name) {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        },
    )?;
    wait_recovered(node, "a pod deletion")?;
    Ok(name)
}

fn kill_container(node: &Node, turn: usize) -> Result<String, String> {
    let (name, restarts, id) = pick(node, turn)?;
    let id = id
        .strip_prefix("containerd://")
        .ok_or_else(|| format!("pod {name} has no containerd container id: {id:?}"))?;
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
            match pods.iter().find(|p| p.0 == name) {
                Some(p) if p.3 > restarts && p.1 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )?;
    wait_recovered(node, "a container kill")?;
    Ok(name)
}

fn restart_apiserver(node: &Node) -> Result<String, String> {
    let started = Instant::now();
    run(Command::new(node::repo_root().join("hack/node.sh"))
        .args(["restart-apiserver", "--dir"])
        .arg(&node.env["NODE_DIR"]))?;
    let ready = started.elapsed();
    wait_recovered(node, "the API server's restart")?;
    Ok(format!("ready again after {:.1} s", ready.as_secs_f64()))
}

/// The API server's "failing open" log lines for the webhook, by reason.
struct FailOpenLog {
    /// (byte offset of the line, reason).
    lines: Vec<(u64, String)>,
}

impl FailOpenLog {
    fn read(log: &[u8], range: Range<u64>) -> Self {
        let mut lines = Vec::new();
        let mut offset = range.start;
        let start = (range.start as usize).min(log.len());
        let end = (range.end as usize).min(log.len());
        for line in log[start..end].split(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            if text.contains("failing open") && text.contains(WEBHOOK_NAME) {
                lines.push((offset, Self::reason(&text)));
            }
            offset += line.len() as u64 + 1;
        }
        FailOpenLog { lines }
    }

    /// The cause in a "Failed calling webhook, failing open" line, without addresses.
    fn reason(line: &str) -> String {
        for (needle, reason) in [
            ("connection refused", "connection refused"),
            ("connection reset", "connection reset"),
            ("no endpoints available", "no endpoints available"),
            ("context deadline exceeded", "timeout"),
            ("Client.Timeout", "timeout"),
            ("tls:", "TLS handshake"),
            ("EOF", "EOF"),
            ("not found", "Service or endpoints not found"),
        ] {
            if line.contains(needle) {
                return reason.to_string();
            }
        }
        let tail = line.rsplit(": ").next().unwrap_or(line);
        tail.chars().take(120).collect()
    }

    /// Reasons of the lines logged within `range`, counted.
    fn reasons(&self, range: &Range<u64>) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, reason) in self.lines.iter().filter(|(at, _)| range.contains(at)) {
            *counts.entry(reason.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// Where a role a pod carries stands in its ServiceAccount's history.
#[derive(Debug, PartialEq)]
enum RoleVerdict {
    /// The role the account had at some moment while the pod was being created.
    Current,
    /// The role before the last change, `lag` seconds after that change was stored.
    Previous { change: usize, lag: f64 },
    /// No role, an older one, or one never given.
    Wrong,
}

fn judge_role(history: &[RoleChange], pod: &Created, role: &str) -> RoleVerdict {
    let Some(index) = history.iter().position(|change| change.role == role) else {
        return RoleVerdict::Wrong;
    };
    // The role may be in effect from its change's request until the next change is stored.
    let from = if index == 0 {
        f64::NEG_INFINITY
    } else {
        history[index].sent
    };
    let until = history
        .get(index + 1)
        .map_or(f64::INFINITY, |next| next.answered);
    if from <= pod.answered && pod.sent <= until {
        return RoleVerdict::Current;
    }
    // Stale: only the role just before the last change stored before the pod was sent.
    let superseded_by = index + 1;
    let newer_stored_too = history
        .get(index + 2)
        .is_some_and(|after| after.answered < pod.sent);
    if pod.sent > until && !newer_stored_too {
        return RoleVerdict::Previous {
            change: superseded_by,
            lag: pod.sent - until,
        };
    }
    RoleVerdict::Wrong
}

/// Which disruption's window a moment or a span falls in ("steady" outside all).
fn window_of(windows: &[Window], from: f64, to: f64) -> Option<usize> {
    windows.iter().position(|w| w.overlaps(from, to))
}

/// Increases of a counter between consecutive samples (when, process start, value): from 0
/// when its process started again.
fn increases(samples: &[(f64, f64, f64)]) -> Vec<(f64, f64, f64)> {
    samples
        .windows(2)
        .map(|pair| {
            let ((t0, started0, v0), (t1, started1, v1)) = (pair[0], pair[1]);
            let restarted = started1 != started0 || v1 < v0;
            (t0, t1, if restarted { v1 } else { v1 - v0 })
        })
        .collect()
}

/// Least-squares slope of `points` (x, y), in y per x; None with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

const MIB: f64 = 1024.0 * 1024.0;

/// One webhook process's samples once warm: (seconds into the run, resident MiB, anonymous
/// MiB when read).
struct Process {
    pod: String,
    warm: Vec<(f64, f64, Option<f64>)>,
}

/// Per disruption window (and "steady" for the rest): what happened to admissions.
#[derive(Default, Clone)]
struct WindowCounts {
    pods: usize,
    without_identity: usize,
    fail_open: f64,
    reasons: BTreeMap<String, usize>,
}

/// The run's figures and verdicts.
struct Report {
    settings: Settings,
    load_seconds: f64,
    pods: usize,
    failures: Vec<String>,
    retried: usize,
    windows: Vec<Window>,
    /// Per window, then "steady" last.
    counts: Vec<WindowCounts>,
    fail_open_total: f64,
    fail_open_log_total: usize,
    wrong_roles: Vec<String>,
    current: usize,
    /// (ServiceAccount, change, stale pods, largest lag).
    stale: Vec<(usize, usize, usize, f64)>,
    role_changes: usize,
    /// Each webhook process's samples once warm.
    processes: Vec<Process>,
    /// Refusals summed over every webhook process (the largest count each reached).
    refusals: BTreeMap<String, f64>,
}

impl Report {
    fn new(
        settings: Settings,
        load_seconds: f64,
        stored: Vec<Stored>,
        windows: Vec<Window>,
        shared: &Shared,
        log: FailOpenLog,
    ) -> Self {
        let steady = windows.len();
        let mut counts = vec![WindowCounts::default(); steady + 1];
        let histories: Vec<Vec<RoleChange>> =
            shared.roles.iter().map(|r| locked(r).clone()).collect();
        let mut wrong_roles = Vec::new();
        let mut current = 0;
        let mut stale: BTreeMap<(usize, usize), (usize, f64)> = BTreeMap::new();
        for pod in &stored {
            let at = window_of(&windows, pod.created.sent, pod.created.answered).unwrap_or(steady);
            counts[at].pods += 1;
            let Some(role) = &pod.role else {
                counts[at].without_identity += 1;
                continue;
            };
            match judge_role(&histories[pod.created.account], &pod.created, role) {
                RoleVerdict::Current => current += 1,
                RoleVerdict::Previous { change, lag } => {
                    let entry = stale.entry((pod.created.account, change)).or_default();
                    entry.0 += 1;
                    entry.1 = entry.1.max(lag);
                }
                RoleVerdict::Wrong => wrong_roles.push(format!(
                    "{} (sent {:.2} s, answered {:.2} s) has {role}",
                    pod.created.name, pod.created.sent, pod.created.answered
                )),
            }
        }

        let mut fail_open = locked(&shared.fail_open).clone();
        fail_open.sort_by(|a, b| a.0.total_cmp(&b.0));
        // A scrape that found no count at all (the API server just started) is no sample.
        fail_open.retain(|sample| sample.1 > 0.0);
        let mut fail_open_total = 0.0;
        for (from, to, increase) in increases(&fail_open) {
            fail_open_total += increase;
            let at = windows
                .iter()
                .position(|w| from >= w.start && to <= w.end)
                .or_else(|| windows.iter().position(|w| w.start <= to && to <= w.end))
                .unwrap_or(steady);
            counts[at].fail_open += increase;
        }
        let mut outside = log.reasons(&(0..u64::MAX));
        for (at, window) in windows.iter().enumerate() {
            counts[at].reasons = log.reasons(&window.log);
            for (reason, n) in &counts[at].reasons {
                if let Some(left) = outside.get_mut(reason) {
                    *left -= n;
                }
            }
        }
        outside.retain(|_, n| *n > 0);
        counts[steady].reasons = outside;

        let samples = locked(&shared.webhook).clone();
        let wall_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
            - shared.clock.now();
        let mut by_process: BTreeMap<(String, u64), Vec<&WebhookSample>> = BTreeMap::new();
        for sample in &samples {
            by_process
                .entry((sample.pod.clone(), sample.process_start as u64))
                .or_default()
                .push(sample);
        }
        let mut refusals: BTreeMap<String, f64> = BTreeMap::new();
        let mut processes = Vec::new();
        for ((pod, _), samples) in &by_process {
            // What a process counted up to its last sample: each counter's largest value.
            let mut largest: BTreeMap<&str, f64> = BTreeMap::new();
            for sample in samples {
                for (reason, value) in &sample.rejected {
                    let entry = largest.entry(reason).or_insert(0.0);
                    *entry = entry.max(*value);
                }
            }
            for (reason, value) in largest {
                *refusals.entry(reason.to_string()).or_insert(0.0) += value;
            }
            let warm: Vec<(f64, f64, Option<f64>)> = samples
                .iter()
                .filter(|s| wall_start + s.at - s.process_start >= WARM_SECONDS)
                .map(|s| (s.at, s.rss / MIB, s.anon.map(|anon| anon / MIB)))
                .collect();
            if !warm.is_empty() {
                processes.push(Process {
                    pod: pod.clone(),
                    warm,
                });
            }
        }

        Report {
            settings,
            load_seconds,
            pods: stored.len(),
            failures: locked(&shared.failures).clone(),
            retried: shared.retried.load(Ordering::Relaxed),
            windows,
            counts,
            fail_open_total,
            fail_open_log_total: log.lines.len(),
            wrong_roles,
            current,
            stale: stale
                .into_iter()
                .map(|((account, change), (pods, lag))| (account, change, pods, lag))
                .collect(),
            role_changes: histories.iter().map(|h| h.len() - 1).sum(),
            processes,
            refusals,
        }
    }

    fn steady(&self) -> &WindowCounts {
        &self.counts[self.windows.len()]
    }

    /// (seconds into the run, MiB) of every warm sample: anonymous memory, else resident.
    fn memory(&self, anonymous: bool) -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = self
            .processes
            .iter()
            .flat_map(|p| &p.warm)
            .filter_map(|&(at, rss, anon)| Some((at, if anonymous { anon? } else { rss })))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    }

    /// The rise across the run of the least-squares line through the warm samples.
    fn memory_rise_mib(&self, anonymous: bool) -> Option<f64> {
        let points = self.memory(anonymous);
        let span = points.last()?.0 - points.first()?.0;
        slope(&points).map(|s| s * span)
    }

    fn largest_lag(&self) -> f64 {
        self.stale.iter().map(|s| s.3).fold(0.0, f64::max)
    }

    /// What makes the run fail; empty when it passed.
    fn problems(&self) -> Vec<String> {
        let mut problems = self.failures.clone();
        for (window, counts) in self.windows.iter().zip(&self.counts) {
            if window.kind == Disruption::ContainerKilled {
                continue;
            }
            if counts.without_identity > 0 || counts.fail_open > 0.0 {
                problems.push(format!(
                    "{} at {:.1} s: {} pods stored without an identity, {} admissions failed open",
                    window.kind.describe(),
                    window.start,
                    counts.without_identity,
                    counts.fail_open
                ));
            }
        }
        let steady = self.steady();
        if steady.without_identity > 0 || steady.fail_open > 0.0 {
            problems.push(format!(
                "between disruptions: {} pods stored without an identity, {} admissions failed open",
                steady.without_identity, steady.fail_open
            ));
        }
        let without: usize = self.counts.iter().map(|c| c.without_identity).sum();
        if (without as f64) > self.fail_open_total {
            problems.push(format!(
                "{without} pods stored without an identity, but the API server counted only {} \
                 admissions failing open",
                self.fail_open_total
            ));
        }
        if !self.wrong_roles.is_empty() {
            problems.push(format!(
                "{} pods carry a role their ServiceAccount did not have then nor just before: {:?}",
                self.wrong_roles.len(),
                &self.wrong_roles[..self.wrong_roles.len().min(10)]
            ));
        }
        if self.largest_lag() > PROPAGATION_BOUND {
            problems.push(format!(
                "a role change took {:.2} s to reach every pod, over the {PROPAGATION_BOUND} s bound",
                self.largest_lag()
            ));
        }
        match self.memory_rise_mib(true) {
            Some(rise) if rise > MEMORY_RISE_LIMIT_MIB => problems.push(format!(
                "the webhook's anonymous memory rose by {rise:.1} MiB across the run \
                 (limit {MEMORY_RISE_LIMIT_MIB} MiB)"
            )),
            Some(_) => {}
            None => problems.push("no memory samples of a warm webhook process".to_string()),
        }
        for (reason, count) in &self.refusals {
            if *count > 0.0 && !HARMLESS_REFUSALS.contains(&reason.as_str()) {
                problems.push(format!(
                    "the webhook refused the API server {count} times (reason=\"{reason}\")"
                ));
            }
        }
        if self.pods == 0 {
            problems.push("no pod was created".to_string());
        }
        problems
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "## Soak: {:.0} s of load, {} pods/s target over {CLIENTS} clients, a webhook \
             restart every {} s, roles changing every {} s",
            self.load_seconds,
            s.rate,
            s.restart_every.as_secs(),
            s.role_every.as_secs()
        )?;
        writeln!(
            f,
            "\npods created and checked in the store: {} ({:.1}/s); creation attempts retried \
             (API server away or slow): {}; failures: {}",
            self.pods,
            self.pods as f64 / self.load_seconds.max(1.0),
            self.retried,
            self.failures.len()
        )?;
        writeln!(
            f,
            "\n| disruption | at s | recovered after s | window s | pods | without identity | fail-open (API server) | logged reasons | detail |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---|---|")?;
        let rows = self
            .windows
            .iter()
            .map(|w| {
                (
                    w.kind.describe().to_string(),
                    format!("{:.1}", w.start),
                    format!("{:.1}", w.recovered - w.start),
                    format!("{:.1}", w.end - w.start),
                    w.detail.clone(),
                )
            })
            .chain(std::iter::once((
                "between disruptions".to_string(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            )));
        for (row, counts) in rows.zip(&self.counts) {
            let reasons: Vec<String> = counts
                .reasons
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.0,
                row.1,
                row.2,
                row.3,
                counts.pods,
                counts.without_identity,
                counts.fail_open,
                reasons.join(", "),
                row.4
            )?;
        }
        writeln!(
            f,
            "\nfail-open: {} counted by the API server, {} logged",
            self.fail_open_total, self.fail_open_log_total
        )?;
        let lags: Vec<String> = self
            .stale
            .iter()
            .map(|(account, change, pods, lag)| {
                format!(
                    "{}#{change}: {pods} pods, {lag:.2} s",
                    SERVICE_ACCOUNTS[*account]
                )
            })
            .collect();
        writeln!(
            f,
            "\nroles: {} changes; {} pods with the role of their creation, {} with the one \
             before (largest lag {:.2} s, bound {PROPAGATION_BOUND} s), {} wrong",
            self.role_changes,
            self.current,
            self.stale.iter().map(|s| s.2).sum::<usize>(),
            self.largest_lag(),
            self.wrong_roles.len()
        )?;
        if !lags.is_empty() {
            writeln!(f, "stale pods per change: {}", lags.join("; "))?;
        }
        writeln!(
            f,
            "\nwebhook memory, processes at least {WARM_SECONDS} s old (limit of the anonymous \
             trend: +{MEMORY_RISE_LIMIT_MIB} MiB):"
        )?;
        for (what, anonymous) in [("anonymous (RssAnon)", true), ("resident (RSS)", false)] {
            let mut values: Vec<f64> = self.memory(anonymous).iter().map(|m| m.1).collect();
            values.sort_by(f64::total_cmp);
            if let (Some(low), Some(high)) = (values.first(), values.last()) {
                writeln!(
                    f,
                    "  {what}: {} samples, {low:.1}–{high:.1} MiB, median {:.1} MiB; \
                     trend across the run {:+.2} MiB",
                    values.len(),
                    values[values.len() / 2],
                    self.memory_rise_mib(anonymous).unwrap_or(0.0)
                )?;
            }
        }
        for process in &self.processes {
            let (first, last) = (process.warm[0], process.warm[process.warm.len() - 1]);
            let anon = |sample: (f64, f64, Option<f64>)| {
                sample
                    .2
                    .map_or("?".to_string(), |anon| format!("{anon:.1}"))
            };
            writeln!(
                f,
                "  process in {} from {:.0} s to {:.0} s: anonymous {} → {} MiB, resident \
                 {:.1} → {:.1} MiB ({} samples)",
                process.pod,
                first.0,
                last.0,
                anon(first),
                anon(last),
                first.1,
                last.1,
                process.warm.len()
            )?;
        }
        let refusals: Vec<String> = self
            .refusals
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        writeln!(
            f,
            "\nwebhook refusals (all processes): {}",
            refusals.join(" ")
        )?;
        for failure in self.failures.iter().take(20) {
            writeln!(f, "failure: {failure}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(role: &str, sent: f64, answered: f64) -> RoleChange {
        RoleChange {
            role: role.into(),
            sent,
            answered,
        }
    }

    fn pod(sent: f64, answered: f64) -> Created {
        Created {
            name: "p".into(),
            account: 0,
            sent,
            answered,
        }
    }

    #[test]
    fn a_role_is_current_from_its_request_until_the_next_change_is_stored() {
        let history = [
            change("r0", 0.0, 0.0),
            change("r1", 10.0, 10.1),
            change("r2", 20.0, 20.1),
        ];
        assert_eq!(
            judge_role(&history, &pod(5.0, 5.1), "r0"),
            RoleVerdict::Current
        );
        // Sent before the change was stored: either role is right.
        assert_eq!(
            judge_role(&history, &pod(10.05, 10.2), "r0"),
            RoleVerdict::Current
        );
        assert_eq!(
            judge_role(&history, &pod(9.9, 10.05), "r1"),
            RoleVerdict::Current
        );
        // The role just before, after the change was stored: stale by the lag.
        match judge_role(&history, &pod(11.1, 11.2), "r0") {
            RoleVerdict::Previous { change: 1, lag } => assert!((lag - 1.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        // Two changes behind, a role from the future, one never given: wrong.
        assert_eq!(
            judge_role(&history, &pod(21.0, 21.1), "r0"),
            RoleVerdict::Wrong
        );
        assert_eq!(
            judge_role(&history, &pod(5.0, 5.1), "r2"),
            RoleVerdict::Wrong
        );
        assert_eq!(
            judge_role(&history, &pod(5.0, 5.1), "r9"),
            RoleVerdict::Wrong
        );
    }

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

    #[test]
    fn counter_increases_count_from_zero_after_a_restart() {
        let samples = [
            (0.0, 100.0, 2.0),
            (1.0, 100.0, 5.0),
            (2.0, 100.0, 1.0),
            (3.0, 100.0, 1.0),
            // Started again and already past the last value.
            (4.0, 200.0, 3.0),
        ];
        let total: f64 = increases(&samples).iter().map(|i| i.2).sum();
        assert_eq!(total, 7.0);
    }

    #[test]
    fn fail_open_log_lines_are_read_by_reason() {
        let log = format!(
            "I0101 other line\n\
             W0101 dispatcher.go:210] Failed calling webhook, failing open {WEBHOOK_NAME}: failed calling webhook \"{WEBHOOK_NAME}\": failed to call webhook: Post \"https://x.svc:443/mutate?timeout=10s\": dial tcp 10.244.0.9:8443: connect: connection refused\n\
             W0101 dispatcher.go:210] Failed calling webhook, failing open {WEBHOOK_NAME}: failed calling webhook \"{WEBHOOK_NAME}\": failed to call webhook: Post \"https://x.svc:443/mutate?timeout=10s\": read tcp 10.244.0.1:5->10.244.0.9:8443: read: connection reset by peer\n"
        );
        let read = FailOpenLog::read(log.as_bytes(), 0..log.len() as u64);
        let all = read.reasons(&(0..log.len() as u64));
        assert_eq!(all["connection refused"], 1);
        assert_eq!(all["connection reset"], 1);
        assert!(read.reasons(&(0..10)).is_empty());
    }
}
