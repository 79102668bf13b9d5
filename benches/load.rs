//! The webhook against a webhook that does nothing and against the reference webhook, under
//! the same load on the same core.
//!
//! `cargo bench --bench load` (or `benches/load.sh`, which installs h2load and builds both
//! servers first) builds nothing itself: it runs the release binary
//! `target/release/pod-identity-webhook` (build it first), the reference webhook's server
//! (`hack/install-reference-webhook.sh`) and a null webhook from this file, which uses the
//! same stack as ours (tokio-rustls with the ring provider, hyper-util's HTTP/1.1 + HTTP/2
//! server) and answers every review with a constant `allowed: true` after reading its body.
//! All three run pinned to CPU 0 (`taskset`), with the same certificate; h2load, pinned to
//! CPU 1, sends the same bodies to each, one server after the other, for each protocol and
//! pod size, and the ratios are printed: every ratio comes from one run.
//!
//! Ours and the reference both run in container-credentials (EKS Pod Identity) mode, their
//! `--watch-container-credentials-config` file listing the review's ServiceAccount: the same
//! lookup and the same patch from both, and the reference needs no API server for it (its
//! kubeconfig points at a closed port). Ours also reads ServiceAccounts from a stand-in API
//! server (the tests' fake), which its readiness waits for. `PIW_LOAD_IRSA=1` runs ours in
//! IRSA mode instead (the ServiceAccount's role annotation from that stand-in), as this
//! benchmark did before the reference was added. Both log to a file, as in production; each
//! answers one review by hand before the load, which must carry the patch, and every answer
//! must be counted as a mutation. Each run is a few seconds.
//!
//! Then each server is sent the same bodies at a fixed, moderate rate ([`FIXED_RATES`], open
//! loop from an h2load timing script), and the latency percentiles of every request are
//! printed from h2load's per-request log: throughput shows the cost of a request, this shows
//! what one waits at a load a cluster would actually send. A server that sustained less than
//! twice that rate is left out there: the wait in its queue would be measured instead.
//! `PIW_WEBHOOK_BINARY=path` measures another build of ours, `PIW_REFERENCE_WEBHOOK_BINARY=path`
//! another build of the reference.
//! `PIW_LOAD_HOLD=seconds` measures nothing: once every server has answered with its patch, it
//! prints their ports, process ids and the bodies' files, and keeps them running that long, for
//! a profiler or an instruction count (docs/benchmarks.md) to be pointed at one of them.
//! Without `--bench` (as under `cargo test --benches`) nothing is measured.

// The integration tests' stand-in API server; the benchmark uses part of it.
mod common;
#[allow(dead_code)]
#[path = "../tests/it/support/fake_api.rs"]
mod fake_api;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use serde_json::{json, Value};

use common::{certificate, free_port, http_get, metric, Guard};

const ROLE: &str = "arn:aws:iam::111122223333:role/payments-api";
/// The reference webhook's version `hack/install-reference-webhook.sh` builds by default.
const REFERENCE_VERSION: &str = "v0.6.17";
const NULL_ANSWER: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;
/// Seconds of load per run, after one second of warm-up.
const SECONDS: u32 = 3;
/// The fixed-rate runs: requests per second for each pod size, spread over this many
/// connections. The higher rates are moderate for ours and the null webhook on one core (a
/// fraction of what either sustains), so the latency measured is that of a request, not of
/// a queue; the lower ones are moderate for the reference too.
const FIXED_RATES: [(&str, u32); 4] = [
    ("small", 2000),
    ("small", 400),
    ("large", 500),
    ("large", 100),
];
const FIXED_CONNECTIONS: u32 = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--null-webhook") {
        let [cert, key, port] = [1, 2, 3].map(|i| args.get(at + i).cloned().unwrap_or_default());
        null_webhook(
            &cert,
            &key,
            port.parse().expect("--null-webhook CERT KEY PORT"),
        );
        return;
    }
    if !args.iter().any(|arg| arg == "--bench") {
        println!("load: measured only under `cargo bench --bench load`");
        return;
    }
    if let Err(problem) = run() {
        eprintln!("load benchmark failed: {problem}");
        std::process::exit(1);
    }
}

struct Scenario {
    protocol: &'static str,
    pod: &'static str,
    h2load: Vec<String>,
    body: PathBuf,
}

