//! The cluster audit (`doctor --all-namespaces`) against a real API server holding 10,000 pods:
//! its wall time, API requests and peak RSS, at the default page size and others.
//!
//! The cluster: 100 namespaces, each with a ServiceAccount `app` that has a role and 5
//! Deployments with a ReplicaSet each (made as their controllers would: no controller manager
//! runs), the namespace's pods spread over the ReplicaSets. Nine pods in ten carry what the
//! webhook gives them (the engine's own patch, applied before creation); one in ten was created
//! without it, as while no webhook answered. So the audit judges every pod, finds a tenth, and
//! reads the owners of all 500 ReplicaSets (more than it reads one by one: their paged list).
//!
//! `cargo bench --bench audit_scale` runs the release binary `target/release/pod-identity-webhook`
//! (build it first; `PIW_WEBHOOK_BINARY=path` measures another build) against its own control
//! plane from `hack/control-plane.sh`, stopped at the end; `PIW_CONTROL_PLANE_DIR=DIR` uses one
//! already up and leaves it up, so a second run skips creating the pods.
//! `PIW_AUDIT_SCALE_PODS=N` changes the count (default 10,000). Creating the pods must finish
//! within 10 minutes, and each audit within 2. The peak RSS is the audit's `VmHWM`, read every
//! 2 ms while it runs. Without `--bench` (as under `cargo test --benches`) nothing is run.

#[allow(dead_code)]
mod common;
#[path = "common/control_plane.rs"]
mod control_plane;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{json, Value};

use control_plane::ControlPlane;
use pod_identity_webhook::core::engine;
use pod_identity_webhook::core::identity::{CredentialKind, Identity};
use pod_identity_webhook::core::pod::Pod;
use pod_identity_webhook::core::settings::MutationSettings;

