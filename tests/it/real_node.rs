//! The webhook as users run it, on a real one-node cluster (hack/node.sh: kube-apiserver,
//! controller-manager, scheduler, containerd and a kubelet on this machine): its image from
//! `make image`, installed by the chart (or by other manifests), called by the API server
//! through its Service, and pods that really run and read what was injected. Each scenario
//! asserts on what a running container sees.
//!
//! Needs root and `make tools image`; without them every test prints SKIPPED and passes,
//! unless `PIW_REQUIRE_TOOLS=1`. Logs of the node are kept in `target/tmp/real-node-<pid>/`.

mod node;
mod soak;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::process::{run, run_with_input};
use crate::support::promql::{self, Series};
use crate::support::skip::skip;
use crate::support::tls::TestCa;
use crate::support::{eventually, suite_gate};
use node::{env_of, jwt_claims, log_fields, Node, POLL, RELEASE_NS};

const ROLE_KEY: &str = "eks.amazonaws.com/role-arn";
const AUDIENCE_KEY: &str = "eks.amazonaws.com/audience";
const EXPIRATION_KEY: &str = "eks.amazonaws.com/token-expiration";
const TOKEN_FILE: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
const POD_IDENTITY_TOKEN_FILE: &str =
    "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";

macro_rules! node {
    ($test:expr) => {
        match node::node($test) {
            Some(node) => node,
            None => return,
        }
    };
}

// After `node!`, which it uses.
mod audit;

/// A shell script for the test image that prints what the container sees, one `KEY=VALUE`
/// a line: its uid, the given variables, the token file named by `token_var` and its mode.
fn report_script(vars: &[&str], token_var: &str) -> String {
    let mut script = String::from("set -e\necho \"uid=$(id -u)\"\n");
    for var in vars {
        script.push_str(&format!("echo \"{var}=${var}\"\n"));
    }
    script.push_str(&format!(
        "echo \"token=$(cat \"${token_var}\")\"\n\
         echo \"mode=$(stat -L -c %a:%u:%g \"${token_var}\")\"\n"
    ));
    script
}

/// A pod (restartPolicy Never) running `script` under `sa`.
fn report_pod(node: &Node, namespace: &str, name: &str, sa: &str, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "serviceAccountName": sa,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "report", "image": node.test_image(),
                            "command": ["sh", "-c", script]}]
        }
    })
}

/// An IRSA ServiceAccount with its own audience and expiration.
struct Irsa {
    namespace: String,
    sa: String,
    role: String,
    audience: String,
    expiration: i64,
}

impl Irsa {
    fn create(node: &Node, namespace: &str, sa: &str) -> Self {
        let irsa = Irsa {
            namespace: namespace.into(),
            sa: sa.into(),
            role: format!("arn:aws:iam::111122223333:role/{sa}"),
            audience: format!("{namespace}.audience.example"),
            expiration: 7200,
        };
        node.service_account(
            namespace,
            sa,
            &[
                (ROLE_KEY, &irsa.role),
                (AUDIENCE_KEY, &irsa.audience),
                (EXPIRATION_KEY, &irsa.expiration.to_string()),
            ],
        );
        irsa
    }

    /// Checks what a report pod printed: the variables and a token the API server issued for
    /// this ServiceAccount with its audience and lifetime.
    fn check_report(&self, node: &Node, log: &str) -> Result<(), String> {
        let fields = log_fields(log);
        let field = |key: &str| fields.get(key).map(String::as_str).unwrap_or("<unset>");
        if field("AWS_ROLE_ARN") != self.role {
            return Err(format!(
                "AWS_ROLE_ARN is {}, want {}",
                field("AWS_ROLE_ARN"),
                self.role
            ));
        }
        if field("AWS_WEB_IDENTITY_TOKEN_FILE") != TOKEN_FILE {
            return Err(format!(
                "AWS_WEB_IDENTITY_TOKEN_FILE is {}",
                field("AWS_WEB_IDENTITY_TOKEN_FILE")
            ));
        }
        let claims = jwt_claims(field("token"))?;
        check_claims(
            &claims,
            &self.audience,
            &format!("system:serviceaccount:{}:{}", self.namespace, self.sa),
            node.issuer(),
            self.expiration,
        )
    }
}

fn check_claims(
    claims: &Value,
    audience: &str,
    subject: &str,
    issuer: &str,
    lifetime: i64,
) -> Result<(), String> {
    let aud: Vec<&str> = match &claims["aud"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        other => return Err(format!("aud is {other}")),
    };
    if aud != [audience] {
        return Err(format!(
            "aud is {aud:?}, want [{audience}]; claims {claims}"
        ));
    }
    if claims["sub"] != subject {
        return Err(format!("sub is {}, want {subject}", claims["sub"]));
    }
    if claims["iss"] != issuer {
        return Err(format!("iss is {}, want {issuer}", claims["iss"]));
    }
    let (exp, iat) = (claims["exp"].as_i64(), claims["iat"].as_i64());
    match (exp, iat) {
        (Some(exp), Some(iat)) if exp - iat == lifetime => Ok(()),
        _ => Err(format!(
            "exp - iat is not {lifetime}: exp {exp:?}, iat {iat:?}"
        )),
    }
}

