//! Tests on the rendered Helm chart (charts/pod-identity-webhook) and on the
//! plain manifests in deploy/.
//!
//! They run `helm lint` / `helm template` (offline, no cluster). helm is found
//! via `$HELM`, else `${XDG_CACHE_HOME:-$HOME/.cache}/pod-identity-webhook/bin/helm`
//! (what hack/install-helm.sh installs), else `PATH`. Without helm every test
//! prints "SKIPPED: chart needs helm" and passes, unless `PIW_REQUIRE_TOOLS=1`,
//! in which case they fail.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::skip::skip;

const RELEASE: &str = "pod-identity-webhook";
const NAMESPACE: &str = "pod-identity-webhook";
const SKIP_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts").join("pod-identity-webhook")
}

fn cache_bin_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(cache.join("pod-identity-webhook").join("bin"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn locate_helm() -> Option<PathBuf> {
    if let Some(helm) = std::env::var_os("HELM").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(helm));
    }
    if let Some(cached) = cache_bin_dir().map(|d| d.join("helm")) {
        if cached.is_file() {
            return Some(cached);
        }
    }
    on_path("helm")
}

fn helm_path() -> Option<&'static Path> {
    static HELM: OnceLock<Option<PathBuf>> = OnceLock::new();
    HELM.get_or_init(locate_helm).as_deref()
}

/// The helm binary, or `None` (after a SKIPPED line, `support::skip`) when the test must be
/// skipped. Panics when helm is missing and `PIW_REQUIRE_TOOLS=1`.
fn helm_or_skip(test: &str) -> Option<&'static Path> {
    if let Some(helm) = helm_path() {
        return Some(helm);
    }
    skip(
        "chart",
        test,
        "helm",
        "run hack/install-helm.sh, or set HELM=/path/to/helm",
    );
    None
}

macro_rules! require_helm {
    ($name:expr) => {
        match helm_or_skip($name) {
            Some(helm) => helm,
            None => return,
        }
    };
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run_helm(helm: &Path, args: &[&str]) -> Output {
    let out = Command::new(helm)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", helm.display()));
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parses a multi-document YAML stream, dropping empty documents.
fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("helm output is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` with the release and namespace deploy/ uses; `extra` holds
/// `--set`, `-f` and the like. Err carries helm's stderr.
fn try_render(helm: &Path, extra: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let mut args = vec!["template", RELEASE, chart, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let out = run_helm(helm, &args);
    if out.ok {
        Ok(parse_docs(&out.stdout))
    } else {
        Err(out.stderr)
    }
}

fn render(helm: &Path, extra: &[&str]) -> Vec<Value> {
    try_render(helm, extra).unwrap_or_else(|e| panic!("helm template {extra:?} failed:\n{e}"))
}

/// Default render, shared by the tests that only read it.
fn default_docs(helm: &Path) -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| render(helm, &[]))
}

fn ci_values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/pod-identity-webhook/ci exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("-values.yaml"))
        })
        .collect();
    files.sort();
    files
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

/// The only object of `kind` that is not a `helm test` hook.
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = all_of(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"].is_null())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, found {}",
        found.len()
    );
    found[0]
}

fn has_kind(docs: &[Value], kind: &str) -> bool {
    docs.iter()
        .any(|d| kind_of(d) == kind && d["metadata"]["annotations"]["helm.sh/hook"].is_null())
}

fn container(docs: &[Value]) -> &Value {
    let deploy = one(docs, "Deployment");
    let containers = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// Value of `--name=value` in the args, None when the flag is absent.
fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    let found: Vec<&String> = args.iter().filter(|a| a.starts_with(&prefix)).collect();
    assert!(found.len() <= 1, "--{name} passed more than once: {args:?}");
    found.first().map(|a| a[prefix.len()..].to_owned())
}

fn webhook(docs: &[Value]) -> &Value {
    let cfg = one(docs, "MutatingWebhookConfiguration");
    let hooks = cfg["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 1);
    &hooks[0]
}

fn rules(doc: &Value) -> Vec<&Value> {
    doc["rules"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rules_for<'a>(docs: &'a [Value], resource: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| matches!(kind_of(d), "Role" | "ClusterRole"))
        .flat_map(rules)
        .filter(|r| strs(&r["resources"]).contains(&resource))
        .collect()
}

// ---------------------------------------------------------------------------
// helm lint
// ---------------------------------------------------------------------------

fn assert_lints(helm: &Path, values: Option<&Path>) {
    let chart = chart_dir();
    let mut args = vec![
        "lint".to_owned(),
        "--strict".to_owned(),
        chart.to_str().unwrap().to_owned(),
        "--namespace".to_owned(),
        NAMESPACE.to_owned(),
    ];
    if let Some(v) = values {
        args.push("-f".to_owned());
        args.push(v.to_str().unwrap().to_owned());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_helm(helm, &refs);
    assert!(
        out.ok,
        "{} lint --strict failed for {}:\n{}\n{}",
        helm.display(),
        values.map_or("default values".into(), |v| v.display().to_string()),
        out.stdout,
        out.stderr
    );
}

#[test]
fn lint_strict_passes_with_default_values() {
    let helm = require_helm!("lint_strict_passes_with_default_values");
    assert_lints(helm, None);
}

#[test]
fn lint_strict_passes_with_every_ci_values_file() {
    let helm = require_helm!("lint_strict_passes_with_every_ci_values_file");
    let files = ci_values_files();
    assert!(
        files.len() >= 8,
        "expected the ci/*-values.yaml variants, found {files:?}"
    );
    for file in &files {
        assert_lints(helm, Some(file));
        // Lint does not render every path the way install does: render too.
        render(helm, &["-f", file.to_str().unwrap()]);
    }
}

/// hack/install-helm.sh also installs Helm 4 as `helm4`; the chart must work
/// with both majors. Skipped when helm4 is not there, except under
/// PIW_REQUIRE_TOOLS=1 (CI), unless PIW_SKIP_HELM4=1 says so explicitly.
#[test]
fn lint_strict_passes_with_helm4_when_installed() {
    let helm4 = std::env::var_os("HELM4")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            cache_bin_dir()
                .map(|d| d.join("helm4"))
                .filter(|p| p.is_file())
        });
    let Some(helm4) = helm4 else {
        let required = std::env::var_os("PIW_REQUIRE_TOOLS").is_some_and(|v| v == "1");
        let skipped = std::env::var_os("PIW_SKIP_HELM4").is_some_and(|v| v == "1");
        assert!(
            !required || skipped,
            "helm4 not found and PIW_REQUIRE_TOOLS=1: run hack/install-helm.sh (or set PIW_SKIP_HELM4=1)"
        );
        // Straight to stderr, which libtest does not capture.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: chart needs helm4 (run hack/install-helm.sh): Helm 4 lint did not run"
        );
        return;
    };
    assert_lints(&helm4, None);
    for file in ci_values_files() {
        assert_lints(&helm4, Some(&file));
    }
}

// ---------------------------------------------------------------------------
// Server flags
// ---------------------------------------------------------------------------

#[test]
fn default_args_spell_out_every_setting_in_builtin_certificate_mode() {
    let helm = require_helm!("default_args_spell_out_every_setting_in_builtin_certificate_mode");
    let expected = [
        "--port=8443",
        "--metrics-port=9999",
        "--namespace=pod-identity-webhook",
        "--service-name=pod-identity-webhook",
        "--in-cluster=true",
        "--tls-secret=pod-identity-webhook-tls",
        "--webhook-config-name=pod-identity-webhook-mutating",
        "--tls-min-version=1.2",
        "--annotation-prefix=eks.amazonaws.com",
        "--token-audience=sts.amazonaws.com",
        "--token-mount-path=/var/run/secrets/eks.amazonaws.com/serviceaccount",
        "--token-expiration=86400",
        "--sts-regional-endpoint=false",
        "--service-account-lookup-grace-period=1s",
        "--watch-config-map=false",
        "--v=0",
        "--log-format=text",
        "--shutdown-delay=2s",
        "--shutdown-timeout=10s",
        "--enable-debugging-handlers=false",
        "--max-connections=512",
        "--max-connections-per-peer=64",
        "--max-concurrent-reviews=64",
        "--max-body-bytes=4194304",
        "--max-inflight-body-bytes=50331648",
        "--body-timeout=10s",
        "--first-request-timeout=10s",
        "--idle-timeout=120s",
        "--http2-max-concurrent-streams=32",
    ];
    assert_eq!(args(default_docs(helm)), expected);
}

/// The limit values become flags the webhook accepts, and the schema refuses values the
/// webhook would refuse at startup.
#[test]
fn limits_render_as_flags_the_webhook_accepts() {
    let helm = require_helm!("limits_render_as_flags_the_webhook_accepts");
    let docs = render(
        helm,
        &[
            "--set",
            "limits.maxConnections=100",
            "--set",
            "limits.maxConnectionsPerPeer=10",
            "--set",
            "limits.maxConcurrentReviews=8",
            "--set",
            "limits.maxBodyBytes=1048576",
            "--set",
            "limits.maxInflightBodyBytes=20971520",
            "--set",
            "limits.bodyTimeout=5s",
            "--set",
            "limits.firstRequestTimeout=3s",
            "--set",
            "limits.idleTimeout=1m",
            "--set",
            "limits.http2MaxConcurrentStreams=16",
        ],
    );
    let a = args(&docs);
    let get = |n: &str| flag(&a, n);
    assert_eq!(get("max-connections").as_deref(), Some("100"));
    assert_eq!(get("max-connections-per-peer").as_deref(), Some("10"));
    assert_eq!(get("max-concurrent-reviews").as_deref(), Some("8"));
    assert_eq!(get("max-body-bytes").as_deref(), Some("1048576"));
    assert_eq!(get("max-inflight-body-bytes").as_deref(), Some("20971520"));
    assert_eq!(get("body-timeout").as_deref(), Some("5s"));
    assert_eq!(get("first-request-timeout").as_deref(), Some("3s"));
    assert_eq!(get("idle-timeout").as_deref(), Some("1m"));
    assert_eq!(get("http2-max-concurrent-streams").as_deref(), Some("16"));

    let cli = pod_identity_webhook::cli::try_parse(
        std::iter::once("pod-identity-webhook".to_string()).chain(a.iter().cloned()),
    )
    .expect("the webhook accepts the rendered flags");
    let pod_identity_webhook::cli::Command::Serve(serve) = cli.into_command() else {
        panic!("serve expected");
    };
    serve
        .validate()
        .expect("the rendered limits are consistent");
    let limits = serve.limits.limits();
    assert_eq!(limits.max_connections_per_peer, 10);
    assert_eq!(limits.idle_timeout, std::time::Duration::from_secs(60));

    for bad in [
        "limits.maxConnections=0",
        "limits.bodyTimeout=soon",
        "limits.maxBodyBytes=10",
    ] {
        assert!(
            try_render(helm, &["--set", bad]).is_err(),
            "{bad} passes the schema"
        );
    }
}