const DEFAULT_PODS: usize = 10_000;
const NAMESPACES: usize = 100;
const DEPLOYMENTS_PER_NAMESPACE: usize = 5;
/// One pod in this many was created without the webhook (see [`stale`]).
const STALE_EVERY: usize = 10;
const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const CREATE_CONCURRENCY: usize = 64;
const CREATE_DEADLINE: Duration = Duration::from_secs(600);
const AUDIT_DEADLINE: Duration = Duration::from_secs(120);
const PAGE_SIZES: [u32; 3] = [500, 100, 2000];

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("audit_scale: measured only under `cargo bench --bench audit_scale`");
        return;
    }
    if let Err(problem) = run() {
        eprintln!("audit_scale benchmark failed: {problem}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = common::webhook_binary(root)?;
    let wanted = match std::env::var("PIW_AUDIT_SCALE_PODS") {
        Ok(value) => value
            .parse::<usize>()
            .map_err(|err| format!("PIW_AUDIT_SCALE_PODS={value:?} is not a count: {err}"))?,
        Err(_) => DEFAULT_PODS,
    };
    let control_plane = ControlPlane::start(root, "audit-scale")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start a runtime: {err}"))?;
    let client = runtime.block_on(client(&control_plane.kubeconfig))?;
    let started = Instant::now();
    let created = runtime.block_on(create_cluster(&client, wanted))?;
    println!(
        "created {created} pods in {:.0} s ({} were already there)",
        started.elapsed().as_secs_f64(),
        wanted - created
    );
    println!("binary: {}", binary.display());
    let expected = (0..wanted).filter(|&index| stale(index)).count();
    for page_size in PAGE_SIZES {
        let audit = audit(&binary, &control_plane.kubeconfig, page_size)?;
        let summary = &audit.report["summary"];
        if summary["missing"] != expected {
            return Err(format!(
                "the audit found {} pods without credentials, expected {expected}",
                summary["missing"]
            ));
        }
        println!(
            "page size {page_size}: {} pods judged, {} need a restart, in {:.2} s, {} requests, peak RSS {:.1} MiB",
            summary["pods"],
            summary["missing"],
            audit.wall.as_secs_f64(),
            summary["requests"],
            audit.high_water_kib as f64 / 1024.0,
        );
    }
    Ok(())
}

struct Audit {
    report: Value,
    wall: Duration,
    high_water_kib: u64,
}

/// Runs the audit as a process and reads its report, its time and its peak RSS.
fn audit(binary: &Path, kubeconfig: &Path, page_size: u32) -> Result<Audit, String> {
    let output = tempfile::NamedTempFile::new().map_err(|err| err.to_string())?;
    let started = Instant::now();
    let child = Command::new(binary)
        .args(["doctor", "--all-namespaces", "--output", "json"])
        .arg(format!("--page-size={page_size}"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .stdout(output.reopen().map_err(|err| err.to_string())?)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
    let pid = child.id() as libc::pid_t;
    // The kernel's high-water mark of the audit's own memory, read while it runs: the rusage
    // wait4 reports would start from this (much larger) process's, as a spawned child's
    // count begins with its parent's.
    let mut high_water_kib = 0;
    let status = loop {
        if let Some(kib) = status_kib(pid, "VmHWM:") {
            high_water_kib = kib;
        }
        let mut status = 0;
        // SAFETY: pid is our own child, not yet reaped; status is valid for writes.
        let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if reaped == pid {
            break status;
        }
        if reaped < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if started.elapsed() > AUDIT_DEADLINE {
            // SAFETY: pid is our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(format!(
                "the audit took over {} s",
                AUDIT_DEADLINE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    let text = std::fs::read_to_string(output.path()).map_err(|err| err.to_string())?;
    // Exit code 1: some pods need a restart, as built.
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 1 {
        return Err(format!("the audit ended with status {status}: {text}"));
    }
    let report = serde_json::from_str(&text).map_err(|err| format!("{err}: {text}"))?;
    Ok(Audit {
        report,
        wall,
        high_water_kib,
    })
}

/// A `kB` field of `/proc/PID/status`, while the process runs.
fn status_kib(pid: libc::pid_t, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
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

/// POSTs `body` to `path`; an object that exists already is fine. Returns the stored object.
async fn create(client: &kube::Client, path: &str, body: &Value) -> Result<Value, String> {
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(serde_json::to_vec(body).map_err(|err| err.to_string())?)
        .map_err(|err| err.to_string())?;
    match client.request::<Value>(request).await {
        Ok(object) => Ok(object),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Value::Null),
        Err(err) => Err(format!("POST {path}: {err}")),
    }
}

fn namespace_of(index: usize) -> String {
    format!("audit-{:03}", index % NAMESPACES)
}

/// Creates what is missing of the cluster described above; returns the pods it created.
async fn create_cluster(client: &kube::Client, pods: usize) -> Result<usize, String> {
    let mut owners = Vec::new();
    for n in 0..NAMESPACES {
        let namespace = namespace_of(n);
        create(
            client,
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        )
        .await?;
        create(
            client,
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            &json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "app", "annotations": {"eks.amazonaws.com/role-arn": ROLE}}}),
        )
        .await?;
        for d in 0..DEPLOYMENTS_PER_NAMESPACE {
            owners.push(owner(client, &namespace, d).await?);
        }
    }
    let existing = existing_pods(client).await?;
    let injected = injected(&pod_template());
    let missing: Vec<usize> = (0..pods)
        .filter(|&index| !existing.contains(&pod_key(index)))
        .collect();
    let count = missing.len();
    let creating = futures::stream::iter(missing)
        .map(|index| {
            let (namespace, name) = pod_key(index);
            let owner = owners[(index / NAMESPACES) % DEPLOYMENTS_PER_NAMESPACE
                + DEPLOYMENTS_PER_NAMESPACE * (index % NAMESPACES)]
                .clone();
            let mut pod = if stale(index) {
                pod_template()
            } else {
                injected.clone()
            };
            pod["metadata"]["name"] = json!(name);
            pod["metadata"]["ownerReferences"] = json!([owner]);
            async move {
                create(
                    client,
                    &format!("/api/v1/namespaces/{namespace}/pods"),
                    &pod,
                )
                .await
                .map(drop)
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<()>>();
    tokio::time::timeout(CREATE_DEADLINE, creating)
        .await
        .map_err(|_| {
            format!(
                "creating {count} pods took over {} s; rerun with PIW_CONTROL_PLANE_DIR to keep the ones already made",
                CREATE_DEADLINE.as_secs()
            )
        })??;
    Ok(count)
}

/// The Deployment `web-<d>` and its ReplicaSet; returns the pods' ownerReference to it.
async fn owner(client: &kube::Client, namespace: &str, d: usize) -> Result<Value, String> {
    let name = format!("web-{d}");
    let labels = json!({"app": name});
    let template = json!({"metadata": {"labels": labels}, "spec": pod_template()["spec"]});
    let get = |path: String| async move {
        let request = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|err| err.to_string())?;
        client
            .request::<Value>(request)
            .await
            .map_err(|err| format!("GET {path}: {err}"))
    };
    let deployments = format!("/apis/apps/v1/namespaces/{namespace}/deployments");
    create(
        client,
        &deployments,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": labels}, "template": template}}),
    )
    .await?;
    let deployment = get(format!("{deployments}/{name}")).await?;
    let replica_sets = format!("/apis/apps/v1/namespaces/{namespace}/replicasets");
    let replica_set = format!("{name}-5d9c");
    create(
        client,
        &replica_sets,
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": replica_set, "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                    "uid": deployment["metadata"]["uid"], "controller": true}]},
                "spec": {"selector": {"matchLabels": labels}, "template": template}}),
    )
    .await?;
    let stored = get(format!("{replica_sets}/{replica_set}")).await?;
    Ok(
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
               "uid": stored["metadata"]["uid"], "controller": true}),
    )
}

