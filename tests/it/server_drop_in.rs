//! What a deployment of the reference webhook relies on, checked against this server: both IP
//! families on the default bind, every flag of the reference's `--help`, its metrics by name,
//! type and labels, and conflict warnings reaching the API server's client.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::server::*;
use pod_identity_webhook::cli;
use pod_identity_webhook::ops::metrics::REFERENCE_LATENCY_BUCKETS;
use pod_identity_webhook::server::tls::TlsSettings;
use pod_identity_webhook::server::{Limits, Server, ShutdownTiming};
use prometheus::proto::MetricType;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_pod-identity-webhook");

/// Plain HTTP/1.1 GET; the status line and body.
async fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn default_bind_serves_ipv6_and_ipv4_on_both_ports() {
    let ca = TestCa::new();
    let components = components(service_accounts());
    let store = new_store(&components);
    let (cert, key) = ca.leaf("first");
    store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let tls =
        pod_identity_webhook::server::tls::server_config(&TlsSettings::default(), store).unwrap();
    let server = Server::listen(None, 0, None, 0).await.unwrap();
    assert_eq!(
        server.webhook_addr().ip(),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "one dual-stack socket"
    );
    let (webhook_port, admin_port) = (server.webhook_addr().port(), server.admin_addr().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let timing = ShutdownTiming {
        delay: Duration::ZERO,
        timeout: Duration::from_secs(5),
    };
    let task = tokio::spawn(server.run(
        Arc::new(tls),
        components,
        Limits::default(),
        timing,
        async {
            let _ = stopped.await;
        },
    ));

    for ip in [
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    ] {
        let mut client = Client::connect(SocketAddr::new(ip, webhook_port), &ca, Protocol::Http2)
            .await
            .unwrap_or_else(|err| panic!("TLS over {ip}: {err}"));
        let (status, body) = client.mutate(pod_review("api").to_string()).await.unwrap();
        assert_eq!(status, 200, "over {ip}");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["patchType"], "JSONPatch", "over {ip}");
        let health = http_get(SocketAddr::new(ip, admin_port), "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "over {ip}: {health}");
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn explicit_bind_address_is_kept() {
    let localhost = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let server = Server::listen(localhost, 0, localhost, 0).await.unwrap();
    assert_eq!(server.webhook_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(server.admin_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let v6 = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let server = Server::listen(v6, 0, v6, 0).await.unwrap();
    let port = server.admin_addr().port();
    assert!(
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_err(),
        "an explicit ::1 does not also listen on IPv4"
    );
}

/// The reference's `--help` (its own flags and klog's), each with a value of its type.
const REFERENCE_FLAGS: &[(&str, Option<&str>)] = &[
    ("add_dir_header", None),
    ("alsologtostderr", None),
    ("alsologtostderrthreshold", Some("ERROR")),
    ("annotation-prefix", Some("eks.amazonaws.com")),
    ("aws-default-region", Some("eu-west-1")),
    ("compose-role-arn", Some("false")),
    (
        "container-credentials-audience",
        Some("pods.eks.amazonaws.com"),
    ),
    (
        "container-credentials-full-uri",
        Some("http://169.254.170.23/v1/credentials"),
    ),
    (
        "container-credentials-token-mount-path",
        Some("/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"),
    ),
    (
        "container-credentials-token-path",
        Some("eks-pod-identity-token"),
    ),
    (
        "container-credentials-token-volume-name",
        Some("eks-pod-identity-token"),
    ),
    ("enable-debugging-handlers", None),
    ("in-cluster", Some("false")),
    ("kube-api", Some("https://127.0.0.1:6443")),
    ("kubeconfig", Some("/nonexistent/kubeconfig")),
    ("legacy_stderr_threshold_behavior", Some("false")),
    ("log_backtrace_at", Some("main.go:42")),
    ("log_dir", Some("/tmp/logs")),
    ("log_file", Some("/tmp/logs/webhook.log")),
    ("log_file_max_size", Some("1800")),
    ("logtostderr", None),
    ("metrics-port", Some("9999")),
    ("namespace", Some("default")),
    ("one_output", None),
    ("port", Some("443")),
    ("service-account-lookup-grace-period", Some("100ms")),
    ("service-name", Some("pod-identity-webhook")),
    ("skip_headers", None),
    ("skip_log_headers", None),
    ("stderrthreshold", Some("2")),
    ("sts-regional-endpoint", Some("true")),
    ("tls-cert", Some("/etc/webhook/certs/tls.crt")),
    ("tls-key", Some("/etc/webhook/certs/tls.key")),
    ("tls-secret", Some("pod-identity-webhook")),
    ("token-audience", Some("sts.amazonaws.com")),
    ("token-expiration", Some("86400")),
    (
        "token-mount-path",
        Some("/var/run/secrets/eks.amazonaws.com/serviceaccount"),
    ),
    ("v", Some("4")),
    ("vmodule", Some("handler=4,cache*=2")),
    (
        "watch-container-credentials-config",
        Some("/etc/webhook/config/identities.json"),
    ),
    ("watch-config-map", None),
];

/// Is `name` a Go-style boolean (takes `=value` only)?
fn is_boolean(value: Option<&str>) -> bool {
    matches!(value, None | Some("true") | Some("false"))
}

/// Every flag in each spelling Go's flag packages accept: one or two dashes, `=value` or a
/// separate value (booleans: bare or `=value`).
fn spellings(name: &str, value: Option<&str>) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for dashes in ["-", "--"] {
        match value {
            Some(value) if is_boolean(Some(value)) => {
                all.push(vec![format!("{dashes}{name}={value}")]);
                all.push(vec![format!("{dashes}{name}")]);
            }
            None => all.push(vec![format!("{dashes}{name}")]),
            Some(value) => {
                all.push(vec![format!("{dashes}{name}={value}")]);
                all.push(vec![format!("{dashes}{name}"), value.to_string()]);
            }
        }
    }
    all
}

#[test]
fn every_flag_of_the_reference_help_is_accepted_in_every_go_spelling() {
    for (name, value) in REFERENCE_FLAGS {
        for spelling in spellings(name, *value) {
            let args = std::iter::once("pod-identity-webhook".to_string()).chain(spelling.clone());
            let parsed = cli::try_parse(args);
            assert!(
                parsed.is_ok(),
                "{spelling:?} refused: {}",
                parsed.err().map(|e| cli::one_line(&e)).unwrap_or_default()
            );
        }
    }
    // All at once, as a deployment passes them.
    let args: Vec<String> = std::iter::once("pod-identity-webhook".to_string())
        .chain(
            REFERENCE_FLAGS
                .iter()
                .flat_map(|(name, value)| spellings(name, *value).swap_remove(1)),
        )
        .collect();
    let cli = cli::try_parse(&args).unwrap_or_else(|e| panic!("{}", cli::one_line(&e)));
    let cli::Command::Serve(serve) = cli.into_command() else {
        panic!("no subcommand means serve");
    };
    assert_eq!(serve.verbosity, 4);
    assert_eq!(serve.namespace, "default");
    assert!(serve.mutation.sts_regional_endpoint);
    assert_eq!(
        serve.without_effect(),
        [
            "--alsologtostderr",
            "--alsologtostderrthreshold",
            "--log_dir",
            "--log_file",
            "--log_file_max_size",
            "--skip_headers",
            "--skip_log_headers",
            "--stderrthreshold",
            "--vmodule",
            "--log_backtrace_at",
            "--add_dir_header",
            "--one_output",
            "--legacy_stderr_threshold_behavior",
        ]
    );
}

#[test]
fn go_spelling_keeps_values_and_short_flags_intact() {
    let parse = |args: &[&str]| {
        cli::try_parse(std::iter::once("pod-identity-webhook").chain(args.iter().copied()))
    };
    // A value that looks like a flag stays the value of the flag before it.
    let cli = parse(&["-log_dir", "-v", "-v", "3"]).unwrap();
    assert_eq!(cli.serve.klog.log_dir.as_deref(), Some("-v"));
    assert_eq!(cli.serve.verbosity, 3);
    let cli = parse(&["-v=5"]).unwrap();
    assert_eq!(cli.serve.verbosity, 5);
    // Booleans never take the next argument, as in Go.
    assert!(parse(&["-logtostderr", "false"]).is_err());
    // Bad klog values are refused, naming the flag.
    for args in [
        &["-stderrthreshold=LOUD"][..],
        &["--vmodule", "oops"],
        &["-log_backtrace_at=main.go"],
    ] {
        let err = parse(args).unwrap_err();
        let line = cli::one_line(&err);
        let flag = args[0].trim_start_matches('-').split('=').next().unwrap();
        assert!(line.contains(&format!("--{flag}")), "{line}");
    }
    // Unknown flags still fail, in either spelling.
    assert!(parse(&["-no-such-flag"]).is_err());
    assert!(parse(&["--no_such_flag"]).is_err());
}

#[test]
fn binary_starts_with_the_reference_flags_and_names_those_without_effect() {
    let output = Command::new(BIN)
        .args([
            "--in-cluster=false",
            "--namespace=default",
            "--service-name=pod-identity-webhook",
            "--annotation-prefix=eks.amazonaws.com",
            "--token-audience=sts.amazonaws.com",
            "--logtostderr",
            "-alsologtostderr",
            "-v=2",
            "--stderrthreshold",
            "WARNING",
            "--tls-min-version=1.0",
            "--tls-cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "--kubeconfig=/nonexistent/kubeconfig",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // It gets as far as reading the kubeconfig: every flag was accepted.
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--alsologtostderr --stderrthreshold") && stderr.contains("no effect here"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TLS_RSA_WITH_AES_128_CBC_SHA") && stderr.contains("dropped"),
        "{stderr}"
    );
    assert!(stderr.contains("TLS 1.2 and above are served"), "{stderr}");
}

#[test]
fn cipher_suites_with_nothing_usable_stop_startup_with_one_clear_line() {
    let output = Command::new(BIN)
        .args([
            "--tls-cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA",
            "--kubeconfig=/nonexistent/kubeconfig",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "error: no usable cipher suite in --tls-cipher-suites: TLS_RSA_WITH_AES_128_CBC_SHA"
        ),
        "{stderr}"
    );
}

/// Name, type and label names of every series; buckets for histograms.
fn exposed(components: &pod_identity_webhook::server::Components) -> BTreeMap<String, Value> {
    components
        .metrics
        .registry
        .gather()
        .iter()
        .map(|family| {
            let kind = match family.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
            };
            let metric = &family.get_metric()[0];
            let labels: Vec<&str> = metric.get_label().iter().map(|l| l.name()).collect();
            let mut description = json!({"type": kind, "labels": labels});
            if kind == "histogram" {
                let bounds: Vec<f64> = metric
                    .get_histogram()
                    .get_bucket()
                    .iter()
                    .map(|b| b.upper_bound())
                    .collect();
                description["buckets"] = json!(bounds);
            }
            if kind == "summary" {
                let quantiles: Vec<f64> = metric
                    .get_summary()
                    .get_quantile()
                    .iter()
                    .map(|q| q.quantile())
                    .collect();
                description["quantiles"] = json!(quantiles);
            }
            (family.name().to_string(), description)
        })
        .collect()
}

#[tokio::test]
async fn reference_metrics_are_exposed_with_their_types_and_labels() {
    let ca = TestCa::new();
    let components = components(service_accounts());
    let server = TestServer::start(components.clone(), Limits::default(), &ca).await;
    let mut client = Client::connect(server.webhook, &ca, Protocol::Http2)
        .await
        .unwrap();
    let (status, _) = client.mutate(pod_review("api").to_string()).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = client
        .mutate(pod_review("missing").to_string())
        .await
        .unwrap();
    assert_eq!(status, 200);
    components.metrics.webhook_used.set(1);

    let exposed = exposed(&components);
    let reference_buckets: Vec<f64> = (0..7).map(|k| 125_000.0 * f64::from(1 << k)).collect();
    assert_eq!(REFERENCE_LATENCY_BUCKETS.to_vec(), reference_buckets);
    let expected = [
        (
            "pod_identity_webhook_pod_count",
            json!({"type": "counter", "labels": ["method"]}),
        ),
        (
            "pod_identity_webhook_missing_sa_count",
            json!({"type": "counter", "labels": []}),
        ),
        (
            "pod_identity_webhook_used",
            json!({"type": "gauge", "labels": []}),
        ),
        (
            "http_request_count",
            json!({"type": "counter", "labels": ["code", "path", "verb"]}),
        ),
        (
            "http_request_latencies",
            json!({"type": "histogram", "labels": ["path", "verb"], "buckets": reference_buckets}),
        ),
        (
            "http_request_duration_microseconds",
            json!({"type": "summary", "labels": ["path", "verb"], "quantiles": [0.5, 0.9, 0.99]}),
        ),
    ];
    for (name, description) in expected {
        assert_eq!(exposed.get(name), Some(&description), "{name}");
    }
    // Our own sub-millisecond histogram stays beside them.
    assert_eq!(
        exposed["pod_identity_webhook_request_duration_seconds"]["buckets"][0],
        json!(0.000025)
    );

    let text = components.metrics.encode();
    for line in [
        "pod_identity_webhook_used 1",
        "http_request_latencies_count{path=\"/mutate\",verb=\"POST\"} 2",
        "http_request_latencies_bucket{path=\"/mutate\",verb=\"POST\",le=\"125000\"} 2",
        "http_request_duration_microseconds_count{path=\"/mutate\",verb=\"POST\"} 2",
        "http_request_duration_microseconds{path=\"/mutate\",verb=\"POST\",quantile=\"0.99\"}",
        "# TYPE http_request_duration_microseconds summary",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn injection_conflicts_reach_the_client_as_admission_warnings() {
    let ca = TestCa::new();
    let components = components(service_accounts());
    let server = TestServer::start(components.clone(), Limits::default(), &ca).await;
    let mut client = Client::connect(server.webhook, &ca, Protocol::Http1)
        .await
        .unwrap();
    let mut pod = pod("api");
    pod["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "certs", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount/"}
    ]);
    pod["spec"]["volumes"] = json!([{"name": "certs", "emptyDir": {}}]);
    let request = review(V1, "CREATE", ("", "v1", "Pod"), "pods", pod.clone());
    let (status, body) = client.mutate(request.to_string()).await.unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["warnings"],
        json!(["container \"app\" already mounts volume \"certs\" at /var/run/secrets/eks.amazonaws.com/serviceaccount/: not added: AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, the token mount"])
    );
    let patched = apply_patch(response, &pod);
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"],
        pod["spec"]["containers"][0]["volumeMounts"],
        "no second mount at the same path"
    );
    server.stop().await;
}
