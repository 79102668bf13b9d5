//! The `mutate` command as a user runs it: files in, patch or pod out; bad input gives one
//! line on stderr naming the file or flag, exit code 2 and nothing on stdout.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pod-identity-webhook");

fn examples(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs `mutate --pod examples/pod.yaml` followed by `flags`, with nothing on stdin.
fn mutate_example_pod(flags: &[&str]) -> Output {
    let pod = examples("pod.yaml");
    run(&[&["mutate", "--pod", &pod][..], flags].concat(), None)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Asserts success and returns standard output as JSON.
fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Asserts the documented failure shape and returns the one stderr line.
fn assert_fails(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        output.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn example_pod_gets_the_patch_for_its_annotated_service_account() {
    let output = mutate_example_pod(&["--service-account", &examples("serviceaccount.yaml")]);
    let patch = stdout_json(&output);
    let text = patch.to_string();
    assert!(text.contains("arn:aws:iam::111122223333:role/s3-reader"));
    assert!(text.contains("AWS_STS_REGIONAL_ENDPOINTS"));
    assert_eq!(patch[0]["path"], "/spec/volumes");
}

#[test]
fn output_pod_prints_the_patched_pod_keeping_field_order() {
    let output = mutate_example_pod(&[
        "--service-account",
        &examples("serviceaccount.yaml"),
        "--output=pod",
        "--aws-default-region",
        "eu-west-1",
    ]);
    let pod = stdout_json(&output);
    let env = &pod["spec"]["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "LOG_LEVEL",
            "AWS_STS_REGIONAL_ENDPOINTS",
            "AWS_DEFAULT_REGION",
            "AWS_REGION",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE"
        ]
    );
    let keys: Vec<&String> = pod.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
}

#[test]
fn pod_from_stdin_with_its_service_account_in_the_same_stream() {
    let manifests = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(examples("serviceaccount.yaml")).unwrap(),
        std::fs::read_to_string(examples("pod.yaml")).unwrap()
    );
    let output = run(&["mutate", "--pod", "-"], Some(&manifests));
    let patch = stdout_json(&output);
    assert!(!patch.as_array().unwrap().is_empty());
}

#[test]
fn no_service_account_gives_an_empty_patch() {
    let output = mutate_example_pod(&[]);
    let patch = stdout_json(&output);
    assert_eq!(patch, Value::Array(vec![]));
}

#[test]
fn warnings_go_to_stderr_and_the_patch_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let sa = write(
        &dir,
        "sa.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: s3-reader\n  annotations:\n    eks.amazonaws.com/role-arn: not-an-arn\n",
    );
    let output = mutate_example_pod(&["--service-account", &sa]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("warning: "), "{stderr}");
    assert!(stderr.contains("not-an-arn"), "{stderr}");
    let patch: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(patch.to_string().contains("not-an-arn"));
}

#[test]
fn a_conflicting_mount_is_left_alone_and_reported_on_stderr() {
    let manifests = "apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/app
---
apiVersion: v1
kind: Pod
metadata:
  name: mesh
spec:
  serviceAccountName: app
  containers:
  - name: proxy
    image: proxy:1
    volumeMounts:
    - name: certs
      mountPath: /var/run/secrets/eks.amazonaws.com/serviceaccount/
  volumes:
  - name: certs
    emptyDir: {}
";
    let output = run(&["mutate", "--pod", "-", "--output=pod"], Some(manifests));
    let pod = stdout_json(&output);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["volumeMounts"].as_array().unwrap().len(), 1);
    assert!(container.get("env").is_none(), "{container}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("warning: container \"proxy\" already mounts volume \"certs\""),
        "{stderr}"
    );
}

