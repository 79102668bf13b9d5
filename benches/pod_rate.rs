//! What a user sees: pods created per second through a real API server, with the webhook
//! called and not called, in one run.
//!
//! `benches/pod_rate.sh` (`make bench-node`) brings up the one-node cluster, installs the
//! chart from the image and runs this with the node's `KUBECONFIG`; alone, this needs such a
//! cluster with the chart installed. In a namespace of its own, under a ServiceAccount with
//! a role annotation (IRSA, the chart's default mode), [`CLIENTS`] clients, each with its
//! own keep-alive connection, create pods as fast as the API server answers. Each round
//! creates a batch of pods the webhook is called for and a batch carrying the opt-out label
//! `eks.amazonaws.com/skip-pod-identity-webhook`, which the chart's objectSelector leaves
//! out (the API server does not call the webhook for them), in the order ABBA ABBA ..., so
//! drift and noise on the machine hit both. Every created pod, as the API server returns it,
//! must carry the mutation in the first mode and not in the second.
//!
//! The pods name a scheduler that does not exist, so they stay Pending and unbound: nothing
//! schedules or runs them, which would compete with the API server for the machine's cores,
//! and unbound pods are deleted at once. Admission, which is what the webhook changes, is
//! the same as for any pod. Each batch's pods are deleted before the next batch.
//!
//! `PIW_POD_RATE_PODS` (default 1000) pods per mode, in `PIW_POD_RATE_ROUNDS` (default 10)
//! rounds. Without `--bench` (as under `cargo test --benches`) nothing is measured.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NAMESPACE: &str = "pod-rate";
const SERVICE_ACCOUNT: &str = "api";
const ROLE: &str = "arn:aws:iam::111122223333:role/pod-rate";
const SKIP_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";
/// Concurrent clients, each with its own connection (a kube client keeps one HTTP/1.1
/// connection alive per request in flight, and each client has one in flight).
const CLIENTS: usize = 16;
/// Pods per mode created before measuring: connections, the webhook's, caches.
const WARM_UP: usize = 64;
/// One pod creation may take this long before the benchmark gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The whole measurement may take this long.
const DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("pod_rate: measured only under `cargo bench --bench pod_rate`");
        return;
    }
    // The kube client's TLS, with the provider the webhook itself uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(problem) = runtime.block_on(run()) {
        eprintln!("pod rate benchmark failed: {problem}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Called,
    Skipped,
}

impl Mode {
    fn describe(self) -> &'static str {
        match self {
            Mode::Called => "webhook called",
            Mode::Skipped => "webhook not called (opt-out label)",
        }
    }
}

/// What one mode added up to over its batches.
#[derive(Default)]
struct Totals {
    pods: usize,
    seconds: f64,
    batch_rates: Vec<f64>,
    /// Each creation's time to its answer, µs.
    latencies: Vec<u64>,
}

fn setting(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{name}={value:?}: want a positive whole number")),
        Err(_) => Ok(default),
    }
}

async fn run() -> Result<(), String> {
    let pods_per_mode = setting("PIW_POD_RATE_PODS", 1000)?;
    let rounds = setting("PIW_POD_RATE_ROUNDS", 10)?;
    let per_round = pods_per_mode.div_ceil(rounds);
    let config = kube::Config::infer()
        .await
        .map_err(|err| format!("no cluster to talk to (set KUBECONFIG): {err}"))?;
    let clients = (0..CLIENTS)
        .map(|_| Client::try_from(config.clone()).map_err(|err| err.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let client = clients[0].clone();

    prepare(&client).await?;
    wait_until_mutated(&client).await?;

    let started = Instant::now();
    let mut batch = 0;
    for mode in [Mode::Called, Mode::Skipped] {
        batch += 1;
        create_batch(&clients, mode, batch, WARM_UP).await?;
        delete_batch(&client, batch).await?;
    }
    let mut totals: BTreeMap<Mode, Totals> = BTreeMap::new();
    for round in 0..rounds {
        // ABBA ABBA ...: each mode goes first as often as second.
        let order = if round % 2 == 0 {
            [Mode::Called, Mode::Skipped]
        } else {
            [Mode::Skipped, Mode::Called]
        };
        for mode in order {
            if started.elapsed() > DEADLINE {
                return Err(format!(
                    "the run took longer than {} s; fewer pods (PIW_POD_RATE_PODS)?",
                    DEADLINE.as_secs()
                ));
            }
            batch += 1;
            let (seconds, mut latencies) = create_batch(&clients, mode, batch, per_round).await?;
            delete_batch(&client, batch).await?;
            let total = totals.entry(mode).or_default();
            total.pods += per_round;
            total.seconds += seconds;
            total.batch_rates.push(per_round as f64 / seconds);
            total.latencies.append(&mut latencies);
        }
    }

    println!(
        "\npods created per second through the API server: {} pods per mode in {rounds} rounds, \
         {CLIENTS} clients, modes alternating",
        per_round * rounds
    );
    println!("| mode | pods | seconds | pods/s | batches: min-max pods/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (mode, total) in &mut totals {
        total.latencies.sort_unstable();
        let (low, high) = total
            .batch_rates
            .iter()
            .fold((f64::MAX, 0.0f64), |(low, high), &rate| {
                (low.min(rate), high.max(rate))
            });
        println!(
            "| {} | {} | {:.2} | {:.0} | {low:.0}-{high:.0} | {:.1} | {:.1} |",
            mode.describe(),
            total.pods,
            total.seconds,
            total.pods as f64 / total.seconds,
            percentile(&total.latencies, 50.0) as f64 / 1000.0,
            percentile(&total.latencies, 99.0) as f64 / 1000.0,
        );
    }
    let rate = |mode| {
        totals
            .get(&mode)
            .map_or(0.0, |total: &Totals| total.pods as f64 / total.seconds)
    };
    println!(
        "ratio, called / not called: {:.1}%",
        100.0 * rate(Mode::Called) / rate(Mode::Skipped)
    );
    let _ = Api::<Namespace>::all(client)
        .delete(NAMESPACE, &DeleteParams::default())
        .await;
    Ok(())
}

/// The namespace and its annotated ServiceAccount (created again if left from a run).
async fn prepare(client: &Client) -> Result<(), String> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}
    }))
    .unwrap();
    // A namespace left by an earlier run may still be terminating.
    let started = Instant::now();
    loop {
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => break,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                if namespaces
                    .get(NAMESPACE)
                    .await
                    .is_ok_and(|ns| ns.metadata.deletion_timestamp.is_none())
                {
                    break;
                }
            }
            Err(err) => return Err(format!("creating namespace {NAMESPACE}: {err}")),
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "namespace {NAMESPACE} is still terminating after 60 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE);
    let account = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": SERVICE_ACCOUNT, "annotations": {"eks.amazonaws.com/role-arn": ROLE}}
    }))
    .unwrap();
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(format!("creating ServiceAccount {SERVICE_ACCOUNT}: {err}")),
    }
}