#[test]
fn args_follow_values_set_on_the_command_line() {
    let helm = require_helm!("args_follow_values_set_on_the_command_line");
    let docs = render(
        helm,
        &[
            "--set",
            "config.annotationPrefix=irsa.example.com",
            "--set",
            "config.tokenAudience=my-audience",
            "--set",
            "config.tokenMountPath=/var/run/secrets/custom",
            "--set",
            "config.tokenExpiration=3600",
            "--set",
            "config.awsDefaultRegion=eu-west-1",
            "--set",
            "config.stsRegionalEndpoint=true",
            "--set",
            "config.serviceAccountLookupGracePeriod=2500ms",
            "--set",
            "config.shutdownTimeout=25s",
            "--set",
            "config.logVerbosity=4",
            "--set",
            "config.logFormat=json",
            "--set",
            "ports.webhook=10443",
            "--set",
            "ports.metrics=10999",
            "--set",
            "roleMapping.enabled=true",
            "--set",
            "certificates.builtin.secretName=custom-tls",
            "--set",
            "fullnameOverride=piw",
            "--set",
            "extraArgs={--future-flag=1,--other}",
        ],
    );
    let a = args(&docs);
    let get = |n: &str| flag(&a, n);
    assert_eq!(
        get("annotation-prefix").as_deref(),
        Some("irsa.example.com")
    );
    assert_eq!(get("token-audience").as_deref(), Some("my-audience"));
    assert_eq!(
        get("token-mount-path").as_deref(),
        Some("/var/run/secrets/custom")
    );
    assert_eq!(get("token-expiration").as_deref(), Some("3600"));
    assert_eq!(get("aws-default-region").as_deref(), Some("eu-west-1"));
    assert_eq!(get("sts-regional-endpoint").as_deref(), Some("true"));
    assert_eq!(
        get("service-account-lookup-grace-period").as_deref(),
        Some("2500ms")
    );
    assert_eq!(get("shutdown-timeout").as_deref(), Some("25s"));
    assert_eq!(get("v").as_deref(), Some("4"));
    assert_eq!(get("log-format").as_deref(), Some("json"));
    assert_eq!(get("port").as_deref(), Some("10443"));
    assert_eq!(get("metrics-port").as_deref(), Some("10999"));
    assert_eq!(get("watch-config-map").as_deref(), Some("true"));
    assert_eq!(get("tls-secret").as_deref(), Some("custom-tls"));
    assert_eq!(get("service-name").as_deref(), Some("piw"));
    assert_eq!(get("webhook-config-name").as_deref(), Some("piw-mutating"));
    assert_eq!(
        &a[a.len() - 2..],
        ["--future-flag=1", "--other"],
        "extraArgs come last"
    );

    let ports = &container(&docs)["ports"];
    assert_eq!(ports[0]["containerPort"], 10443);
    assert_eq!(ports[1]["containerPort"], 10999);
}

#[test]
fn aws_default_region_flag_is_left_out_when_empty() {
    let helm = require_helm!("aws_default_region_flag_is_left_out_when_empty");
    let a = args(default_docs(helm));
    assert!(
        !a.iter().any(|x| x.starts_with("--aws-default-region")),
        "{a:?}"
    );
}

/// Features beyond the reference are opt-in: by default their flags are not passed at all, so
/// the rendered arguments are the reference's.
#[test]
fn flags_beyond_the_reference_are_passed_only_when_enabled() {
    let helm = require_helm!("flags_beyond_the_reference_are_passed_only_when_enabled");
    let a = args(default_docs(helm));
    for name in ["role-session-name-from-pod", "inject-region-without-role"] {
        assert!(flag(&a, name).is_none(), "{name}: {a:?}");
    }
    let docs = render(
        helm,
        &[
            "--set",
            "config.roleSessionNameFromPod=true",
            "--set",
            "config.injectRegionWithoutRole=true",
            "--set",
            "config.awsDefaultRegion=eu-west-1",
        ],
    );
    let a = args(&docs);
    assert_eq!(
        flag(&a, "role-session-name-from-pod").as_deref(),
        Some("true")
    );
    assert_eq!(
        flag(&a, "inject-region-without-role").as_deref(),
        Some("true")
    );
    assert_eq!(flag(&a, "aws-default-region").as_deref(), Some("eu-west-1"));
}

#[test]
fn container_credentials_flags_and_directory_mount_only_when_enabled() {
    let helm = require_helm!("container_credentials_flags_and_directory_mount_only_when_enabled");
    let a = args(default_docs(helm));
    assert!(
        !a.iter().any(|x| x.contains("container-credentials")),
        "{a:?}"
    );

    let values = chart_dir()
        .join("ci")
        .join("container-credentials-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    let a = args(&docs);
    let file = "/etc/pod-identity-webhook/container-credentials/config.json";
    assert_eq!(
        flag(&a, "watch-container-credentials-config").as_deref(),
        Some(file)
    );
    assert_eq!(
        flag(&a, "container-credentials-audience").as_deref(),
        Some("pods.eks.amazonaws.com")
    );
    assert_eq!(
        flag(&a, "container-credentials-token-mount-path").as_deref(),
        Some("/var/run/secrets/pods.eks.amazonaws.com/serviceaccount")
    );
    assert_eq!(
        flag(&a, "container-credentials-token-volume-name").as_deref(),
        Some("eks-pod-identity-token")
    );
    assert_eq!(
        flag(&a, "container-credentials-token-path").as_deref(),
        Some("eks-pod-identity-token")
    );
    assert_eq!(
        flag(&a, "container-credentials-full-uri").as_deref(),
        Some("http://169.254.170.23/v1/credentials")
    );

    // Mounted as a directory (no subPath) so ConfigMap updates propagate.
    let mount = container(&docs)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "container-credentials")
        .expect("container-credentials mount");
    assert_eq!(
        mount["mountPath"],
        "/etc/pod-identity-webhook/container-credentials"
    );
    assert!(mount["subPath"].is_null(), "must not use subPath: {mount}");

    let cm_name = "pod-identity-webhook-container-credentials";
    let volumes = &one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == cm_name),
        "{volumes}"
    );
    let cm = all_of(&docs, "ConfigMap")
        .into_iter()
        .find(|c| name_of(c) == cm_name)
        .expect("container credentials ConfigMap");
    let config: Value =
        serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).expect("JSON");
    assert_eq!(
        config,
        json!({"identities": [
            {"namespace": "payments", "serviceAccount": "api"},
            {"namespace": "batch", "serviceAccount": "reporter"}
        ]})
    );
}

