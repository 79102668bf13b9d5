//! The webhook against a real kube-apiserver and etcd (hack/control-plane.sh), installed with
//! the chart (helm, URL mode), running as a process with the chart's own ServiceAccount token.
//! Every scenario asserts on the Pod the API server stored: what the webhook added, and that
//! nothing else changed (the pod equals its unmutated twin plus exactly the additions).
//!
//! `cargo test --test it real_cluster::` brings the control plane up on loopback, runs the
//! scenarios in parallel (each in its own namespace) and tears everything down when the test
//! process ends. Tests that disturb the shared webhook or API server take the harness's lock
//! exclusively. Without the tools (`make tools`), every test prints SKIPPED and passes, unless
//! `PIW_REQUIRE_TOOLS=1`.

mod audit;
mod certs;
mod harness;
mod irsa;
mod lag_proxy;
mod pods;
mod sidecar;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::suite_gate;
use harness::{eventually, exclusive, run, run_with_input, shared, Cluster, Webhook};
use pods::{assert_mutation, env_value, is_mutated, pod, volume, Irsa, ROLE_KEY};

const ROLE: &str = "arn:aws:iam::111122223333:role/app";
const OTHER_ROLE: &str = "arn:aws:iam::111122223333:role/other";
const SHORT: Duration = Duration::from_millis(100);

macro_rules! cluster {
    ($test:expr) => {
        match harness::cluster($test) {
            Some(cluster) => cluster,
            None => return,
        }
    };
}

// After `cluster!`, which it uses.
mod conflicts;

/// Creates pods from `manifest` (named by generateName) until one satisfies `check`.
fn eventually_pod(
    cluster: &Cluster,
    namespace: &str,
    manifest: &Value,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> Result<(), String>,
) -> Value {
    let mut manifest = manifest.clone();
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or("pod")
        .to_string();
    manifest["metadata"].as_object_mut().unwrap().remove("name");
    manifest["metadata"]["generateName"] = json!(format!("{name}-"));
    eventually(what, timeout, Duration::from_millis(200), || {
        let (stored, _) = cluster.create_pod(namespace, &manifest);
        check(&stored).map(|()| stored)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn role_of(pod: &Value) -> Option<String> {
    env_value(
        pod,
        pod["spec"]["containers"][0]["name"].as_str()?,
        "AWS_ROLE_ARN",
    )
}

// ------------------------------------------------------------------------------ scenarios

#[test]
fn annotated_service_account_gets_irsa_and_nothing_else_changes() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("annotated_service_account_gets_irsa_and_nothing_else_changes");
    let _lock = shared();
    c.namespace("annotated", &[]);
    c.service_account("annotated", "app", &[(ROLE_KEY, ROLE)]);
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "labels": {"app": "demo"}, "annotations": {"example.com/note": "kept"}},
        "spec": {
            "serviceAccountName": "app",
            "containers": [
                {
                    "name": "app",
                    "image": "amazon/aws-cli:2.17.0",
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                },
                {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "3600"]},
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    });
    let stored = assert_mutation(c, "annotated", &manifest, |expected, _| {
        Irsa::role(ROLE).add_to(expected, &["app", "sidecar"]);
    });
    // The token volume goes first, before the pod's own and the API server's volumes.
    assert_eq!(stored["spec"]["volumes"][0]["name"], "aws-iam-token");
}

#[test]
fn unannotated_service_account_pod_is_untouched() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("unannotated_service_account_pod_is_untouched");
    let _lock = shared();
    c.namespace("unannotated", &[]);
    c.service_account("unannotated", "plain", &[("example.com/other", "x")]);
    assert_mutation(
        c,
        "unannotated",
        &pod("plain", "plain", &["app"]),
        |_, _| {},
    );
    assert_mutation(
        c,
        "unannotated",
        &pod("default-sa", "default", &["app"]),
        |_, _| {},
    );
}

#[test]
fn service_account_created_just_before_its_pod_is_mutated() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("service_account_created_just_before_its_pod_is_mutated");
    let _lock = shared();
    c.namespace("race", &[]);
    // No pause between the two creations, several pairs at once: the pod's admission can run
    // before the webhook's watch has delivered the ServiceAccount; the lookup grace period
    // (a direct GET, or the watch, whichever answers first) covers it.
    std::thread::scope(|scope| {
        for t in 0..4 {
            scope.spawn(move || {
                for i in 0..5 {
                    let name = format!("app-{t}-{i}");
                    let role = format!("{ROLE}-{t}-{i}");
                    c.service_account("race", &name, &[(ROLE_KEY, &role)]);
                    let (stored, _) = c.create_pod("race", &pod(&name, &name, &["app"]));
                    assert_eq!(
                        role_of(&stored).as_deref(),
                        Some(role.as_str()),
                        "pod {name} not mutated"
                    );
                }
            });
        }
    });
    // For the record: how often the direct GET was needed (timing-dependent, not asserted).
    let metrics = harness::http_get(c.primary.metrics_port, "/metrics")
        .map(|m| m.1)
        .unwrap_or_default();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("pod_identity_webhook_lookup_fallbacks_total"))
    {
        eprintln!("race: {line}");
    }
}

