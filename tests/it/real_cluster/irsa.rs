//! The IRSA tools against the real API server, whose issuer and signing key the control
//! plane script configured: `oidc` documents verify the cluster's tokens and a key or issuer
//! mismatch is caught; `doctor` lists pods created before the annotation, passes once they
//! are replaced, explains a trust policy that does not match, and reports a webhook that is
//! not registered for the namespace, not running, or not trusted by its caBundle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{json, Value};

use super::harness::{
    self, eventually, shared, Cluster, FULLNAME, OTHER_WEBHOOK_LABEL, RELEASE_NS,
};
use crate::support::suite_gate;

const ROLE: &str = "arn:aws:iam::111122223333:role/doctor";
const ROLE_KEY: &str = "eks.amazonaws.com/role-arn";

fn cluster(test: &str) -> Option<&'static Cluster> {
    harness::cluster(test)
}

/// Runs the binary with `args`; returns the exit code and standard output, with standard
/// error appended to failure messages.
fn piw(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_pod-identity-webhook"))
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .output()
        .expect("run pod-identity-webhook");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn kubeconfig(c: &Cluster) -> String {
    format!("--kubeconfig={}", c.env["KUBECONFIG"])
}

fn out_dir(c: &Cluster, name: &str) -> PathBuf {
    let dir = c.artifacts.join(format!("irsa-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A token the cluster issues now, through TokenRequest, for `namespace/name`.
fn token(c: &Cluster, namespace: &str, name: &str, audience: &str) -> String {
    let answer = c
        .post(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"audiences": [audience], "expirationSeconds": 600}}),
        )
        .ok("TokenRequest");
    answer["status"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// Verifies `jwt` with jsonwebtoken directly against the key of its `kid` in `jwks`.
fn verifies(jwt: &str, jwks: &JwkSet) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let key = jwks.find(&kid).ok_or_else(|| format!("no key {kid}"))?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["sts.amazonaws.com"]);
    validation.set_issuer(&["https://kubernetes.default.svc.cluster.local"]);
    let key = jsonwebtoken::DecodingKey::from_jwk(key).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn oidc_documents_verify_the_clusters_tokens_and_mismatches_are_caught() {
    let _gate = suite_gate::enter("real_cluster");
    let Some(c) = cluster("oidc_documents_verify_the_clusters_tokens_and_mismatches_are_caught")
    else {
        return;
    };
    let _lock = shared();
    let issuer = c.env["SERVICE_ACCOUNT_ISSUER"].clone();
    assert_eq!(issuer, "https://kubernetes.default.svc.cluster.local");
    let key_file = c.env["SERVICE_ACCOUNT_KEY_FILE"].clone();

    // From the cluster's own keys, and from the API server's key file: the same documents.
    let from_cluster = out_dir(c, "oidc-from-cluster");
    let (code, stdout, stderr) = piw(&[
        "oidc",
        &kubeconfig(c),
        "--issuer-url",
        &issuer,
        "--out",
        from_cluster.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("[ok  ] the cluster's configured issuer equals the issuer URL"),
        "{stdout}"
    );
    assert!(stdout.contains("[ok  ] a token the cluster issues now (for default/default) verifies against the written keys"), "{stdout}");
    let from_file = out_dir(c, "oidc-from-file");
    let (code, stdout, stderr) = piw(&[
        "oidc",
        &kubeconfig(c),
        "--issuer-url",
        &issuer,
        "--key-file",
        &key_file,
        "--out",
        from_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("[ok  ] the key files hold every key the cluster verifies with"),
        "{stdout}"
    );

    let discovery = read_json(&from_file.join(".well-known/openid-configuration"));
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/openid/v1/jwks"));
    let written: JwkSet =
        serde_json::from_value(read_json(&from_file.join("openid/v1/jwks"))).unwrap();
    let raw = harness::run(c.kubectl().args(["get", "--raw", "/openid/v1/jwks"])).unwrap();
    let cluster_keys: JwkSet = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        written.keys, cluster_keys.keys,
        "the JWK of the key file is the cluster's, key id included"
    );
    assert_eq!(
        read_json(&from_cluster.join("openid/v1/jwks")),
        read_json(&from_file.join("openid/v1/jwks"))
    );

    // A token issued now verifies against the written keys, checked with jsonwebtoken alone.
    c.namespace("irsa-oidc", &[]);
    c.service_account("irsa-oidc", "app", &[]);
    let jwt = token(c, "irsa-oidc", "app", "sts.amazonaws.com");
    verifies(&jwt, &written).unwrap();

    // Another key (not the cluster's): the key files and the fresh token both disagree.
    let other_key = harness::repo_root().join("tests/fixtures/irsa/rsa-2048.pub");
    let wrong = out_dir(c, "oidc-wrong-key");
    let (code, stdout, _) = piw(&[
        "oidc",
        &kubeconfig(c),
        "--issuer-url",
        &issuer,
        "--key-file",
        other_key.to_str().unwrap(),
        "--out",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    let cluster_kid = cluster_keys.keys[0].common.key_id.clone().unwrap();
    assert!(
        stdout.contains(&format!(
            "the cluster has key(s) {cluster_kid} that the key files do not hold"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "the token is signed with key id {cluster_kid}, which is not among the published keys"
        )),
        "{stdout}"
    );
    let wrong_keys: JwkSet =
        serde_json::from_value(read_json(&wrong.join("openid/v1/jwks"))).unwrap();
    assert!(
        verifies(&jwt, &wrong_keys).is_err(),
        "a token verified against a key that did not sign it"
    );

    // A public URL that is not the configured issuer, and one differing by a trailing slash.
    for (url, words) in [
        (
            "https://oidc.example.com/cluster",
            "they are different URLs",
        ),
        (
            "https://kubernetes.default.svc.cluster.local/",
            "trailing slash",
        ),
    ] {
        let dir = out_dir(c, "oidc-other-issuer");
        let (code, stdout, _) = piw(&[
            "oidc",
            &kubeconfig(c),
            "--issuer-url",
            url,
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stdout.contains("[FAIL] the cluster's configured issuer equals the issuer URL"),
            "{stdout}"
        );
        assert!(stdout.contains(words), "{url}: {stdout}");
    }

    // The doctor reads the same documents back: the good ones pass, the wrong key fails.
    c.merge_patch(
        "/api/v1/namespaces/irsa-oidc/serviceaccounts/app",
        &json!({"metadata": {"annotations": {ROLE_KEY: ROLE}}}),
    )
    .ok("annotate");
    let json_checks = |jwks: &Path| {
        let (code, stdout, stderr) = piw(&[
            "doctor",
            "irsa-oidc/app",
            &kubeconfig(c),
            "--jwks",
            jwks.to_str().unwrap(),
            "--output=json",
            "--webhook-namespace",
            RELEASE_NS,
        ]);
        let report: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
        let status = |id: &str| {
            report["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|check| check["id"] == id)
                .map(|check| check["status"].clone())
        };
        (
            code,
            status("token.signature"),
            status("issuer.published"),
            report,
        )
    };
    let (_, signature, issuer_check, report) = json_checks(&from_file);
    assert_eq!(signature, Some(json!("pass")), "{report:#}");
    assert_eq!(issuer_check, Some(json!("pass")), "{report:#}");
    let (code, signature, _, report) = json_checks(&wrong);
    assert_eq!(code, 1);
    assert_eq!(signature, Some(json!("fail")), "{report:#}");
}

/// Creates pods until the webhook mutates one: it has seen the annotation.
fn wait_for_webhook(c: &Cluster, namespace: &str, name: &str) {
    let manifest = probe_pod(name, "wait");
    eventually(
        "the webhook sees the annotation",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let response = c.post(
                &format!("/api/v1/namespaces/{namespace}/pods?dryRun=All"),
                &manifest,
            );
            let pod = response.ok("dry-run pod");
            let env = &pod["spec"]["containers"][0]["env"];
            if env
                .as_array()
                .is_some_and(|e| e.iter().any(|v| v["name"] == "AWS_ROLE_ARN"))
            {
                Ok(())
            } else {
                Err("not mutated yet".to_string())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn probe_pod(service_account: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "ownerReferences": []},
           "spec": {"serviceAccountName": service_account,
                    "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}})
}

fn trust_policy_file(c: &Cluster, name: &str, subject: &str) -> PathBuf {
    let (code, stdout, stderr) = piw(&[
        "trust-policy",
        "--account",
        "111122223333",
        "--issuer-url",
        &c.env["SERVICE_ACCOUNT_ISSUER"],
        subject,
    ]);
    assert_eq!(code, 0, "{stderr}");
    // As `aws iam get-role` prints it.
    let role = json!({"Role": {"Arn": ROLE, "RoleName": "doctor", "AssumeRolePolicyDocument": serde_json::from_str::<Value>(&stdout).unwrap()}});
    let path = c.artifacts.join(format!("trust-policy-{name}.json"));
    std::fs::write(&path, role.to_string()).unwrap();
    path
}

#[test]
fn doctor_lists_pods_created_before_the_annotation_and_passes_once_they_are_replaced() {
    let _gate = suite_gate::enter("real_cluster");
    let Some(c) = cluster(
        "doctor_lists_pods_created_before_the_annotation_and_passes_once_they_are_replaced",
    ) else {
        return;
    };
    let _lock = shared();
    let ns = "doctor-stale";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[]);
    let (old, _) = c.create_pod(ns, &probe_pod("app", "before-annotation"));
    assert!(
        old["spec"]["containers"][0]["env"].is_null(),
        "not mutated: the ServiceAccount had no role yet"
    );
    c.merge_patch(
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/app"),
        &json!({"metadata": {"annotations": {ROLE_KEY: ROLE}}}),
    )
    .ok("annotate");
    wait_for_webhook(c, ns, "app");
    let policy = trust_policy_file(c, "stale", &format!("{ns}:app"));
    let doctor = |extra: &[&str]| {
        let mut args = vec![
            "doctor",
            "doctor-stale/app",
            "--webhook-namespace",
            RELEASE_NS,
        ];
        let config = kubeconfig(c);
        args.push(&config);
        args.extend_from_slice(extra);
        piw(&args)
    };

    let (code, stdout, stderr) = doctor(&["--trust-policy", policy.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("[FAIL] pods already running under the ServiceAccount have the injection"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- before-annotation: lacks credentials in container(s) app"),
        "{stdout}"
    );
    assert!(stdout.contains("1 of 10 checks failed"), "{stdout}");
    for passed in [
        "ServiceAccount doctor-stale/app exists",
        "the webhook resolves an AWS identity for its pods",
        "a MutatingWebhookConfiguration sends this namespace's pod creations to the webhook",
        "the webhook answers with a certificate the caBundle verifies, and is ready",
        "a server-side dry-run pod of this ServiceAccount comes back mutated",
        "the token's signature verifies against the cluster's keys",
        "the role's trust policy lets this token assume it",
    ] {
        assert!(
            stdout.contains(&format!("[ok  ] {passed}")),
            "{passed}: {stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("IRSA: role {ROLE} (from annotation {ROLE_KEY})")),
        "{stdout}"
    );
    assert!(
        stdout.contains("sub system:serviceaccount:doctor-stale:app"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{FULLNAME}-mutating/")),
        "the chart's registration is named: {stdout}"
    );
    // Nothing was stored by the dry runs.
    let pods = c.get(&format!("/api/v1/namespaces/{ns}/pods"));
    assert_eq!(pods["items"].as_array().unwrap().len(), 1, "{pods:#}");

    // A trust policy for another namespace: the mismatch in words.
    let other = trust_policy_file(c, "other-namespace", "team-a:app");
    let (code, stdout, _) = doctor(&["--trust-policy", other.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stdout.contains(
        "cause: statement 1: the policy allows sub system:serviceaccount:team-a:app, this pod's token says \
         system:serviceaccount:doctor-stale:app (wrong namespace: the policy expects team-a, the pod runs in doctor-stale)"
    ), "{stdout}");

    // Replaced (as a rollout restart would), the pod has the injection and everything passes.
    c.request(
        "DELETE",
        &format!("/api/v1/namespaces/{ns}/pods/before-annotation?gracePeriodSeconds=0"),
        "application/json",
        None,
    );
    let (replaced, _) = c.create_pod(ns, &probe_pod("app", "after-annotation"));
    assert!(replaced["spec"]["containers"][0]["env"].is_array());
    eventually(
        "the old pod is gone",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let (code, stdout, stderr) = doctor(&[
                "--trust-policy",
                policy.to_str().unwrap(),
                "--output",
                "json",
            ]);
            let report: Value =
                serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}{stderr}"))?;
            if code == 0 && report["passed"] == true {
                Ok(())
            } else {
                Err(format!("exit {code}: {report:#}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn doctor_reports_a_webhook_not_registered_not_running_or_not_trusted() {
    let _gate = suite_gate::enter("real_cluster");
    let Some(c) = cluster("doctor_reports_a_webhook_not_registered_not_running_or_not_trusted")
    else {
        return;
    };
    let _lock = shared();

    // Not registered for the namespace: the chart's webhook leaves it out by label.
    let ns = "doctor-unregistered";
    c.namespace(ns, &[(OTHER_WEBHOOK_LABEL, "nobody")]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let (code, stdout, stderr) = piw(&["doctor", &format!("{ns}/app"), &kubeconfig(c)]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("[FAIL] a MutatingWebhookConfiguration sends this namespace's pod creations to the webhook"), "{stdout}");
    // Other tests' webhooks may be registered at the same time: this one must be among them.
    assert!(
        stdout.lines().any(
            |line| line.contains("is left out by the namespaceSelector of")
                && line.contains(&format!("{FULLNAME}-mutating/"))
        ),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("[FAIL] a server-side dry-run pod of this ServiceAccount comes back mutated"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the API server admitted the pod without the injection"),
        "{stdout}"
    );
    let (code, stdout, _) = piw(&[
        "doctor",
        &format!("{ns}/app"),
        &kubeconfig(c),
        "--webhook-config-name",
        "no-such-webhook",
    ]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("no MutatingWebhookConfiguration named no-such-webhook"),
        "{stdout}"
    );

    // Registered, but nothing listens at its URL (failurePolicy Ignore: pods pass unmutated).
    let ns = "doctor-down";
    let selector = (OTHER_WEBHOOK_LABEL, "doctor-down");
    c.namespace(ns, &[selector]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/mutate",
        free.local_addr().unwrap().port()
    );
    drop(free);
    let _down = c.register_webhook("doctor-down-pod-identity-webhook", &url, selector, "Ignore");
    let (code, stdout, _) = piw(&[
        "doctor",
        &format!("{ns}/app"),
        &kubeconfig(c),
        "--webhook-config-name",
        "doctor-down-pod-identity-webhook",
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout
            .contains("[ok  ] a MutatingWebhookConfiguration sends this namespace's pod creations"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("cause: {url}: cannot connect")),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix:   the webhook is not running or not listening there"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the API server admitted the pod without the injection"),
        "{stdout}"
    );

    // Registered at the running webhook, but with a caBundle of another CA.
    let ns = "doctor-untrusted";
    let selector = (OTHER_WEBHOOK_LABEL, "doctor-untrusted");
    c.namespace(ns, &[selector]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let other_ca = crate::support::tls::TestCa::new();
    let config = "doctor-untrusted-pod-identity-webhook";
    c.post(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": config},
                "webhooks": [{"name": "doctor-untrusted.test.example.com", "admissionReviewVersions": ["v1"],
                    "sideEffects": "None", "failurePolicy": "Ignore", "timeoutSeconds": 5,
                    "clientConfig": {"url": format!("https://127.0.0.1:{}/mutate", c.primary.port),
                                     "caBundle": base64::engine::general_purpose::STANDARD.encode(&other_ca.pem)},
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
                    "namespaceSelector": {"matchLabels": {selector.0: selector.1}}}]}),
    )
    .ok("register the untrusted webhook");
    let (code, stdout, _) = piw(&[
        "doctor",
        &format!("{ns}/app"),
        &kubeconfig(c),
        "--webhook-config-name",
        config,
    ]);
    let _ = c.try_request(
        "DELETE",
        &format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{config}"),
        "application/json",
        None,
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("the serving certificate does not verify with the caBundle"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the API server admitted the pod without the injection"),
        "{stdout}"
    );
}

#[test]
fn doctor_checks_the_trust_policy_of_each_role_a_container_is_given() {
    let _gate = suite_gate::enter("real_cluster");
    let Some(c) = cluster("doctor_checks_the_trust_policy_of_each_role_a_container_is_given")
    else {
        return;
    };
    let _lock = shared();
    let ns = "doctor-roles";
    let sidecar_role = "arn:aws:iam::111122223333:role/doctor-sidecar";
    c.namespace(ns, &[]);
    c.service_account(
        ns,
        "app",
        &[
            (ROLE_KEY, ROLE),
            ("eks.amazonaws.com/role-session-name-from-pod", "true"),
            ("eks.amazonaws.com/region", "eu-central-1"),
        ],
    );
    wait_for_webhook(c, ns, "app");
    let mut pod = probe_pod("app", "with-roles");
    pod["metadata"]["annotations"] =
        json!({"eks.amazonaws.com/container-role-arns": format!("sidecar={sidecar_role}")});
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "3600"]}));
    let (created, warnings) = c.create_pod(ns, &pod);
    assert!(warnings.is_empty(), "{warnings:?}");
    // What the API server stored: each container's role, the session name from the pod's name
    // (the fieldRef as the API server keeps it) and the ServiceAccount's region.
    let env = |index: usize| {
        let env = &created["spec"]["containers"][index]["env"];
        let by_name = |name: &str| {
            env.as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == name)
                .cloned()
                .unwrap_or(Value::Null)
        };
        (
            by_name("AWS_ROLE_ARN")["value"].clone(),
            by_name("AWS_ROLE_SESSION_NAME")["valueFrom"].clone(),
            by_name("AWS_REGION")["value"].clone(),
        )
    };
    let session = json!({"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}});
    assert_eq!(
        env(0),
        (json!(ROLE), session.clone(), json!("eu-central-1")),
        "{created:#}"
    );
    assert_eq!(
        env(1),
        (json!(sidecar_role), session, json!("eu-central-1")),
        "{created:#}"
    );

    // The two roles' policies in one directory: the ServiceAccount's as `aws iam get-role`
    // prints it, the sidecar's a plain document named after its role, for the wrong namespace.
    let policies = out_dir(c, "container-roles");
    std::fs::create_dir_all(&policies).unwrap();
    let written = |subject: &str| {
        let (code, stdout, stderr) = piw(&[
            "trust-policy",
            "--account",
            "111122223333",
            "--issuer-url",
            &c.env["SERVICE_ACCOUNT_ISSUER"],
            subject,
        ]);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let role =
        json!({"Role": {"Arn": ROLE, "AssumeRolePolicyDocument": written(&format!("{ns}:app"))}});
    std::fs::write(policies.join("app-role.json"), role.to_string()).unwrap();
    std::fs::write(
        policies.join("doctor-sidecar.json"),
        written("team-a:app").to_string(),
    )
    .unwrap();
    let doctor = || {
        piw(&[
            "doctor",
            &format!("{ns}/app"),
            "--webhook-namespace",
            RELEASE_NS,
            &kubeconfig(c),
            "--trust-policy",
            policies.to_str().unwrap(),
        ])
    };
    let (code, stdout, stderr) = doctor();
    assert_eq!(code, 1, "{stdout}{stderr}");
    for line in [
        "[ok  ] the role's trust policy lets this token assume it".to_string(),
        format!("[FAIL] the trust policy of role {sidecar_role} (with-roles/sidecar) lets the ServiceAccount's token assume it"),
        "wrong namespace: the policy expects team-a, the pod runs in doctor-roles".to_string(),
        "[ok  ] containers with a role of their own (pod annotation)".to_string(),
        format!("{sidecar_role}: with-roles/sidecar"),
        "AWS_ROLE_SESSION_NAME: the pod's name, through the downward API (from annotation eks.amazonaws.com/role-session-name-from-pod)".to_string(),
        "region: AWS_REGION and AWS_DEFAULT_REGION=eu-central-1 (from annotation eks.amazonaws.com/region)".to_string(),
        "[ok  ] pods already running under the ServiceAccount have the injection".to_string(),
    ] {
        assert!(stdout.contains(&line), "{line}\n{stdout}");
    }
    assert!(stdout.contains("1 of 12 checks failed"), "{stdout}");

    // The sidecar's role trusting this ServiceAccount: everything passes.
    std::fs::write(
        policies.join("doctor-sidecar.json"),
        written(&format!("{ns}:app")).to_string(),
    )
    .unwrap();
    let (code, stdout, stderr) = doctor();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("[ok  ] the trust policy of role {sidecar_role}")),
        "{stdout}"
    );
}