#[test]
fn role_mapping_configmap_holds_the_mappings_as_json_under_key_config() {
    let helm = require_helm!("role_mapping_configmap_holds_the_mappings_as_json_under_key_config");
    assert!(all_of(default_docs(helm), "ConfigMap").is_empty());

    let values = chart_dir().join("ci").join("role-mapping-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    assert_eq!(
        flag(&args(&docs), "watch-config-map").as_deref(),
        Some("true")
    );
    let cm = one(&docs, "ConfigMap");
    assert_eq!(
        name_of(cm),
        "pod-identity-webhook",
        "the binary watches this exact name"
    );
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    let config: Value = serde_json::from_str(cm["data"]["config"].as_str().unwrap()).expect("JSON");
    assert_eq!(
        config["payments/api"],
        json!({
            "RoleARN": "arn:aws:iam::111122223333:role/payments-api",
            "Audience": "sts.amazonaws.com",
            "UseRegionalSTS": true,
            "TokenExpiration": 3600
        })
    );

    // create=false: watched, but managed outside the chart.
    let docs = render(
        helm,
        &[
            "--set",
            "roleMapping.enabled=true",
            "--set",
            "roleMapping.create=false",
        ],
    );
    assert!(all_of(&docs, "ConfigMap").is_empty());
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

#[test]
fn builtin_mode_renders_no_secret_and_no_ca_bundle_offline() {
    let helm = require_helm!("builtin_mode_renders_no_secret_and_no_ca_bundle_offline");
    let docs = default_docs(helm);
    assert!(all_of(docs, "Secret").is_empty());
    assert!(all_of(docs, "Certificate").is_empty());
    assert!(webhook(docs)["clientConfig"]["caBundle"].is_null());
    let mounts = &container(docs)["volumeMounts"];
    assert!(
        !mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/webhook/certs"),
        "{mounts}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// `lookup` returns nothing under `helm template`, so the test swaps it for a
/// fixture standing for the live object (whose caBundle the webhook or
/// cert-manager wrote) and checks an upgrade would render that caBundle
/// instead of wiping it.
#[rstest::rstest]
#[case::builtin("builtin")]
#[case::cert_manager("certManager")]
fn upgrade_keeps_the_ca_bundle_already_in_the_cluster(#[case] mode: &str) {
    let helm = require_helm!("upgrade_keeps_the_ca_bundle_already_in_the_cluster");
    let tmp = tempfile::tempdir().unwrap();
    let chart = tmp.path().join("pod-identity-webhook");
    copy_dir(&chart_dir(), &chart);
    let tpl_path = chart
        .join("templates")
        .join("mutatingwebhookconfiguration.yaml");
    let tpl = std::fs::read_to_string(&tpl_path).unwrap();
    let lookup =
        r#"lookup "admissionregistration.k8s.io/v1" "MutatingWebhookConfiguration" "" $name"#;
    assert!(
        tpl.contains(lookup),
        "the template must look up the live webhook configuration"
    );
    let fixture = r#"fromYaml "webhooks:\n- name: other.example.com\n  clientConfig: {caBundle: T1RIRVI=}\n- name: pod-identity-webhook.amazonaws.com\n  clientConfig: {caBundle: TElWRQ==}\n""#;
    std::fs::write(&tpl_path, tpl.replace(lookup, fixture)).unwrap();

    let mode_arg = format!("certificates.mode={mode}");
    let out = run_helm(
        helm,
        &[
            "template",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            NAMESPACE,
            "--set",
            &mode_arg,
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    let docs = parse_docs(&out.stdout);
    assert_eq!(webhook(&docs)["clientConfig"]["caBundle"], "TElWRQ==");
}

#[test]
fn builtin_mode_renders_no_ca_bundle_when_the_cluster_has_none() {
    let helm = require_helm!("builtin_mode_renders_no_ca_bundle_when_the_cluster_has_none");
    assert!(webhook(default_docs(helm))["clientConfig"]["caBundle"].is_null());
}

#[test]
fn cert_manager_mode_issues_a_certificate_and_injects_its_ca() {
    let helm = require_helm!("cert_manager_mode_issues_a_certificate_and_injects_its_ca");
    let values = chart_dir()
        .join("ci")
        .join("cert-manager-selfsigned-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    let a = args(&docs);
    assert_eq!(flag(&a, "in-cluster").as_deref(), Some("false"));
    assert_eq!(
        flag(&a, "tls-cert").as_deref(),
        Some("/etc/webhook/certs/tls.crt")
    );
    assert_eq!(
        flag(&a, "tls-key").as_deref(),
        Some("/etc/webhook/certs/tls.key")
    );
    assert_eq!(flag(&a, "tls-secret"), None);
    assert_eq!(flag(&a, "webhook-config-name"), None);

    let issuer = one(&docs, "Issuer");
    assert_eq!(issuer["spec"]["selfSigned"], json!({}));
    let cert = one(&docs, "Certificate");
    assert_eq!(cert["spec"]["secretName"], "pod-identity-webhook-tls");
    assert_eq!(cert["spec"]["issuerRef"]["name"], name_of(issuer));
    let dns = strs(&cert["spec"]["dnsNames"]);
    assert!(
        dns.contains(&"pod-identity-webhook.pod-identity-webhook.svc"),
        "{dns:?}"
    );
    assert!(
        dns.contains(&"pod-identity-webhook.pod-identity-webhook.svc.cluster.local"),
        "{dns:?}"
    );

    let cfg = one(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        cfg["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/{}", name_of(cert))
    );

    let deploy = one(&docs, "Deployment");
    let volumes = deploy["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"] == "pod-identity-webhook-tls"));
    let mounts = container(&docs)["volumeMounts"].as_array().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == "/etc/webhook/certs" && m["readOnly"] == true));
}

#[test]
fn cert_manager_mode_with_issuer_ref_creates_no_issuer() {
    let helm = require_helm!("cert_manager_mode_with_issuer_ref_creates_no_issuer");
    let values = chart_dir()
        .join("ci")
        .join("cert-manager-issuer-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    assert!(!has_kind(&docs, "Issuer"));
    let cert = one(&docs, "Certificate");
    assert_eq!(
        cert["spec"]["issuerRef"],
        json!({"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
}

#[test]
fn secret_mode_fails_clearly_without_existing_secret_or_ca_bundle() {
    let helm = require_helm!("secret_mode_fails_clearly_without_existing_secret_or_ca_bundle");
    let err = try_render(helm, &["--set", "certificates.mode=secret"]).unwrap_err();
    assert!(
        err.contains("certificates.secret.existingSecret is required"),
        "{err}"
    );
    let err = try_render(
        helm,
        &[
            "--set",
            "certificates.mode=secret",
            "--set",
            "certificates.secret.existingSecret=mine",
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("certificates.secret.caBundle is required"),
        "{err}"
    );
}

#[test]
fn secret_mode_mounts_the_given_secret_and_base64_encodes_a_pem_ca_bundle() {
    let helm =
        require_helm!("secret_mode_mounts_the_given_secret_and_base64_encodes_a_pem_ca_bundle");
    let values = chart_dir().join("ci").join("existing-secret-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    assert_eq!(flag(&args(&docs), "in-cluster").as_deref(), Some("false"));
    let volumes = &one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert!(volumes
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["secret"]["secretName"] == "my-webhook-tls"));
    let ca = webhook(&docs)["clientConfig"]["caBundle"]
        .as_str()
        .expect("caBundle");
    assert!(
        ca.starts_with("LS0tLS1CRUdJTi"),
        "PEM must be base64-encoded: {ca}"
    );

    // Already base64: passed through unchanged.
    let docs = render(
        helm,
        &[
            "--set",
            "certificates.mode=secret",
            "--set",
            "certificates.secret.existingSecret=mine",
            "--set",
            "certificates.secret.caBundle=QUJD",
        ],
    );
    assert_eq!(webhook(&docs)["clientConfig"]["caBundle"], "QUJD");
}

// ---------------------------------------------------------------------------
// MutatingWebhookConfiguration
// ---------------------------------------------------------------------------

#[test]
fn webhook_configuration_fields_match_the_defaults() {
    let helm = require_helm!("webhook_configuration_fields_match_the_defaults");
    let w = webhook(default_docs(helm));
    assert_eq!(w["name"], "pod-identity-webhook.amazonaws.com");
    assert_eq!(w["admissionReviewVersions"], json!(["v1", "v1beta1"]));
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    assert_eq!(w["matchPolicy"], "Equivalent");
    assert_eq!(w["timeoutSeconds"], 10);
    assert_eq!(
        w["rules"],
        json!([{
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced"
        }])
    );
    assert_eq!(
        w["clientConfig"]["service"],
        json!({"name": "pod-identity-webhook", "namespace": NAMESPACE, "path": "/mutate", "port": 443})
    );
    assert!(w["clientConfig"]["url"].is_null());
}

#[test]
fn webhook_failure_policy_and_timeout_follow_values() {
    let helm = require_helm!("webhook_failure_policy_and_timeout_follow_values");
    let docs = render(
        helm,
        &[
            "--set",
            "webhook.failurePolicy=Fail",
            "--set",
            "webhook.timeoutSeconds=5",
        ],
    );
    let w = webhook(&docs);
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["timeoutSeconds"], 5);
}

#[test]
fn selectors_skip_opted_out_pods_and_namespaces_and_the_release_namespace() {
    let helm =
        require_helm!("selectors_skip_opted_out_pods_and_namespaces_and_the_release_namespace");
    let docs = default_docs(helm);
    let w = webhook(docs);
    assert_eq!(
        w["objectSelector"],
        json!({"matchExpressions": [{"key": SKIP_LABEL, "operator": "DoesNotExist"}]})
    );
    assert_eq!(
        w["namespaceSelector"],
        json!({"matchExpressions": [
            {"key": SKIP_LABEL, "operator": "DoesNotExist"},
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE]}
        ]})
    );
    // The webhook's own pods carry the opt-out label.
    let labels = &one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels[SKIP_LABEL], "true");
}

#[test]
fn extra_selector_terms_are_added_to_the_built_in_opt_out() {
    let helm = require_helm!("extra_selector_terms_are_added_to_the_built_in_opt_out");
    let docs = render(
        helm,
        &[
            "--set",
            "webhook.excludeOwnNamespace=false",
            "--set",
            "webhook.namespaceSelector.matchLabels.irsa=on",
            "--set",
            "webhook.objectSelector.matchExpressions[0].key=tier",
            "--set",
            "webhook.objectSelector.matchExpressions[0].operator=Exists",
        ],
    );
    let w = webhook(&docs);
    assert_eq!(
        w["namespaceSelector"],
        json!({
            "matchLabels": {"irsa": "on"},
            "matchExpressions": [{"key": SKIP_LABEL, "operator": "DoesNotExist"}]
        })
    );
    assert_eq!(
        w["objectSelector"]["matchExpressions"],
        json!([
            {"key": SKIP_LABEL, "operator": "DoesNotExist"},
            {"key": "tier", "operator": "Exists"}
        ])
    );
}

#[test]
fn url_mode_renders_client_config_url_rbac_and_no_workload() {
    let helm = require_helm!("url_mode_renders_client_config_url_rbac_and_no_workload");
    let values = chart_dir().join("ci").join("url-mode-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    let cc = &webhook(&docs)["clientConfig"];
    assert_eq!(
        cc["url"],
        "https://pod-identity-webhook.internal.example:8443/mutate"
    );
    assert!(cc["service"].is_null());
    assert_eq!(cc["caBundle"], "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==");
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "NetworkPolicy",
        "Certificate",
        "Issuer",
    ] {
        assert!(
            !has_kind(&docs, kind),
            "{kind} must not be rendered in URL mode"
        );
    }
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
        assert!(
            has_kind(&docs, kind),
            "{kind} must still be rendered in URL mode"
        );
    }
    assert!(rules_for(&docs, "secrets").is_empty());
    assert!(rules_for(&docs, "mutatingwebhookconfigurations").is_empty());
}

// ---------------------------------------------------------------------------
// Pod spec
// ---------------------------------------------------------------------------

fn assert_restricted(pod_spec: &Value, what: &str) {
    let psc = &pod_spec["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}: pod runAsNonRoot");
    assert_eq!(
        psc["seccompProfile"]["type"], "RuntimeDefault",
        "{what}: seccomp"
    );
    assert_ne!(psc["runAsUser"], 0, "{what}: runAsUser");
    assert!(
        pod_spec["hostNetwork"].is_null() || pod_spec["hostNetwork"] == false,
        "{what}"
    );
    for c in pod_spec["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{what}: allowPrivilegeEscalation"
        );
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{what}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc["capabilities"]["drop"],
            json!(["ALL"]),
            "{what}: drop ALL"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{what}: no added capabilities"
        );
        assert!(
            sc["privileged"].is_null() || sc["privileged"] == false,
            "{what}"
        );
        for p in c["ports"].as_array().into_iter().flatten() {
            assert!(
                p["containerPort"].as_u64().unwrap() >= 1024,
                "{what}: unprivileged port"
            );
        }
    }
}

