//! The webhook's memory against a real API server: idle, and with 100,000 annotated
//! ServiceAccounts cached (steady state, the peak while the initial list is read, and the
//! time until `/readyz` answers), and the peak of a relist after the watch expired (`410 Gone`,
//! forced by restarting the API server once writes have moved its resource version on).
//!
//! `cargo bench --bench cache_scale` runs the release binary `target/release/pod-identity-webhook`
//! (build it first; `PIW_WEBHOOK_BINARY=path` measures another build) against a local etcd +
//! kube-apiserver from `hack/control-plane.sh` (install it with `hack/install-control-plane.sh`).
//! It starts its own control plane and stops it at the end; `PIW_CONTROL_PLANE_DIR=DIR` uses
//! one already up (`hack/control-plane.sh up --dir DIR`) and leaves it up, so a second run
//! skips creating the ServiceAccounts. `PIW_CACHE_SCALE_SERVICE_ACCOUNTS=N` changes the count
//! (default 100,000, in 1,000 namespaces). The whole run is bounded: creating the
//! ServiceAccounts (about 140 s on 2 cores) must finish within 10 minutes, and each webhook
//! run takes 10 s after it is ready, and at most 60 s before; the relist at most 60 s from
//! the API server's restart until the watch reconnects, then 10 s.
//!
//! The webhook's RSS is read from `/proc/PID/status` every 10 ms from its start (and `VmHWM`,
//! the kernel's own high-water mark, catches peaks between samples). The environment passes
//! through to the webhook, so allocator (`MIMALLOC_*`) and runtime (`TOKIO_WORKER_THREADS`)
//! settings can be compared with the same run. Without `--bench` (as under
//! `cargo test --benches`) nothing is run.

mod common;
#[path = "common/control_plane.rs"]
mod control_plane;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::Api;

use common::{certificate, free_port, http_get, metric, Guard};
use control_plane::ControlPlane;

