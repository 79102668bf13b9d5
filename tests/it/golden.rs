//! Golden fixtures: each file in tests/fixtures/mutate/ pins one rule with its inputs (pod,
//! ServiceAccount annotations, flags, mapping, container credentials) and its expected patch
//! and warnings in the matching `.expected.json`. Run with `BLESS=1` to record expectations
//! for new fixtures, then review them by hand before committing.
//!
//! Every fixture is also checked for two general properties: its patch applies cleanly, and a
//! second pass over the patched pod yields an empty patch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use pod_identity_webhook::cli::MutationFlags;
use pod_identity_webhook::core::decision::{decide, Decision};
use pod_identity_webhook::core::expiration::JITTER_RANGE;
use pod_identity_webhook::core::identity::{
    ConfigMapMapping, ContainerCredentialsConfig, IdentityInputs, ServiceAccountAnnotations,
};
use pod_identity_webhook::core::pod::Pod;
use serde_json::{json, Value};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    mutation: MutationFlags,
}

struct Fixture {
    path: PathBuf,
    input: Value,
}

impl Fixture {
    fn name(&self) -> String {
        self.path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn expected_path(&self) -> PathBuf {
        self.path.with_extension("expected.json")
    }

    /// Decides on `pod` with this fixture's sources and flags, as the server does.
    fn run(&self, pod: &Value) -> Decision {
        let args: Vec<String> = self.input["args"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        let flags = Flags::try_parse_from(std::iter::once("fixture".to_string()).chain(args))
            .unwrap_or_else(|err| panic!("{}: bad args: {err}", self.name()));
        let settings = flags.mutation.settings();
        let pod = Pod::from_value(pod).unwrap_or_else(|err| panic!("{}: {err}", self.name()));
        let namespace = match pod.namespace() {
            "" => "default",
            namespace => namespace,
        };
        let service_account = pod.service_account();
        // The ServiceAccount is known only under its own name (default "app").
        let known = self.input.get("serviceAccount").filter(|sa| {
            sa.get("name").and_then(Value::as_str).unwrap_or("app") == service_account
        });
        let annotations = known.map(|sa| {
            let map: BTreeMap<String, String> = sa["annotations"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            ServiceAccountAnnotations::from_annotations(&map, &settings.keys)
        });
        let mapping = self.input.get("configMap").map(|config| {
            let parsed = ConfigMapMapping::parse(config.as_str().unwrap()).unwrap();
            assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
            parsed.mapping
        });
        let container_credentials = self.input.get("containerCredentials").map(|config| {
            ContainerCredentialsConfig::parse(config.to_string().as_bytes()).unwrap()
        });
        let high = self.input.get("jitter").and_then(Value::as_str) == Some("high");
        let mut jitter = |range: std::ops::RangeInclusive<i64>| {
            assert_eq!(range, JITTER_RANGE);
            if high {
                *range.end()
            } else {
                *range.start()
            }
        };
        decide(
            &pod,
            namespace,
            IdentityInputs {
                service_account: annotations.as_ref(),
                mapping: mapping.as_ref(),
                container_credentials: container_credentials.as_ref(),
            },
            &settings,
            &mut jitter,
        )
    }
}

fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mutate");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let input = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            Fixture { path, input }
        })
        .collect()
}

#[test]
fn every_fixture_gives_its_expected_patch_and_warnings() {
    let bless = std::env::var_os("BLESS").is_some();
    let all = fixtures();
    assert!(all.len() >= 40, "fixtures went missing: {}", all.len());
    let mut failures = Vec::new();
    for fixture in &all {
        let decision = fixture.run(&fixture.input["pod"]);
        let actual = json!({
            "rule": fixture.input["rule"],
            "patch": decision.patch.unwrap_or_default(),
            "warnings": decision.warnings,
        });
        let expected_path = fixture.expected_path();
        if bless && !expected_path.exists() {
            let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
            std::fs::write(&expected_path, text).unwrap();
            continue;
        }
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(_) => {
                failures.push(format!(
                    "{}: no {}",
                    fixture.name(),
                    expected_path.display()
                ));
                continue;
            }
        };
        if expected != actual {
            failures.push(format!(
                "{}:\nexpected {}\nactual   {}",
                fixture.name(),
                serde_json::to_string(&expected).unwrap(),
                serde_json::to_string(&actual).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_fixture_patch_applies_and_a_second_pass_is_empty() {
    for fixture in fixtures() {
        let pod = &fixture.input["pod"];
        let patch = fixture.run(pod).patch.unwrap_or_default();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch.operations().unwrap())
            .unwrap_or_else(|err| panic!("{}: patch does not apply: {err}", fixture.name()));
        let again = fixture.run(&patched);
        assert!(
            again.patch.is_none(),
            "{}: second pass not empty: {:?}",
            fixture.name(),
            again.patch
        );
    }
}