#[test]
fn webhook_and_test_pods_meet_pod_security_restricted() {
    let helm = require_helm!("webhook_and_test_pods_meet_pod_security_restricted");
    let docs = default_docs(helm);
    let spec = &one(docs, "Deployment")["spec"]["template"]["spec"];
    assert_restricted(spec, "webhook Deployment");
    assert_eq!(spec["securityContext"]["runAsUser"], 65532);
    assert_eq!(spec["securityContext"]["runAsGroup"], 65532);
    assert_eq!(spec["securityContext"]["fsGroup"], 65532);
    let test_pod = all_of(docs, "Pod")
        .into_iter()
        .find(|p| p["metadata"]["annotations"]["helm.sh/hook"] == "test")
        .expect("helm test pod");
    assert_restricted(&test_pod["spec"], "helm test pod");
}

#[test]
fn deployment_defaults_are_highly_available_and_probed_on_the_metrics_port() {
    let helm =
        require_helm!("deployment_defaults_are_highly_available_and_probed_on_the_metrics_port");
    let docs = default_docs(helm);
    let deploy = one(docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["automountServiceAccountToken"], true);
    assert_eq!(spec["serviceAccountName"], "pod-identity-webhook");
    let tsc = &spec["topologySpreadConstraints"][0];
    assert_eq!(tsc["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(tsc["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(
        tsc["labelSelector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"]
    );

    let c = container(docs);
    assert_eq!(
        c["image"], "pod-identity-webhook:0.1.0",
        "tag defaults to appVersion"
    );
    assert_eq!(
        c["ports"],
        json!([
            {"name": "https", "containerPort": 8443, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9999, "protocol": "TCP"}
        ])
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "metrics", "{probe}");
        assert_eq!(get["scheme"], "HTTP", "{probe}");
    }
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
    );
}

#[test]
fn webhook_service_maps_port_443_to_the_https_container_port() {
    let helm = require_helm!("webhook_service_maps_port_443_to_the_https_container_port");
    let docs = default_docs(helm);
    let svc = all_of(docs, "Service")
        .into_iter()
        .find(|s| name_of(s) == "pod-identity-webhook")
        .expect("webhook Service");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}])
    );
    assert_eq!(
        svc["spec"]["selector"],
        one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    let metrics = all_of(docs, "Service")
        .into_iter()
        .find(|s| name_of(s) == "pod-identity-webhook-metrics")
        .expect("metrics Service");
    assert_eq!(metrics["spec"]["ports"][0]["targetPort"], "metrics");
}

#[test]
fn pod_disruption_budget_is_rendered_only_with_more_than_one_replica() {
    let helm = require_helm!("pod_disruption_budget_is_rendered_only_with_more_than_one_replica");
    let pdb = one(default_docs(helm), "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    let values = chart_dir().join("ci").join("single-replica-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 1);
    assert!(!has_kind(&docs, "PodDisruptionBudget"));
}

#[test]
fn service_monitor_and_network_policy_are_opt_in() {
    let helm = require_helm!("service_monitor_and_network_policy_are_opt_in");
    let docs = default_docs(helm);
    assert!(!has_kind(docs, "ServiceMonitor"));
    assert!(!has_kind(docs, "NetworkPolicy"));

    let values = chart_dir().join("ci").join("full-values.yaml");
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let np = one(&docs, "NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
}

/// The spec of the PrometheusRule, as a Prometheus rules file.
fn rule_groups(docs: &[Value]) -> &Value {
    &one(docs, "PrometheusRule")["spec"]
}

/// The expression of alert `name` in `groups`.
fn alert_expr<'a>(groups: &'a Value, name: &str) -> &'a str {
    groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .find(|r| r["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name} in {groups}"))["expr"]
        .as_str()
        .expect("expr")
}

/// The dashboard's ConfigMap: the one carrying the Grafana sidecar's label.
fn dashboard_config_map(docs: &[Value]) -> Option<&Value> {
    all_of(docs, "ConfigMap")
        .into_iter()
        .find(|c| !c["metadata"]["labels"]["grafana_dashboard"].is_null())
}

#[test]
fn alerts_and_dashboard_are_opt_in_and_render_the_files_in_the_repository() {
    let helm =
        require_helm!("alerts_and_dashboard_are_opt_in_and_render_the_files_in_the_repository");
    let docs = default_docs(helm);
    assert!(!has_kind(docs, "PrometheusRule"));
    assert!(dashboard_config_map(docs).is_none());

    let docs = render(
        helm,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    // One source of truth: the rules file for Prometheus without the operator is the
    // PrometheusRule's spec with the default values.
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    let file: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rule_groups(&docs),
        &file,
        "deploy/monitoring/prometheus-rules.yaml differs from the chart: run hack/render-deploy.sh"
    );
    // The dashboard is the JSON file as it is, labelled for Grafana's sidecar.
    let config_map = dashboard_config_map(&docs).expect("the dashboard ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(config_map["metadata"]["namespace"], NAMESPACE);
    let rendered: Value = serde_json::from_str(
        config_map["data"]["pod-identity-webhook.json"]
            .as_str()
            .expect("the dashboard's JSON"),
    )
    .expect("the dashboard in the ConfigMap is JSON");
    let source: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rendered, source);
    assert_eq!(rendered["uid"], "pod-identity-webhook");

    let docs = render(
        helm,
        &[
            "-f",
            chart_dir().join("ci/full-values.yaml").to_str().unwrap(),
        ],
    );
    let config_map = dashboard_config_map(&docs).expect("the dashboard ConfigMap");
    assert_eq!(config_map["metadata"]["namespace"], "monitoring");
    assert_eq!(
        config_map["metadata"]["annotations"]["grafana_folder"],
        "Kubernetes"
    );
    assert_eq!(
        one(&docs, "PrometheusRule")["metadata"]["labels"]["release"],
        "prometheus"
    );
}

/// `helm template` of release `release` into `namespace`.
fn render_release(helm: &Path, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    let out = run_helm(helm, &args);
    assert!(out.ok, "helm {args:?} failed:\n{}", out.stderr);
    parse_docs(&out.stdout)
}

