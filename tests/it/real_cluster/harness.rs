//! The process-wide test cluster: a real etcd + kube-apiserver (hack/control-plane.sh), the
//! chart installed with helm in URL mode, and the webhook binary running as a child process
//! with the chart's own ServiceAccount token. Built once, shared by every test, torn down when
//! the test process ends — however it ends.
//!
//! Teardown, since Rust tests have no global teardown hook:
//! - every long-lived child (webhook processes) is spawned from one dedicated thread that lives
//!   as long as the process, with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test
//!   process, even on SIGKILL (the signal follows the spawning *thread*, hence the thread);
//! - etcd and kube-apiserver run as daemons (the script detaches them); an `atexit` handler
//!   stops them with `control-plane.sh down` on every normal exit (all passed, or a failure:
//!   libtest exits through `exit(101)`), and a reaper process in its own session, blocked
//!   reading a pipe only this process holds, runs `down` when the process vanishes without
//!   `atexit` (SIGKILL, Ctrl-C).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

use crate::support::process::{arm_teardown, shared_fixture, StartError, Teardown};
use crate::support::tls::{KubeletDir, TestCa};
use crate::support::two_free_ports;

/// Namespace of the chart release the tests run against.
pub const RELEASE_NS: &str = "piw-system";
/// Helm release name; the chart's full name is `<release>-pod-identity-webhook`.
pub const RELEASE: &str = "piw";
/// Full name of the release's objects (ServiceAccount, ClusterRole, webhook configuration).
pub const FULLNAME: &str = "piw-pod-identity-webhook";
/// Namespaces labelled with this key are left out by the chart's webhook: the value names the
/// test webhook (registered by a test) that handles them instead.
pub const OTHER_WEBHOOK_LABEL: &str = "piw-test/other-webhook";
/// ServiceAccount listed in the chart's container-credentials ConfigMap at install time.
pub const CC_NAMESPACE: &str = "container-credentials";
pub const CC_SERVICE_ACCOUNT: &str = "app";
/// The chart's role mapping holds `<MAPPED_NAMESPACE>/<MAPPED_SA>`.
pub const MAPPED_NAMESPACE: &str = "mapping";
pub const MAPPED_SA: &str = "mapped";
pub const MAPPED_ROLE: &str = "arn:aws:iam::111122223333:role/mapped";
pub const MAPPED_AUDIENCE: &str = "mapped.example.com";

pub const SKIP_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";

// ------------------------------------------------------------------------------------ tools

/// The external programs the suite needs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub control_plane: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_bin_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    cache.join("pod-identity-webhook/bin")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| is_executable(p))
}

/// Finds every tool, or says which are missing.
fn find_tools() -> Result<Tools, Vec<String>> {
    let bin = cache_bin_dir();
    let cached = |name: &str| Some(bin.join(name)).filter(|p| is_executable(p));
    let mut missing = Vec::new();
    // hack/install-control-plane.sh keeps `kube-apiserver` pointing at the pinned build
    // (hack/tools.sh), and hack/control-plane.sh, which starts it, picks the pinned one.
    let apiserver = env_path("KUBE_APISERVER_BIN")
        .or_else(|| cached("kube-apiserver"))
        .or_else(|| on_path("kube-apiserver"));
    if apiserver.is_none() {
        missing.push(format!("kube-apiserver (looked in {})", bin.display()));
    }
    let etcd = env_path("ETCD_BIN")
        .or_else(|| cached("etcd"))
        .or_else(|| on_path("etcd"));
    if etcd.is_none() {
        missing.push(format!("etcd (looked in {})", bin.display()));
    }
    // The kubectl built with the cluster's own version comes first: it matches the API server.
    let kubectl = cached("kubectl").or_else(|| on_path("kubectl"));
    if kubectl.is_none() {
        missing.push("kubectl".into());
    }
    let helm = env_path("HELM")
        .or_else(|| cached("helm"))
        .or_else(|| on_path("helm"));
    if helm.is_none() {
        missing.push("helm".into());
    }
    for tool in ["openssl", "curl", "bash"] {
        if on_path(tool).is_none() {
            missing.push(tool.into());
        }
    }
    match (kubectl, helm, missing.is_empty()) {
        (Some(kubectl), Some(helm), true) => Ok(Tools {
            control_plane: repo_root().join("hack/control-plane.sh"),
            kubectl,
            helm,
        }),
        _ => Err(missing),
    }
}