/// Runs a report pod with `security_context` and checks the token it read; returns the log.
fn token_seen_by(
    node: &Node,
    namespace: &str,
    security_context: Value,
) -> Result<(String, std::collections::BTreeMap<String, String>), String> {
    let irsa = Irsa::create(node, namespace, "reader");
    let script = report_script(
        &["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    );
    let mut pod = report_pod(node, namespace, "report", "reader", &script);
    pod["spec"]["securityContext"] = security_context;
    node.apply(&pod);
    let log = node
        .finished_pod_log(namespace, "report")
        .map_err(|e| format!("{e}\n{}", node.diagnostics(namespace)))?;
    irsa.check_report(node, &log)?;
    Ok((log.clone(), log_fields(&log)))
}

#[test]
fn chart_defaults_run_two_replicas_with_builtin_certificates_and_helm_test_passes() {
    let _gate = suite_gate::enter("real_node");
    let node =
        node!("chart_defaults_run_two_replicas_with_builtin_certificates_and_helm_test_passes");
    let chart = node.with_chart();
    let deployments = node
        .get(&["-n", RELEASE_NS, "deployments"])
        .expect("list deployments");
    let deployment = &deployments["items"][0];
    assert_eq!(deployment["spec"]["replicas"], 2, "{deployment}");
    assert_eq!(
        deployment["status"]["readyReplicas"], 2,
        "{}",
        deployment["status"]
    );

    // Built-in certificates: the webhook made its CA and serving pair in a Secret and wrote
    // that CA into the MutatingWebhookConfiguration, which points at the Service.
    let secrets = node.get(&["-n", RELEASE_NS, "secrets"]).expect("secrets");
    let secret = secrets["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["data"]["tls.crt"].is_string()))
        .unwrap_or_else(|| panic!("no serving-certificate Secret in {RELEASE_NS}: {secrets}"));
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            secret["data"]["ca.crt"]
                .as_str()
                .expect("ca.crt in the Secret"),
        )
        .expect("base64 ca.crt");
    let configs = node
        .get(&["mutatingwebhookconfigurations"])
        .expect("webhook configurations");
    let webhook = configs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
        .find(|w| w["clientConfig"]["service"]["namespace"] == RELEASE_NS)
        .unwrap_or_else(|| panic!("no webhook calls a Service in {RELEASE_NS}: {configs}"));
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(
            webhook["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle set"),
        )
        .expect("base64 caBundle");
    assert!(
        String::from_utf8_lossy(&bundle).contains(String::from_utf8_lossy(&ca).trim()),
        "the caBundle does not hold the Secret's CA"
    );

    // helm test: its pod really runs (busybox) and checks the webhook from inside.
    let out = run(node
        .helm()
        .args(["test", node::RELEASE, "--namespace", RELEASE_NS]))
    .unwrap_or_else(|e| panic!("helm test failed: {e}\n{}", node.diagnostics(RELEASE_NS)));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Succeeded"), "helm test output: {text}");
    drop(chart);
}

/// Runs a report pod as `security_context` says and checks who it ran as and the token
/// file's mode, owner and group.
fn check_token_access(test: &str, namespace: &str, security_context: Value, uid: &str, mode: &str) {
    let node = node!(test);
    let _chart = node.with_chart();
    let (log, fields) = token_seen_by(node, namespace, security_context).unwrap();
    assert_eq!(fields["uid"], uid, "{log}");
    assert_eq!(fields["mode"], mode, "{log}");
}

#[test]
fn token_is_readable_by_root() {
    let _gate = suite_gate::enter("real_node");
    check_token_access(
        "token_is_readable_by_root",
        "token-root",
        json!({}),
        "0",
        "644:0:0",
    );
}

#[test]
fn token_is_readable_by_a_non_root_user_without_fs_group() {
    let _gate = suite_gate::enter("real_node");
    check_token_access(
        "token_is_readable_by_a_non_root_user_without_fs_group",
        "token-user",
        json!({"runAsUser": 1000}),
        "1000",
        "600:1000:0",
    );
}

#[test]
fn token_is_readable_by_a_non_root_user_with_fs_group() {
    let _gate = suite_gate::enter("real_node");
    // The kubelet gives the token file to the pod's user, readable by its fsGroup.
    check_token_access(
        "token_is_readable_by_a_non_root_user_with_fs_group",
        "token-fsgroup",
        json!({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}),
        "1000",
        "640:1000:2000",
    );
}

#[test]
fn pods_of_a_deployment_get_their_token() {
    let _gate = suite_gate::enter("real_node");
    let node = node!("pods_of_a_deployment_get_their_token");
    let _chart = node.with_chart();
    let namespace = "deployment";
    let irsa = Irsa::create(node, namespace, "worker");
    // The pods print, then stay up so the Deployment is Available.
    let script = format!(
        "{}sleep 3600\n",
        report_script(
            &["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
            "AWS_WEB_IDENTITY_TOKEN_FILE"
        )
    );
    node.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "worker", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "worker"}},
            "template": {
                "metadata": {"labels": {"app": "worker"}},
                "spec": {"serviceAccountName": "worker", "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "worker", "image": node.test_image(),
                                         "command": ["sh", "-c", script]}]}
            }
        }
    }));
    node.rollout_status(namespace, "deployment/worker", "120s")
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(namespace)));
    let pods = node
        .get(&["-n", namespace, "pods", "-l", "app=worker"])
        .expect("pods");
    let pods = pods["items"].as_array().expect("items");
    assert_eq!(pods.len(), 2);
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().expect("name");
        // The ReplicaSet sent no name: the API server generated it after admission.
        assert!(pod["metadata"]["generateName"].is_string(), "{name}");
        let log = eventually(
            "the pod printed its report",
            Duration::from_secs(30),
            POLL,
            || {
                let log = node.log(namespace, name)?;
                if log.contains("mode=") {
                    Ok(log)
                } else {
                    Err(log)
                }
            },
        )
        .unwrap();
        irsa.check_report(node, &log)
            .unwrap_or_else(|e| panic!("pod {name}: {e}\n{log}"));
    }
    let _ = run(node.kubectl().args([
        "-n",
        namespace,
        "delete",
        "deployment",
        "worker",
        "--wait=false",
    ]));
}