/// Waits until the webhook has the new ServiceAccount: a dry-run pod comes back mutated.
async fn wait_until_mutated(client: &Client) -> Result<(), String> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let started = Instant::now();
    loop {
        let outcome = pods.create(&dry_run, &pod(Mode::Called, 0)).await;
        if let Ok(pod) = &outcome {
            if role_of(pod).is_some() {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "a dry-run pod under {NAMESPACE}/{SERVICE_ACCOUNT} was not mutated within 60 s: {}",
                match outcome {
                    Ok(_) => "created without AWS_ROLE_ARN".to_string(),
                    Err(err) => err.to_string(),
                }
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates `count` pods of `mode` from every client at once; returns the seconds from the
/// first request to the last answer and each creation's time, µs. Every pod must come back
/// mutated when the webhook is called, and unmutated when it is not.
async fn create_batch(
    clients: &[Client],
    mode: Mode,
    batch: usize,
    count: usize,
) -> Result<(f64, Vec<u64>), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks = clients
        .iter()
        .map(|client| {
            let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return Ok::<_, String>(latencies);
                    }
                    let sent = Instant::now();
                    let created = tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        pods.create(&PostParams::default(), &pod(mode, batch)),
                    )
                    .await
                    .map_err(|_| {
                        format!("a pod creation took over {} s", REQUEST_TIMEOUT.as_secs())
                    })?
                    .map_err(|err| format!("creating a pod ({}): {err}", mode.describe()))?;
                    latencies.push(sent.elapsed().as_micros() as u64);
                    match (mode, role_of(&created)) {
                        (Mode::Called, Some(role)) if role == ROLE => {}
                        (Mode::Skipped, None) => {}
                        (_, role) => {
                            return Err(format!(
                                "pod {} ({}) has AWS_ROLE_ARN {role:?}",
                                created.metadata.name.unwrap_or_default(),
                                mode.describe()
                            ))
                        }
                    }
                }
            })
        })
        .collect::<Vec<_>>();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.append(&mut task.await.map_err(|err| err.to_string())??);
    }
    Ok((started.elapsed().as_secs_f64(), latencies))
}

/// Deletes one batch's pods (unbound, so they go at once) and waits until none is left.
async fn delete_batch(client: &Client, batch: usize) -> Result<(), String> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let selector = ListParams::default().labels(&format!("pod-rate/batch={batch}"));
    pods.delete_collection(&DeleteParams::default(), &selector)
        .await
        .map_err(|err| format!("deleting batch {batch}: {err}"))?;
    let started = Instant::now();
    loop {
        let left = pods
            .list(&selector)
            .await
            .map_err(|err| format!("listing batch {batch}: {err}"))?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "{left} pods of batch {batch} still there after 60 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
        .find_map(|env| {
            (env.name == "AWS_ROLE_ARN")
                .then(|| env.value.clone())
                .flatten()
        })
}

/// A Deployment's pod with an application container and a sidecar (the load benchmark's
/// small pod), unschedulable by name.
fn pod(mode: Mode, batch: usize) -> Pod {
    let mut labels = json!({"app": "api", "pod-rate/batch": batch.to_string()});
    if mode == Mode::Skipped {
        labels[SKIP_LABEL] = json!("true");
    }
    let container = |name: &str, env: usize| {
        let env: Vec<_> = (0..env)
            .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("v{i}")}))
            .collect();
        json!({
            "name": name,
            "image": format!("registry.example.com/payments/{name}:1.4.2"),
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": env,
            "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
        })
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "api-7d9f8c6b5-",
            "labels": labels,
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-02T10:11:12Z"}
        },
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            // No such scheduler: the pod stays Pending and unbound.
            "schedulerName": "pod-rate-unscheduled",
            "containers": [container("api", 3), container("proxy", 1)],
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
            "terminationGracePeriodSeconds": 30
        }
    }))
    .expect("a valid pod")
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], percent: f64) -> u64 {
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}