// ------------------------------------------------------------------ processes and teardown

type SpawnJob = Box<dyn FnOnce() -> io::Result<Child> + Send>;
/// A spawn request: the job, and where its result goes.
type SpawnRequest = (SpawnJob, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that it is SIGKILLed when this test process dies. The fork happens on
/// one thread that never exits, because PR_SET_PDEATHSIG fires when the forking thread ends.
pub fn spawn_tied(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("real-cluster-spawner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(job());
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(tx)
    });
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    let job: SpawnJob = Box::new(move || command.spawn());
    sender
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((job, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

/// Pids of live webhook children, killed first by the exit handler.
static CHILD_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_children() {
    if let Ok(pids) = CHILD_PIDS.try_lock() {
        for &pid in pids.iter() {
            // SAFETY: plain kill(2) on a pid we spawned.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

// -------------------------------------------------------------------------- small helpers

pub use crate::support::eventually;
pub use crate::support::process::{run, run_with_input};

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------- webhook processes

/// One webhook server process, restartable with the same arguments and ports.
pub struct Webhook {
    pub name: String,
    binary: PathBuf,
    args: Vec<String>,
    pub port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Webhook {
    /// `args` come after `serve`; the listener flags (fresh ports) are added here.
    pub fn new(name: &str, artifacts: &Path, args: Vec<String>) -> Self {
        let (port, metrics_port) = two_free_ports();
        Self::on_ports(name, artifacts, port, metrics_port, args)
    }

    pub fn on_ports(
        name: &str,
        artifacts: &Path,
        port: u16,
        metrics_port: u16,
        args: Vec<String>,
    ) -> Self {
        let mut all = vec![
            "serve".to_string(),
            "--bind-address=127.0.0.1".into(),
            format!("--port={port}"),
            format!("--metrics-port={metrics_port}"),
        ];
        all.extend(args);
        Self {
            name: name.into(),
            binary: PathBuf::from(env!("CARGO_BIN_EXE_pod-identity-webhook")),
            args: all,
            port,
            metrics_port,
            log: artifacts.join(format!("webhook-{name}.log")),
            child: Mutex::new(None),
        }
    }

    pub fn start(&self) -> Result<(), String> {
        let mut slot = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_some() {
            return Err(format!("webhook {} is already running", self.name));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args(&self.args)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = spawn_tied(command)
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        CHILD_PIDS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(child.id());
        *slot = Some(child);
        Ok(())
    }

    /// `/readyz` on the metrics port: status and body, `None` when nothing answers.
    pub fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.metrics_port, "/readyz")
    }

    /// Waits for `/readyz` to say ok; fails early when the process exits.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        eventually(
            &format!("webhook {} ready", self.name),
            timeout,
            Duration::from_millis(50),
            || {
                if let Some(status) = self.exit_status() {
                    return Ok(Err(format!(
                        "webhook {} exited ({status}); log {}:\n{}",
                        self.name,
                        self.log.display(),
                        tail(&self.log, 40)
                    )));
                }
                match self.readyz() {
                    Some((200, _)) => Ok(Ok(())),
                    other => Err(format!("readyz: {other:?}")),
                }
            },
        )
        .map_err(|e| format!("{e}; log {}:\n{}", self.log.display(), tail(&self.log, 40)))?
    }

    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut slot = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    pub fn is_running(&self) -> bool {
        let mut slot = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// SIGTERM, then waits (bounded) for the exit; SIGKILL if it does not come.
    pub fn stop(&self) -> Option<std::process::ExitStatus> {
        let child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        end_child(child, Duration::from_secs(20))
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 60)
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let slot = self
            .child
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(child) = slot.take() {
            end_child(child, Duration::ZERO);
        }
    }
}

/// Ends a webhook child: SIGTERM and up to `grace` for it to exit (none when zero), then
/// SIGKILL. Once it is reaped its pid is forgotten, so the exit handler never signals a pid
/// that may since belong to another process.
fn end_child(mut child: Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    if !grace.is_zero() {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break child.wait().ok();
            }
        }
    };
    CHILD_PIDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|&p| p != pid);
    status
}

// ------------------------------------------------------------------------ the API server

/// An API response: status, JSON body (Null when empty or not JSON), `Warning` headers.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    /// The body as text (for non-JSON answers such as `/metrics`).
    pub text: String,
    pub warnings: Vec<String>,
}