#[test]
fn config_map_and_container_credentials_files_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let cm = write(
        &dir,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pod-identity-webhook\ndata:\n  config: '{\"*/s3-reader\": {\"RoleARN\": \"arn:aws:iam::111122223333:role/mapped\"}}'\n",
    );
    let output = mutate_example_pod(&["--config-map", &cm]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("role/mapped"));

    let cc = write(
        &dir,
        "cc.json",
        r#"{"identities":[{"namespace":"default","serviceAccount":"s3-reader"}]}"#,
    );
    let output = mutate_example_pod(&["--watch-container-credentials-config", &cc, "--output=pod"]);
    let pod = stdout_json(&output);
    assert_eq!(
        pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"],
        "enabled"
    );
    let expiration = pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
        ["expirationSeconds"]
        .as_i64()
        .unwrap();
    assert!((79200..=86400).contains(&expiration), "{expiration}");
}

#[test]
fn missing_file_is_named() {
    let stderr = assert_fails(&run(&["mutate", "--pod", "/nonexistent/pod.yaml"], None));
    assert!(stderr.contains("/nonexistent/pod.yaml"), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn unparseable_file_is_named_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(&dir, "bad.yaml", "kind: Pod\nspec: [unclosed\n");
    let stderr = assert_fails(&run(&["mutate", "--pod", &bad], None));
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("not valid YAML"),
        "{stderr}"
    );
}

#[test]
fn document_of_the_wrong_kind_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = write(
        &dir,
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
    );
    let stderr = assert_fails(&run(&["mutate", "--pod", &deployment], None));
    assert!(
        stderr.contains("deploy.yaml") && stderr.contains("Deployment"),
        "{stderr}"
    );

    let stderr = assert_fails(&mutate_example_pod(&[
        "--service-account",
        &examples("pod.yaml"),
    ]));
    assert!(stderr.contains("is not a ServiceAccount"), "{stderr}");
}

#[test]
fn file_without_a_pod_or_with_two_is_refused() {
    let stderr = assert_fails(&run(
        &["mutate", "--pod", &examples("serviceaccount.yaml")],
        None,
    ));
    assert!(stderr.contains("holds no Pod"), "{stderr}");
    let two = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(examples("pod.yaml")).unwrap(),
        std::fs::read_to_string(examples("pod.yaml")).unwrap()
    );
    let stderr = assert_fails(&run(&["mutate", "--pod", "-"], Some(&two)));
    assert!(
        stderr.contains("standard input") && stderr.contains("second Pod"),
        "{stderr}"
    );
}

#[test]
fn pod_that_is_not_a_pod_shape_is_refused_naming_the_field() {
    let stderr = assert_fails(&run(
        &["mutate", "--pod", "-"],
        Some(
            r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[{"name":"a","env":"oops"}]}}"#,
        ),
    ));
    assert!(stderr.contains("spec.containers[0].env"), "{stderr}");
}

#[test]
fn bad_flags_are_named_on_one_line() {
    let stderr = assert_fails(&run(
        &["mutate", "--pod", "-", "--token-expiration=soon"],
        None,
    ));
    assert!(
        stderr.contains("--token-expiration") && stderr.contains("soon"),
        "{stderr}"
    );
    let stderr = assert_fails(&run(&["mutate", "--pod", "-", "--no-such-flag"], None));
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let stderr = assert_fails(&run(&["mutate", "--pod", "-", "--output=table"], None));
    assert!(
        stderr.contains("--output") && stderr.contains("table"),
        "{stderr}"
    );
}