/// The race made certain: two webhooks reach the API server through a proxy that delays what
/// it sends by 300 ms, so each watch event arrives well after the pod created right behind its
/// ServiceAccount. With the reference's grace period (0) such pods go without credentials;
/// with ours (1 s, the default) every one is mutated.
#[test]
fn lookup_grace_period_covers_a_watch_that_lags_behind() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("lookup_grace_period_covers_a_watch_that_lags_behind");
    let _lock = shared();
    let upstream: std::net::SocketAddr = c.env["KUBE_APISERVER_URL"]
        .trim_start_matches("https://")
        .parse()
        .expect("API server address");
    let proxy = lag_proxy::start(&c.runtime, upstream, Duration::from_millis(300));
    let kubeconfig = c.artifacts.join("kubeconfig-chart-sa-lagging");
    let text = std::fs::read_to_string(&c.chart_kubeconfig).unwrap();
    std::fs::write(
        &kubeconfig,
        text.replace(
            &c.env["KUBE_APISERVER_URL"],
            &format!("https://127.0.0.1:{proxy}"),
        ),
    )
    .unwrap();

    let mut running = Vec::new();
    for grace in ["1s", "0s"] {
        let name = format!("lagging-grace-{grace}");
        let webhook = Webhook::new(
            &name,
            &c.artifacts,
            vec![
                format!("--tls-cert={}", c.serving_certs.path("tls.crt").display()),
                format!("--tls-key={}", c.serving_certs.path("tls.key").display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--namespace={}", harness::RELEASE_NS),
                format!("--service-account-lookup-grace-period={grace}"),
            ],
        );
        webhook.start().unwrap();
        let selector = (harness::OTHER_WEBHOOK_LABEL, name.as_str());
        c.namespace(&name, &[selector]);
        let registration = c.register_webhook(
            &format!("piw-test-{name}"),
            &format!("https://127.0.0.1:{}/mutate", webhook.port),
            selector,
            "Ignore",
        );
        running.push((name, webhook, registration));
    }
    for (name, webhook, _) in &running {
        webhook.wait_ready(Duration::from_secs(60)).unwrap();
        // In effect: a ServiceAccount the webhook has long seen gets its pod mutated.
        c.service_account(name, "warm", &[(ROLE_KEY, ROLE)]);
        eventually_pod(
            c,
            name,
            &pod("warm", "warm", &["app"]),
            "registration in effect",
            Duration::from_secs(20),
            |p| {
                role_of(p)
                    .map(drop)
                    .ok_or_else(|| "not mutated".to_string())
            },
        );
    }
    for (name, _, _) in &running {
        let mut mutated = 0;
        for i in 0..3 {
            let sa = format!("fresh-{i}");
            c.service_account(name, &sa, &[(ROLE_KEY, ROLE)]);
            let (stored, _) = c.create_pod(name, &pod(&sa, &sa, &["app"]));
            mutated += usize::from(role_of(&stored).is_some());
        }
        if name.ends_with("-1s") {
            assert_eq!(
                mutated, 3,
                "{name}: pods created right after their ServiceAccount went without credentials"
            );
        } else {
            assert_eq!(mutated, 0, "{name}: the watch was not behind: the race did not happen, the test proves nothing");
        }
    }
}

#[test]
fn annotation_change_reaches_the_next_pod() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("annotation_change_reaches_the_next_pod");
    let _lock = shared();
    let ns = "annotation-change";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let manifest = pod("app", "app", &["app"]);
    let (first, _) = c.create_pod(ns, &manifest);
    assert_eq!(role_of(&first).as_deref(), Some(ROLE));

    let sa = format!("/api/v1/namespaces/{ns}/serviceaccounts/app");
    c.merge_patch(
        &sa,
        &json!({"metadata": {"annotations": {ROLE_KEY: OTHER_ROLE}}}),
    )
    .ok("change the role");
    eventually_pod(
        c,
        ns,
        &manifest,
        "the new role is injected",
        Duration::from_secs(15),
        |p| match role_of(p).as_deref() {
            Some(OTHER_ROLE) => Ok(()),
            other => Err(format!("AWS_ROLE_ARN {other:?}")),
        },
    );

    c.merge_patch(&sa, &json!({"metadata": {"annotations": {ROLE_KEY: null}}}))
        .ok("remove the role");
    eventually_pod(
        c,
        ns,
        &manifest,
        "no role once removed",
        Duration::from_secs(15),
        |p| {
            if is_mutated(p) {
                Err("still mutated".into())
            } else {
                Ok(())
            }
        },
    );
}

#[test]
fn audience_regional_sts_and_expiration_from_service_account_and_pod() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("audience_regional_sts_and_expiration_from_service_account_and_pod");
    let _lock = shared();
    let ns = "settings";
    c.namespace(ns, &[]);
    c.service_account(
        ns,
        "custom",
        &[
            (ROLE_KEY, ROLE),
            ("eks.amazonaws.com/audience", "custom.example.com"),
            ("eks.amazonaws.com/sts-regional-endpoints", "true"),
            ("eks.amazonaws.com/token-expiration", "3600"),
        ],
    );
    let irsa = Irsa {
        audience: "custom.example.com".into(),
        expiration: 3600,
        regional_sts: true,
        ..Irsa::role(ROLE)
    };
    assert_mutation(c, ns, &pod("from-sa", "custom", &["app"]), |expected, _| {
        irsa.add_to(expected, &["app"]);
    });

    // The pod's own expiration wins; below 600 it is raised to 600.
    for (name, value, seconds) in [
        ("pod-expiration", "7200", 7200),
        ("pod-expiration-low", "100", 600),
    ] {
        let mut manifest = pod(name, "custom", &["app"]);
        manifest["metadata"]["annotations"] = json!({"eks.amazonaws.com/token-expiration": value});
        assert_mutation(c, ns, &manifest, |expected, _| {
            Irsa {
                expiration: seconds,
                ..irsa.clone()
            }
            .add_to(expected, &["app"]);
        });
    }

    // An unparseable value is reported back to the client as an admission warning.
    let mut manifest = pod("pod-expiration-invalid", "custom", &["app"]);
    manifest["metadata"]["annotations"] = json!({"eks.amazonaws.com/token-expiration": "1h"});
    let (stored, warnings) = c.create_pod(ns, &manifest);
    assert_eq!(
        volume(&stored, "aws-iam-token").unwrap()["projected"]["sources"][0]["serviceAccountToken"]
            ["expirationSeconds"],
        3600
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("token-expiration") && w.contains("1h")),
        "expected an admission warning about the token-expiration value, got {warnings:?}"
    );
}

#[test]
fn skip_label_keeps_the_webhook_from_being_called() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("skip_label_keeps_the_webhook_from_being_called");
    let _lock = shared();
    c.namespace("skip-label", &[]);
    c.service_account("skip-label", "app", &[(ROLE_KEY, ROLE)]);
    // The engine does not look at this label: had the webhook been called, it would have
    // mutated the pod. Unmutated means the API server's objectSelector left it out.
    let mut manifest = pod("labelled", "app", &["app"]);
    manifest["metadata"]["labels"] = json!({harness::SKIP_LABEL: "true"});
    assert_mutation(c, "skip-label", &manifest, |_, _| {});

    // The same label on a namespace opts the whole namespace out.
    c.namespace("skip-namespace", &[(harness::SKIP_LABEL, "true")]);
    c.service_account("skip-namespace", "app", &[(ROLE_KEY, ROLE)]);
    let (stored, _) = c.create_pod("skip-namespace", &pod("app", "app", &["app"]));
    assert!(
        !is_mutated(&stored),
        "pod in an opted-out namespace was mutated"
    );
}

