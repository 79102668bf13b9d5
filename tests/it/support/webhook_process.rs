//! The webhook binary serving as a process of its own, against the stand-in API: for the
//! tests that measure the server alone (its memory, its counters) while clients run here.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::fake_api::{service_account, FakeApi};
use crate::support::server::{TestCa, ROLE};

/// The webhook binary (`serve`) on ephemeral loopback ports, with a certificate of the given
/// CA and the stand-in API (on a thread of its own) holding `payments/api`: the server in a
/// process of its own, so that what is measured of it (memory, counters) is its alone. Killed
/// when dropped.
pub struct WebhookProcess {
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    child: std::process::Child,
    /// The server's standard error.
    pub log: std::path::PathBuf,
    api_stop: Option<tokio::sync::oneshot::Sender<()>>,
    api_thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The binary to run: `PIW_WEBHOOK_BINARY` when set (`make test` sets the image's, so what is
/// measured is what ships, optimised), else this build's.
fn binary() -> std::path::PathBuf {
    match std::env::var_os("PIW_WEBHOOK_BINARY") {
        Some(path) => path.into(),
        None => env!("CARGO_BIN_EXE_pod-identity-webhook").into(),
    }
}

impl WebhookProcess {
    /// Starts it with `args` after the listener, certificate and kubeconfig flags, and waits
    /// until it is ready.
    pub fn start(ca: &TestCa, args: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.leaf("first");
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let (api_ready, api_started) = std::sync::mpsc::channel();
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let api_thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let api = FakeApi::start().await;
                api.put(service_account("payments", "api", Some(ROLE)));
                api_ready.send(api).unwrap();
                let _ = api_stopped.await;
            });
        });
        let api = api_started.recv().unwrap();
        api.write_kubeconfig(&kubeconfig);
        let (port, metrics_port) = crate::support::two_free_ports();
        let log = dir.path().join("server.log");
        let child = std::process::Command::new(binary())
            .arg("serve")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--metrics-port={metrics_port}"))
            .arg(format!(
                "--tls-cert={}",
                dir.path().join("tls.crt").display()
            ))
            .arg(format!(
                "--tls-key={}",
                dir.path().join("tls.key").display()
            ))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut process = Self {
            webhook: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
            child,
            log,
            api_stop: Some(api_stop),
            api_thread: Some(api_thread),
            _dir: dir,
        };
        let ready = crate::support::eventually(
            "the webhook process ready",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                if let Ok(Some(status)) = process.child.try_wait() {
                    return Ok(Err(format!("exited ({status})")));
                }
                match process.get("/readyz") {
                    Some(answer) if answer.starts_with("HTTP/1.0 200") => Ok(Ok(())),
                    other => Err(format!("/readyz: {other:?}")),
                }
            },
        );
        if let Err(problem) = ready.and_then(|inner| inner) {
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            process.stop();
            panic!("{problem}; its log:\n{log}");
        }
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A plain GET on the admin port: the whole answer, `None` when nothing answers.
    pub fn get(&self, path: &str) -> Option<String> {
        use std::io::{Read as _, Write as _};
        let mut stream =
            std::net::TcpStream::connect_timeout(&self.admin, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// `pod_identity_webhook_rejected_total{reason}` as the server exports it.
    pub fn rejected(&self, reason: &str) -> u64 {
        let metrics = self.get("/metrics").expect("the admin port answers");
        let series = format!("pod_identity_webhook_rejected_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in the metrics"))
    }

    /// A size field of its `/proc/PID/status` (`VmRSS`, `RssAnon`), in bytes.
    pub fn status_bytes(&self, field: &str) -> u64 {
        status_bytes(self.pid(), field)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.api_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            // The log goes with its temporary directory: its end, for the failure's report.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            eprintln!("the webhook process's log ended with:\n{tail}");
        }
    }
}

/// A size field of `/proc/PID/status` (`VmRSS`, `RssAnon`), in bytes; 0 once the process
/// has exited.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = format!("{field}:");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}