#[test]
fn alerts_follow_the_webhook_name_the_release_and_the_threshold_values() {
    let helm = require_helm!("alerts_follow_the_webhook_name_the_release_and_the_threshold_values");
    let docs = render_release(
        helm,
        "identity",
        "platform",
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "webhook.name=irsa.platform.example.com",
            "--set",
            "webhook.timeoutSeconds=20",
            "--set",
            "metrics.prometheusRule.slowCalls.timeoutFraction=0.25",
            "--set",
            "metrics.prometheusRule.failOpen.severity=page",
            "--set",
            "metrics.prometheusRule.failOpen.window=15m",
            "--set",
            "metrics.prometheusRule.callsFailing.ratio=0.2",
            "--set",
            "metrics.prometheusRule.certificateExpiry.days=7",
            "--set",
            "metrics.prometheusRule.clientsRefused.perSecond=2",
            "--set",
            "metrics.prometheusRule.clientsRefused.ignoreReasons={idle,slow_body}",
            "--set-string",
            "metrics.prometheusRule.apiServerSelector=job=\"apiserver\"",
            "--set",
            "metrics.prometheusRule.alertLabels.team=platform",
            "--set",
            "metrics.prometheusRule.runbookBaseUrl=https://docs.example/webhook.md",
        ],
    );
    let groups = rule_groups(&docs);
    // The API server counts calls under the webhook's name, whatever the release is called.
    let api = r#"{name="irsa.platform.example.com",type="admit",job="apiserver"}"#;
    let fail_open = alert_expr(groups, "PodIdentityWebhookFailOpen");
    assert!(
        fail_open.contains(&format!(
            "apiserver_admission_webhook_fail_open_count{api}[15m]"
        )),
        "{fail_open}"
    );
    assert!(fail_open.contains("offset 15m"), "{fail_open}");
    let slow = alert_expr(groups, "PodIdentityWebhookSlowCalls");
    assert!(slow.contains(&format!("_bucket{api}[5m]")), "{slow}");
    assert!(
        slow.trim_end().ends_with("> 5"),
        "a quarter of 20 s: {slow}"
    );
    assert!(alert_expr(groups, "PodIdentityWebhookCallsFailing")
        .trim_end()
        .ends_with("> 0.2"));
    // The webhook's own series: those of this release's metrics Service.
    let own = r#"{job="identity-pod-identity-webhook-metrics",namespace="platform"}"#;
    assert!(alert_expr(groups, "PodIdentityWebhookDown").contains(own));
    assert!(alert_expr(groups, "PodIdentityWebhookCertificateExpiresSoon").contains("< 7 * 86400"));
    let refused = alert_expr(groups, "PodIdentityWebhookClientsRefused");
    assert!(
        refused.contains(r#"namespace="platform",reason!~"idle|slow_body"}"#),
        "{refused}"
    );
    assert!(refused.trim_end().ends_with("> 2"), "{refused}");
    for rule in groups["groups"][0]["rules"].as_array().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        assert_eq!(rule["labels"]["team"], "platform", "{name}");
        assert_eq!(
            rule["annotations"]["runbook_url"],
            format!("https://docs.example/webhook.md#{}", name.to_lowercase())
        );
        let severity = match name {
            "PodIdentityWebhookFailOpen" => "page",
            "PodIdentityWebhookCallsFailing" | "PodIdentityWebhookDown" => "critical",
            _ => "warning",
        };
        assert_eq!(rule["labels"]["severity"], severity, "{name}");
    }

    // Whatever the values, promtool accepts what the chart renders.
    let Some(promtool) = crate::support::promql::tool("promtool", "PROMTOOL") else {
        skip(
            "chart",
            "alerts_follow_the_webhook_name_the_release_and_the_threshold_values",
            "promtool",
            "run hack/install-promtool.sh",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(groups).unwrap()).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules", "--lint-fatal"])
        .arg(&file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alerts_in_url_mode_need_to_be_told_how_the_webhook_is_scraped() {
    let helm = require_helm!("alerts_in_url_mode_need_to_be_told_how_the_webhook_is_scraped");
    let url = "webhook.url=https://webhook.internal.example:8443/mutate";
    let err = try_render(
        helm,
        &["--set", url, "--set", "metrics.prometheusRule.enabled=true"],
    )
    .expect_err("URL mode without a webhook selector");
    assert!(
        err.contains("metrics.prometheusRule.webhookSelector is required with webhook.url"),
        "{err}"
    );
    let docs = render(
        helm,
        &[
            "-f",
            chart_dir()
                .join("ci/url-mode-values.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(alert_expr(rule_groups(&docs), "PodIdentityWebhookDown")
        .contains(r#"pod_identity_webhook_ready{job="pod-identity-webhook-external"}"#));
}

// ---------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------

#[test]
fn rbac_default_reads_serviceaccounts_and_narrows_builtin_certificate_rules_by_name() {
    let helm = require_helm!(
        "rbac_default_reads_serviceaccounts_and_narrows_builtin_certificate_rules_by_name"
    );
    let docs = default_docs(helm);

    let cr = one(docs, "ClusterRole");
    let sa_rules = rules_for(docs, "serviceaccounts");
    assert_eq!(sa_rules.len(), 1);
    assert_eq!(strs(&sa_rules[0]["verbs"]), ["get", "list", "watch"]);

    assert!(
        rules_for(docs, "configmaps").is_empty(),
        "no ConfigMap access without roleMapping"
    );

    // Secrets only in its own namespace; every verb but create narrowed by name.
    assert!(rules(cr)
        .iter()
        .all(|r| !strs(&r["resources"]).contains(&"secrets")));
    let role = one(docs, "Role");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    for r in rules_for(docs, "secrets") {
        let verbs = strs(&r["verbs"]);
        if verbs == ["create"] {
            assert!(r["resourceNames"].is_null());
        } else {
            assert_eq!(
                strs(&r["resourceNames"]),
                ["pod-identity-webhook-tls"],
                "{r}"
            );
            assert!(verbs == ["get", "list", "watch", "update"], "{r}");
        }
    }
    assert_eq!(rules_for(docs, "secrets").len(), 2);

    let mwc = rules_for(docs, "mutatingwebhookconfigurations");
    assert_eq!(mwc.len(), 1);
    assert_eq!(
        strs(&mwc[0]["resourceNames"]),
        ["pod-identity-webhook-mutating"]
    );
    assert_eq!(strs(&mwc[0]["verbs"]), ["get", "list", "watch", "patch"]);

    // No wildcards anywhere.
    for r in docs
        .iter()
        .filter(|d| matches!(kind_of(d), "Role" | "ClusterRole"))
        .flat_map(rules)
    {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!strs(&r[field]).contains(&"*"), "wildcard in {r}");
        }
    }
    // Bindings point at the webhook's ServiceAccount.
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let b = one(docs, kind);
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "pod-identity-webhook", "namespace": NAMESPACE}])
        );
    }
}

#[test]
fn rbac_role_mapping_grants_configmap_read_by_name_in_own_namespace() {
    let helm = require_helm!("rbac_role_mapping_grants_configmap_read_by_name_in_own_namespace");
    let docs = render(helm, &["--set", "roleMapping.enabled=true"]);
    let cm_rules = rules_for(&docs, "configmaps");
    assert_eq!(cm_rules.len(), 1, "{cm_rules:?}");
    assert_eq!(strs(&cm_rules[0]["verbs"]), ["get", "list", "watch"]);
    assert_eq!(
        strs(&cm_rules[0]["resourceNames"]),
        ["pod-identity-webhook"]
    );
    assert!(
        rules(one(&docs, "ClusterRole"))
            .iter()
            .all(|r| !strs(&r["resources"]).contains(&"configmaps")),
        "ConfigMap access must stay namespaced"
    );
}

#[rstest::rstest]
#[case::cert_manager("cert-manager-selfsigned-values.yaml")]
#[case::cert_manager_issuer("cert-manager-issuer-values.yaml")]
#[case::existing_secret("existing-secret-values.yaml")]
#[case::url_mode("url-mode-values.yaml")]
fn rbac_has_no_secret_or_webhook_configuration_rules_outside_builtin_mode(#[case] file: &str) {
    let helm =
        require_helm!("rbac_has_no_secret_or_webhook_configuration_rules_outside_builtin_mode");
    let values = chart_dir().join("ci").join(file);
    let docs = render(helm, &["-f", values.to_str().unwrap()]);
    assert!(rules_for(&docs, "secrets").is_empty(), "{file}");
    assert!(
        rules_for(&docs, "mutatingwebhookconfigurations").is_empty(),
        "{file}"
    );
    assert!(!has_kind(&docs, "Role"), "{file}: no Role needed");
    assert_eq!(rules_for(&docs, "serviceaccounts").len(), 1, "{file}");
}

#[test]
fn rbac_and_service_account_can_be_left_to_the_user() {
    let helm = require_helm!("rbac_and_service_account_can_be_left_to_the_user");
    let docs = render(
        helm,
        &[
            "--set",
            "rbac.create=false",
            "--set",
            "serviceAccount.create=false",
            "--set",
            "serviceAccount.name=mine",
        ],
    );
    for kind in [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ] {
        assert!(!has_kind(&docs, kind), "{kind}");
    }
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        "mine"
    );
}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

/// Each `--set` is refused by the values schema, with an error that names `key`.
fn assert_schema_rejects(helm: &Path, cases: &[(&str, &str)]) {
    for &(set, key) in cases {
        let err = try_render(helm, &["--set", set]).expect_err(set);
        assert!(err.contains("schema"), "{set}: {err}");
        assert!(err.contains(key), "{set}: error does not name {key}: {err}");
    }
}

#[test]
fn schema_rejects_a_misspelled_key_and_names_it() {
    let helm = require_helm!("schema_rejects_a_misspelled_key_and_names_it");
    assert_schema_rejects(
        helm,
        &[
            ("replicaCout=2", "replicaCout"),
            ("webhook.failurPolicy=Fail", "failurPolicy"),
            ("certificates.certManager.issuerRef.nmae=x", "nmae"),
            ("livenessProbe.perodSeconds=1", "perodSeconds"),
            ("strategy.rollingUpdate.maxSurg=1", "maxSurg"),
        ],
    );
}

#[test]
fn schema_rejects_a_wrong_type_and_names_the_key() {
    let helm = require_helm!("schema_rejects_a_wrong_type_and_names_the_key");
    assert_schema_rejects(
        helm,
        &[
            ("replicaCount=two", "replicaCount"),
            ("config.stsRegionalEndpoint=yes", "stsRegionalEndpoint"),
            ("config.tokenExpiration=long", "tokenExpiration"),
        ],
    );
}

#[test]
fn schema_rejects_values_outside_the_allowed_set() {
    let helm = require_helm!("schema_rejects_values_outside_the_allowed_set");
    assert_schema_rejects(
        helm,
        &[
            ("webhook.failurePolicy=fail", "failurePolicy"),
            ("certificates.mode=vault", "mode"),
            ("config.logFormat=xml", "logFormat"),
            ("config.logVerbosity=9", "logVerbosity"),
            ("ports.webhook=443", "webhook"),
            ("webhook.timeoutSeconds=60", "timeoutSeconds"),
            (
                "config.serviceAccountLookupGracePeriod=1 second",
                "serviceAccountLookupGracePeriod",
            ),
            ("config.tokenExpiration=60", "tokenExpiration"),
            ("webhook.url=http://insecure.example/mutate", "url"),
            (
                "roleMapping.mappings.bad-key.RoleARN=arn:aws:iam::111122223333:role/x",
                "bad-key",
            ),
            ("strategy.type=BlueGreen", "type"),
            ("config.tlsMinVersion=1.1", "tlsMinVersion"),
            ("config.bindAddress=localhost", "bindAddress"),
            ("config.shutdownDelay=5", "shutdownDelay"),
            ("config.tlsCipherSuites={rc4}", "tlsCipherSuites"),
            ("podDisruptionBudget.maxUnavailable=lots", "maxUnavailable"),
            ("livenessProbe.periodSeconds=0", "periodSeconds"),
            ("webhook.configurationName=Bad_Name", "configurationName"),
            ("namespaceOverride=Bad_NS", "namespaceOverride"),
            ("revisionHistoryLimit=-1", "revisionHistoryLimit"),
            ("metrics.prometheusRule.callsFailing.ratio=1.5", "ratio"),
            (
                "metrics.prometheusRule.slowCalls.timeoutFraction=0",
                "timeoutFraction",
            ),
            ("metrics.prometheusRule.failOpen.window=5 minutes", "window"),
            ("metrics.prometheusRule.down.for=5", "for"),
            (
                "metrics.prometheusRule.clientsRefused.ignoreReasons={sleepy}",
                "ignoreReasons",
            ),
            (
                "metrics.prometheusRule.runbookBaseUrl=docs/README.md",
                "runbookBaseUrl",
            ),
        ],
    );
}