#[test]
fn skip_containers_annotation_leaves_named_containers_alone() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("skip_containers_annotation_leaves_named_containers_alone");
    let _lock = shared();
    let ns = "skip-containers";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let mut manifest = pod("app", "app", &["app", "sidecar"]);
    manifest["metadata"]["annotations"] =
        json!({"eks.amazonaws.com/skip-containers": "sidecar, init"});
    manifest["spec"]["initContainers"] = json!([
        {"name": "init", "image": "busybox:1.36", "command": ["true"]},
        {"name": "other-init", "image": "busybox:1.36", "command": ["true"]},
    ]);
    assert_mutation(c, ns, &manifest, |expected, _| {
        Irsa::role(ROLE).add_to(expected, &["app", "other-init"]);
    });
}

#[test]
fn init_containers_and_native_sidecars_get_credentials() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("init_containers_and_native_sidecars_get_credentials");
    let _lock = shared();
    let ns = "init-containers";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let mut manifest = pod("app", "app", &["app"]);
    manifest["spec"]["initContainers"] = json!([
        {"name": "migrate", "image": "busybox:1.36", "command": ["true"]},
        {"name": "proxy", "image": "busybox:1.36", "command": ["sleep", "3600"], "restartPolicy": "Always"},
    ]);
    let stored = assert_mutation(c, ns, &manifest, |expected, _| {
        Irsa::role(ROLE).add_to(expected, &["migrate", "proxy", "app"]);
    });
    assert_eq!(
        stored["spec"]["initContainers"][1]["restartPolicy"],
        "Always"
    );
}

#[test]
fn windows_pod_gets_a_windows_token_path() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("windows_pod_gets_a_windows_token_path");
    let _lock = shared();
    c.namespace("windows", &[]);
    c.service_account("windows", "app", &[(ROLE_KEY, ROLE)]);
    let mut manifest = pod("app", "app", &["app"]);
    manifest["spec"]["os"] = json!({"name": "windows"});
    manifest["spec"]["containers"][0]["image"] =
        json!("mcr.microsoft.com/windows/nanoserver:ltsc2022");
    assert_mutation(c, "windows", &manifest, |expected, _| {
        Irsa {
            token_file: pods::WINDOWS_TOKEN_FILE.into(),
            ..Irsa::role(ROLE)
        }
        .add_to(expected, &["app"]);
    });
}