impl Response {
    pub fn ok(self, what: &str) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "{what}: HTTP {}: {}",
            self.status,
            serde_json::to_string_pretty(&self.body).unwrap_or_default()
        );
        self.body
    }
}

/// The shared cluster.
pub struct Cluster {
    pub tools: Tools,
    /// The control-plane directory (removed by `down`).
    pub dir: PathBuf,
    /// Files of this run kept after it (certificates, kubeconfigs, logs).
    pub artifacts: PathBuf,
    pub env: BTreeMap<String, String>,
    pub runtime: tokio::runtime::Runtime,
    admin: kube::Client,
    /// CA of every serving certificate the tests make.
    pub ca: TestCa,
    /// The primary webhook's serving certificate directory (kubelet-style symlinks).
    pub serving_certs: KubeletDir,
    /// The container-credentials file's directory (kubelet-style symlinks).
    pub container_credentials: KubeletDir,
    /// The webhook registered by the chart release.
    pub primary: Webhook,
    /// kubeconfig with the chart ServiceAccount's token.
    pub chart_kubeconfig: PathBuf,
}

/// Normal tests hold this for reading; tests that disturb the shared cluster (webhook stop,
/// API server restart, certificate rotation) hold it for writing.
static DISRUPTION: RwLock<()> = RwLock::new(());

pub fn shared() -> RwLockReadGuard<'static, ()> {
    DISRUPTION
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    DISRUPTION
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shared cluster, built on first use; `None` (after a SKIPPED line) when the tools are
/// missing and `PIW_REQUIRE_TOOLS` is not 1. A failed start fails every test with its reason.
pub fn cluster(test: &str) -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, StartError>> = OnceLock::new();
    shared_fixture(&CLUSTER, "real-cluster", test, "run `make tools`", || {
        let tools = find_tools().map_err(StartError::Missing)?;
        Cluster::start(tools).map_err(StartError::Failed)
    })
}