/// One server under test: where it listens and how to read its CPU time and counters.
struct Server {
    name: &'static str,
    process: Guard,
    port: u16,
    /// The admin port serving `/metrics` (ours and the reference; not the null webhook).
    metrics_port: Option<u16>,
    /// The mutation it makes (not the null webhook).
    mode: Option<&'static Mode>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.process.0.id()
    }
}

/// The mutation both ours and the reference are set up to make, and the counter it is
/// counted under (the same metric name in both).
struct Mode {
    name: &'static str,
    /// A variable the patch adds to the containers.
    injected: &'static str,
    metric: &'static str,
}

const CONTAINER_CREDENTIALS: Mode = Mode {
    name: "container-credentials",
    injected: "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    metric: "pod_identity_webhook_pod_count{method=\"container_credentials\"}",
};
const IRSA: Mode = Mode {
    name: "IRSA",
    injected: "AWS_ROLE_ARN",
    metric: "pod_identity_webhook_pod_count{method=\"sts_web_identity\"}",
};

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = common::webhook_binary(root)?;
    let reference = reference_binary()?;
    if Command::new("h2load").arg("--version").output().is_err() {
        return Err("h2load not found: install nghttp2-client (benches/load.sh does)".into());
    }
    let ours_irsa = std::env::var_os("PIW_LOAD_IRSA").is_some_and(|v| v == "1");
    let ours_mode = if ours_irsa {
        &IRSA
    } else {
        &CONTAINER_CREDENTIALS
    };
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let (cert, key) = certificate(dir.path());

    let small = small_review();
    let large = large_review();
    let small_path = dir.path().join("small.json");
    let large_path = dir.path().join("large.json");
    std::fs::write(&small_path, &small).unwrap();
    std::fs::write(&large_path, &large).unwrap();
    println!(
        "bodies: small {} bytes (2 containers), large {} bytes (20 containers x 50 env)",
        small.len(),
        large.len()
    );
    println!(
        "ours: {}, {} mode; reference: {}, container-credentials mode",
        binary.display(),
        ours_mode.name,
        reference.display()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = runtime.block_on(fake_api::FakeApi::start());
    api.put(fake_api::service_account("payments", "api", Some(ROLE)));
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    // The fake API answers the server's list and watch from a thread of its own while
    // h2load runs.
    std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
    // The review's ServiceAccount in the container-credentials list (the reference's format,
    // which ours reads too).
    let identities = dir.path().join("container-credentials.json");
    std::fs::write(
        &identities,
        r#"{"identities":[{"namespace":"payments","serviceAccount":"api"}]}"#,
    )
    .unwrap();
    // The reference lists and watches ServiceAccounts too, but container-credentials mode
    // does not need them: its kubeconfig points at a port nothing listens on.
    let nowhere = dir.path().join("kubeconfig-nowhere");
    std::fs::write(
        &nowhere,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: none, cluster: {{server: \"https://127.0.0.1:{}\"}}}}]\n\
             users: [{{name: none, user: {{}}}}]\ncontexts: [{{name: none, context: {{cluster: none, user: none}}}}]\n\
             current-context: none\n",
            free_port()
        ),
    )
    .unwrap();

    let null_port = free_port();
    let null = Server {
        name: "null",
        process: Guard(
            Command::new("taskset")
                .args(["-c", "0"])
                .arg(std::env::current_exe().unwrap())
                .arg("--null-webhook")
                .args([&cert, &key])
                .arg(null_port.to_string())
                .spawn()
                .map_err(|err| format!("cannot start the null webhook: {err}"))?,
        ),
        port: null_port,
        metrics_port: None,
        mode: None,
    };

    let (port, metrics_port) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("ours.log")).unwrap();
    let mut command = Command::new("taskset");
    command
        .args(["-c", "0"])
        .arg(&binary)
        .arg(format!("--port={port}"))
        .arg(format!("--metrics-port={metrics_port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--tls-cert={}", cert.display()))
        .arg(format!("--tls-key={}", key.display()))
        .arg(format!("--kubeconfig={}", kubeconfig.display()));
    if !ours_irsa {
        command.arg(format!(
            "--watch-container-credentials-config={}",
            identities.display()
        ));
    }
    let ours = Server {
        name: "ours",
        process: Guard(
            command
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|err| format!("cannot start {}: {err}", binary.display()))?,
        ),
        port,
        metrics_port: Some(metrics_port),
        mode: Some(ours_mode),
    };

    let (port, metrics_port) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("reference.log")).unwrap();
    let reference = Server {
        name: "reference",
        process: Guard(
            Command::new("taskset")
                .args(["-c", "0"])
                .arg(&reference)
                .arg("--in-cluster=false")
                .arg(format!("--port={port}"))
                .arg(format!("--metrics-port={metrics_port}"))
                .arg(format!("--tls-cert={}", cert.display()))
                .arg(format!("--tls-key={}", key.display()))
                .arg(format!("--kubeconfig={}", nowhere.display()))
                .arg(format!(
                    "--watch-container-credentials-config={}",
                    identities.display()
                ))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|err| format!("cannot start {}: {err}", reference.display()))?,
        ),
        port,
        metrics_port: Some(metrics_port),
        mode: Some(&CONTAINER_CREDENTIALS),
    };

    let ours_metrics = ours.metrics_port.unwrap_or_default();
    wait_until(|| http_get(ours_metrics, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")))
        .map_err(|()| "ours did not become ready within 20 s".to_string())?;
    for server in [&null, &reference] {
        wait_until(|| TcpStream::connect(("127.0.0.1", server.port)).is_ok())
            .map_err(|()| format!("the {} webhook did not start within 20 s", server.name))?;
    }

    // Both answer a review with the patch before they are measured. The reference reads its
    // container-credentials file after it starts listening, so it gets a few seconds.
    for server in [&ours, &reference] {
        let injected = server.mode.map_or("", |mode| mode.injected);
        for body in [&small, &large] {
            let mut outcome = Err(String::new());
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                outcome = check_mutation(server.port, &cert, body, injected);
                if outcome.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            outcome.map_err(|problem| {
                format!(
                    "{} did not answer with a patch: {problem}; see {}",
                    server.name,
                    dir.path().join(format!("{}.log", server.name)).display()
                )
            })?;
        }
    }

    if let Some(hold) = std::env::var_os("PIW_LOAD_HOLD") {
        let seconds = hold
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("PIW_LOAD_HOLD={hold:?}: expected a whole number of seconds"))?;
        for server in [&ours, &null, &reference] {
            println!(
                "{}: port {}, pid {}",
                server.name,
                server.port,
                server.pid()
            );
        }
        println!(
            "bodies: {} {}\nheld for {seconds} s",
            small_path.display(),
            large_path.display()
        );
        std::thread::sleep(Duration::from_secs(seconds));
        return Ok(());
    }
    let scenarios = [
        ("h2", vec!["-c16", "-m8"]),
        ("http/1.1", vec!["--h1", "-c16", "-m1"]),
    ]
    .into_iter()
    .flat_map(|(protocol, flags)| {
        [("small", &small_path), ("large", &large_path)].map(|(pod, body)| Scenario {
            protocol,
            pod,
            h2load: flags.iter().map(|flag| flag.to_string()).collect(),
            body: body.clone(),
        })
    })
    .collect::<Vec<_>>();

    // Idle: ready, the ServiceAccount cached, two reviews served.
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "RSS when idle: ours {:.1} MiB, reference {:.1} MiB",
        rss_mib(&ours),
        rss_mib(&reference)
    );
    println!("\nthroughput (h2load, {SECONDS} s after 1 s of warm-up; req/s):");
    println!(
        "| protocol | pod | null | ours | reference | ours / null | ours / reference | server CPU: null, ours, reference | h2load CPU | ours / null, ours / reference per CPU second |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let servers = [&null, &ours, &reference];
    let mutated_before = [mutated_count(&ours)?, mutated_count(&reference)?];
    // Requests each server answered, in the order of `servers`.
    let mut answered = [0; 3];
    // What each server sustained, per scenario, in the order of `servers`.
    let mut sustained = Vec::new();
    for scenario in &scenarios {
        let [null_run, ours_run, reference_run] = [
            h2load(scenario, &null)?,
            h2load(scenario, &ours)?,
            h2load(scenario, &reference)?,
        ];
        answered[1] += ours_run.succeeded;
        answered[2] += reference_run.succeeded;
        sustained.push([null_run.rate, ours_run.rate, reference_run.rate]);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1}% | {:.0}% | {:.0}%, {:.0}%, {:.0}% | {:.0}%, {:.0}%, {:.0}% | {:.1}%, {:.0}% |",
            scenario.protocol,
            scenario.pod,
            null_run.rate,
            ours_run.rate,
            reference_run.rate,
            100.0 * ours_run.rate / null_run.rate,
            100.0 * ours_run.rate / reference_run.rate,
            100.0 * null_run.server_cpu,
            100.0 * ours_run.server_cpu,
            100.0 * reference_run.server_cpu,
            100.0 * null_run.client_cpu,
            100.0 * ours_run.client_cpu,
            100.0 * reference_run.client_cpu,
            100.0 * ours_run.per_cpu_second() / null_run.per_cpu_second(),
            100.0 * ours_run.per_cpu_second() / reference_run.per_cpu_second(),
        );
    }
    println!(
        "\nlatency at a fixed rate ({FIXED_CONNECTIONS} connections, {SECONDS} s, open loop), µs, \
         p50 / p99 / max; - where the rate is over half what that server sustained above (the \
         wait in its queue would be measured, not a request):"
    );
    println!("| protocol | pod | req/s | null | ours | reference |");
    println!("|---|---|---:|---:|---:|---:|");
    for (scenario, sustained) in scenarios.iter().zip(&sustained) {
        for &(_, rate) in FIXED_RATES.iter().filter(|(pod, _)| *pod == scenario.pod) {
            let mut cells = Vec::new();
            for (i, server) in servers.iter().enumerate() {
                if f64::from(rate) > sustained[i] / 2.0 {
                    cells.push("-".to_string());
                    continue;
                }
                let times = fixed_rate(scenario, server.port, rate, dir.path())?;
                answered[i] += times.len() as u64;
                cells.push(format!(
                    "{} / {} / {}",
                    percentile(&times, 50.0),
                    percentile(&times, 99.0),
                    times.last().copied().unwrap_or(0)
                ));
            }
            println!(
                "| {} | {} | {rate} | {} |",
                scenario.protocol,
                scenario.pod,
                cells.join(" | ")
            );
        }
    }
    // Every measured request (and the warm-up ones) must have been a mutation.
    for ((server, before), answered) in [&ours, &reference]
        .into_iter()
        .zip(mutated_before)
        .zip(&answered[1..])
    {
        let mutated = mutated_count(server)?.saturating_sub(before);
        if mutated < *answered {
            return Err(format!(
                "only {mutated} of {answered} requests to {} were mutations; see {}",
                server.name,
                dir.path().join(format!("{}.log", server.name)).display()
            ));
        }
    }
    println!(
        "\nRSS right after the load: ours {:.1} MiB, reference {:.1} MiB",
        rss_mib(&ours),
        rss_mib(&reference)
    );
    std::thread::sleep(Duration::from_secs(5));
    println!(
        "RSS 5 s later: ours {:.1} MiB, reference {:.1} MiB",
        rss_mib(&ours),
        rss_mib(&reference)
    );
    Ok(())
}