#[test]
fn eks_pod_identity_mode_gives_its_token_and_label() {
    let _gate = suite_gate::enter("real_node");
    let node = node!("eks_pod_identity_mode_gives_its_token_and_label");
    let _chart = node.with_chart();
    let namespace = node::POD_IDENTITY_NAMESPACE;
    let sa = node::POD_IDENTITY_SA;
    node.service_account(namespace, sa, &[]);
    let script = report_script(
        &[
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        ],
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    );
    node.apply(&report_pod(node, namespace, "report", sa, &script));
    let log = node
        .finished_pod_log(namespace, "report")
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(namespace)));
    let fields = log_fields(&log);
    assert_eq!(
        fields["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"], POD_IDENTITY_TOKEN_FILE,
        "{log}"
    );
    assert!(
        fields["AWS_CONTAINER_CREDENTIALS_FULL_URI"].starts_with("http://"),
        "{log}"
    );
    let claims = jwt_claims(&fields["token"]).unwrap();
    let subject = format!("system:serviceaccount:{namespace}:{sa}");
    // The webhook asks for 86400 s by default; jitter applies only to the annotation path.
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    check_claims(
        &claims,
        "pods.eks.amazonaws.com",
        &subject,
        node.issuer(),
        lifetime,
    )
    .unwrap();
    let pod = node.get(&["-n", namespace, "pod", "report"]).unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"], "enabled",
        "{}",
        pod["metadata"]
    );
}

/// A ServiceAccount and its pod in one `kubectl apply`: the pod reaches the webhook before
/// its watch has seen the ServiceAccount.
fn apply_service_account_with_pod(node: &Node, namespace: &str, sa: &str) -> Value {
    node.namespace(namespace);
    let role = format!("arn:aws:iam::111122223333:role/{sa}");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": sa, "namespace": namespace, "annotations": {ROLE_KEY: role}}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": sa, "namespace": namespace},
         "spec": {"serviceAccountName": sa, "terminationGracePeriodSeconds": 0,
                  "nodeSelector": {"piw-test/never": "scheduled"},
                  "containers": [{"name": "c", "image": node.test_image()}]}}
    ]});
    node.apply(&list);
    let pod = node.get(&["-n", namespace, "pod", sa]).unwrap();
    assert_eq!(
        env_of(&pod, 0, "AWS_ROLE_ARN"),
        Some(role.as_str()),
        "pod {namespace}/{sa} was not mutated: {}\n{}",
        pod["spec"],
        node.diagnostics(namespace)
    );
    pod
}

#[test]
fn service_account_and_pod_in_one_apply_even_right_after_a_webhook_restart() {
    let _gate = suite_gate::enter("real_node");
    let node = node!("service_account_and_pod_in_one_apply_even_right_after_a_webhook_restart");
    // One exclusive hold from the first apply to the last: released in between, another
    // exclusive test could uninstall the chart before the restart.
    let _exclusive = node.exclusive_with_chart();
    apply_service_account_with_pod(node, "one-apply", "first");
    run(node
        .kubectl()
        .args(["-n", RELEASE_NS, "rollout", "restart", "deployment"]))
    .unwrap();
    wait_two_replicas(node);
    apply_service_account_with_pod(node, "one-apply", "after-restart");
}

/// Pods created one after another under an annotated ServiceAccount while a test disturbs the
/// webhook or the API server. Pods never run (a nodeSelector nothing matches): admission is
/// what is measured. A creation the API server could not take at all (it was restarting) is
/// retried; a failed admission is recorded.
struct PodStream {
    node: &'static Node,
    namespace: &'static str,
    stop: Arc<AtomicBool>,
    /// Pods created so far (the record's count, readable while the stream runs).
    admitted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<StreamRecord>>,
}

#[derive(Default)]
struct StreamRecord {
    created: usize,
    api_unavailable: usize,
    admission_failures: Vec<String>,
}