#[test]
fn service_account_without_a_name_is_refused_naming_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let sa = write(
        &dir,
        "sa.yaml",
        "---\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  annotations:\n    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/x\n",
    );
    let stderr = assert_fails(&mutate_example_pod(&["--service-account", &sa]));
    assert!(stderr.contains("sa.yaml"), "{stderr}");
    assert!(
        stderr.contains("document 2 (a ServiceAccount) has no metadata.name"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Messages that help (issue 10)
// ---------------------------------------------------------------------------

#[test]
fn clap_errors_stay_one_line_but_keep_what_helps_fix_them() {
    for (args, kept) in [
        (
            &["mutate"][..],
            "required arguments were not provided: --pod <POD>",
        ),
        (
            &["mutate", "--pod", "-", "--output=table"],
            "[possible values: patch, pod, yaml]",
        ),
        (
            &["mutate", "--pod", "-", "--servce-account=a"],
            "tip: a similar argument exists: '--service-account'",
        ),
    ] {
        // assert_fails checks the one line, exit code 2 and the empty stdout.
        let stderr = assert_fails(&run(args, None));
        assert!(stderr.contains(kept), "{args:?}: {stderr}");
        assert!(!stderr.contains("Usage:"), "{stderr}");
        assert!(!stderr.contains("--help"), "{stderr}");
    }
}

#[test]
fn a_pod_whose_service_account_was_not_given_is_named_on_stderr() {
    let output = mutate_example_pod(&[]);
    assert_eq!(stdout_json(&output), Value::Array(vec![]));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "warning: the pod runs as ServiceAccount default/s3-reader, and no ServiceAccount was given"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--service-account FILE"), "{stderr}");

    // Given, but not the pod's: the ones given are listed.
    let dir = tempfile::tempdir().unwrap();
    let other = write(
        &dir,
        "other.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: other\n  namespace: team\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: s3-reader\n  namespace: elsewhere\n",
    );
    let output = mutate_example_pod(&["--service-account", &other]);
    assert_eq!(stdout_json(&output), Value::Array(vec![]));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(
            "ServiceAccount default/s3-reader, which is not among the ServiceAccounts given (team/other, elsewhere/s3-reader)"
        ),
        "{stderr}"
    );

    // Given: nothing to say.
    let output = mutate_example_pod(&["--service-account", &examples("serviceaccount.yaml")]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn output_yaml_prints_the_patched_pod_as_yaml() {
    let sa = examples("serviceaccount.yaml");
    let as_json = stdout_json(&mutate_example_pod(&[
        "--service-account",
        &sa,
        "--output",
        "pod",
    ]));
    let output = mutate_example_pod(&["--service-account", &sa, "--output", "yaml"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("apiVersion: v1\nkind: Pod\n"), "{text}");
    assert!(text.contains("name: AWS_ROLE_ARN"), "{text}");
    let as_yaml: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(as_yaml, as_json);
}

/// A kubeconfig for an API server that refuses connections, and that server's URL.
fn unreachable_kubeconfig(dir: &tempfile::TempDir) -> (String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let kubeconfig = write(
        dir,
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
        ),
    );
    (kubeconfig, url)
}

/// `retry_in=1.2s` / `retry_in=850.3ms` of a log line, in seconds.
fn retry_in(line: &str) -> f64 {
    let value = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("retry_in="))
        .unwrap_or_else(|| panic!("no retry_in in {line}"));
    if let Some(ms) = value.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1000.0
    } else {
        value.strip_suffix('s').unwrap().parse().unwrap()
    }
}

#[test]
fn unreachable_api_server_is_named_once_per_attempt_with_a_growing_retry_interval() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, url) = unreachable_kubeconfig(&dir);
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .to_string()
    };
    let mut child = Command::new(BIN)
        .args(["--bind-address", "127.0.0.1", "--port", &free_port()])
        .args(["--metrics-port", &free_port(), "--kubeconfig", &kubeconfig])
        .args([
            "--tls-cert",
            "/nonexistent/tls.crt",
            "--tls-key",
            "/nonexistent/tls.key",
        ])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Read until the third failed attempt (about 2.4 to 4.8 s in), then stop the server.
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lines
        .iter()
        .filter(|l: &&String| l.contains("cannot list or watch ServiceAccounts"))
        .count()
        < 3
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let attempts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("cannot list or watch ServiceAccounts"))
        .collect();
    assert_eq!(attempts.len(), 3, "{lines:#?}");
    for (n, line) in attempts.iter().enumerate() {
        assert!(line.contains(&url), "the API server is not named: {line}");
        assert!(line.contains(&format!("attempt={}", n + 1)), "{line}");
    }
    // 800 ms doubling with jitter: each wait is at least as long as the one before.
    let waits: Vec<f64> = attempts.iter().map(|l| retry_in(l)).collect();
    assert!(
        waits[0] >= 0.8 && waits[1] >= 1.6 && waits[2] >= 3.2,
        "{waits:?}"
    );
    // One line per attempt: kube's client does not log the same failure again.
    assert!(
        !lines.iter().any(|l| l.contains("kube_client")),
        "{lines:#?}"
    );
}