/// The reference webhook's server: `PIW_REFERENCE_WEBHOOK_BINARY`, or where
/// `hack/install-reference-webhook.sh` puts the version it builds by default.
fn reference_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PIW_REFERENCE_WEBHOOK_BINARY") {
        return Ok(PathBuf::from(path));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .ok_or("neither XDG_CACHE_HOME nor HOME is set: set PIW_REFERENCE_WEBHOOK_BINARY")?;
    let path = cache.join(format!(
        "pod-identity-webhook/reference-webhook-{REFERENCE_VERSION}/amazon-eks-pod-identity-webhook"
    ));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run hack/install-reference-webhook.sh (benches/load.sh does), or set PIW_REFERENCE_WEBHOOK_BINARY",
            path.display()
        ))
    }
}

/// Sends `body` to `/mutate` over HTTP/1.1 and checks the answer allows the pod with a JSON
/// patch that adds `injected`.
fn check_mutation(port: u16, cert: &Path, body: &[u8], injected: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())?;
    let answer = runtime.block_on(post_review(port, cert, body.to_vec()))?;
    let review: Value = serde_json::from_slice(&answer).map_err(|err| {
        format!(
            "the answer is not JSON ({err}): {}",
            String::from_utf8_lossy(&answer)
        )
    })?;
    let response = &review["response"];
    let patch = response["patch"]
        .as_str()
        .and_then(|patch| base64::engine::general_purpose::STANDARD.decode(patch).ok())
        .and_then(|patch| serde_json::from_slice::<Value>(&patch).ok());
    match patch {
        Some(patch @ Value::Array(_))
            if response["allowed"] == true
                && response["patchType"] == "JSONPatch"
                && patch.to_string().contains(injected) =>
        {
            Ok(())
        }
        _ => Err(format!("no JSON patch adding {injected} in {review}")),
    }
}