impl PodStream {
    fn start(node: &'static Node, namespace: &'static str) -> Self {
        node.service_account(
            namespace,
            "streamed",
            &[(ROLE_KEY, "arn:aws:iam::111122223333:role/streamed")],
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let admitted = Arc::new(AtomicUsize::new(0));
        let counted = admitted.clone();
        let thread = std::thread::spawn(move || {
            let mut record = StreamRecord::default();
            let mut i = 0;
            while !stopped.load(Ordering::Relaxed) {
                i += 1;
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("stream-{i}"), "namespace": namespace},
                    "spec": {"serviceAccountName": "streamed", "terminationGracePeriodSeconds": 0,
                             "nodeSelector": {"piw-test/never": "scheduled"},
                             "containers": [{"name": "c", "image": node.test_image()}]}});
                loop {
                    match run_with_input(
                        node.kubectl()
                            .args(["create", "--request-timeout=20s", "-f", "-"]),
                        pod.to_string().as_bytes(),
                    ) {
                        Ok(_) => {
                            record.created += 1;
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        // What the API server says when a webhook call fails or refuses (the
                        // error also names kubectl's path, so "webhook" alone would match all).
                        Err(e)
                            if e.contains("failed calling webhook")
                                || e.contains("denied the request") =>
                        {
                            record.admission_failures.push(e)
                        }
                        Err(e) if e.contains("AlreadyExists") => {
                            record.created += 1;
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) if !stopped.load(Ordering::Relaxed) => {
                            record.api_unavailable += 1;
                            std::thread::sleep(Duration::from_millis(200));
                            continue;
                        }
                        Err(_) => {}
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            record
        });
        let stream = PodStream {
            node,
            namespace,
            stop,
            admitted,
            thread: Some(thread),
        };
        stream.admits_more(8, "before the disturbance");
        stream
    }

    /// Waits until `pods` more pods have been created (the stream runs on, admissions pass).
    fn admits_more(&self, pods: usize, when: &str) {
        let target = self.admitted.load(Ordering::Relaxed) + pods;
        eventually(
            &format!("{pods} more pods created {when}"),
            Duration::from_secs(120),
            POLL,
            || {
                let admitted = self.admitted.load(Ordering::Relaxed);
                if admitted >= target {
                    Ok(())
                } else {
                    Err(format!("{admitted} created, waiting for {target}"))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.node.diagnostics(RELEASE_NS)));
    }

    /// Stops the stream and checks that every pod was admitted and mutated.
    fn finish(mut self, at_least: usize) {
        self.admits_more(8, "after the disturbance");
        self.stop.store(true, Ordering::Relaxed);
        let record = self.thread.take().unwrap().join().unwrap();
        assert!(
            record.admission_failures.is_empty(),
            "{} of {} admissions failed: {:#?}",
            record.admission_failures.len(),
            record.created + record.admission_failures.len(),
            record.admission_failures
        );
        assert!(
            record.created >= at_least,
            "only {} pods were created during the disturbance ({} tries found no API server)",
            record.created,
            record.api_unavailable
        );
        let pods = self.node.get(&["-n", self.namespace, "pods"]).unwrap();
        let items = pods["items"].as_array().unwrap();
        assert_eq!(items.len(), record.created, "pods stored vs created");
        let unmutated: Vec<&str> = items
            .iter()
            .filter(|pod| env_of(pod, 0, "AWS_ROLE_ARN").is_none())
            .filter_map(|pod| pod["metadata"]["name"].as_str())
            .collect();
        assert!(
            unmutated.is_empty(),
            "created without injection: {unmutated:?}"
        );
        let _ =
            run(self
                .node
                .kubectl()
                .args(["delete", "namespace", self.namespace, "--wait=false"]));
    }
}

/// Waits until the release's Deployment has rolled out with two ready replicas.
fn wait_two_replicas(node: &Node) {
    node.rollout_status(RELEASE_NS, "deployment", "180s")
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    eventually("two replicas ready", Duration::from_secs(120), POLL, || {
        let d = node.get(&["-n", RELEASE_NS, "deployments"])?;
        if d["items"][0]["status"]["readyReplicas"] == 2 {
            Ok(())
        } else {
            Err(d["items"][0]["status"].to_string())
        }
    })
    .unwrap();
}

#[test]
fn with_failure_policy_fail_no_admission_fails_while_a_replica_is_killed_and_the_chart_rolls() {
    let _gate = suite_gate::enter("real_node");
    let node = node!(
        "with_failure_policy_fail_no_admission_fails_while_a_replica_is_killed_and_the_chart_rolls"
    );
    let _exclusive = node.exclusive(false);
    node.install_chart(&["webhook.failurePolicy=Fail"])
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    let stream = PodStream::start(node, "stream-kill");

    // One replica killed outright (kill -9 of its process, through the runtime).
    let pods = node.get(&["-n", RELEASE_NS, "pods"]).unwrap();
    let victim = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    run(node.kubectl().args([
        "-n",
        RELEASE_NS,
        "delete",
        "pod",
        &victim,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]))
    .unwrap();
    wait_two_replicas(node);

    // A rolling update by helm.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    node.install_chart(&[
        "webhook.failurePolicy=Fail",
        &format!("podAnnotations.rolled={stamp}"),
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    wait_two_replicas(node);
    stream.finish(20);
}

#[test]
fn with_failure_policy_fail_no_admission_fails_across_an_api_server_restart_and_a_certificate_renewal(
) {
    let _gate = suite_gate::enter("real_node");
    let node = node!(
        "with_failure_policy_fail_no_admission_fails_across_an_api_server_restart_and_a_certificate_renewal"
    );
    let _exclusive = node.exclusive(false);
    node.install_chart(&["webhook.failurePolicy=Fail"])
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    let stream = PodStream::start(node, "stream-restart");

    // kube-apiserver killed and started again: the webhook's watches must come back.
    run(
        std::process::Command::new(node::repo_root().join("hack/node.sh"))
            .args(["restart-apiserver", "--kill", "--dir"])
            .arg(&node.env["NODE_DIR"]),
    )
    .unwrap();
    stream.admits_more(8, "after the API server restart");

    // A forced renewal of the serving certificate: with an unreadable tls.crt in the Secret
    // (its type requires the key), the webhook issues a new one from the same CA and every
    // replica serves it.
    let secrets = node.get(&["-n", RELEASE_NS, "secrets"]).unwrap();
    let secret = secrets["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["data"]["tls.crt"].is_string()))
        .expect("the built-in certificate Secret");
    let name = secret["metadata"]["name"].as_str().unwrap();
    let old_cert = secret["data"]["tls.crt"].as_str().unwrap().to_string();
    run(node.kubectl().args([
        "-n",
        RELEASE_NS,
        "patch",
        "secret",
        name,
        "--type=json",
        "-p",
        &format!(
            r#"[{{"op": "replace", "path": "/data/tls.crt", "value": "{}"}}]"#,
            base64::engine::general_purpose::STANDARD.encode("not a certificate")
        ),
    ]))
    .unwrap();
    eventually(
        "a new serving certificate in the Secret",
        Duration::from_secs(60),
        POLL,
        || {
            let secret = node.get(&["-n", RELEASE_NS, "secret", name])?;
            match secret["data"]["tls.crt"].as_str() {
                Some(cert) if cert != old_cert && cert.len() > 100 => Ok(()),
                other => Err(format!("tls.crt is {:?}", other.map(|c| c.len()))),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    stream.finish(20);
}

/// The spec of a dry-run pod under an annotated ServiceAccount, as the webhook mutates it.
fn dry_run_mutation(node: &Node, namespace: &str) -> Value {
    node.service_account(
        namespace,
        "compare",
        &[(ROLE_KEY, "arn:aws:iam::111122223333:role/compare")],
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "compare", "namespace": namespace},
        "spec": {"serviceAccountName": "compare",
                 "containers": [{"name": "a", "image": node.test_image()},
                                {"name": "b", "image": node.test_image()}]}});
    let out = run_with_input(
        node.kubectl()
            .args(["create", "--dry-run=server", "-o", "json", "-f", "-"]),
        pod.to_string().as_bytes(),
    )
    .unwrap();
    let pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        env_of(&pod, 0, "AWS_ROLE_ARN").is_some(),
        "not mutated: {pod}"
    );
    without_generated_names(&pod["spec"])
}

/// `spec` with the random suffix the API server gives `kube-api-access-xxxxx` taken out.
fn without_generated_names(spec: &Value) -> Value {
    let text = spec.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("kube-api-access-") {
        let end = at + "kube-api-access-".len();
        out.push_str(&rest[..end]);
        rest = rest[end..].trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    serde_json::from_str(&out).expect("still JSON")
}

#[test]
fn kubectl_apply_k_deploy_gives_the_same_pods_as_the_chart() {
    let _gate = suite_gate::enter("real_node");
    let node = node!("kubectl_apply_k_deploy_gives_the_same_pods_as_the_chart");
    let _exclusive = node.exclusive(true);
    let deploy = node::repo_root().join("deploy");
    run(node.kubectl().arg("apply").arg("-k").arg(&deploy)).unwrap();
    let from_deploy = (|| {
        let manifests = run(node.kubectl().arg("kustomize").arg(&deploy))?;
        let namespace = String::from_utf8_lossy(&manifests.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("namespace: ").map(str::to_string))
            .ok_or("no namespace in deploy/")?;
        node.rollout_status(&namespace, "deployment", "180s")?;
        node.wait_webhook_answers("compare")?;
        Ok::<Value, String>(dry_run_mutation(node, "compare"))
    })()
    .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics("compare")));
    run(node
        .kubectl()
        .arg("delete")
        .arg("-k")
        .arg(&deploy)
        .arg("--wait=true"))
    .unwrap();
    node.install_chart(&[]).unwrap();
    let from_chart = dry_run_mutation(node, "compare");
    assert_eq!(
        from_deploy, from_chart,
        "deploy/ and the chart mutate the same pod differently"
    );
}

#[test]
fn the_reference_deployment_shape_runs_unchanged_with_our_image() {
    let _gate = suite_gate::enter("real_node");
    let node = node!("the_reference_deployment_shape_runs_unchanged_with_our_image");
    let _exclusive = node.exclusive(true);
    // The serving pair the reference's manifests expect in a Secret.
    let ca = TestCa::new();
    let (cert, key) = ca.server_cert(&[
        "pod-identity-webhook.default.svc",
        "pod-identity-webhook.default.svc.cluster.local",
    ]);
    let certs = node.artifacts.join("reference-shape");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("tls.crt"), &cert).unwrap();
    std::fs::write(certs.join("tls.key"), &key).unwrap();
    let _ = run(node.kubectl().args([
        "-n",
        "default",
        "delete",
        "secret",
        "pod-identity-webhook-cert",
    ]));
    run(node
        .kubectl()
        .args([
            "-n",
            "default",
            "create",
            "secret",
            "tls",
            "pod-identity-webhook-cert",
        ])
        .arg(format!("--cert={}", certs.join("tls.crt").display()))
        .arg(format!("--key={}", certs.join("tls.key").display())))
    .unwrap();
    let manifests =
        std::fs::read_to_string(node::repo_root().join("examples/reference-shape/webhook.yaml"))
            .unwrap()
            .replace(
                "${CA_BUNDLE}",
                &base64::engine::general_purpose::STANDARD.encode(&ca.pem),
            );
    run_with_input(
        node.kubectl().args(["apply", "-f", "-"]),
        manifests.as_bytes(),
    )
    .unwrap();
    let result = (|| {
        node.rollout_status("default", "deployment/pod-identity-webhook", "180s")?;
        node.wait_webhook_answers("reference-shape")?;
        // Port 443 as the image's non-root user: the file capability did it.
        let pods = node.get(&["-n", "default", "pods", "-l", "app=pod-identity-webhook"])?;
        let container_id = pods["items"][0]["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .and_then(|id| id.strip_prefix("containerd://"))
            .ok_or("no container id")?
            .to_string();
        let tasks = run(std::process::Command::new("ctr").args([
            "--address",
            &node.env["CONTAINERD_ADDRESS"],
            "-n",
            "k8s.io",
            "tasks",
            "ls",
        ]))?;
        let pid = String::from_utf8_lossy(&tasks.stdout)
            .lines()
            .find(|l| l.starts_with(&container_id))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            .ok_or("the webhook's task is not listed")?;
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .ok_or("no Uid line")?;
        Ok::<String, String>(uid)
    })();
    let uid = result.unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics("default")));
    assert_eq!(
        uid, "65532",
        "the webhook should run as the image's non-root user"
    );
    let irsa = Irsa::create(node, "reference-shape", "reader");
    // The reference shape fixes the audience flag; the annotation still wins.
    let script = report_script(
        &["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"],
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    );
    node.apply(&report_pod(
        node,
        "reference-shape",
        "report",
        "reader",
        &script,
    ));
    let log = node
        .finished_pod_log("reference-shape", "report")
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics("reference-shape")));
    irsa.check_report(node, &log)
        .unwrap_or_else(|e| panic!("{e}\n{log}"));
    run_with_input(
        node.kubectl().args(["delete", "-f", "-", "--wait=true"]),
        manifests.as_bytes(),
    )
    .unwrap();
    let _ = run(node.kubectl().args([
        "-n",
        "default",
        "delete",
        "secret",
        "pod-identity-webhook-cert",
    ]));
}