/// True when the lines just above `i` are a comment block; with `doc_only`,
/// the block must hold a `# --` description.
fn comment_above(lines: &[&str], i: usize, doc_only: bool) -> bool {
    let mut j = i;
    let mut any = false;
    while j > 0 {
        j -= 1;
        let t = lines[j].trim_start();
        if !t.starts_with('#') {
            break;
        }
        any = true;
        if t.starts_with("# --") {
            return true;
        }
    }
    any && !doc_only
}

#[test]
fn every_value_in_values_yaml_is_documented_with_a_comment() {
    // Needs no helm. A key is documented when a comment sits right above it,
    // or above one of its parents with a `# --` description (that covers the
    // body of a default such as securityContext or resources).
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let mut undocumented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        {
            continue;
        }
        if value.trim().is_empty() {
            // A section: its leaves are checked one by one.
            continue;
        }
        if comment_above(&lines, i, false) {
            continue;
        }
        // Walk up the parents.
        let mut indent = indent_of(line);
        let mut covered = false;
        let mut j = i;
        while j > 0 && indent > 0 {
            j -= 1;
            let t = lines[j].trim_start();
            if t.is_empty() || t.starts_with('#') || t.starts_with('-') {
                continue;
            }
            if indent_of(lines[j]) < indent {
                indent = indent_of(lines[j]);
                if comment_above(&lines, j, true) {
                    covered = true;
                    break;
                }
            }
        }
        if !covered {
            undocumented.push(format!("values.yaml:{}: {}", i + 1, line.trim()));
        }
    }
    assert!(
        undocumented.is_empty(),
        "values without a comment:\n{}",
        undocumented.join("\n")
    );
}