async fn post_review(port: u16, cert: &Path, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pki_types::CertificateDer::pem_file_iter(cert).map_err(|e| e.to_string())? {
        roots
            .add(der.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::post("/mutate")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status.is_success() {
        Ok(body.to_vec())
    } else {
        Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        ))
    }
}

/// The server's resident memory from its own `process_resident_memory_bytes`.
fn rss_mib(server: &Server) -> f64 {
    server
        .metrics_port
        .and_then(|port| http_get(port, "/metrics"))
        .and_then(|text| metric(&text, "process_resident_memory_bytes"))
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0
}

struct Rate {
    rate: f64,
    succeeded: u64,
    /// CPU time the server used during the run, per second of the run: near 1 (its one
    /// core) when the server limits the rate. Well below 1 means something else did (the
    /// load generator, or other work on the core), and the ratio does not measure the server.
    server_cpu: f64,
    /// The same for h2load on its core.
    client_cpu: f64,
}

impl Rate {
    /// Requests answered per second of the server's CPU: what a request costs the server,
    /// whether or not h2load kept it busy (a null webhook it cannot saturate would otherwise
    /// look slower than it is).
    fn per_cpu_second(&self) -> f64 {
        self.rate / self.server_cpu.max(0.01)
    }
}

/// CPU seconds used so far by process `pid` (all its threads), from `/proc/PID/stat`.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