/// A webhook pod of the shared release, as the API server reports it.
#[derive(Clone, Debug)]
struct WebhookPod {
    name: String,
    ready: bool,
    terminating: bool,
    /// Restarts of its container.
    restarts: u64,
    /// `containerd://<id>`.
    container: String,
}

fn webhook_pods(node: &Node) -> Result<Vec<WebhookPod>, String> {
    let pods = node.get(&[
        "-n",
        RELEASE_NS,
        "pods",
        "-l",
        "app.kubernetes.io/name=pod-identity-webhook",
    ])?;
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("").to_string();
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pod| {
            let status = &pod["status"]["containerStatuses"][0];
            WebhookPod {
                name: text(&pod["metadata"]["name"]),
                ready: status["ready"] == true,
                terminating: pod["metadata"]["deletionTimestamp"].is_string(),
                restarts: status["restartCount"].as_u64().unwrap_or(0),
                container: text(&status["containerID"]),
            }
        })
        .collect())
}

/// What `kubectl get --raw PATH` answers, as Prometheus series.
fn scrape(node: &Node, path: &str) -> Vec<Series> {
    let out = run(node.kubectl().args(["get", "--raw", path]))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    promql::exposition(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The release's Deployment scaled to `replicas`.
fn scale_webhook(node: &Node, replicas: u32) -> Result<(), String> {
    run(node.kubectl().args([
        "-n",
        RELEASE_NS,
        "scale",
        "deployment",
        "--all",
        &format!("--replicas={replicas}"),
    ]))
    .map(|_| ())
}

/// Scales the webhook back to two replicas however the test ends.
struct ScaledDown(&'static Node);

impl Drop for ScaledDown {
    fn drop(&mut self) {
        let _ = scale_webhook(self.0, 2);
    }
}

/// What the alerts and the dashboard read is what Kubernetes and the webhook export: every
/// series selector of deploy/monitoring/prometheus-rules.yaml and of the Grafana dashboard
/// (read by Prometheus's parser, so a new query is checked without a change here) selects a
/// series of the real webhook's or the real API server's `/metrics`. The fail-open alert's
/// own series is made for real: the webhook scaled to 0 under `failurePolicy: Ignore`, a pod
/// created, and the API server's count of it carries the labels the alert selects.
#[test]
fn the_metrics_the_alerts_and_the_dashboard_read_are_exported_and_fail_open_is_counted() {
    let _gate = suite_gate::enter("real_node");
    let test =
        "the_metrics_the_alerts_and_the_dashboard_read_are_exported_and_fail_open_is_counted";
    let Some(helper) = promql::tool("promql-selectors", "PROMQL_SELECTORS") else {
        skip(
            "real-node",
            test,
            "promql-selectors",
            "run hack/install-promtool.sh",
        );
        return;
    };
    let node = node!(test);
    let queries = crate::monitoring::all_queries();
    let selectors = promql::selectors(&helper, &queries).unwrap_or_else(|e| panic!("{e}"));
    let _exclusive = node.exclusive_with_chart();
    let configs = node.get(&["mutatingwebhookconfigurations"]).unwrap();
    let hook = configs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["webhooks"].as_array().into_iter().flatten())
        .find(|w| w["clientConfig"]["service"]["namespace"] == RELEASE_NS)
        .expect("the release's webhook");
    assert_eq!(hook["failurePolicy"], "Ignore", "{hook}");

    // The webhook's series, from every replica after a review.
    node.wait_webhook_answers("metrics-probe")
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    let mut exported: Vec<Series> = Vec::new();
    for pod in webhook_pods(node).unwrap() {
        let pod = pod.name;
        exported.extend(scrape(
            node,
            &format!("/api/v1/namespaces/{RELEASE_NS}/pods/{pod}:9999/proxy/metrics"),
        ));
    }

    // No replica: the API server admits a pod without the webhook.
    let scaled = ScaledDown(node);
    scale_webhook(node, 0).unwrap();
    eventually(
        "no webhook pod left",
        Duration::from_secs(90),
        POLL,
        || match webhook_pods(node)? {
            pods if pods.is_empty() => Ok(()),
            pods => Err(format!("still there: {pods:?}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    let namespace = "fail-open";
    node.service_account(
        namespace,
        "unserved",
        &[(ROLE_KEY, "arn:aws:iam::111122223333:role/unserved")],
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unserved", "namespace": namespace},
        "spec": {"serviceAccountName": "unserved", "terminationGracePeriodSeconds": 0,
                 "nodeSelector": {"piw-test/never": "scheduled"},
                 "containers": [{"name": "c", "image": node.test_image()}]}});
    let out = run_with_input(
        node.kubectl().args(["create", "-o", "json", "-f", "-"]),
        pod.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("with failurePolicy Ignore the pod is admitted: {e}"));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        env_of(&created, 0, "AWS_ROLE_ARN"),
        None,
        "admitted without the webhook, so without credentials: {}",
        created["spec"]
    );
    let apiserver = scrape(node, "/metrics");
    exported.extend(apiserver.iter().cloned());

    let at = queries
        .iter()
        .position(|q| q.source == "alert PodIdentityWebhookFailOpen")
        .expect("the fail-open alert");
    for selector in &selectors[at] {
        let counted: Vec<&Series> = apiserver
            .iter()
            .filter(|series| promql::selects(selector, series))
            .collect();
        assert!(
            !counted.is_empty(),
            "the API server has no series the fail-open alert selects ({selector:?}); it has:\n{:#?}",
            apiserver
                .iter()
                .filter(|s| s.metric == selector.metric)
                .collect::<Vec<_>>()
        );
    }

    let mut missing = Vec::new();
    for (query, found) in queries.iter().zip(&selectors) {
        for selector in found {
            if !exported
                .iter()
                .any(|series| promql::selects(selector, series))
            {
                missing.push(format!("{}: {selector:?}", query.source));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "selectors that pick no series the real API server or webhook exports:\n{}",
        missing.join("\n")
    );

    drop(scaled);
    wait_two_replicas(node);
    let _ = run(node
        .kubectl()
        .args(["delete", "namespace", namespace, "--wait=false"]));
}

const SESSION_KEY: &str = "eks.amazonaws.com/role-session-name-from-pod";
const REGION_KEY: &str = "eks.amazonaws.com/region";
const CONTAINER_ROLES_KEY: &str = "eks.amazonaws.com/container-role-arns";

/// A script that prints each variable as `NAME=value`, `NAME=<unset>` when it is not set, and
/// the token named by `AWS_WEB_IDENTITY_TOKEN_FILE` when there is one.
fn env_script(vars: &[&str]) -> String {
    let mut script = String::new();
    for var in vars {
        script.push_str(&format!("echo \"{var}=${{{var}-<unset>}}\"\n"));
    }
    script.push_str(
        "if [ -n \"$AWS_WEB_IDENTITY_TOKEN_FILE\" ]; then echo \"token=$(cat \"$AWS_WEB_IDENTITY_TOKEN_FILE\")\"; fi\n\
         echo done=1\n",
    );
    script
}

/// What container `container` of pod `namespace/pod` printed, once it printed `done=1`.
fn printed(node: &Node, namespace: &str, pod: &str, container: &str) -> BTreeMap<String, String> {
    let log = eventually(
        &format!("{namespace}/{pod} container {container} printed its report"),
        Duration::from_secs(120),
        POLL,
        || {
            let out = run(node
                .kubectl()
                .args(["-n", namespace, "logs", pod, "-c", container]))?;
            let log = String::from_utf8_lossy(&out.stdout).into_owned();
            if log.contains("done=1") {
                Ok(log)
            } else {
                Err(log)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(namespace)));
    log_fields(&log)
}

#[test]
fn pods_print_their_own_names_as_session_name_and_a_container_its_own_role() {
    let _gate = suite_gate::enter("real_node");
    let node = node!("pods_print_their_own_names_as_session_name_and_a_container_its_own_role");
    let _chart = node.with_chart();
    let namespace = "beyond";
    let role = "arn:aws:iam::111122223333:role/reports";
    let uploader_role = "arn:aws:iam::111122223333:role/reports-uploader";
    node.service_account(
        namespace,
        "reports",
        &[(ROLE_KEY, role), (SESSION_KEY, "true")],
    );
    let vars = [
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_SESSION_NAME",
    ];
    // The pods print, then stay up (a Deployment's pods must be Available).
    let script = format!("{}sleep 3600\n", env_script(&vars));
    let container = |name: &str| json!({"name": name, "image": node.test_image(), "command": ["sh", "-c", script]});
    let subject = format!("system:serviceaccount:{namespace}:reports");

    // A bare pod, named by its manifest; its uploader container has a role of its own.
    node.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "report", "namespace": namespace,
                     "annotations": {CONTAINER_ROLES_KEY: format!("uploader={uploader_role}")}},
        "spec": {"serviceAccountName": "reports", "terminationGracePeriodSeconds": 0,
                 "containers": [container("app"), container("uploader")]}
    }));
    for (name, expected_role) in [("app", role), ("uploader", uploader_role)] {
        let fields = printed(node, namespace, "report", name);
        assert_eq!(fields["AWS_ROLE_ARN"], expected_role, "{name}: {fields:?}");
        assert_eq!(
            fields["AWS_WEB_IDENTITY_TOKEN_FILE"], TOKEN_FILE,
            "{fields:?}"
        );
        assert_eq!(
            fields["AWS_ROLE_SESSION_NAME"], "report",
            "{name}: {fields:?}"
        );
        // Both present the ServiceAccount's token: the role's trust policy decides.
        let claims = jwt_claims(&fields["token"]).unwrap();
        assert_eq!(claims["sub"], subject.as_str(), "{claims}");
    }

    // A Deployment's pod: named by the API server after admission, it prints that name.
    node.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "reports", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "reports"}},
            "template": {
                "metadata": {"labels": {"app": "reports"}},
                "spec": {"serviceAccountName": "reports", "terminationGracePeriodSeconds": 0,
                         "containers": [container("app")]}
            }
        }
    }));
    node.rollout_status(namespace, "deployment/reports", "120s")
        .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(namespace)));
    let pods = node
        .get(&["-n", namespace, "pods", "-l", "app=reports"])
        .expect("pods");
    let pod = &pods["items"][0];
    let name = pod["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with("reports-") && pod["metadata"]["generateName"].is_string(),
        "{}",
        pod["metadata"]
    );
    let fields = printed(node, namespace, name, "app");
    assert_eq!(fields["AWS_ROLE_SESSION_NAME"], name, "{fields:?}");
    assert_eq!(fields["AWS_ROLE_ARN"], role, "{fields:?}");
    let _ = run(node
        .kubectl()
        .args(["delete", "namespace", namespace, "--wait=false"]));
}