/// A JSON pod's numbers keep their values: floats are read correctly rounded and printed in
/// their shortest form (`2.131110001e47` comes out as `2.131110001e+47`, not
/// `2.1311100009999998e+47`), and 64-bit integers are exact. Integers beyond 64 bits would
/// become floats; Kubernetes objects hold none (the API server decodes them into Go types).
#[test]
fn output_pod_keeps_json_number_values() {
    let numbers = [
        "2.131110001e47",
        "0.1",
        "1e-7",
        "18446744073709551615",
        "-9223372036854775808",
        "1.7976931348623157e308",
    ];
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"s3-reader","namespace":"default"}},
            "spec":{{"serviceAccountName":"s3-reader","containers":[{{"name":"app","image":"a"}}],
            "x-numbers":[{}]}}}}"#,
        numbers.join(",")
    );
    let output = run(
        &[
            "mutate",
            "--pod",
            "-",
            "--service-account",
            &examples("serviceaccount.yaml"),
            "--output=pod",
        ],
        Some(&pod),
    );
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(text.contains("2.131110001e+47"), "{text}");
    let printed = stdout_json(&output);
    assert!(
        printed.to_string().contains("AWS_ROLE_ARN"),
        "mutated: {text}"
    );
    let printed = printed["spec"]["x-numbers"].as_array().unwrap().clone();
    for (number, printed) in numbers.iter().zip(&printed) {
        if let Some(float) = printed.as_f64().filter(|_| printed.is_f64()) {
            let expected: f64 = number.parse().unwrap();
            assert_eq!(
                float.to_bits(),
                expected.to_bits(),
                "{number} became {printed}"
            );
        } else {
            assert_eq!(printed.to_string(), *number);
        }
    }
}

/// The README's example of what goes beyond the reference, as it shows it.
#[test]
fn features_example_gives_session_names_the_accounts_region_and_a_role_per_container() {
    let accounts = examples("features/serviceaccount.yaml");
    let output = run(
        &[
            "mutate",
            "--pod",
            &examples("features/pod.yaml"),
            "--service-account",
            &accounts,
            "--output=pod",
        ],
        None,
    );
    assert!(output.stderr.is_empty(), "{output:?}");
    let pod = stdout_json(&output);
    for (index, role) in [
        "arn:aws:iam::111122223333:role/reports",
        "arn:aws:iam::111122223333:role/reports-uploader",
    ]
    .iter()
    .enumerate()
    {
        let env = &pod["spec"]["containers"][index]["env"];
        let names: Vec<&str> = env
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "AWS_DEFAULT_REGION",
                "AWS_REGION",
                "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_ROLE_SESSION_NAME"
            ]
        );
        assert_eq!(env[1]["value"], "eu-central-1");
        assert_eq!(env[2]["value"], *role);
        assert_eq!(
            env[4]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
    }

    // Without a role: nothing, or the region alone when asked for.
    let agent = examples("features/apm-agent.yaml");
    let without = |flags: &[&str]| {
        stdout_json(&run(
            &[
                &["mutate", "--pod", &agent, "--service-account", &accounts][..],
                flags,
            ]
            .concat(),
            None,
        ))
    };
    assert_eq!(
        without(&["--aws-default-region=us-east-2"]),
        serde_json::json!([])
    );
    let patch = without(&[
        "--aws-default-region=us-east-2",
        "--inject-region-without-role",
    ]);
    assert_eq!(
        patch,
        serde_json::json!([{"op": "add", "path": "/spec/containers/0/env", "value": [
            {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
            {"name": "AWS_REGION", "value": "us-east-2"}]}])
    );
}