/// Dotted keys of values.yaml; the Kubernetes objects given whole as
/// defaults (security contexts, resources, nodeSelector) count as one key.
fn value_keys(prefix: &str, v: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    const WHOLE: [&str; 8] = [
        "metrics.grafanaDashboard.labels",
        "podSecurityContext",
        "securityContext",
        "resources",
        "nodeSelector",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
    ];
    match v {
        serde_yaml_ng::Value::Mapping(m) if !m.is_empty() && !WHOLE.contains(&prefix) => {
            for (k, child) in m {
                let k = k.as_str().expect("string keys");
                let path = if prefix.is_empty() {
                    k.to_owned()
                } else {
                    format!("{prefix}.{k}")
                };
                value_keys(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn readme_values_table_lists_every_value() {
    // Needs no helm.
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let mut keys = Vec::new();
    value_keys("", &values, &mut keys);
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let section = readme
        .split("\n## Values\n")
        .nth(1)
        .expect("README has a ## Values section");
    let table: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_owned()))
        .collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !table.contains(k)).collect();
    let stale: Vec<&String> = table.iter().filter(|k| !keys.contains(k)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README values table out of sync: missing {missing:?}, not in values.yaml {stale:?}"
    );
}

// ---------------------------------------------------------------------------
// helm test hook and deploy/
// ---------------------------------------------------------------------------

#[test]
fn helm_test_pod_checks_role_arn_and_token_file_under_an_annotated_service_account() {
    let helm = require_helm!(
        "helm_test_pod_checks_role_arn_and_token_file_under_an_annotated_service_account"
    );
    let docs = default_docs(helm);
    let hooks: Vec<&Value> = docs
        .iter()
        .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"] == "test")
        .collect();
    let sa = hooks
        .iter()
        .find(|d| kind_of(d) == "ServiceAccount")
        .expect("test ServiceAccount");
    let pod = hooks
        .iter()
        .find(|d| kind_of(d) == "Pod")
        .expect("test Pod");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::111122223333:role/pod-identity-webhook-test"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], sa["metadata"]["name"]);
    // The release namespace is excluded from mutation, so the test runs elsewhere.
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(sa["metadata"]["namespace"], "default");
    assert!(pod["metadata"]["labels"][SKIP_LABEL].is_null());
    let script = pod["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(script.contains("AWS_ROLE_ARN"), "{script}");
    assert!(
        script.contains(r#"test -s "${AWS_WEB_IDENTITY_TOKEN_FILE"#),
        "{script}"
    );
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox:1.37");

    // Without the own-namespace exclusion the test stays in the release namespace.
    let docs = render(helm, &["--set", "webhook.excludeOwnNamespace=false"]);
    let pod = docs.iter().find(|d| kind_of(d) == "Pod").expect("test Pod");
    assert_eq!(pod["metadata"]["namespace"], NAMESPACE);
}

/// The files of `dir` and of its subdirectories, by path relative to `dir`.
fn read_dir_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for path in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
    {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            for (inner, content) in read_dir_files(&path) {
                files.insert(format!("{name}/{inner}"), content);
            }
        } else {
            files.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    files
}

#[test]
fn deploy_directory_is_up_to_date_with_the_chart() {
    let helm = require_helm!("deploy_directory_is_up_to_date_with_the_chart");
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("deploy");
    let out = Command::new("bash")
        .arg(root().join("hack").join("render-deploy.sh"))
        .arg("--output")
        .arg(&out_dir)
        .env("HELM", helm)
        .current_dir(root())
        .output()
        .expect("run hack/render-deploy.sh");
    assert!(
        out.status.success(),
        "hack/render-deploy.sh --output failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = read_dir_files(&out_dir);
    let committed = read_dir_files(&root().join("deploy"));
    let mut problems = Vec::new();
    for (name, content) in &fresh {
        match committed.get(name) {
            None => problems.push(format!("deploy/{name} is missing")),
            Some(c) if c != content => problems.push(format!("deploy/{name} differs")),
            Some(_) => {}
        }
    }
    for name in committed.keys().filter(|n| !fresh.contains_key(*n)) {
        problems.push(format!("deploy/{name} is no longer rendered"));
    }
    assert!(
        problems.is_empty(),
        "deploy/ is out of date with charts/pod-identity-webhook:\n  {}\n\
         Run hack/render-deploy.sh and commit the result.",
        problems.join("\n  ")
    );

    // The kustomization lists every manifest, starting with the Namespace.
    let kustomization: Value = serde_yaml_ng::from_str(&committed["kustomization.yaml"]).unwrap();
    let resources = strs(&kustomization["resources"]);
    assert_eq!(resources.first(), Some(&"namespace.yaml"));
    let mut listed: Vec<&str> = resources.clone();
    listed.sort_unstable();
    // The manifests; monitoring/ holds the rules file, which is not a Kubernetes object.
    let mut on_disk: Vec<&str> = committed
        .keys()
        .map(String::as_str)
        .filter(|n| *n != "kustomization.yaml" && !n.contains('/'))
        .collect();
    on_disk.sort_unstable();
    assert_eq!(listed, on_disk);
    let ns: Value = serde_yaml_ng::from_str(&committed["namespace.yaml"]).unwrap();
    assert_eq!(ns["metadata"]["name"], NAMESPACE);
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

#[test]
fn role_mapping_accepts_wildcard_namespace_keys_and_rejects_malformed_ones() {
    let helm =
        require_helm!("role_mapping_accepts_wildcard_namespace_keys_and_rejects_malformed_ones");
    let docs = render(
        helm,
        &[
            "--set",
            "roleMapping.enabled=true",
            "--set-json",
            r#"roleMapping.mappings={"*/reporting":{"RoleARN":"arn:aws:iam::111122223333:role/r"}}"#,
        ],
    );
    let config: Value =
        serde_json::from_str(one(&docs, "ConfigMap")["data"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["*/reporting"]["RoleARN"],
        "arn:aws:iam::111122223333:role/r"
    );
    let err = try_render(
        helm,
        &[
            "--set",
            "roleMapping.enabled=true",
            "--set-json",
            r#"roleMapping.mappings={"no-slash":{"RoleARN":"x"}}"#,
        ],
    )
    .expect_err("a key without a slash");
    assert!(err.contains("no-slash"), "{err}");
}

// ---------------------------------------------------------------------------
// Living next to EKS: the configuration name and the existing-webhook guard
// ---------------------------------------------------------------------------

/// The name EKS gives the MutatingWebhookConfiguration of its own webhook.
const EKS_CONFIG_NAME: &str = "pod-identity-webhook";

#[test]
fn webhook_configuration_name_never_collides_with_the_one_eks_registers() {
    let helm =
        require_helm!("webhook_configuration_name_never_collides_with_the_one_eks_registers");
    // The release name deploy/ and the README use is the one most likely to collide.
    let docs = default_docs(helm);
    let config = one(docs, "MutatingWebhookConfiguration");
    assert_eq!(name_of(config), "pod-identity-webhook-mutating");
    assert_ne!(name_of(config), EKS_CONFIG_NAME);
    for override_ in ["fullnameOverride=pod-identity", "nameOverride=webhook"] {
        let docs = render(helm, &["--set", override_]);
        assert_ne!(
            name_of(one(&docs, "MutatingWebhookConfiguration")),
            EKS_CONFIG_NAME,
            "{override_}"
        );
    }

    // A chosen name reaches the object, the flag and the RBAC rule alike.
    let docs = render(
        helm,
        &["--set", "webhook.configurationName=irsa.example.com"],
    );
    assert_eq!(
        name_of(one(&docs, "MutatingWebhookConfiguration")),
        "irsa.example.com"
    );
    assert_eq!(
        flag(&args(&docs), "webhook-config-name").as_deref(),
        Some("irsa.example.com")
    );
    assert_eq!(
        strs(&rules_for(&docs, "mutatingwebhookconfigurations")[0]["resourceNames"]),
        ["irsa.example.com"]
    );

    let err = try_render(
        helm,
        &["--set", "webhook.configurationName=pod-identity-webhook"],
    )
    .expect_err("the EKS name is refused");
    assert!(err.contains("webhook.configurationName"), "{err}");
    assert!(err.contains("EKS registers its own webhook"), "{err}");
}

/// A copy of the chart whose guard `lookup` answers with `existing` (YAML of the live
/// object, or "" for none), as the API server would on install.
fn chart_with_existing_eks_config(dir: &Path, existing: &str) -> PathBuf {
    let chart = dir.join("pod-identity-webhook");
    copy_dir(&chart_dir(), &chart);
    let tpl_path = chart
        .join("templates")
        .join("mutatingwebhookconfiguration.yaml");
    let tpl = std::fs::read_to_string(&tpl_path).unwrap();
    let lookup = r#"lookup "admissionregistration.k8s.io/v1" "MutatingWebhookConfiguration" "" (include "piw.eksWebhookConfigName" .)"#;
    assert!(
        tpl.contains(lookup),
        "the template must look up the configuration EKS creates"
    );
    let fixture = format!("fromYaml {}", serde_json::to_string(existing).unwrap());
    std::fs::write(&tpl_path, tpl.replace(lookup, &fixture)).unwrap();
    chart
}

fn render_chart(helm: &Path, chart: &Path, extra: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(extra);
    let out = run_helm(helm, &args);
    if out.ok {
        Ok(parse_docs(&out.stdout))
    } else {
        Err(out.stderr)
    }
}

#[test]
fn install_fails_clearly_where_another_pod_identity_webhook_is_registered() {
    let helm =
        require_helm!("install_fails_clearly_where_another_pod_identity_webhook_is_registered");
    let tmp = tempfile::tempdir().unwrap();

    // EKS's object: no Helm ownership.
    let eks =
        "metadata:\n  name: pod-identity-webhook\nwebhooks:\n- name: iam-for-pods.amazonaws.com\n";
    let chart = chart_with_existing_eks_config(&tmp.path().join("eks"), eks);
    let err = render_chart(helm, &chart, &[]).expect_err("two webhooks on the same pods");
    assert!(
        err.contains("already has a MutatingWebhookConfiguration named \"pod-identity-webhook\""),
        "{err}"
    );
    assert!(err.contains("EKS clusters do not need this chart"), "{err}");
    assert!(
        err.contains("webhook.allowOtherPodIdentityWebhook=true"),
        "{err}"
    );
    // Told to, it installs next to it.
    render_chart(
        helm,
        &chart,
        &["--set", "webhook.allowOtherPodIdentityWebhook=true"],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The same name created by this very release (an older chart's naming) is no obstacle.
    let own = format!(
        "metadata:\n  name: pod-identity-webhook\n  annotations:\n    meta.helm.sh/release-name: {RELEASE}\n    meta.helm.sh/release-namespace: {NAMESPACE}\n"
    );
    let chart = chart_with_existing_eks_config(&tmp.path().join("own"), &own);
    render_chart(helm, &chart, &[]).unwrap_or_else(|e| panic!("{e}"));
    // Another release's is.
    let other = own.replace(NAMESPACE, "elsewhere");
    let chart = chart_with_existing_eks_config(&tmp.path().join("other"), &other);
    render_chart(helm, &chart, &[]).expect_err("another release's configuration");

    // Nothing there: installs.
    let chart = chart_with_existing_eks_config(&tmp.path().join("none"), "");
    render_chart(helm, &chart, &[]).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------
// Operator knobs
// ---------------------------------------------------------------------------

#[test]
fn server_flags_only_reachable_through_extra_args_have_values_of_their_own() {
    let helm =
        require_helm!("server_flags_only_reachable_through_extra_args_have_values_of_their_own");
    let a = args(default_docs(helm));
    assert!(
        flag(&a, "tls-cipher-suites").is_none(),
        "no cipher suites by default: {a:?}"
    );
    assert!(
        flag(&a, "bind-address").is_none(),
        "the webhook's own dual-stack default: {a:?}"
    );
    let docs = render(
        helm,
        &[
            "--set",
            "config.bindAddress=::",
            "--set",
            "config.tlsMinVersion=1.3",
            "--set",
            "config.tlsCipherSuites={TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}",
            "--set",
            "config.shutdownDelay=5s",
            "--set",
            "config.shutdownTimeout=20s",
            "--set",
            "config.enableDebuggingHandlers=true",
        ],
    );
    let a = args(&docs);
    let get = |n: &str| flag(&a, n);
    assert_eq!(get("bind-address").as_deref(), Some("::"));
    assert_eq!(get("tls-min-version").as_deref(), Some("1.3"));
    assert_eq!(
        get("tls-cipher-suites").as_deref(),
        Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
    );
    assert_eq!(get("shutdown-delay").as_deref(), Some("5s"));
    assert_eq!(get("shutdown-timeout").as_deref(), Some("20s"));
    assert_eq!(get("enable-debugging-handlers").as_deref(), Some("true"));
}

#[test]
fn deployment_takes_revision_history_strategy_annotations_and_labels() {
    let helm = require_helm!("deployment_takes_revision_history_strategy_annotations_and_labels");
    let deploy = one(default_docs(helm), "Deployment");
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 10);
    assert!(
        deploy["spec"]["strategy"].is_null(),
        "Kubernetes' default strategy"
    );
    assert!(deploy["metadata"]["annotations"].is_null());

    let docs = render(
        helm,
        &[
            "--set",
            "revisionHistoryLimit=3",
            "--set-json",
            r#"strategy={"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":0,"maxSurge":"50%"}}"#,
            "--set-json",
            r#"deploymentAnnotations={"example.com/owner":"platform"}"#,
            "--set-json",
            r#"deploymentLabels={"team":"identity","app.kubernetes.io/name":"hijacked"}"#,
        ],
    );
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 3);
    assert_eq!(
        deploy["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}})
    );
    assert_eq!(
        deploy["metadata"]["annotations"],
        json!({"example.com/owner": "platform"})
    );
    let labels = &deploy["metadata"]["labels"];
    assert_eq!(labels["team"], "identity");
    assert_eq!(
        labels["app.kubernetes.io/name"], "pod-identity-webhook",
        "the chart's own labels win"
    );
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
    // The pods are untouched by Deployment-level metadata.
    let pod_meta = &deploy["spec"]["template"]["metadata"];
    assert!(pod_meta["labels"]["team"].is_null());
    assert!(pod_meta["annotations"].is_null());
}

#[test]
fn services_take_extra_labels_under_the_charts_own() {
    let helm = require_helm!("services_take_extra_labels_under_the_charts_own");
    let docs = render(
        helm,
        &[
            "--set-json",
            r#"service.labels={"team":"identity","app.kubernetes.io/component":"other"}"#,
            "--set-json",
            r#"service.annotations={"example.com/a":"1"}"#,
            "--set-json",
            r#"metrics.service.labels={"scrape":"yes"}"#,
        ],
    );
    let service = |name: &str| {
        all_of(&docs, "Service")
            .into_iter()
            .find(|s| name_of(s) == name)
            .unwrap_or_else(|| panic!("Service {name}"))
            .clone()
    };
    let webhook_svc = service("pod-identity-webhook");
    assert_eq!(webhook_svc["metadata"]["labels"]["team"], "identity");
    assert_eq!(
        webhook_svc["metadata"]["labels"]["app.kubernetes.io/component"],
        "webhook"
    );
    assert_eq!(webhook_svc["metadata"]["annotations"]["example.com/a"], "1");
    let metrics_svc = service("pod-identity-webhook-metrics");
    assert_eq!(metrics_svc["metadata"]["labels"]["scrape"], "yes");
    assert_eq!(
        metrics_svc["metadata"]["labels"]["app.kubernetes.io/component"],
        "metrics"
    );
    // The ServiceMonitor selects the metrics Service by the component label: still there.
    assert!(webhook_svc["metadata"]["labels"]["scrape"].is_null());
}

#[test]
fn probes_are_overridable_field_by_field_and_can_be_dropped() {
    let helm = require_helm!("probes_are_overridable_field_by_field_and_can_be_dropped");
    let c = container(default_docs(helm));
    assert_eq!(
        c["startupProbe"],
        json!({"httpGet": {"path": "/healthz", "port": "metrics", "scheme": "HTTP"},
               "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 30})
    );
    assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    let docs = render(
        helm,
        &[
            "--set",
            "livenessProbe.periodSeconds=20",
            "--set",
            "readinessProbe.initialDelaySeconds=3",
            "--set",
            "startupProbe=null",
        ],
    );
    let c = container(&docs);
    assert_eq!(c["livenessProbe"]["periodSeconds"], 20);
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"], "/healthz",
        "the rest of the default stays"
    );
    assert_eq!(c["readinessProbe"]["initialDelaySeconds"], 3);
    assert!(c["startupProbe"].is_null(), "{c}");
}

#[test]
fn service_account_automount_follows_its_value_while_the_webhook_pods_keep_their_token() {
    let helm = require_helm!(
        "service_account_automount_follows_its_value_while_the_webhook_pods_keep_their_token"
    );
    assert_eq!(
        one(default_docs(helm), "ServiceAccount")["automountServiceAccountToken"],
        true
    );
    let docs = render(
        helm,
        &["--set", "serviceAccount.automountServiceAccountToken=false"],
    );
    assert_eq!(
        one(&docs, "ServiceAccount")["automountServiceAccountToken"],
        false
    );
    assert_eq!(
        one(&docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
}

#[test]
fn namespace_override_moves_every_namespaced_object_and_every_reference_to_it() {
    let helm =
        require_helm!("namespace_override_moves_every_namespaced_object_and_every_reference_to_it");
    const OVERRIDE: &str = "identity-system";
    let docs = render(
        helm,
        &[
            "--set",
            &format!("namespaceOverride={OVERRIDE}"),
            "--set",
            "roleMapping.enabled=true",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
        ],
    );
    let mut namespaced = 0;
    for doc in docs
        .iter()
        .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"].is_null())
    {
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            namespaced += 1;
            assert_eq!(ns, OVERRIDE, "{} {}", kind_of(doc), name_of(doc));
        }
    }
    assert!(namespaced >= 8, "{namespaced} namespaced objects");
    assert_eq!(flag(&args(&docs), "namespace").as_deref(), Some(OVERRIDE));
    let w = webhook(&docs);
    assert_eq!(w["clientConfig"]["service"]["namespace"], OVERRIDE);
    let own_ns = w["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "kubernetes.io/metadata.name")
        .expect("own-namespace exclusion");
    assert_eq!(own_ns["values"], json!([OVERRIDE]));
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        assert_eq!(one(&docs, kind)["subjects"][0]["namespace"], OVERRIDE);
    }
    assert_eq!(
        one(&docs, "ServiceMonitor")["spec"]["namespaceSelector"]["matchNames"],
        json!([OVERRIDE])
    );

    let docs = render(
        helm,
        &[
            "--set",
            &format!("namespaceOverride={OVERRIDE}"),
            "--set",
            "certificates.mode=certManager",
        ],
    );
    let cert = one(&docs, "Certificate");
    assert!(
        strs(&cert["spec"]["dnsNames"]).contains(&"pod-identity-webhook.identity-system.svc"),
        "{cert}"
    );
    assert_eq!(
        one(&docs, "MutatingWebhookConfiguration")["metadata"]["annotations"]
            ["cert-manager.io/inject-ca-from"],
        format!("{OVERRIDE}/pod-identity-webhook-serving")
    );
}

#[test]
fn node_selector_affinity_and_tolerations_are_rendered_with_tpl() {
    let helm = require_helm!("node_selector_affinity_and_tolerations_are_rendered_with_tpl");
    let docs = render(
        helm,
        &[
            "--set-json",
            r#"nodeSelector={"pool":"{{ .Release.Name }}-nodes"}"#,
            "--set-json",
            r#"tolerations=[{"key":"dedicated","operator":"Equal","value":"{{ .Release.Namespace }}","effect":"NoSchedule"}]"#,
            "--set-json",
            r#"affinity={"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app.kubernetes.io/instance":"{{ .Release.Name }}"}}}]}}"#,
        ],
    );
    let spec = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        spec["nodeSelector"],
        json!({"kubernetes.io/os": "linux", "pool": "pod-identity-webhook-nodes"}),
        "merged with the default"
    );
    assert_eq!(spec["tolerations"][0]["value"], NAMESPACE);
    assert_eq!(
        spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        RELEASE
    );
}

#[test]
fn pod_disruption_budget_max_unavailable_replaces_min_available() {
    let helm = require_helm!("pod_disruption_budget_max_unavailable_replaces_min_available");
    for (set, expected) in [
        ("podDisruptionBudget.maxUnavailable=1", json!(1)),
        ("podDisruptionBudget.maxUnavailable=50%", json!("50%")),
        // Zero is a value (no voluntary disruption), not "unset".
        ("podDisruptionBudget.maxUnavailable=0", json!(0)),
    ] {
        let docs = render(helm, &["--set", set]);
        let spec = &one(&docs, "PodDisruptionBudget")["spec"];
        assert_eq!(spec["maxUnavailable"], expected, "{set}");
        assert!(spec["minAvailable"].is_null(), "{set}: {spec}");
    }
    let spec = &one(default_docs(helm), "PodDisruptionBudget")["spec"];
    assert!(spec["maxUnavailable"].is_null());
    assert_eq!(spec["minAvailable"], 1);
}

const FAKE_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
const FAKE_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n";

#[test]
fn secret_mode_can_create_the_tls_secret_from_a_given_certificate_and_key() {
    use base64::Engine as _;
    let helm =
        require_helm!("secret_mode_can_create_the_tls_secret_from_a_given_certificate_and_key");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let create = [
        "--set",
        "certificates.mode=secret",
        "--set",
        "certificates.secret.create=true",
        "--set",
        &format!("certificates.secret.certificate={FAKE_CERT}"),
        "--set",
        &format!("certificates.secret.key={FAKE_KEY}"),
    ];
    let docs = render(helm, &create);
    let secret = one(&docs, "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(name_of(secret), "pod-identity-webhook-tls");
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    assert_eq!(secret["data"]["tls.crt"], b64(FAKE_CERT));
    assert_eq!(secret["data"]["tls.key"], b64(FAKE_KEY));
    let volumes = &one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "pod-identity-webhook-tls"),
        "{volumes}"
    );
    // No CA given: the certificate is its own trust anchor.
    assert_eq!(
        webhook(&docs)["clientConfig"]["caBundle"],
        b64(FAKE_CERT.trim_end())
    );
    // A CA given wins.
    let ca = "-----BEGIN CERTIFICATE-----\nMIICA\n-----END CERTIFICATE-----";
    let mut with_ca = create.to_vec();
    let ca_arg = format!("certificates.secret.caBundle={ca}");
    with_ca.extend(["--set", ca_arg.as_str()]);
    let docs = render(helm, &with_ca);
    assert_eq!(webhook(&docs)["clientConfig"]["caBundle"], b64(ca));

    // Not rendered unless asked for.
    let values = chart_dir().join("ci").join("existing-secret-values.yaml");
    assert!(all_of(&render(helm, &["-f", values.to_str().unwrap()]), "Secret").is_empty());

    // Missing or contradictory input is named.
    let err = try_render(helm, &create[..6]).expect_err("no key");
    assert!(
        err.contains("certificates.secret.key must be a PEM private key"),
        "{err}"
    );
    let mut both = create.to_vec();
    both.extend(["--set", "certificates.secret.existingSecret=mine"]);
    let err = try_render(helm, &both).expect_err("create and existingSecret");
    assert!(err.contains("are exclusive"), "{err}");
}

/// NOTES.txt as `helm install` prints it: `helm template` skips NOTES.txt, so a copy of the
/// chart renders the same text from an ordinary template.
fn render_notes(helm: &Path, extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let chart = tmp.path().join("pod-identity-webhook");
    copy_dir(&chart_dir(), &chart);
    let templates = chart.join("templates");
    let notes = std::fs::read_to_string(templates.join("NOTES.txt")).unwrap();
    std::fs::write(
        templates.join("_notes_under_test.tpl"),
        format!("{{{{- define \"notes.under.test\" -}}}}\n{notes}\n{{{{- end }}}}\n"),
    )
    .unwrap();
    std::fs::write(
        templates.join("notes-under-test.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include \"notes.under.test\" . | toJson }}\n",
    )
    .unwrap();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
        "--show-only",
        "templates/notes-under-test.yaml",
    ];
    args.extend_from_slice(extra);
    let out = run_helm(helm, &args);
    assert!(out.ok, "{}", out.stderr);
    parse_docs(&out.stdout)[0]["data"]["notes"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn notes_make_the_image_step_impossible_to_miss() {
    let helm = require_helm!("notes_make_the_image_step_impossible_to_miss");
    let notes = render_notes(helm, &[]);
    for needed in [
        "IMAGE: the webhook pods run pod-identity-webhook:0.1.0",
        "NO IMAGE IS PUBLISHED",
        "admitted WITHOUT AWS credentials",
        "make image",
        "kind load image-archive target/image/pod-identity-webhook.tar",
        "--set image.repository=<registry>/pod-identity-webhook",
        "ImagePullBackOff",
        "rollout status deployment/pod-identity-webhook",
    ] {
        assert!(notes.contains(needed), "NOTES lack {needed:?}:\n{notes}");
    }
    // The image block comes before the usage steps.
    assert!(notes.find("IMAGE:").unwrap() < notes.find("Certificates:").unwrap());
    assert!(notes.find("IMAGE:").unwrap() < notes.find("1. Give a ServiceAccount").unwrap());

    let notes = render_notes(
        helm,
        &[
            "--set",
            "image.repository=registry.example/team/pod-identity-webhook",
        ],
    );
    assert!(
        notes.contains(
            "IMAGE: the webhook pods run registry.example/team/pod-identity-webhook:0.1.0"
        ),
        "{notes}"
    );
    assert!(!notes.contains("NO IMAGE IS PUBLISHED"), "{notes}");

    let values = chart_dir().join("ci").join("url-mode-values.yaml");
    let notes = render_notes(helm, &["-f", values.to_str().unwrap()]);
    assert!(!notes.contains("IMAGE:"), "no pods in URL mode:\n{notes}");
}

#[test]
fn helm_test_failure_points_at_a_missing_image() {
    let helm = require_helm!("helm_test_failure_points_at_a_missing_image");
    let pod = default_docs(helm)
        .iter()
        .find(|d| kind_of(d) == "Pod")
        .expect("test Pod");
    let script = pod["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(script.contains("ImagePullBackOff"), "{script}");
    assert!(script.contains("pod-identity-webhook:0.1.0"), "{script}");
    assert!(
        script.contains("kind load image-archive target/image/pod-identity-webhook.tar"),
        "{script}"
    );
}
