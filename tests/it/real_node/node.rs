//! The process-wide test node: `hack/node.sh up` (etcd, kube-apiserver, controller-manager,
//! scheduler, containerd, kubelet, a bridge), the webhook's image from `make image` imported,
//! and the chart installed from it on demand. Built once, shared by every test, torn down by
//! `hack/node.sh down` when the test process ends, however it ends.
//!
//! Tests that only create pods in namespaces of their own share the chart release (read
//! lock); tests that replace or disturb the webhook (other manifests, rollouts, kills) take
//! the lock exclusively and leave the chart uninstalled, to be installed again on next use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::eventually;
use crate::support::process::{
    arm_teardown, run, run_with_input, shared_fixture, StartError, Teardown,
};

/// Namespace and release of the chart the shared tests run against.
pub const RELEASE_NS: &str = "piw-system";
pub const RELEASE: &str = "piw";
/// The image `make image` builds, under the chart's default name and tag.
pub const IMAGE_REPOSITORY: &str = "pod-identity-webhook";
pub const IMAGE_ARCHIVE: &str = "target/image/pod-identity-webhook.tar";
/// A ServiceAccount the chart's container-credentials list names (EKS Pod Identity mode).
pub const POD_IDENTITY_NAMESPACE: &str = "pod-identity";
pub const POD_IDENTITY_SA: &str = "app";
pub const POLL: Duration = Duration::from_millis(250);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"))
        .join("pod-identity-webhook")
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// What the node needs, or the list of what is missing.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (containerd, kubelet and a bridge need it)".to_string());
    }
    let bin = cache_dir().join("bin");
    for tool in [
        "kubelet",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
        "helm",
    ] {
        if !bin.join(tool).exists() {
            missing.push(format!("{tool} (in {})", bin.display()));
        }
    }
    for tool in [
        "containerd",
        "runc",
        "ctr",
        "buildah",
        "iptables",
        "busybox",
    ] {
        if !on_path(tool) {
            missing.push(tool.to_string());
        }
    }
    if !repo_root().join(IMAGE_ARCHIVE).is_file() {
        missing.push(format!("the webhook image {IMAGE_ARCHIVE} (`make image`)"));
    }
    missing
}

pub struct Node {
    /// Files of this run kept after it (logs, values, manifests).
    pub artifacts: PathBuf,
    pub env: BTreeMap<String, String>,
    kubectl: PathBuf,
    helm: PathBuf,
    /// Whether the shared chart release is installed and answering.
    chart: Mutex<ChartState>,
}

static DISRUPTION: RwLock<()> = RwLock::new(());

/// The shared release: a failed install is kept, so later tests fail at once with its reason
/// instead of each waiting for the same failure.
#[derive(Clone, PartialEq)]
enum ChartState {
    /// No release installed.
    Absent,
    Installed,
    /// After an exclusive test: a release with other values may be installed, or none.
    Unknown,
    Failed(String),
}

/// A test that needs the shared chart release: holds the lock for reading.
pub struct WithChart {
    _guard: RwLockReadGuard<'static, ()>,
}

/// A test that replaces or disturbs the webhook: holds the lock for writing.
pub struct Exclusive {
    _guard: RwLockWriteGuard<'static, ()>,
}

/// The shared node, built on first use; `None` (after a SKIPPED line) when tools are missing
/// and `PIW_REQUIRE_TOOLS` is not 1. A failed start fails every test with its reason.
pub fn node(test: &str) -> Option<&'static Node> {
    static NODE: OnceLock<Result<Node, StartError>> = OnceLock::new();
    shared_fixture(
        &NODE,
        "real-node",
        test,
        "run `make tools image` as root",
        || {
            let missing = missing_tools();
            if !missing.is_empty() {
                return Err(StartError::Missing(missing));
            }
            Node::start().map_err(StartError::Failed)
        },
    )
}

impl Node {
    fn start() -> Result<Self, String> {
        let pid = std::process::id();
        let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let artifacts = target_tmp.join(format!("real-node-{pid}"));
        std::fs::create_dir_all(&artifacts).map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("piw-real-node-{pid}"));
        let script = repo_root().join("hack/node.sh");
        arm_teardown(Teardown {
            script: script.clone(),
            dir: dir.clone(),
            artifacts: artifacts.clone(),
            keep: [
                "logs/kubelet.log",
                "logs/containerd.log",
                "logs/kube-controller-manager.log",
                "logs/kube-scheduler.log",
                "control-plane/kube-apiserver.log",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            before: || {},
        })?;
        let up = run(Command::new(&script).args(["up", "--dir"]).arg(&dir))?;
        let _ = std::fs::write(artifacts.join("node-up.log"), &up.stderr);
        run(Command::new(&script)
            .args(["load-image", "--dir"])
            .arg(&dir)
            .arg(repo_root().join(IMAGE_ARCHIVE)))?;
        let env_text = std::fs::read_to_string(dir.join("env")).map_err(|e| e.to_string())?;
        let env = env_text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bin = cache_dir().join("bin");
        Ok(Node {
            artifacts,
            env,
            kubectl: bin.join("kubectl"),
            helm: bin.join("helm"),
            chart: Mutex::new(ChartState::Absent),
        })
    }