const DEFAULT_SERVICE_ACCOUNTS: usize = 100_000;
const NAMESPACES: usize = 1_000;
const LABEL: &str = "piw-bench";
/// Requests in flight while creating: enough to keep the API server and etcd busy on 2 cores.
const CREATE_CONCURRENCY: usize = 64;
const CREATE_DEADLINE: Duration = Duration::from_secs(600);
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long the webhook runs after it is ready before its steady RSS is read: long enough
/// for the allocator to return what the initial list freed.
const SETTLE: Duration = Duration::from_secs(10);
/// How long the webhook may take to see its watch expire and list again after the API server
/// restarts.
const RELIST_DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("cache_scale: measured only under `cargo bench --bench cache_scale`");
        return;
    }
    if let Err(problem) = run() {
        eprintln!("cache_scale benchmark failed: {problem}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = common::webhook_binary(root)?;
    let wanted = match std::env::var("PIW_CACHE_SCALE_SERVICE_ACCOUNTS") {
        Ok(value) => value.parse::<usize>().map_err(|err| {
            format!("PIW_CACHE_SCALE_SERVICE_ACCOUNTS={value:?} is not a count: {err}")
        })?,
        Err(_) => DEFAULT_SERVICE_ACCOUNTS,
    };
    let control_plane = ControlPlane::start(root, "cache-scale")?;
    let dir = tempfile::tempdir().map_err(|err| format!("cannot make a temp dir: {err}"))?;
    let (cert, key) = certificate(dir.path());
    let webhook = |log: &str| Webhook {
        binary: &binary,
        kubeconfig: &control_plane.kubeconfig,
        cert: &cert,
        key: &key,
        log: dir.path().join(log),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start a runtime: {err}"))?;
    let client = runtime.block_on(client(&control_plane.kubeconfig))?;
    let existing = runtime.block_on(existing_service_accounts(&client))?;

    println!("binary: {}", binary.display());
    if existing.is_empty() {
        let idle = webhook("idle.log").measure(0)?.1;
        println!(
            "idle (no ServiceAccounts): ready in {:.2} s; RSS {:.1} MiB steady, peak {:.1} MiB (VmHWM {:.1} MiB)",
            idle.ready.as_secs_f64(),
            mib(idle.steady),
            mib(idle.peak_sampled),
            mib(idle.high_water),
        );
    } else {
        println!(
            "idle: not measured, the control plane already holds {} benchmark ServiceAccounts",
            existing.len()
        );
    }
    if wanted == 0 {
        return Ok(());
    }

    let started = Instant::now();
    let created = runtime.block_on(create_service_accounts(&client, wanted, &existing))?;
    println!(
        "created {created} ServiceAccounts in {:.0} s ({} were already there)",
        started.elapsed().as_secs_f64(),
        wanted - created
    );

    let (mut running, loaded) = webhook("loaded.log").measure(wanted)?;
    println!(
        "{wanted} annotated ServiceAccounts: ready in {:.2} s; RSS {:.1} MiB steady, peak {:.1} MiB \
         sampled (VmHWM {:.1} MiB), peak/steady {:.0}%",
        loaded.ready.as_secs_f64(),
        mib(loaded.steady),
        mib(loaded.peak_sampled),
        mib(loaded.high_water),
        100.0 * loaded.high_water.max(loaded.peak_sampled) as f64 / loaded.steady as f64,
    );

    runtime.block_on(move_resource_version_on(&client))?;
    let relist = running.relist(&control_plane)?;
    println!(
        "relist after 410 Gone: the watch reconnected {:.1} s after the API server's restart \
         began; peak {:.1} MiB sampled (VmHWM {:.1} MiB), {:.0}% of the steady state before; \
         RSS {:.1} MiB {} s after it reconnected",
        relist.ready.as_secs_f64(),
        mib(relist.peak_sampled),
        mib(relist.high_water),
        100.0 * relist.high_water.max(relist.peak_sampled) as f64 / loaded.steady as f64,
        mib(relist.steady),
        SETTLE.as_secs(),
    );
    Ok(())
}

/// Writes that move the API server's resource version past the last one the webhook saw, so
/// that a watch cache started afresh no longer holds it.
async fn move_resource_version_on(client: &kube::Client) -> Result<(), String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let name = "piw-bench-resource-version";
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &map).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => return Err(format!("cannot create ConfigMap default/{name}: {err}")),
    }
    for step in 0..20 {
        let patch = serde_json::json!({ "data": { "step": step.to_string() } });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|err| format!("cannot update ConfigMap default/{name}: {err}"))?;
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn client(kubeconfig: &Path) -> Result<kube::Client, String> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|err| format!("{}: {err}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|err| format!("{}: {err}", kubeconfig.display()))?;
    kube::Client::try_from(config).map_err(|err| format!("cannot build a client: {err}"))
}

fn namespace_of(index: usize) -> String {
    format!("scale-{:04}", index % NAMESPACES)
}

fn name_of(index: usize) -> String {
    format!("workload-{index:06}")
}

/// `namespace/name` of every benchmark ServiceAccount already stored.
async fn existing_service_accounts(client: &kube::Client) -> Result<HashSet<String>, String> {
    let api: Api<ServiceAccount> = Api::all(client.clone());
    let mut params = ListParams::default().labels(LABEL).limit(5_000);
    let mut found = HashSet::new();
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(|err| format!("cannot list ServiceAccounts: {err}"))?;
        for item in &page.items {
            if let (Some(namespace), Some(name)) = (&item.metadata.namespace, &item.metadata.name) {
                found.insert(format!("{namespace}/{name}"));
            }
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(found),
        }
    }
}