/// Whether pod `index` was created without the webhook: a tenth of the pods, spread over every
/// namespace and Deployment.
fn stale(index: usize) -> bool {
    (index / (NAMESPACES * DEPLOYMENTS_PER_NAMESPACE)) % STALE_EVERY == 0
}

fn pod_key(index: usize) -> (String, String) {
    (namespace_of(index), format!("pod-{index:06}"))
}

/// A pod as a Deployment's template makes it: two containers, some env and a volume.
fn pod_template() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"labels": {"app": "web"}, "annotations": {"example.com/team": "payments"}},
           "spec": {"serviceAccountName": "app",
                    "containers": [
                        {"name": "app", "image": "registry.example.com/web:1.2.3",
                         "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "PORT", "value": "8080"}],
                         "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                        {"name": "proxy", "image": "registry.example.com/proxy:4.5",
                         "args": ["--listen=:9901"]}],
                    "volumes": [{"name": "cache", "emptyDir": {}}]}})
}

/// `pod` with what the webhook gives it now: the engine's own patch.
fn injected(pod: &Value) -> Value {
    let identity = Identity {
        source: CredentialKind::WebIdentity {
            role_arn: ROLE.into(),
            audience: "sts.amazonaws.com".into(),
        },
        regional_sts: false,
        token_expiration: 86400,
        region: None,
        session_name_from_pod: false,
    };
    let settings = MutationSettings::default();
    let read = Pod::from_value(pod).expect("the template is a pod");
    let mutation = engine::mutate(&read, &identity, &settings, &mut |range| *range.start());
    let mut patched = pod.clone();
    json_patch::patch(
        &mut patched,
        &mutation.patch.operations().expect("the engine's patch"),
    )
    .expect("the engine's patch applies");
    patched
}

/// `(namespace, name)` of every pod already stored.
async fn existing_pods(client: &kube::Client) -> Result<HashSet<(String, String)>, String> {
    let mut found = HashSet::new();
    let mut next = String::new();
    loop {
        let path = format!("/api/v1/pods?limit=5000&continue={next}");
        let request = http::Request::get(&path)
            .header(
                http::header::ACCEPT,
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )
            .body(Vec::new())
            .map_err(|err| err.to_string())?;
        let page: Value = client
            .request(request)
            .await
            .map_err(|err| format!("cannot list pods: {err}"))?;
        for item in page["items"].as_array().into_iter().flatten() {
            let metadata = &item["metadata"];
            if let (Some(namespace), Some(name)) =
                (metadata["namespace"].as_str(), metadata["name"].as_str())
            {
                found.insert((namespace.to_string(), name.to_string()));
            }
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) if !token.is_empty() => next = token.to_string(),
            _ => return Ok(found),
        }
    }
}
