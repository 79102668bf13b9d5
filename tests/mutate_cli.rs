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
    let output = run(
        &[
            "mutate",
            "--pod",
            &examples("pod.yaml"),
            "--service-account",
            &examples("serviceaccount.yaml"),
        ],
        None,
    );
    let patch = stdout_json(&output);
    let text = patch.to_string();
    assert!(text.contains("arn:aws:iam::111122223333:role/s3-reader"));
    assert!(text.contains("AWS_STS_REGIONAL_ENDPOINTS"));
    assert_eq!(patch[0]["path"], "/spec/volumes");
}

#[test]
fn output_pod_prints_the_patched_pod_keeping_field_order() {
    let output = run(
        &[
            "mutate",
            "--pod",
            &examples("pod.yaml"),
            "--service-account",
            &examples("serviceaccount.yaml"),
            "--output=pod",
            "--aws-default-region",
            "eu-west-1",
        ],
        None,
    );
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
    let output = run(&["mutate", "--pod", &examples("pod.yaml")], None);
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
    let output = run(
        &[
            "mutate",
            "--pod",
            &examples("pod.yaml"),
            "--service-account",
            &sa,
        ],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("warning: "), "{stderr}");
    assert!(stderr.contains("not-an-arn"), "{stderr}");
    let patch: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(patch.to_string().contains("not-an-arn"));
}

#[test]
fn config_map_and_container_credentials_files_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let cm = write(
        &dir,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pod-identity-webhook\ndata:\n  config: '{\"*/s3-reader\": {\"RoleARN\": \"arn:aws:iam::111122223333:role/mapped\"}}'\n",
    );
    let output = run(
        &[
            "mutate",
            "--pod",
            &examples("pod.yaml"),
            "--config-map",
            &cm,
        ],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("role/mapped"));

    let cc = write(
        &dir,
        "cc.json",
        r#"{"identities":[{"namespace":"default","serviceAccount":"s3-reader"}]}"#,
    );
    let output = run(
        &[
            "mutate",
            "--pod",
            &examples("pod.yaml"),
            "--watch-container-credentials-config",
            &cc,
            "--output=pod",
        ],
        None,
    );
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

    let stderr = assert_fails(&run(
        &[
            "mutate",
            "--pod",
            &examples("pod.yaml"),
            "--service-account",
            &examples("pod.yaml"),
        ],
        None,
    ));
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
    let stderr = assert_fails(&run(&["mutate", "--pod", "-", "--output=yaml"], None));
    assert!(
        stderr.contains("--output") && stderr.contains("yaml"),
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
    let stderr = assert_fails(&run(
        &[
            "mutate",
            "--pod",
            &examples("pod.yaml"),
            "--service-account",
            &sa,
        ],
        None,
    ));
    assert!(stderr.contains("sa.yaml"), "{stderr}");
    assert!(
        stderr.contains("document 2 (a ServiceAccount) has no metadata.name"),
        "{stderr}"
    );
}
