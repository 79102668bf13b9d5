//! The real binary against a stand-in API server: SIGTERM while requests are in flight. Every
//! request started before the listener closes must be answered, and the process exits 0.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::fake_api;
use crate::support::server::*;
use crate::support::two_free_ports;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The webhook process, killed and reaped when dropped: a failed assertion does not leave it
/// running with its two ports.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn readyz(addr: SocketAddr) -> Option<StatusCode> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = http::Request::get("/readyz")
        .header("host", "localhost")
        .body(full(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    Some(response.status())
}

/// One request whose body arrives in two halves `pause` apart, so it is in flight that long.
async fn slow_mutate(
    client: &mut Client,
    pause: Duration,
) -> Result<(StatusCode, Bytes), ClientError> {
    let body = pod_review("api").to_string().into_bytes();
    let (half, rest) = body.split_at(body.len() / 2);
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
    tx.unbounded_send(Ok(Frame::data(Bytes::copy_from_slice(half))))
        .unwrap();
    let rest = Bytes::copy_from_slice(rest);
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        let _ = tx.unbounded_send(Ok(Frame::data(rest)));
    });
    client
        .send(mutate_request(StreamBody::new(rx).boxed_unsync()))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_fails_no_in_flight_request_and_exits_zero() {
    let api = fake_api::FakeApi::start().await;
    api.put(fake_api::service_account("payments", "api", Some(ROLE)));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
             current-context: fake\n",
            api.url()
        ),
    )
    .unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("first");
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let (port, metrics_port) = two_free_ports();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let shutdown_delay = Duration::from_secs(1);
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
            .arg(format!("--port={port}"))
            .arg(format!("--metrics-port={metrics_port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--tls-cert={}",
                dir.path().join("tls.crt").display()
            ))
            .arg(format!(
                "--tls-key={}",
                dir.path().join("tls.key").display()
            ))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--shutdown-delay=1s")
            .arg("--shutdown-timeout=10s")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let server_log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let webhook = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], metrics_port));

    let started = Instant::now();
    while readyz(admin).await != Some(StatusCode::OK) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not ready within 20 s:\n{}",
            server_log()
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "exited early:\n{}",
            server_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Load: 4 kept-alive connections (two of each HTTP version), each request in flight for
    // 800 ms. New requests start until half-way through the shutdown delay, so the last ones
    // are still in flight when the listener closes and draining begins.
    let starting = Arc::new(AtomicBool::new(true));
    let outcomes = Arc::new(Mutex::new(Vec::<(Result<(), String>, Instant)>::new()));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let protocol = if worker % 2 == 0 {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        let mut client = Client::connect(webhook, &ca, protocol).await.unwrap();
        let (starting, outcomes) = (starting.clone(), outcomes.clone());
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while starting.load(Ordering::Acquire) && Instant::now() < deadline {
                let outcome = match slow_mutate(&mut client, Duration::from_millis(800)).await {
                    Ok((StatusCode::OK, body)) => {
                        let answer: Value = serde_json::from_slice(&body).unwrap();
                        let pod = apply_patch(&answer["response"], &pod("api"));
                        if env(&pod, 0, "AWS_ROLE_ARN").as_deref() == Some(ROLE) {
                            Ok(())
                        } else {
                            Err(format!("not mutated: {answer}"))
                        }
                    }
                    Ok((status, body)) => {
                        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(err) => Err(format!("{protocol:?}: {err}")),
                };
                outcomes.lock().unwrap().push((outcome, Instant::now()));
            }
        }));
    }
    // Timed, not awaited: each worker is then 400 ms into its second request, whose
    // successor starts before the SIGTERM's shutdown delay is half over and so is still in
    // flight when the listener closes.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let sigterm = Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut saw_not_ready = false;
    while sigterm.elapsed() < shutdown_delay / 2 {
        saw_not_ready |= readyz(admin).await == Some(StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    starting.store(false, Ordering::Release);
    assert!(
        saw_not_ready,
        "readiness did not turn false during the shutdown delay"
    );
    for worker in workers {
        worker.await.unwrap();
    }

    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            sigterm.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = server_log();
    assert!(exit.success(), "exit status {exit:?}:\n{log}");

    let outcomes = outcomes.lock().unwrap();
    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|(outcome, _)| outcome.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "failed in-flight requests: {failed:?}\n{log}"
    );
    let drained = outcomes
        .iter()
        .filter(|(_, finished)| *finished > sigterm + shutdown_delay)
        .count();
    assert!(
        drained >= 1,
        "no request was in flight when draining began; the test proves nothing"
    );
    assert!(outcomes.len() >= 8, "too few requests: {}", outcomes.len());
    assert!(log.contains("draining open connections"), "{log}");
    assert!(
        std::net::TcpStream::connect(webhook).is_err(),
        "listener closed after exit"
    );
}