#[test]
fn recent_pod_fields_are_kept_intact() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("recent_pod_fields_are_kept_intact");
    let _lock = shared();
    let ns = "recent-fields";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    // Fields that kube-apiserver 1.30 keeps (GA or beta-on there), several newer than the
    // reference webhook's compiled types.
    let manifest = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "recent", "labels": {"app": "recent"}},
        "spec": {
            "serviceAccountName": "app",
            "schedulingGates": [{"name": "example.com/gate"}],
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
            "topologySpreadConstraints": [{
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": "recent"}},
                "matchLabelKeys": ["pod-template-hash"],
                "nodeAffinityPolicy": "Honor",
            }],
            "initContainers": [{
                "name": "proxy",
                "image": "busybox:1.36",
                "restartPolicy": "Always",
                "startupProbe": {"exec": {"command": ["true"]}},
            }],
            "containers": [{
                "name": "app",
                "image": "busybox:1.36",
                "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
                "env": [{"name": "FROM_FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            }],
        },
    });
    let stored = assert_mutation(c, ns, &manifest, |expected, _| {
        Irsa::role(ROLE).add_to(expected, &["proxy", "app"]);
    });
    // The fields really are stored (so the comparison above is not vacuous).
    let spec = &stored["spec"];
    assert_eq!(spec["schedulingGates"], manifest["spec"]["schedulingGates"]);
    assert_eq!(
        spec["securityContext"]["appArmorProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        spec["topologySpreadConstraints"][0]["matchLabelKeys"][0],
        "pod-template-hash"
    );
    assert_eq!(
        spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"],
        5
    );
    assert_eq!(spec["initContainers"][0]["restartPolicy"], "Always");
}

#[test]
fn container_credentials_file_and_its_live_rewrite() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("container_credentials_file_and_its_live_rewrite");
    let _lock = shared();
    let ns = harness::CC_NAMESPACE;
    // Listed in the chart's ConfigMap (projected into the file at start). It also has a role
    // annotation: container credentials win.
    c.service_account(ns, harness::CC_SERVICE_ACCOUNT, &[(ROLE_KEY, ROLE)]);
    let manifest = pod("cc", harness::CC_SERVICE_ACCOUNT, &["app", "sidecar"]);
    assert_mutation(c, ns, &manifest, |expected, actual| {
        // A one-day lifetime is spread over [22 h, 24 h] per pod.
        let seconds = volume(actual, pods::CC_VOLUME)
            .and_then(|v| {
                v["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"].as_i64()
            })
            .expect("container-credentials token volume");
        assert!(
            (79200..=86400).contains(&seconds),
            "expiration {seconds} outside [79200, 86400]"
        );
        add_container_credentials(expected, seconds, &["app", "sidecar"]);
    });

    // A ServiceAccount added to the file by a kubelet-style symlink swap: picked up live.
    c.service_account(ns, "late", &[]);
    let late = pod("late", "late", &["app"]);
    let (before, _) = c.create_pod(ns, &late);
    assert!(!is_mutated(&before), "late is not listed yet");
    let identities = json!({"identities": [
        {"namespace": ns, "serviceAccount": harness::CC_SERVICE_ACCOUNT},
        {"namespace": ns, "serviceAccount": "late"},
    ]});
    c.container_credentials
        .update(&[("config.json", identities.to_string().as_bytes())])
        .unwrap();
    let stored = eventually_pod(
        c,
        ns,
        &late,
        "late gets container credentials",
        Duration::from_secs(15),
        |p| {
            env_value(p, "app", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
                .map(drop)
                .ok_or_else(|| "no AWS_CONTAINER_CREDENTIALS_FULL_URI".to_string())
        },
    );
    assert_eq!(
        stored["metadata"]["labels"]["eks.amazonaws.com/pod-identity"],
        "enabled"
    );
}

fn add_container_credentials(pod: &mut Value, seconds: i64, containers: &[&str]) {
    let volume = json!({
        "name": pods::CC_VOLUME,
        "projected": {
            "defaultMode": 420,
            "sources": [{"serviceAccountToken": {
                "audience": "pods.eks.amazonaws.com",
                "expirationSeconds": seconds,
                "path": "eks-pod-identity-token",
            }}],
        },
    });
    let env = [
        json!({"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"}),
        json!({"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
               "value": format!("{}/eks-pod-identity-token", pods::CC_MOUNT)}),
    ];
    let mount = json!({"mountPath": pods::CC_MOUNT, "name": pods::CC_VOLUME, "readOnly": true});
    pods::add(pod, volume, &env, &mount, containers);
    pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"] = json!("enabled");
}

#[test]
fn config_map_mapping_and_its_live_update() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("config_map_mapping_and_its_live_update");
    let _lock = shared();
    let ns = harness::MAPPED_NAMESPACE;
    c.namespace(ns, &[]);
    // `mapping/mapped` comes from the chart's roleMapping value.
    c.service_account(ns, harness::MAPPED_SA, &[]);
    assert_mutation(
        c,
        ns,
        &pod("mapped", harness::MAPPED_SA, &["app"]),
        |expected, _| {
            Irsa {
                audience: harness::MAPPED_AUDIENCE.into(),
                expiration: 3600,
                regional_sts: true,
                ..Irsa::role(harness::MAPPED_ROLE)
            }
            .add_to(expected, &["app"]);
        },
    );

    // A ServiceAccount name no other test uses, in a namespace of its own, so the wildcard
    // entry below proves `*` matches another namespace and touches no other scenario.
    let other_ns = "mapping-wildcard";
    let name = "mapped-anywhere";
    c.namespace(other_ns, &[]);
    c.service_account(other_ns, name, &[]);
    let late = pod(name, name, &["app"]);
    assert!(
        !is_mutated(&c.create_pod(other_ns, &late).0),
        "{name} is not mapped yet"
    );
    let path = format!(
        "/api/v1/namespaces/{}/configmaps/pod-identity-webhook",
        harness::RELEASE_NS
    );
    let map = c.get(&path);
    let mut mapping: Value = serde_json::from_str(map["data"]["config"].as_str().unwrap()).unwrap();
    mapping[format!("*/{name}")] = json!({"RoleARN": OTHER_ROLE});
    c.merge_patch(&path, &json!({"data": {"config": mapping.to_string()}}))
        .ok("update the mapping");
    let stored = eventually_pod(
        c,
        other_ns,
        &late,
        "the mapping update applies",
        Duration::from_secs(15),
        |p| match role_of(p).as_deref() {
            Some(OTHER_ROLE) => Ok(()),
            other => Err(format!("AWS_ROLE_ARN {other:?}")),
        },
    );
    // No Audience in the entry: the flag's default.
    assert_eq!(
        volume(&stored, "aws-iam-token").unwrap()["projected"]["sources"][0]["serviceAccountToken"]
            ["audience"],
        "sts.amazonaws.com"
    );
}

#[test]
fn sidecar_added_by_a_later_webhook_gets_credentials_on_reinvocation() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("sidecar_added_by_a_later_webhook_gets_credentials_on_reinvocation");
    let _lock = shared();
    let ns = "reinvocation";
    c.namespace(ns, &[("piw-test/sidecar", "true")]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let (cert, key) = c.ca.server_cert(&["127.0.0.1"]);
    let injector = sidecar::start(&c.runtime, &cert, &key);
    // Sorted after the chart's configuration, so the API server calls it second.
    let _registration = c.register_webhook(
        "zz-piw-test-sidecar-injector",
        &format!("https://127.0.0.1:{}/mutate", injector.port),
        ("piw-test/sidecar", "true"),
        "Fail",
    );

    let manifest = pod("app", "app", &["app"]);
    let stored = eventually_pod(
        c,
        ns,
        &manifest,
        "the injector is in effect",
        Duration::from_secs(15),
        |p| {
            if pods::containers(p)
                .iter()
                .any(|c| c["name"] == sidecar::SIDECAR_NAME)
            {
                Ok(())
            } else {
                Err("no injected sidecar yet".into())
            }
        },
    );
    for container in ["app", sidecar::SIDECAR_NAME] {
        assert_eq!(
            env_value(&stored, container, "AWS_ROLE_ARN").as_deref(),
            Some(ROLE),
            "{container}"
        );
        assert_eq!(
            env_value(&stored, container, "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
            Some(pods::IRSA_TOKEN_FILE),
            "{container}"
        );
        let container_json = pods::containers(&stored)
            .into_iter()
            .find(|x| x["name"] == container)
            .unwrap();
        assert!(
            container_json["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "aws-iam-token" && m["mountPath"] == pods::IRSA_MOUNT),
            "{container} has no token mount: {container_json}"
        );
    }
    // One token volume, not one per invocation.
    let volumes = stored["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes
            .iter()
            .filter(|v| v["name"] == "aws-iam-token")
            .count(),
        1
    );
    assert!(injector.calls.load(Ordering::SeqCst) >= 1);
}

/// Runs a closure when dropped (cleanup that must happen even when an assertion fails).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

// --------------------------------------------------------------------- disruptive scenarios

/// Makes sure the primary webhook is serving again after a test that stopped it failed.
fn restore_primary(c: &Cluster) {
    if !c.primary.is_running() {
        let _ = c.primary.stop();
        c.primary.start().unwrap_or_else(|e| panic!("{e}"));
    }
    c.primary
        .wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn stopped_webhook_lets_pods_through_unmutated_then_mutates_again() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("stopped_webhook_lets_pods_through_unmutated_then_mutates_again");
    let _lock = exclusive();
    let _restore = Defer(|| restore_primary(c));
    let ns = "webhook-stopped";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let manifest = pod("app", "app", &["app"]);
    let fail_open = || {
        c.apiserver_metric(
            "apiserver_admission_webhook_fail_open_count",
            &[("name", "pod-identity-webhook.amazonaws.com")],
        )
    };
    let fail_open_before = fail_open();

    let status = c.primary.stop().expect("the primary webhook was running");
    assert!(
        status.success(),
        "SIGTERM should end the webhook cleanly, got {status}"
    );
    // failurePolicy Ignore: the pod is admitted, without credentials.
    let (stored, _) = c.create_pod(ns, &manifest);
    assert!(
        !is_mutated(&stored),
        "pod mutated while the webhook was down"
    );
    // The API server counted the failed call it let through.
    assert!(fail_open() > fail_open_before, "no fail-open call counted");

    c.primary.start().unwrap();
    c.primary.wait_ready(Duration::from_secs(60)).unwrap();
    eventually_pod(
        c,
        ns,
        &manifest,
        "mutated once the webhook is back",
        Duration::from_secs(15),
        |p| {
            role_of(p)
                .map(drop)
                .ok_or_else(|| "not mutated".to_string())
        },
    );
}

#[test]
fn serving_certificate_rotated_on_disk_without_failed_admissions() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("serving_certificate_rotated_on_disk_without_failed_admissions");
    let _lock = exclusive();
    let ns = "cert-rotation";
    c.namespace(ns, &[]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let old = certs::served_cert(c.primary.address(), "127.0.0.1", &c.ca.pem).unwrap();
    let (cert, key) = c.ca.server_cert(&["127.0.0.1", "localhost"]);
    let new = crate::support::tls::first_der(&cert);
    assert_ne!(old, new);
    // Calls to the chart's webhook that failed (and were let through: failurePolicy Ignore).
    let failed_calls = || {
        let by_name = [("name", "pod-identity-webhook.amazonaws.com")];
        c.apiserver_metric("apiserver_admission_webhook_fail_open_count", &by_name)
            + c.apiserver_metric("apiserver_admission_webhook_rejection_count", &by_name)
    };
    let failed_before = failed_calls();

    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    // At least this many pods before the swap and after the new certificate is served.
    let pods_created = |at_least: usize| {
        let seen = count.load(Ordering::SeqCst);
        if seen >= at_least {
            Ok(())
        } else {
            Err(format!("{seen} pods created"))
        }
    };
    let pods = std::thread::scope(|scope| {
        let creator = scope.spawn(|| {
            let mut manifest = pod("app", "app", &["app"]);
            manifest["metadata"] = json!({"generateName": "app-"});
            let mut created = Vec::new();
            while !stop.load(Ordering::SeqCst) || created.len() < 10 {
                created.push(c.create_pod(ns, &manifest).0);
                count.fetch_add(1, Ordering::SeqCst);
            }
            created
        });
        // Every step is bounded, and the creator is stopped and joined before any failure is
        // reported (a panic here would leave it running and the scope waiting forever).
        let outcome = eventually(
            "pods created under the old certificate",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || pods_created(10),
        )
        .and_then(|()| {
            // The kubelet's way: a new timestamped directory, then `..data` swapped to it.
            c.serving_certs
                .update(&[("tls.crt", cert.as_bytes()), ("tls.key", key.as_bytes())])
        })
        .and_then(|()| {
            eventually(
                "the new certificate is served",
                Duration::from_secs(15),
                SHORT,
                || {
                    let now = certs::served_cert(c.primary.address(), "127.0.0.1", &c.ca.pem)?;
                    if now == new {
                        Ok(())
                    } else {
                        Err("still the old certificate".into())
                    }
                },
            )
        })
        .and_then(|()| {
            let served_at = count.load(Ordering::SeqCst);
            eventually(
                "pods created under the new certificate",
                Duration::from_secs(30),
                Duration::from_millis(20),
                || pods_created(served_at + 10),
            )
        });
        stop.store(true, Ordering::SeqCst);
        let pods = creator.join().expect("pod creator");
        outcome.unwrap_or_else(|e| panic!("{e}"));
        pods
    });
    eprintln!("cert rotation: {} pods created around the swap", pods.len());
    let unmutated: Vec<_> = pods
        .iter()
        .filter(|p| !is_mutated(p))
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        unmutated.is_empty(),
        "{} of {} pods created during the rotation were not mutated (failed admissions): {unmutated:?}",
        unmutated.len(),
        pods.len()
    );
    assert_eq!(
        failed_calls(),
        failed_before,
        "the API server saw failed webhook calls"
    );

    // The API server's open connection may still be the one made under the old certificate.
    // A new registration gets a new client, hence a new handshake, which must accept the new
    // certificate: with failurePolicy Fail, a TLS failure would reject the pod.
    let probe = (harness::OTHER_WEBHOOK_LABEL, "rotation-probe");
    c.namespace("rotation-probe", &[probe]);
    c.service_account("rotation-probe", "app", &[(ROLE_KEY, ROLE)]);
    let _registration = c.register_webhook(
        "piw-test-rotation-probe",
        &format!("https://127.0.0.1:{}/mutate", c.primary.port),
        probe,
        "Fail",
    );
    eventually_pod(
        c,
        "rotation-probe",
        &pod("app", "app", &["app"]),
        "a new connection to the rotated certificate admits pods",
        Duration::from_secs(15),
        |p| {
            role_of(p)
                .map(drop)
                .ok_or_else(|| "not mutated yet".to_string())
        },
    );
}

#[test]
fn api_server_restart_watch_recovers_and_sees_new_service_accounts() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("api_server_restart_watch_recovers_and_sees_new_service_accounts");
    let _lock = exclusive();
    let ns = "apiserver-restart";
    c.namespace(ns, &[]);
    run(&mut c.control_plane("restart-apiserver")).unwrap_or_else(|e| panic!("{e}"));
    eventually(
        "the API server answers",
        Duration::from_secs(30),
        SHORT,
        || match c.try_request("GET", "/readyz", "application/json", None) {
            Ok(r) if r.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    c.service_account(ns, "after-restart", &[(ROLE_KEY, OTHER_ROLE)]);
    // In the cache through the watch, not through the fallback GET a pod would trigger.
    eventually(
        "the watch delivers the new ServiceAccount",
        Duration::from_secs(45),
        SHORT,
        || {
            let cache = c.primary_cache();
            let entry = &cache["serviceAccounts"][format!("{ns}/after-restart")];
            if entry["role_arn"] == OTHER_ROLE {
                Ok(())
            } else {
                Err(format!("cache entry: {entry}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", c.primary.log_tail()));
    let (stored, _) = c.create_pod(ns, &pod("app", "after-restart", &["app"]));
    assert_eq!(role_of(&stored).as_deref(), Some(OTHER_ROLE));
    assert_eq!(c.primary.readyz().map(|r| r.0), Some(200));
}

// ---------------------------------------------------------------------------- RBAC

#[test]
fn chart_service_account_is_enough_and_no_more() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("chart_service_account_is_enough_and_no_more");
    let _lock = shared();
    // The primary webhook runs with this identity and is ready (it synced its caches).
    let whoami = run(c
        .kubectl()
        .arg("--kubeconfig")
        .arg(&c.chart_kubeconfig)
        .args(["auth", "whoami", "-o", "json"]))
    .unwrap_or_else(|e| panic!("{e}"));
    let whoami: Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"],
        format!(
            "system:serviceaccount:{}:{}",
            harness::RELEASE_NS,
            harness::FULLNAME
        )
    );
    assert_eq!(c.primary.readyz().map(|r| r.0), Some(200));
    let can = |args: &[&str]| -> bool {
        let out = c
            .kubectl()
            .arg("--kubeconfig")
            .arg(&c.chart_kubeconfig)
            .args(["auth", "can-i"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can(&["watch", "serviceaccounts", "--all-namespaces"]));
    // The mapping's ConfigMap, by name only (the webhook watches it with a name selector).
    assert!(can(&[
        "watch",
        "configmaps/pod-identity-webhook",
        "-n",
        harness::RELEASE_NS
    ]));
    assert!(!can(&[
        "get",
        "configmaps/other",
        "-n",
        harness::RELEASE_NS
    ]));
    // Least privilege in URL mode: no Secrets, no ConfigMaps elsewhere, no webhook configs.
    assert!(!can(&["get", "secrets", "-n", harness::RELEASE_NS]));
    assert!(!can(&["get", "configmaps", "-n", "default"]));
    assert!(!can(&["update", "mutatingwebhookconfigurations"]));
    assert!(!can(&["create", "pods", "-n", "default"]));
}

#[test]
fn narrower_rbac_keeps_the_webhook_unready() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("narrower_rbac_keeps_the_webhook_unready");
    let _lock = shared();
    let ns = harness::RELEASE_NS;
    // get, but no list/watch: the ServiceAccount cache can never sync.
    c.service_account(ns, "narrow", &[]);
    c.post(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "piw-test-narrow"},
                "rules": [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}]}),
    )
    .ok("create the narrow ClusterRole");
    c.post(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "piw-test-narrow"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "piw-test-narrow"},
                "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": ns}]}),
    )
    .ok("bind the narrow ClusterRole");
    let kubeconfig = c.artifacts.join("kubeconfig-narrow");
    c.service_account_kubeconfig(ns, "narrow", &kubeconfig);
    let webhook = Webhook::new(
        "narrow",
        &c.artifacts,
        vec![
            format!("--tls-cert={}", c.serving_certs.path("tls.crt").display()),
            format!("--tls-key={}", c.serving_certs.path("tls.key").display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--namespace={ns}"),
            "--shutdown-delay=0s".into(),
        ],
    );
    webhook.start().unwrap();
    // Serving (healthz answers), but never ready.
    eventually(
        "the narrow webhook answers",
        Duration::from_secs(30),
        SHORT,
        || {
            harness::http_get(webhook.metrics_port, "/healthz")
                .ok_or_else(|| "no answer".to_string())
                .map(drop)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", webhook.log_tail()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let (status, body) = webhook.readyz().expect("readyz answers");
        assert_eq!(
            status, 503,
            "a webhook that cannot list ServiceAccounts became ready: {body}"
        );
        assert!(body.contains("ServiceAccount cache"), "{body}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        webhook.is_running(),
        "the webhook should keep retrying, not exit:\n{}",
        webhook.log_tail()
    );
    let metrics = harness::http_get(webhook.metrics_port, "/metrics")
        .map(|m| m.1)
        .unwrap_or_default();
    let watch_errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("pod_identity_webhook_watch_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        watch_errors > 0.0,
        "forbidden watches should be counted:\n{metrics}"
    );
    webhook.stop();
}

// -------------------------------------------------------------- built-in certificate mode

#[test]
fn builtin_certificate_mode_creates_secret_publishes_ca_and_admits_pods() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("builtin_certificate_mode_creates_secret_publishes_ca_and_admits_pods");
    let _lock = shared();
    let (release_ns, release, fullname) =
        ("piw-builtin", "builtin", "builtin-pod-identity-webhook");
    let selector = (harness::OTHER_WEBHOOK_LABEL, "builtin");
    c.namespace(release_ns, &[]);
    // The chart in its default (built-in certificate) mode, its webhook limited to namespaces
    // labelled for this test. It renders a Service-based clientConfig; with no cluster DNS
    // here, it is switched to a URL the certificate names: the webhook's --service-name is
    // `localhost`, so its certificate covers `localhost` (and localhost.<ns>.svc, ...).
    let values = c.artifacts.join("values-builtin.yaml");
    std::fs::write(
        &values,
        format!(
            "replicaCount: 1\ntests:\n  enabled: false\nwebhook:\n  namespaceSelector:\n    matchLabels:\n      \
             {}: {}\n",
            selector.0, selector.1
        ),
    )
    .unwrap();
    run(c
        .helm()
        .args(["install", release])
        .arg(harness::repo_root().join("charts/pod-identity-webhook"))
        .args(["--namespace", release_ns, "--values"])
        .arg(&values))
    .unwrap_or_else(|e| panic!("{e}"));
    let (port, metrics_port) = crate::support::two_free_ports();
    let config_path = format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{fullname}-mutating"
    );
    c.json_patch(
        &config_path,
        &json!([
            {"op": "remove", "path": "/webhooks/0/clientConfig/service"},
            {"op": "add", "path": "/webhooks/0/clientConfig/url", "value": format!("https://localhost:{port}/mutate")},
        ]),
    )
    .ok("switch the chart's webhook to a URL");

    // The flags the chart's Deployment passes, with the chart's own ServiceAccount.
    let deployment = c.get(&format!(
        "/apis/apps/v1/namespaces/{release_ns}/deployments/{fullname}"
    ));
    let chart_args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    for expected in [
        "--in-cluster=true",
        &format!("--namespace={release_ns}"),
        &format!("--webhook-config-name={fullname}-mutating"),
    ] {
        assert!(
            chart_args.iter().any(|a| a == expected),
            "chart args {chart_args:?} lack {expected}"
        );
    }
    let secret_name = chart_args
        .iter()
        .find_map(|a| a.strip_prefix("--tls-secret="))
        .expect("--tls-secret in the chart's args")
        .to_string();
    let kubeconfig = c.artifacts.join("kubeconfig-builtin");
    c.service_account_kubeconfig(release_ns, fullname, &kubeconfig);
    let mut args: Vec<String> = chart_args
        .iter()
        .filter(|a| {
            !a.starts_with("--port=")
                && !a.starts_with("--metrics-port=")
                && !a.starts_with("--service-name=")
        })
        .cloned()
        .collect();
    args.extend([
        "--service-name=localhost".to_string(),
        format!("--kubeconfig={}", kubeconfig.display()),
        // Tells this webhook's mutations apart from the primary's.
        "--aws-default-region=builtin-test-1".into(),
        "--shutdown-delay=0s".into(),
    ]);
    let first = Webhook::on_ports("builtin-1", &c.artifacts, port, metrics_port, args.clone());
    first.start().unwrap();
    first.wait_ready(Duration::from_secs(60)).unwrap();

    let secret = c.get(&format!(
        "/api/v1/namespaces/{release_ns}/secrets/{secret_name}"
    ));
    let decode = |key: &str| -> String {
        let b64 = secret["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("Secret lacks {key}"));
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let (ca_pem, tls_pem) = (decode("ca.crt"), decode("tls.crt"));
    let _ = decode("tls.key");
    let config = c.get(&config_path);
    let bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .expect("caBundle written");
    let bundle = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .unwrap(),
    )
    .unwrap();
    assert!(
        bundle.contains(ca_pem.trim()),
        "caBundle does not carry the Secret's CA"
    );
    assert_eq!(
        certs::served_cert(first.address(), "localhost", &ca_pem).unwrap(),
        crate::support::tls::first_der(&tls_pem),
        "the webhook serves the Secret's certificate, valid for localhost under the published CA"
    );

    // A second replica adopts the same Secret instead of making its own.
    let second = Webhook::new("builtin-2", &c.artifacts, args);
    second.start().unwrap();
    second.wait_ready(Duration::from_secs(60)).unwrap();
    let again = c.get(&format!(
        "/api/v1/namespaces/{release_ns}/secrets/{secret_name}"
    ));
    assert_eq!(
        again["metadata"]["resourceVersion"],
        secret["metadata"]["resourceVersion"]
    );
    assert_eq!(
        certs::served_cert(second.address(), "localhost", &ca_pem).unwrap(),
        crate::support::tls::first_der(&tls_pem)
    );
    second.stop();

    // A pod admitted through it.
    let ns = "builtin-pods";
    c.namespace(ns, &[selector]);
    c.service_account(ns, "app", &[(ROLE_KEY, ROLE)]);
    let stored = eventually_pod(
        c,
        ns,
        &pod("app", "app", &["app"]),
        "admitted through the built-in-certificate webhook",
        Duration::from_secs(15),
        |p| match env_value(p, "app", "AWS_REGION").as_deref() {
            Some("builtin-test-1") => Ok(()),
            other => Err(format!("AWS_REGION {other:?}")),
        },
    );
    assert_eq!(role_of(&stored).as_deref(), Some(ROLE));
    assert_eq!(
        pods::env_of(&stored, "app")
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        [
            "AWS_DEFAULT_REGION",
            "AWS_REGION",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE"
        ]
    );
    first.stop();
}

// --------------------------------------------------------------- manifests, server-side

const PSA_ENFORCE: (&str, &str) = ("pod-security.kubernetes.io/enforce", "restricted");
const PSA_WARN: (&str, &str) = ("pod-security.kubernetes.io/warn", "restricted");
const PSA_VIOLATION: &str = "would violate PodSecurity";

/// `helm template` of the chart with the variant's values (test hook included), then `kubectl
/// apply --dry-run=server` in a namespace that enforces and warns on the `restricted` Pod
/// Security level: every object passes the real API server's validation and admission, and
/// the Deployment's pod template and the test pod meet the restricted level.
#[test]
fn every_chart_variant_passes_server_side_dry_run() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("every_chart_variant_passes_server_side_dry_run");
    let _lock = shared();
    let ns = "piw-dry-run";
    c.namespace(ns, &[PSA_ENFORCE, PSA_WARN]);
    // The check is live: a pod below the level is refused, a Deployment below it warned about.
    let root = json!({"containers": [{"name": "app", "image": "busybox:1.36",
                                      "securityContext": {"runAsUser": 0}}]});
    let refused = c.request(
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods?dryRun=All"),
        "application/json",
        Some(
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"}, "spec": root}),
        ),
    );
    assert!(
        refused.status == 403 && refused.text.contains("violates PodSecurity"),
        "a root pod was not refused by Pod Security: HTTP {}: {}",
        refused.status,
        refused.text
    );
    let warned = c.request(
        "POST",
        &format!("/apis/apps/v1/namespaces/{ns}/deployments?dryRun=All"),
        "application/json",
        Some(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "root"},
                     "spec": {"selector": {"matchLabels": {"app": "root"}},
                              "template": {"metadata": {"labels": {"app": "root"}}, "spec": root}}})),
    );
    assert!(
        warned.warnings.iter().any(|w| w.contains(PSA_VIOLATION)),
        "no Pod Security warning for a root Deployment: {:?}",
        warned.warnings
    );
    // The test hook's pod names this ServiceAccount, which a dry run does not create, and a
    // pod whose ServiceAccount does not exist is refused.
    c.service_account(ns, "dry-pod-identity-webhook-test", &[]);
    // A variant may put an object elsewhere (full-values.yaml: the dashboard in `monitoring`);
    // every object the chart renders names its namespace, so none is passed to kubectl.
    c.namespace("monitoring", &[]);
    // Minimal CRDs (own schema) for the cert-manager and Prometheus-operator kinds the chart
    // can render.
    let crds = harness::repo_root().join("tests/fixtures/crds/minimal-crds.yaml");
    run(c.kubectl().args(["apply", "-f"]).arg(&crds)).unwrap_or_else(|e| panic!("{e}"));
    run(c
        .kubectl()
        .args(["wait", "--for=condition=Established", "--timeout=30s", "-f"])
        .arg(&crds))
    .unwrap_or_else(|e| panic!("{e}"));

    let chart = harness::repo_root().join("charts/pod-identity-webhook");
    let mut variants: Vec<Option<std::path::PathBuf>> = vec![None];
    let mut files: Vec<_> = std::fs::read_dir(chart.join("ci"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no charts/pod-identity-webhook/ci/*-values.yaml"
    );
    variants.extend(files.into_iter().map(Some));

    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = variants
            .iter()
            .map(|variant| {
                let chart = &chart;
                scope.spawn(move || {
                    let label = variant.as_ref().map_or("defaults".to_string(), |p| {
                        p.file_name().unwrap().to_string_lossy().into_owned()
                    });
                    let mut helm = c.helm();
                    helm.args(["template", "dry"]).arg(chart).args([
                        "--namespace",
                        ns,
                        "--set",
                        &format!("tests.namespace={ns}"),
                    ]);
                    if let Some(values) = variant {
                        helm.arg("--values").arg(values);
                    }
                    let rendered = run(&mut helm).map_err(|e| format!("{label}: {e}"))?;
                    let applied = run_with_input(
                        c.kubectl().args(["apply", "--dry-run=server", "-f", "-"]),
                        &rendered.stdout,
                    )
                    .map_err(|e| format!("{label}: {e}"))?;
                    let out = String::from_utf8_lossy(&applied.stdout).into_owned();
                    let err = String::from_utf8_lossy(&applied.stderr);
                    if out.lines().count() < 3 {
                        return Err(format!("{label}: suspiciously few objects applied:\n{out}"));
                    }
                    if err.contains(PSA_VIOLATION) || out.contains(PSA_VIOLATION) {
                        return Err(format!("{label}: below the restricted level:\n{err}{out}"));
                    }
                    if !out.contains("pod/dry-pod-identity-webhook-test") {
                        return Err(format!("{label}: the test pod was not applied:\n{out}"));
                    }
                    Ok::<_, String>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "server-side dry run failed:\n{}",
        failures.join("\n\n")
    );
}

/// In built-in (and cert-manager) mode the caBundle is written by someone else — the webhook,
/// with a JSON patch of its own — and `helm upgrade` must not wipe it: the chart looks the
/// live value up and renders it back.
#[test]
fn helm_upgrade_keeps_a_ca_bundle_written_by_the_webhook() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("helm_upgrade_keeps_a_ca_bundle_written_by_the_webhook");
    let _lock = shared();
    let (release_ns, release, fullname) =
        ("piw-ca-keep", "ca-keep", "ca-keep-pod-identity-webhook");
    c.namespace(release_ns, &[]);
    // Built-in mode (the default); its webhook selects only namespaces no test labels so.
    let values = c.artifacts.join("values-ca-keep.yaml");
    std::fs::write(
        &values,
        format!(
            "replicaCount: 1\ntests:\n  enabled: false\nwebhook:\n  namespaceSelector:\n    matchLabels:\n      \
             {}: ca-keep\n",
            harness::OTHER_WEBHOOK_LABEL
        ),
    )
    .unwrap();
    let helm = |verb: &str| {
        run(c
            .helm()
            .args([verb, release])
            .arg(harness::repo_root().join("charts/pod-identity-webhook"))
            .args(["--namespace", release_ns, "--values"])
            .arg(&values))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    helm("install");
    let config_path = format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{fullname}-mutating"
    );
    let config = c.get(&config_path);
    let webhook_name = config["webhooks"][0]["name"].as_str().unwrap().to_string();
    assert!(
        config["webhooks"][0]["clientConfig"]
            .get("caBundle")
            .is_none(),
        "a fresh install has no caBundle to keep: {config}"
    );

    // What the webhook does: test the entry's name, add the caBundle, under its own manager.
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&c.ca.pem);
    c.json_patch(
        &format!("{config_path}?fieldManager=pod-identity-webhook"),
        &json!([
            {"op": "test", "path": "/webhooks/0/name", "value": webhook_name},
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca_bundle},
        ]),
    )
    .ok("publish a caBundle as the webhook does");

    helm("upgrade");
    let after = c.get(&config_path);
    assert_eq!(
        after["webhooks"][0]["clientConfig"]["caBundle"], ca_bundle,
        "helm upgrade changed the caBundle the webhook wrote"
    );
    // Kept by the chart's lookup (rendered into the release), not only by the merge.
    let manifest = run(c
        .helm()
        .args(["get", "manifest", release, "--namespace", release_ns]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        String::from_utf8_lossy(&manifest.stdout).contains(&format!("caBundle: {ca_bundle}")),
        "the upgraded release does not render the live caBundle"
    );
}

#[test]
fn deploy_manifests_pass_server_side_dry_run() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("deploy_manifests_pass_server_side_dry_run");
    let _lock = shared();
    // Objects in a namespace that does not exist yet fail even in a dry run, so the
    // namespace deploy/ uses is created for real first.
    c.namespace("pod-identity-webhook", &[]);
    let out = run(c
        .kubectl()
        .args(["apply", "--dry-run=server", "-k"])
        .arg(harness::repo_root().join("deploy")))
    .unwrap_or_else(|e| panic!("{e}"));
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("mutatingwebhookconfiguration"), "{out}");
    assert!(out.contains("deployment.apps"), "{out}");
}

/// The chart's `helm test` hook, created for real (there is no kubelet to run it): its pod is
/// stored with the role and token file the hook's script checks.
#[test]
fn chart_test_hook_pod_gets_what_its_script_checks() {
    let _gate = suite_gate::enter("real_cluster");
    let c = cluster!("chart_test_hook_pod_gets_what_its_script_checks");
    let _lock = shared();
    let rendered = run(c
        .helm()
        .args(["template", harness::RELEASE])
        .arg(harness::repo_root().join("charts/pod-identity-webhook"))
        .args([
            "--namespace",
            harness::RELEASE_NS,
            "--show-only",
            "templates/tests/test-credentials.yaml",
            "--values",
        ])
        .arg(c.artifacts.join("values-primary.yaml")))
    .unwrap_or_else(|e| panic!("{e}"));
    run_with_input(c.kubectl().args(["apply", "-f", "-"]), &rendered.stdout)
        .unwrap_or_else(|e| panic!("{e}"));
    let name = format!("{}-test", harness::FULLNAME);
    let stored = c.get(&format!("/api/v1/namespaces/default/pods/{name}"));
    assert_eq!(
        env_value(&stored, "check", "AWS_ROLE_ARN").as_deref(),
        Some("arn:aws:iam::111122223333:role/pod-identity-webhook-test")
    );
    let token_file =
        env_value(&stored, "check", "AWS_WEB_IDENTITY_TOKEN_FILE").expect("token file variable");
    let mounted = stored["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| {
            m["name"] == "aws-iam-token" && token_file.starts_with(m["mountPath"].as_str().unwrap())
        });
    assert!(
        mounted,
        "the token file {token_file} is not under the token volume's mount"
    );
}