#[test]
fn chart_values_give_pods_without_a_role_the_region_and_service_accounts_their_own() {
    let _gate = suite_gate::enter("real_node");
    let node =
        node!("chart_values_give_pods_without_a_role_the_region_and_service_accounts_their_own");
    // Other chart values than the shared release's: left for the next test to reinstall.
    let _exclusive = node.exclusive(false);
    node.install_chart_typed(&[
        "config.injectRegionWithoutRole=true",
        "config.awsDefaultRegion=eu-west-1",
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(RELEASE_NS)));
    let namespace = "regions";
    node.service_account(namespace, "agent", &[]);
    node.service_account(
        namespace,
        "own-region",
        &[
            (ROLE_KEY, "arn:aws:iam::111122223333:role/own-region"),
            (REGION_KEY, "us-east-2"),
        ],
    );
    node.service_account(
        namespace,
        "no-region",
        &[
            (ROLE_KEY, "arn:aws:iam::111122223333:role/no-region"),
            (REGION_KEY, "none"),
        ],
    );
    let script = env_script(&["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN"]);
    for (sa, region, role) in [
        ("agent", "eu-west-1", "<unset>"),
        (
            "own-region",
            "us-east-2",
            "arn:aws:iam::111122223333:role/own-region",
        ),
        (
            "no-region",
            "<unset>",
            "arn:aws:iam::111122223333:role/no-region",
        ),
    ] {
        node.apply(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": sa, "namespace": namespace},
            "spec": {"serviceAccountName": sa, "restartPolicy": "Never",
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "report", "image": node.test_image(),
                                     "command": ["sh", "-c", &script]}]}
        }));
        let log = node
            .finished_pod_log(namespace, sa)
            .unwrap_or_else(|e| panic!("{e}\n{}", node.diagnostics(namespace)));
        let fields = log_fields(&log);
        assert_eq!(fields["AWS_REGION"], region, "{sa}: {log}");
        assert_eq!(fields["AWS_DEFAULT_REGION"], region, "{sa}: {log}");
        assert_eq!(fields["AWS_ROLE_ARN"], role, "{sa}: {log}");
    }
    // The pod without a role got no token volume: only the region.
    let agent = node.get(&["-n", namespace, "pod", "agent"]).unwrap();
    assert!(
        agent["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|v| v["name"] != "aws-iam-token"),
        "{}",
        agent["spec"]
    );
    let _ = run(node
        .kubectl()
        .args(["delete", "namespace", namespace, "--wait=false"]));
}