impl Cluster {
    fn start(tools: Tools) -> Result<Self, String> {
        let pid = std::process::id();
        let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Artifacts of earlier runs whose process is gone are removed.
        if let Ok(entries) = std::fs::read_dir(&target_tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(other) = name.strip_prefix("real-cluster-") {
                    if other
                        .parse::<u32>()
                        .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
                    {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
        }
        let artifacts = target_tmp.join(format!("real-cluster-{pid}"));
        std::fs::create_dir_all(&artifacts).map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("piw-real-cluster-{pid}"));
        arm_teardown(Teardown {
            script: tools.control_plane.clone(),
            dir: dir.clone(),
            artifacts: artifacts.clone(),
            keep: vec!["kube-apiserver.log".into()],
            before: kill_children,
        })?;

        // The webhook's CA and serving certificate, made while the control plane starts.
        let ca = TestCa::new();
        let (cert, key) = ca.server_cert(&["127.0.0.1", "localhost"]);
        let serving_certs = KubeletDir::create(
            &artifacts.join("serving-certs"),
            &[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())],
        )?;

        let up = run(Command::new(&tools.control_plane)
            .args(["up", "--dir"])
            .arg(&dir))?;
        let _ = std::fs::write(artifacts.join("control-plane-up.log"), &up.stderr);
        let env = parse_env(&std::fs::read_to_string(dir.join("env")).map_err(|e| e.to_string())?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let kubeconfig = PathBuf::from(&env["KUBECONFIG"]);
        let admin = runtime.block_on(client_for(&kubeconfig))?;

        let partial = Partial {
            tools: &tools,
            dir: &dir,
            artifacts: &artifacts,
            env: &env,
        };
        partial.create_namespaces(&[RELEASE_NS, CC_NAMESPACE])?;

        // The chart, in URL mode, pointing at the port the primary webhook will listen on.
        let (port, metrics_port) = two_free_ports();
        let values = artifacts.join("values-primary.yaml");
        std::fs::write(&values, primary_values(port, &ca.pem)).map_err(|e| e.to_string())?;
        run(partial
            .helm()
            .args(["install", RELEASE])
            .arg(repo_root().join("charts/pod-identity-webhook"))
            .args(["--namespace", RELEASE_NS, "--values"])
            .arg(&values))?;

        // The container-credentials file, as a kubelet would project the chart's ConfigMap.
        let cc_map = run(partial.kubectl().args([
            "get",
            "configmap",
            "-n",
            RELEASE_NS,
            &format!("{FULLNAME}-container-credentials"),
            "-o",
            "jsonpath={.data.config\\.json}",
        ]))?;
        let container_credentials = KubeletDir::create(
            &artifacts.join("container-credentials"),
            &[("config.json", &cc_map.stdout)],
        )?;

        let chart_kubeconfig = artifacts.join("kubeconfig-chart-sa");
        partial.service_account_kubeconfig(RELEASE_NS, FULLNAME, &chart_kubeconfig)?;

        let primary = Webhook::on_ports(
            "primary",
            &artifacts,
            port,
            metrics_port,
            vec![
                format!("--tls-cert={}", serving_certs.path("tls.crt").display()),
                format!("--tls-key={}", serving_certs.path("tls.key").display()),
                format!("--kubeconfig={}", chart_kubeconfig.display()),
                format!("--namespace={RELEASE_NS}"),
                "--watch-config-map=true".into(),
                format!(
                    "--watch-container-credentials-config={}",
                    container_credentials.path("config.json").display()
                ),
                "--enable-debugging-handlers=true".into(),
                "--shutdown-delay=0s".into(),
                "--v=2".into(),
            ],
        );
        primary.start()?;
        primary.wait_ready(Duration::from_secs(60))?;

        Ok(Self {
            tools,
            dir,
            artifacts,
            env,
            runtime,
            admin,
            ca,
            serving_certs,
            container_credentials,
            primary,
            chart_kubeconfig,
        })
    }

    fn partial(&self) -> Partial<'_> {
        Partial {
            tools: &self.tools,
            dir: &self.dir,
            artifacts: &self.artifacts,
            env: &self.env,
        }
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        self.partial().kubectl()
    }

    /// `helm` with the admin kubeconfig and helm's state inside the artifacts directory.
    pub fn helm(&self) -> Command {
        self.partial().helm()
    }

    /// `hack/control-plane.sh COMMAND --dir DIR`.
    pub fn control_plane(&self, command: &str) -> Command {
        let mut cmd = Command::new(&self.tools.control_plane);
        cmd.arg(command).arg("--dir").arg(&self.dir);
        cmd
    }