/// CPU seconds used so far by this process's finished children (h2load runs).
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        ticks if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// One h2load run on CPU 1 against `server`; every request must get a 2xx.
fn h2load(scenario: &Scenario, server: &Server) -> Result<Rate, String> {
    let (port, pid) = (server.port, server.pid());
    let (started, server_before, client_before) = (
        Instant::now(),
        process_cpu_seconds(pid),
        children_cpu_seconds(),
    );
    let output = Command::new("taskset")
        .args(["-c", "1", "h2load"])
        .args(&scenario.h2load)
        .args(["-D", &SECONDS.to_string(), "--warm-up-time=1"])
        .arg("-d")
        .arg(&scenario.body)
        .args(["-H", "content-type: application/json"])
        .arg(format!("https://127.0.0.1:{port}/mutate"))
        .output()
        .map_err(|err| format!("cannot run h2load: {err}"))?;
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = (process_cpu_seconds(pid) - server_before) / wall;
    let client_cpu = (children_cpu_seconds() - client_before) / wall;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |line_start: &str, before: &str| -> Option<f64> {
        let line = text.lines().find(|line| line.starts_with(line_start))?;
        let end = line.find(before)?;
        line[..end].rsplit([' ', ',']).next()?.parse().ok()
    };
    let rate = field("finished in", " req/s");
    let succeeded = field("requests:", " succeeded");
    // Every request done succeeded, and no answer was anything but a 2xx. The status counts
    // also include answers to warm-up requests, so they are not compared with `done`.
    let done = field("requests:", " done");
    let all_answered = done > Some(0.0)
        && done == succeeded
        && [" 3xx", " 4xx", " 5xx"]
            .iter()
            .all(|status| field("status codes:", status) == Some(0.0));
    match (rate, succeeded) {
        (Some(rate), Some(succeeded)) if all_answered => Ok(Rate {
            rate,
            succeeded: succeeded as u64,
            server_cpu,
            client_cpu,
        }),
        _ => Err(format!(
            "h2load against {} ({} {}) did not answer every request with 2xx:\n{text}{}",
            server.name,
            scenario.protocol,
            scenario.pod,
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// One open-loop run at `rate` requests per second: each of [`FIXED_CONNECTIONS`] connections
/// sends on a fixed schedule (an h2load timing script) whether or not earlier answers came
/// back, so a slow answer delays none of the later sends on HTTP/2 (on HTTP/1.1 a connection
/// waits for its previous answer, as any HTTP/1.1 client must). Returns each request's time
/// to its whole response, in µs, sorted; every answer must be a 2xx.
fn fixed_rate(scenario: &Scenario, port: u16, rate: u32, dir: &Path) -> Result<Vec<u64>, String> {
    let per_connection = rate * SECONDS / FIXED_CONNECTIONS;
    let interval_ms = 1000.0 * f64::from(FIXED_CONNECTIONS) / f64::from(rate);
    let url = format!("https://127.0.0.1:{port}/mutate");
    let script: String = (0..per_connection)
        .map(|i| format!("{:.3}\t{url}\n", f64::from(i) * interval_ms))
        .collect();
    let (script_path, log_path) = (dir.join("timing.txt"), dir.join("requests.log"));
    std::fs::write(&script_path, script).map_err(|err| err.to_string())?;
    let _ = std::fs::remove_file(&log_path);
    let protocol: &[&str] = if scenario.protocol == "h2" {
        &["-m16"]
    } else {
        &["--h1"]
    };
    let output = Command::new("taskset")
        .args(["-c", "1", "h2load"])
        .args(protocol)
        .arg(format!("-c{FIXED_CONNECTIONS}"))
        .arg(format!("-n{}", per_connection * FIXED_CONNECTIONS))
        .arg(format!("--timing-script-file={}", script_path.display()))
        .arg(format!("--log-file={}", log_path.display()))
        .arg("-d")
        .arg(&scenario.body)
        .args(["-H", "content-type: application/json"])
        .output()
        .map_err(|err| format!("cannot run h2load: {err}"))?;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    // Columns: start (µs since the epoch), status, µs to the end of the response.
    let mut times = Vec::new();
    for line in log.lines() {
        let mut columns = line.split('\t');
        let status = columns.nth(1).unwrap_or_default();
        let took = columns.next().and_then(|took| took.trim().parse().ok());
        match took {
            Some(took) if status.starts_with('2') => times.push(took),
            _ => {
                return Err(format!(
                    "fixed-rate h2load against port {port} ({} {}): not a 2xx: {line}\n{}",
                    scenario.protocol,
                    scenario.pod,
                    String::from_utf8_lossy(&output.stdout)
                ))
            }
        }
    }
    if times.len() as u32 != per_connection * FIXED_CONNECTIONS {
        return Err(format!(
            "fixed-rate h2load against port {port} ({} {}) completed {} of {} requests:\n{}{}",
            scenario.protocol,
            scenario.pod,
            times.len(),
            per_connection * FIXED_CONNECTIONS,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    times.sort_unstable();
    Ok(times)
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], percent: f64) -> u64 {
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Reviews `server` counted as mutations of its mode.
fn mutated_count(server: &Server) -> Result<u64, String> {
    let (Some(port), Some(mode)) = (server.metrics_port, server.mode) else {
        return Err(format!("{} counts no mutations", server.name));
    };
    http_get(port, "/metrics")
        .and_then(|text| metric(&text, mode.metric))
        .map(|count| count as u64)
        .ok_or_else(|| format!("no {} in the /metrics of {}", mode.metric, server.name))
}

fn wait_until(mut ready: impl FnMut() -> bool) -> Result<(), ()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn review(pod: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": "payments",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "1b3bd8c5-4a1e-4b6d-9c0a-5f0d3c1b2a10",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .unwrap()
}

fn container(name: &str, env: usize) -> Value {
    let env: Vec<Value> = (0..env)
        .map(|i| json!({"name": format!("SETTING_{i}"), "value": format!("v{i}")}))
        .collect();
    json!({
        "name": name,
        "image": format!("registry.example.com/payments/{name}:1.4.2"),
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": env,
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
    })
}

fn pod(containers: Vec<Value>) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "api-7d9f8c6b5-",
            "namespace": "payments",
            "creationTimestamp": null,
            "labels": {"app": "api", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-02T10:11:12Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8c6b5", "uid": "0f6c1c3e-2b1a-4f7e-8d4a-2c9b7e6f5a41", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ], "defaultMode": 420}}],
            "containers": containers,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "api",
            "serviceAccount": "api",
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        }
    })
}

/// A Deployment's pod with an application container and a sidecar.
fn small_review() -> Vec<u8> {
    review(pod(vec![container("api", 3), container("proxy", 1)]))
}

fn large_review() -> Vec<u8> {
    review(pod((0..20)
        .map(|i| container(&format!("worker-{i}"), 50))
        .collect()))
}

/// The null webhook: reads each body, answers a constant allowed review. One runtime
/// worker per CPU it may use (one, under `taskset -c 0`), as the webhook has.
fn null_webhook(cert: &str, key: &str, port: u16) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("key PEM");
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("bind the null webhook's port");
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|request: http::Request<Incoming>| async {
                        let _body = request.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(NULL_ANSWER)))
                                .expect("a valid response"),
                        )
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}
