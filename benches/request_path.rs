//! Load benchmark of the whole request path over TLS on loopback: TLS, HTTP/1.1 or HTTP/2,
//! routing, AdmissionReview decoding, ServiceAccount lookup, the engine, response encoding.
//! Closed-loop clients on kept-alive connections; throughput and latency percentiles.
//!
//! `cargo bench --bench request_path` runs the full load (bounded in requests and time) and
//! prints a Markdown table for docs/benchmarks.md. Without `--bench` (as under
//! `cargo test --benches`) it runs a few requests per scenario as a smoke test.

// The integration tests' server helpers, which find the test certificates at
// `crate::support::tls` as in the test binary; the benchmark uses part of them.
#[allow(dead_code)]
#[path = "../tests/it/support/server.rs"]
mod server_support;
#[allow(dead_code)]
#[path = "../tests/it/support/tls.rs"]
mod tls;
mod support {
    pub(crate) use super::tls;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use pod_identity_webhook::server::Limits;
use server_support::*;

struct Scenario {
    name: &'static str,
    protocol: Protocol,
    connections: usize,
    /// Concurrent requests per connection (HTTP/2 streams).
    streams: usize,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "HTTP/2, 1 connection, one request at a time",
        protocol: Protocol::Http2,
        connections: 1,
        streams: 1,
    },
    Scenario {
        name: "HTTP/1.1, 8 connections",
        protocol: Protocol::Http1,
        connections: 8,
        streams: 1,
    },
    Scenario {
        name: "HTTP/2, 8 connections",
        protocol: Protocol::Http2,
        connections: 8,
        streams: 1,
    },
    Scenario {
        name: "HTTP/2, 1 connection x 16 streams",
        protocol: Protocol::Http2,
        connections: 1,
        streams: 16,
    },
];

struct Load {
    requests_per_client: usize,
    warmup_per_client: usize,
    time_limit: Duration,
}

struct Result_ {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let load = if full {
        Load {
            requests_per_client: 2500,
            warmup_per_client: 200,
            time_limit: Duration::from_secs(30),
        }
    } else {
        Load {
            requests_per_client: 5,
            warmup_per_client: 1,
            time_limit: Duration::from_secs(10),
        }
    };

    // The server gets one runtime thread and the load generator the other of a 2-core machine.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client")
        .enable_all()
        .build()
        .unwrap();
    let ca = TestCa::new();
    let server = server_runtime.block_on(TestServer::start(
        components(service_accounts()),
        Limits::default(),
        &ca,
    ));
    let body = bytes::Bytes::from(fixture("pod-create-v1.json").to_string());

    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        let result =
            client_runtime.block_on(run(scenario, &load, server.webhook, &ca, body.clone()));
        rows.push((scenario, result));
    }
    server_runtime.block_on(server.stop());

    println!("| scenario | requests | throughput (req/s) | p50 | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (scenario, mut result) in rows {
        result.latencies.sort();
        let percentile = |p: f64| {
            let index = ((result.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
            micros(result.latencies[index.min(result.latencies.len() - 1)])
        };
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            scenario.name,
            result.requests,
            result.requests as f64 / result.elapsed.as_secs_f64(),
            percentile(0.50),
            percentile(0.90),
            percentile(0.99),
            micros(*result.latencies.last().unwrap()),
        );
    }
    println!(
        "\nbody: tests/fixtures/admission/pod-create-v1.json ({} bytes, mutated: 2 containers); \
         TLS 1.3, rustls ring; server and load generator on one Tokio worker thread each",
        body.len()
    );
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

async fn run(
    scenario: &Scenario,
    load: &Load,
    addr: std::net::SocketAddr,
    ca: &TestCa,
    body: bytes::Bytes,
) -> Result_ {
    let mut clients = Vec::new();
    for _ in 0..scenario.connections {
        let first = Client::connect(addr, ca, scenario.protocol)
            .await
            .expect("connect");
        for _ in 1..scenario.streams {
            clients.push(
                first
                    .try_clone()
                    .expect("streams share an HTTP/2 connection"),
            );
        }
        clients.push(first);
    }
    // Warm-up on every client, then the measured run.
    let clients = drive(
        clients,
        load.warmup_per_client,
        load.time_limit,
        body.clone(),
        None,
    )
    .await;
    let started = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    drive(
        clients,
        load.requests_per_client,
        load.time_limit,
        body,
        Some(latencies.clone()),
    )
    .await;
    let elapsed = started.elapsed();
    let latencies = std::mem::take(&mut *latencies.lock().unwrap());
    Result_ {
        requests: latencies.len(),
        elapsed,
        latencies,
    }
}

/// Each client sends `count` requests one after another (stopping early at `time_limit`).
async fn drive(
    clients: Vec<Client>,
    count: usize,
    time_limit: Duration,
    body: bytes::Bytes,
    record: Option<Arc<std::sync::Mutex<Vec<Duration>>>>,
) -> Vec<Client> {
    let deadline = Instant::now() + time_limit;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let body = body.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count);
                for _ in 0..count {
                    if Instant::now() > deadline {
                        break;
                    }
                    let sent = Instant::now();
                    let (status, _) = client.mutate(body.clone()).await.expect("request");
                    assert_eq!(status, StatusCode::OK);
                    latencies.push(sent.elapsed());
                }
                if let Some(record) = record {
                    record.lock().unwrap().extend(latencies);
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    clients
}