    /// Creates namespaces (with their `default` ServiceAccount) and labels them.
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        self.partial()
            .create_namespaces(&[name])
            .unwrap_or_else(|e| panic!("{e}"));
        if !labels.is_empty() {
            let labels: serde_json::Map<String, Value> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            self.merge_patch(
                &format!("/api/v1/namespaces/{name}"),
                &json!({"metadata": {"labels": labels}}),
            )
            .ok(&format!("label namespace {name}"));
        }
    }

    /// Writes a kubeconfig authenticating as ServiceAccount `namespace/name` (TokenRequest).
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str, path: &Path) {
        self.partial()
            .service_account_kubeconfig(namespace, name, path)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// One raw API request with the admin identity; panics when no answer comes.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Response {
        self.try_request(method, path, content_type, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// One raw API request; Err when the connection fails or nothing answers within 40 s.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Response, String> {
        let bytes = body
            .map(|b| serde_json::to_vec(b).expect("JSON"))
            .unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::ACCEPT, "application/json")
            .body(kube::client::Body::from(bytes))
            .map_err(|e| e.to_string())?;
        let client = self.admin.clone();
        self.runtime.block_on(async move {
            let response = tokio::time::timeout(Duration::from_secs(40), client.send(request))
                .await
                .map_err(|_| "no answer within 40 s".to_string())?
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let warnings = response
                .headers()
                .get_all("warning")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Response {
                status,
                body,
                text: String::from_utf8_lossy(&bytes).into_owned(),
                warnings,
            })
        })
    }

    pub fn get(&self, path: &str) -> Value {
        self.request("GET", path, "application/json", None)
            .ok(&format!("GET {path}"))
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, "application/json", Some(body))
    }

    pub fn merge_patch(&self, path: &str, patch: &Value) -> Response {
        self.request("PATCH", path, "application/merge-patch+json", Some(patch))
    }

    pub fn json_patch(&self, path: &str, patch: &Value) -> Response {
        self.request("PATCH", path, "application/json-patch+json", Some(patch))
    }

    /// Creates a ServiceAccount with these annotations.
    pub fn service_account(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.post(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            &json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "annotations": annotations},
            }),
        )
        .ok(&format!("create ServiceAccount {namespace}/{name}"));
    }

    /// Creates every object of `objects` in the collection at `path`, `concurrency` requests
    /// at a time (thousands of objects in seconds); panics naming the first that failed.
    pub fn create_all(&self, path: &str, objects: &[Value], concurrency: usize) {
        let requests: Vec<(String, Option<&Value>)> = objects
            .iter()
            .map(|object| (path.to_string(), Some(object)))
            .collect();
        self.send_all("POST", &requests, concurrency);
    }

    /// Sends `method` to every (path, body) of `requests`, `concurrency` at a time; panics
    /// naming the first that failed.
    pub fn send_all(
        &self,
        method: &str,
        requests: &[(String, Option<&Value>)],
        concurrency: usize,
    ) {
        use futures::StreamExt as _;
        let sent = futures::stream::iter(requests).map(|(path, body)| {
            let client = self.admin.clone();
            async move {
                let bytes = body
                    .map(|b| serde_json::to_vec(b).expect("JSON"))
                    .unwrap_or_default();
                let request = http::Request::builder()
                    .method(method)
                    .uri(path)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::ACCEPT, "application/json")
                    .body(kube::client::Body::from(bytes))
                    .map_err(|e| e.to_string())?;
                let response = tokio::time::timeout(Duration::from_secs(40), client.send(request))
                    .await
                    .map_err(|_| format!("{path}: no answer within 40 s"))?
                    .map_err(|e| format!("{path}: {e}"))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{path}: HTTP {status}: {}",
                        String::from_utf8_lossy(&body)
                    ))
                }
            }
        });
        let failed = self.runtime.block_on(
            sent.buffer_unordered(concurrency)
                .filter_map(|result| async move { result.err() })
                .collect::<Vec<String>>(),
        );
        assert!(
            failed.is_empty(),
            "{} of {} {method} requests failed, the first: {}",
            failed.len(),
            requests.len(),
            failed[0]
        );
    }

    /// Creates a pod and returns it as stored (read back from the API server), with the
    /// warnings the creation returned.
    pub fn create_pod(&self, namespace: &str, pod: &Value) -> (Value, Vec<String>) {
        let created = self.post(&format!("/api/v1/namespaces/{namespace}/pods"), pod);
        let warnings = created.warnings.clone();
        let created = created.ok(&format!("create pod in {namespace}"));
        let name = created["metadata"]["name"]
            .as_str()
            .expect("pod name")
            .to_string();
        (
            self.get(&format!("/api/v1/namespaces/{namespace}/pods/{name}")),
            warnings,
        )
    }

    /// Registers a webhook by URL (CA: the tests' CA) for pods created in namespaces labelled
    /// `selector`; returns a guard that deletes the registration.
    pub fn register_webhook(
        &self,
        config_name: &str,
        url: &str,
        selector: (&str, &str),
        failure_policy: &str,
    ) -> Registration<'_> {
        self.post(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            &json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": config_name},
                "webhooks": [{
                    "name": format!("{config_name}.test.example.com"),
                    "admissionReviewVersions": ["v1", "v1beta1"],
                    "sideEffects": "None",
                    "failurePolicy": failure_policy,
                    "timeoutSeconds": 10,
                    "clientConfig": {
                        "url": url,
                        "caBundle": base64::engine::general_purpose::STANDARD.encode(&self.ca.pem),
                    },
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                               "resources": ["pods"], "scope": "Namespaced"}],
                    "namespaceSelector": {"matchLabels": {selector.0: selector.1}},
                }],
            }),
        )
        .ok(&format!("register webhook {config_name}"));
        Registration {
            cluster: self,
            name: config_name.to_string(),
        }
    }

    /// Sum of the API server's metric `name` over the series whose labels include `labels`.
    pub fn apiserver_metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let metrics = self.request("GET", "/metrics", "text/plain", None);
        assert_eq!(metrics.status, 200, "GET /metrics: {}", metrics.text);
        metrics
            .text
            .lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
            .filter(|line| {
                labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The primary webhook's ServiceAccount cache, from `/debug/alpha/cache`.
    pub fn primary_cache(&self) -> Value {
        match http_get(self.primary.metrics_port, "/debug/alpha/cache") {
            Some((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
            other => panic!("/debug/alpha/cache: {other:?}"),
        }
    }
}

/// A MutatingWebhookConfiguration a test created, deleted when dropped.
pub struct Registration<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.try_request(
            "DELETE",
            &format!(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}",
                self.name
            ),
            "application/json",
            None,
        );
    }
}