    /// Waits until `deployment` (`deployment/NAME`, or `deployment` for each of the
    /// namespace's) has rolled out, for at most `timeout` (a kubectl duration).
    pub fn rollout_status(
        &self,
        namespace: &str,
        deployment: &str,
        timeout: &str,
    ) -> Result<(), String> {
        let timeout = format!("--timeout={timeout}");
        let args = ["-n", namespace, "rollout", "status", deployment, &timeout];
        run(self.kubectl().args(args)).map(drop)
    }

    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.env("KUBECONFIG", &self.env["KUBECONFIG"]);
        command
    }

    pub fn helm(&self) -> Command {
        let mut command = Command::new(&self.helm);
        command
            .env("KUBECONFIG", &self.env["KUBECONFIG"])
            .env("HELM_CACHE_HOME", self.artifacts.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.artifacts.join("helm/config"))
            .env("HELM_DATA_HOME", self.artifacts.join("helm/data"));
        command
    }

    /// The service-account issuer the API server signs tokens with.
    pub fn issuer(&self) -> &str {
        &self.env["SERVICE_ACCOUNT_ISSUER"]
    }

    pub fn test_image(&self) -> &str {
        &self.env["TEST_IMAGE"]
    }

    /// Whether the shared chart release is installed; taken after `DISRUPTION`.
    fn chart_state(&self) -> std::sync::MutexGuard<'_, ChartState> {
        self.chart
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shared chart release, installed (again) when needed.
    pub fn with_chart(&self) -> WithChart {
        let guard = DISRUPTION
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut installed = self.chart_state();
        if matches!(*installed, ChartState::Absent | ChartState::Unknown) {
            *installed = match self.install_chart(&[]) {
                Ok(()) => ChartState::Installed,
                Err(e) => ChartState::Failed(format!("{e}\n{}", self.diagnostics(RELEASE_NS))),
            };
        }
        if let ChartState::Failed(reason) = &*installed {
            panic!("the chart release did not install: {reason}");
        }
        WithChart { _guard: guard }
    }

    /// Exclusive use of the node; the shared chart release is uninstalled first when
    /// `without_chart`, and counted as gone afterwards either way.
    pub fn exclusive(&self, without_chart: bool) -> Exclusive {
        let guard = DISRUPTION
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut installed = self.chart_state();
        if without_chart && *installed != ChartState::Absent {
            // Also when unknown: an exclusive test before may have left a release of other
            // values, whose webhook would answer beside what this test installs.
            self.uninstall_chart()
                .unwrap_or_else(|e| panic!("chart uninstall failed: {e}"));
        }
        // Whatever the test does to the release, the next shared test reinstalls it.
        *installed = ChartState::Unknown;
        Exclusive { _guard: guard }
    }

    /// Exclusive use of the node with the shared chart release installed first (taken at
    /// once, so no other exclusive test can uninstall it in between); counted as gone
    /// afterwards, as with `exclusive`.
    pub fn exclusive_with_chart(&self) -> Exclusive {
        let guard = DISRUPTION
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut installed = self.chart_state();
        if *installed != ChartState::Installed {
            self.install_chart(&[]).unwrap_or_else(|e| {
                panic!(
                    "the chart release did not install: {e}\n{}",
                    self.diagnostics(RELEASE_NS)
                )
            });
        }
        *installed = ChartState::Unknown;
        Exclusive { _guard: guard }
    }

    /// The chart's values for the shared release: the defaults except the image, plus one
    /// ServiceAccount in EKS Pod Identity mode.
    fn chart_values(&self) -> PathBuf {
        let path = self.artifacts.join("chart-values.yaml");
        let values = format!(
            "image:\n  repository: {IMAGE_REPOSITORY}\n  tag: \"0.1.0\"\n\
             containerCredentials:\n  enabled: true\n  identities:\n\
             \x20   - namespace: {POD_IDENTITY_NAMESPACE}\n      serviceAccount: {POD_IDENTITY_SA}\n"
        );
        std::fs::write(&path, values).expect("write chart values");
        path
    }

    /// `helm upgrade --install` of the shared release with `extra` `--set-string` values, waiting
    /// for the rollout and for the API server to route reviews to it.
    pub fn install_chart(&self, extra: &[&str]) -> Result<(), String> {
        self.install_chart_with("--set-string", extra)
    }

    /// `install_chart` with `--set` values, typed as YAML reads them (booleans, numbers).
    pub fn install_chart_typed(&self, extra: &[&str]) -> Result<(), String> {
        self.install_chart_with("--set", extra)
    }

    fn install_chart_with(&self, set: &str, extra: &[&str]) -> Result<(), String> {
        let mut helm = self.helm();
        helm.args(["upgrade", "--install", RELEASE])
            .arg(repo_root().join("charts/pod-identity-webhook"))
            .args(["--namespace", RELEASE_NS, "--create-namespace", "--values"])
            .arg(self.chart_values())
            .args(["--wait", "--timeout", "180s"]);
        for value in extra {
            helm.args([set, value]);
        }
        run(&mut helm)?;
        self.wait_webhook_answers("webhook-probe")
    }

    pub fn uninstall_chart(&self) -> Result<(), String> {
        run(self
            .helm()
            .args(["uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait"])
            .arg("--ignore-not-found"))?;
        // The built-in certificate Secret is the webhook's, not helm's.
        let _ = run(self.kubectl().args([
            "-n",
            RELEASE_NS,
            "delete",
            "secrets",
            "--all",
            "--wait=false",
        ]));
        Ok(())
    }

    /// Waits until a server-side dry-run pod under an annotated ServiceAccount comes back
    /// mutated: the API server reaches a webhook (through its Service) that answers.
    pub fn wait_webhook_answers(&self, probe_namespace: &str) -> Result<(), String> {
        let sa = "webhook-probe";
        self.service_account(
            probe_namespace,
            sa,
            &[(
                "eks.amazonaws.com/role-arn",
                "arn:aws:iam::111122223333:role/probe",
            )],
        );
        let probe = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "webhook-probe", "namespace": probe_namespace},
            "spec": {"serviceAccountName": sa,
                     "containers": [{"name": "c", "image": self.test_image()}]}
        });
        eventually(
            "a dry-run pod is mutated",
            Duration::from_secs(90),
            POLL,
            || {
                let out = run_with_input(
                    self.kubectl()
                        .args(["create", "--dry-run=server", "-o", "json", "-f", "-"]),
                    probe.to_string().as_bytes(),
                )?;
                let pod: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
                if env_of(&pod, 0, "AWS_ROLE_ARN").is_some() {
                    Ok(())
                } else {
                    Err("not mutated yet".into())
                }
            },
        )
    }

    /// Creates `namespace` (idempotent).
    pub fn namespace(&self, namespace: &str) {
        let manifest = json!({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": namespace}});
        self.apply(&manifest);
    }

    /// Creates or updates a ServiceAccount with `annotations`, creating its namespace.
    pub fn service_account(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) {
        self.namespace(namespace);
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.apply(&json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations}
        }));
    }

    /// `kubectl apply` of one object or a `List`.
    pub fn apply(&self, manifest: &Value) {
        run_with_input(
            self.kubectl().args(["apply", "-f", "-"]),
            manifest.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `kubectl get -o json`.
    pub fn get(&self, args: &[&str]) -> Result<Value, String> {
        let out = run(self.kubectl().arg("get").args(args).args(["-o", "json"]))?;
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Waits for a pod to end (restartPolicy Never) and returns its log; Err when it failed,
    /// with the log and the pod's status.
    pub fn finished_pod_log(&self, namespace: &str, name: &str) -> Result<String, String> {
        let phase = eventually(
            &format!("pod {namespace}/{name} finishes"),
            Duration::from_secs(120),
            POLL,
            || {
                let pod = self.get(&["-n", namespace, "pod", name])?;
                match pod["status"]["phase"].as_str() {
                    Some(phase @ ("Succeeded" | "Failed")) => Ok(phase.to_string()),
                    other => Err(format!("phase {other:?}: {}", pod["status"])),
                }
            },
        )?;
        let log = self.log(namespace, name)?;
        if phase == "Succeeded" {
            Ok(log)
        } else {
            let pod = self.get(&["-n", namespace, "pod", name])?;
            Err(format!(
                "pod {namespace}/{name} failed:\n{log}\nstatus: {}",
                pod["status"]
            ))
        }
    }

    pub fn log(&self, namespace: &str, pod: &str) -> Result<String, String> {
        let out = run(self.kubectl().args(["-n", namespace, "logs", pod]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Everything useful when a test fails: recent events and the webhook's logs.
    pub fn diagnostics(&self, namespace: &str) -> String {
        let mut text = String::new();
        for args in [
            vec!["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"],
            vec!["-n", RELEASE_NS, "get", "pods", "-o", "wide"],
            vec![
                "-n",
                RELEASE_NS,
                "logs",
                "-l",
                "app.kubernetes.io/name=pod-identity-webhook",
                "--tail=30",
            ],
        ] {
            if let Ok(out) = run(self.kubectl().args(&args)) {
                let _ = writeln!(text, "$ kubectl {}", args.join(" "));
                text.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
        text
    }
}

/// The value of env `name` in container `index` of `pod`.
pub fn env_of<'a>(pod: &'a Value, index: usize, name: &str) -> Option<&'a str> {
    pod["spec"]["containers"][index]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The claims of a JWT, decoded without verification (the API server signed it; these tests
/// check what it says).
pub fn jwt_claims(token: &str) -> Result<Value, String> {
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or_else(|| format!("not a JWT: {token:?}"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("JWT payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("JWT payload is not JSON: {e}"))
}

/// `KEY=VALUE` lines of a log, as a map (later lines win).
pub fn log_fields(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