/// Creates the missing ServiceAccounts, `CREATE_CONCURRENCY` requests at a time, each with the
/// role and token-expiration annotations and one unrelated annotation the cache drops.
async fn create_service_accounts(
    client: &kube::Client,
    wanted: usize,
    existing: &HashSet<String>,
) -> Result<usize, String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(0..NAMESPACES.min(wanted))
        .map(|index| {
            let namespaces = namespaces.clone();
            async move {
                let namespace = Namespace {
                    metadata: ObjectMeta {
                        name: Some(namespace_of(index)),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match namespaces.create(&PostParams::default(), &namespace).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    Err(err) => Err(format!(
                        "cannot create namespace {}: {err}",
                        namespace_of(index)
                    )),
                }
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;

    let missing: Vec<usize> = (0..wanted)
        .filter(|&index| !existing.contains(&format!("{}/{}", namespace_of(index), name_of(index))))
        .collect();
    let count = missing.len();
    let creating = futures::stream::iter(missing)
        .map(|index| {
            let client = client.clone();
            async move {
                let namespace = namespace_of(index);
                let name = name_of(index);
                let api: Api<ServiceAccount> = Api::namespaced(client, &namespace);
                let service_account = ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(BTreeMap::from([(LABEL.to_string(), "true".to_string())])),
                        annotations: Some(BTreeMap::from([
                            (
                                "eks.amazonaws.com/role-arn".to_string(),
                                format!("arn:aws:iam::111122223333:role/{namespace}-{name}"),
                            ),
                            (
                                "eks.amazonaws.com/token-expiration".to_string(),
                                "86400".to_string(),
                            ),
                            ("team.example.com/owner".to_string(), namespace.clone()),
                        ])),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &service_account).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    Err(err) => Err(format!("cannot create {namespace}/{name}: {err}")),
                }
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>();
    tokio::time::timeout(CREATE_DEADLINE, creating)
        .await
        .map_err(|_| {
            format!(
                "creating {count} ServiceAccounts took over {} s; \
                 rerun with PIW_CONTROL_PLANE_DIR to keep the ones already made",
                CREATE_DEADLINE.as_secs()
            )
        })??;
    Ok(count)
}

struct Webhook<'a> {
    binary: &'a Path,
    kubeconfig: &'a Path,
    cert: &'a Path,
    key: &'a Path,
    log: PathBuf,
}

/// A webhook started by [`Webhook::measure`], still running.
struct Running {
    child: Guard,
    log: PathBuf,
}

struct Footprint {
    /// Until `/readyz` answered; for a relist, until the watch reconnected after the restart.
    ready: Duration,
    /// Highest RSS sampled from start until the end of the settling time.
    peak_sampled: u64,
    /// The kernel's high-water mark of RSS over the whole run.
    high_water: u64,
    /// RSS at the end of the settling time.
    steady: u64,
}

impl Footprint {
    /// The webhook's memory now, beside the time and the peak its caller measured.
    fn read(child: &mut Guard, log: &Path, ready: Duration, peak: u64) -> Result<Self, String> {
        Ok(Self {
            ready,
            peak_sampled: peak,
            high_water: status_kib(child, log, "VmHWM:")? * 1024,
            steady: status_kib(child, log, "VmRSS:")? * 1024,
        })
    }
}

impl Webhook<'_> {
    /// Starts the webhook, waits until it is ready and has cached at least `service_accounts`,
    /// lets it settle, and reads its memory.
    fn measure(&self, service_accounts: usize) -> Result<(Running, Footprint), String> {
        let (port, metrics_port) = (free_port(), free_port());
        let log = std::fs::File::create(&self.log).map_err(|err| err.to_string())?;
        let started = Instant::now();
        let mut child = Guard(
            Command::new(self.binary)
                .arg(format!("--port={port}"))
                .arg(format!("--metrics-port={metrics_port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--tls-cert={}", self.cert.display()))
                .arg(format!("--tls-key={}", self.key.display()))
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|err| format!("cannot start {}: {err}", self.binary.display()))?,
        );
        let mut peak = 0;
        let mut last_poll = Instant::now();
        let ready = loop {
            peak = peak.max(status_kib(&mut child, &self.log, "VmRSS:")? * 1024);
            if last_poll.elapsed() >= Duration::from_millis(50) {
                last_poll = Instant::now();
                if http_get(metrics_port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
                {
                    break started.elapsed();
                }
            }
            if started.elapsed() > READY_DEADLINE {
                return Err(format!(
                    "the webhook was not ready within {} s; the end of its log:\n{}",
                    READY_DEADLINE.as_secs(),
                    log_tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let cached = http_get(metrics_port, "/metrics")
            .and_then(|text| metric(&text, "pod_identity_webhook_cache_service_accounts"))
            .unwrap_or(0.0) as usize;
        if cached < service_accounts {
            return Err(format!(
                "ready with {cached} ServiceAccounts cached, expected at least {service_accounts}"
            ));
        }
        let settled = Instant::now() + SETTLE;
        while Instant::now() < settled {
            peak = peak.max(status_kib(&mut child, &self.log, "VmRSS:")? * 1024);
            std::thread::sleep(Duration::from_millis(10));
        }
        let footprint = Footprint::read(&mut child, &self.log, ready, peak)?;
        let running = Running {
            child,
            log: self.log.clone(),
        };
        Ok((running, footprint))
    }
}

impl Running {
    /// Restarts the API server and reads the webhook's memory while its watch, resumed from a
    /// resource version the new watch cache no longer holds, expires and lists everything again
    /// beside the set it serves from. The peak counts from the restart (`VmHWM` is reset).
    fn relist(&mut self, control_plane: &ControlPlane) -> Result<Footprint, String> {
        let pid = self.child.0.id();
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .map_err(|err| format!("cannot reset the webhook's VmHWM: {err}"))?;
        let started = Instant::now();
        let mut restart = Guard(
            Command::new(&control_plane.script)
                .arg("restart-apiserver")
                .arg("--dir")
                .arg(&control_plane.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|err| format!("cannot run {}: {err}", control_plane.script.display()))?,
        );
        let mut peak = 0;
        let mut restarted = false;
        let mut settled: Option<Instant> = None;
        let mut reconnected = Duration::ZERO;
        while settled.is_none_or(|at| Instant::now() < at) {
            peak = peak.max(status_kib(&mut self.child, &self.log, "VmRSS:")? * 1024);
            if !restarted {
                if let Some(status) = restart.0.try_wait().map_err(|err| err.to_string())? {
                    if !status.success() {
                        return Err(format!("restarting the API server failed ({status})"));
                    }
                    restarted = true;
                }
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if settled.is_none() && restarted && log.contains("ServiceAccount watch reconnected") {
                if !log.contains("too old resource version") {
                    return Err(format!(
                        "the watch reconnected without expiring, so nothing was listed again; \
                         the end of the webhook's log:\n{}",
                        log_tail(&self.log)
                    ));
                }
                reconnected = started.elapsed();
                settled = Some(Instant::now() + SETTLE);
            }
            if settled.is_none() && started.elapsed() > RELIST_DEADLINE {
                return Err(format!(
                    "the watch did not reconnect within {} s of the API server's restart; \
                     the end of the webhook's log:\n{}",
                    RELIST_DEADLINE.as_secs(),
                    log_tail(&self.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Footprint::read(&mut self.child, &self.log, reconnected, peak)
    }
}

/// The last 20 lines of a webhook's log, for an error: the log itself is deleted with the
/// benchmark's temporary directory.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut tail = text.lines().rev().take(20).collect::<Vec<_>>();
    tail.reverse();
    tail.join("\n")
}

/// A `kB` field of the running webhook's `/proc/PID/status`; if it has exited, the error says
/// how and ends with its log.
fn status_kib(child: &mut Guard, log: &Path, field: &str) -> Result<u64, String> {
    let pid = child.0.id();
    if let Ok(Some(status)) = child.0.try_wait() {
        return Err(format!(
            "the webhook (pid {pid}) exited ({status}); the end of its log:\n{}",
            log_tail(log)
        ));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("the webhook (pid {pid}) is gone: {err}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}