/// What the tools need before the cluster exists as a whole.
struct Partial<'a> {
    tools: &'a Tools,
    dir: &'a Path,
    artifacts: &'a Path,
    env: &'a BTreeMap<String, String>,
}

impl Partial<'_> {
    fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.tools.kubectl);
        cmd.env("KUBECONFIG", &self.env["KUBECONFIG"])
            .env("KUBECACHEDIR", self.artifacts.join("kube-cache"))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy");
        cmd
    }

    fn helm(&self) -> Command {
        let helm_home = self.artifacts.join("helm");
        let mut cmd = Command::new(&self.tools.helm);
        cmd.env("KUBECONFIG", &self.env["KUBECONFIG"])
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy");
        cmd
    }

    fn create_namespaces(&self, names: &[&str]) -> Result<(), String> {
        run(Command::new(&self.tools.control_plane)
            .args(["create-namespace", "--dir"])
            .arg(self.dir)
            .args(names))
        .map(drop)
    }

    fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> Result<(), String> {
        let token =
            run(self
                .kubectl()
                .args(["create", "token", name, "-n", namespace, "--duration=6h"]))?;
        let token = String::from_utf8_lossy(&token.stdout).trim().to_string();
        let ca = std::fs::read(&self.env["KUBE_CA_FILE"]).map_err(|e| e.to_string())?;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\n\
             contexts:\n- name: local\n  context:\n    cluster: local\n    user: {name}\n    \
             namespace: {namespace}\ncurrent-context: local\n",
            self.env["KUBE_APISERVER_URL"],
            base64::engine::general_purpose::STANDARD.encode(ca),
        );
        std::fs::write(path, kubeconfig).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The release's values: URL mode at 127.0.0.1:`port`, the role mapping and the
/// container-credentials identities the scenarios use, and namespaces labelled for other
/// test webhooks left out.
fn primary_values(port: u16, ca_pem: &str) -> String {
    let mut values = String::new();
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    writeln!(
        values,
        "webhook:\n  url: https://127.0.0.1:{port}/mutate\n  caBundle: {ca_b64}\n  timeoutSeconds: 10\n  \
         namespaceSelector:\n    matchExpressions:\n      - key: {OTHER_WEBHOOK_LABEL}\n        operator: DoesNotExist"
    )
    .unwrap();
    writeln!(
        values,
        "roleMapping:\n  enabled: true\n  mappings:\n    {MAPPED_NAMESPACE}/{MAPPED_SA}:\n      RoleARN: {MAPPED_ROLE}\n      \
         Audience: {MAPPED_AUDIENCE}\n      UseRegionalSTS: true\n      TokenExpiration: 3600"
    )
    .unwrap();
    writeln!(
        values,
        "containerCredentials:\n  enabled: true\n  identities:\n    - namespace: {CC_NAMESPACE}\n      \
         serviceAccount: {CC_SERVICE_ACCOUNT}"
    )
    .unwrap();
    values
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A kube client from a kubeconfig file, with bounded timeouts.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client, String> {
    let mut config =
        pod_identity_webhook::commands::cluster::config_from_kubeconfig(kubeconfig).await?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    config.write_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(config).map_err(|e| e.to_string())
}
