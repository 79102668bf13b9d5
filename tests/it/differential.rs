//! Our engine against the reference webhook's own handler code, on thousands of seeded random
//! valid pods: the guard that a rewrite of the engine still gives the reference's pods.
//!
//! Each case (flags, pod, ServiceAccount, container-credentials file) goes through our engine
//! and through tests/reference, a Go driver calling the reference's `Modifier.MutatePod`
//! (built by hack/install-reference.sh, `make tools`); both patches are applied to the pod and
//! the two pods compared. Every difference must be one the README's "Differences from the
//! reference webhook" names: each is a [`Rule`] below that turns the reference's pod into what
//! ours promises, and fires only where the case's input calls for it. Anything else fails with
//! the seed, where the pods differ, and the first failing case shrunk (containers, fields and
//! flags taken away while it still fails) with both patches.
//!
//! `PIW_DIFFERENTIAL_SEED` runs another seed, `PIW_DIFFERENTIAL_CASES` sets the count, and
//! `PIW_DIFFERENTIAL_CASE` runs one case of the seed alone. Without the driver the test says
//! SKIPPED (`support::skip`), and fails under `PIW_REQUIRE_TOOLS=1`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;
use pod_identity_webhook::cli::MutationFlags;
use pod_identity_webhook::core::decision::decide;
use pod_identity_webhook::core::identity::{
    ContainerCredentialsConfig, IdentityInputs, ServiceAccountAnnotations,
};
use pod_identity_webhook::core::pod::Pod;
use pod_identity_webhook::core::settings::MutationSettings;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::skip::skip;
use crate::support::suite_gate;
use generate::{default_flags, generate};
use rules::{items, mode, Context, Mode, RULES, UNKNOWN_SERVICE_ACCOUNT_RULE};

mod generate;
mod rules;

const DEFAULT_SEED: u64 = 20_260_518;
const DEFAULT_CASES: usize = 3000;
const REFERENCE_MODULE: &str = "github.com/aws/amazon-eks-pod-identity-webhook";

const DEFAULT_MOUNT_PATH: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const DEFAULT_CC_MOUNT_PATH: &str = "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount";
const WEB_IDENTITY_VOLUME: &str = "aws-iam-token";
const WEB_IDENTITY_TOKEN_PATH: &str = "token";
const WEB_IDENTITY_PAIR: [&str; 2] = ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"];
const CC_PAIR: [&str; 2] = [
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];
const POD_IDENTITY_LABEL: &str = "eks.amazonaws.com/pod-identity";
/// Added to some containers: a field neither the reference's API types nor ours know.
const UNKNOWN_FIELD: &str = "x-future-field";

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    mutation: MutationFlags,
}

#[test]
fn random_pods_mutate_as_the_reference_does_but_for_the_documented_differences() {
    let Some(driver) = driver_or_skip(
        "random_pods_mutate_as_the_reference_does_but_for_the_documented_differences",
    ) else {
        return;
    };
    // Seconds of both cores' time: not while a suite that bounds latency runs.
    let _gate = suite_gate::enter("differential");
    let seed = env_number("PIW_DIFFERENTIAL_SEED").unwrap_or(DEFAULT_SEED);
    let count = env_number("PIW_DIFFERENTIAL_CASES").map_or(DEFAULT_CASES as u64, |n| n);
    let indexes: Vec<u64> = match env_number("PIW_DIFFERENTIAL_CASE") {
        Some(index) => vec![index],
        None => (0..count).collect(),
    };
    let cases: Vec<Value> = indexes.iter().map(|i| generate(seed, *i)).collect();
    // Ours runs while the driver works.
    let (answers, ours) = std::thread::scope(|scope| {
        let reference = scope.spawn(|| ask_reference(&driver, &cases));
        let ours: Vec<_> = cases.iter().map(run_ours).collect();
        (reference.join().unwrap(), ours)
    });

    let mut fired: BTreeMap<&str, usize> = RULES
        .iter()
        .map(|rule| rule.name)
        .chain([UNKNOWN_SERVICE_ACCOUNT_RULE])
        .map(|name| (name, 0))
        .collect();
    let mut mutated = 0;
    let mut failures = Vec::new();
    let all = indexes.iter().zip(&cases).zip(answers.iter().zip(ours));
    for ((index, case), (answer, ours)) in all {
        match compare(case, answer, ours) {
            Ok(outcome) => {
                mutated += usize::from(outcome.mutated);
                for name in outcome.fired {
                    *fired.entry(name).or_default() += 1;
                }
            }
            // The first failure is shrunk and shown whole, the next two in brief.
            Err(mismatch) if failures.is_empty() => {
                let small = shrink(&driver, case.clone());
                let answer = &ask_reference(&driver, std::slice::from_ref(&small))[0];
                let mismatch = compare(&small, answer, run_ours(&small))
                    .err()
                    .unwrap_or(mismatch);
                failures.push(format!(
                    "case {index} (PIW_DIFFERENTIAL_CASE={index} replays it alone), shrunk: {}\n  case (flags at their defaults left out): {}\n  ours:      {}\n  reference: {}",
                    mismatch.what, readable(&small), mismatch.ours, mismatch.reference
                ));
            }
            Err(mismatch) => failures.push(format!("case {index}: {}", mismatch.what)),
        }
        if failures.len() == 3 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "our engine and the reference differ beyond the README's differences \
         (PIW_DIFFERENTIAL_SEED={seed}):\n\n{}",
        failures.join("\n\n")
    );
    eprintln!(
        "{} cases, seed {seed}: {mutated} mutated; rules fired: {fired:?}",
        cases.len()
    );
    if cases.len() >= DEFAULT_CASES {
        // The generator must keep reaching every documented difference, or the test guards
        // less than it says.
        let unreached: Vec<_> = fired.iter().filter(|(_, n)| **n == 0).collect();
        assert!(unreached.is_empty(), "rules never exercised: {unreached:?}");
        assert!(
            mutated * 2 > cases.len(),
            "only {mutated} of {} cases mutated",
            cases.len()
        );
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
    )
}

// ---------------------------------------------------------------------------------------------
// The two engines

/// Our engine's patch and warnings for one case. The one call into the engine: when its entry
/// point moves, only this changes. Container-credentials jitter draws the range's start.
fn ours(
    pod: &Value,
    namespace: &str,
    inputs: IdentityInputs<'_>,
    settings: &MutationSettings,
) -> Ours {
    let pod = Pod::from_value(pod).map_err(|err| err.to_string())?;
    let decision = decide(&pod, namespace, inputs, settings, &mut |range| {
        *range.start()
    });
    let patch = decision
        .patch
        .unwrap_or_default()
        .operations()
        .map_err(|err| err.to_string())?;
    Ok((patch, decision.warnings))
}

/// Our patch and warnings, or why our engine refused the case.
type Ours = Result<(json_patch::Patch, Vec<String>), String>;

/// Our engine on a case, fed the way the server feeds it: flags through the command line,
/// the ServiceAccount's annotations picked by the configured prefix.
fn run_ours(case: &Value) -> Ours {
    let settings = settings(&case["flags"])?;
    let pod = &case["pod"];
    let annotations = case["serviceAccount"].as_object().map(|sa| {
        let map: BTreeMap<String, String> = sa["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        ServiceAccountAnnotations::from_annotations(&map, &settings.keys)
    });
    let container_credentials = match &case["containerCredentials"] {
        Value::Null => None,
        file => Some(
            ContainerCredentialsConfig::parse(file.to_string().as_bytes())
                .map_err(|err| format!("container credentials file: {err}"))?,
        ),
    };
    let inputs = IdentityInputs {
        service_account: annotations.as_ref(),
        mapping: None,
        container_credentials: container_credentials.as_ref(),
    };
    let namespace = case["namespace"].as_str().unwrap();
    ours(pod, namespace, inputs, &settings)
}

/// The settings our command line makes of `flags`; parsed once per distinct set of flags.
fn settings(flags: &Value) -> Result<MutationSettings, String> {
    thread_local! {
        static PARSED: std::cell::RefCell<Vec<(Value, MutationSettings)>> = Default::default();
    }
    let known = PARSED.with_borrow(|parsed| {
        let found = parsed.iter().find(|(known, _)| known == flags);
        found.map(|(_, settings)| settings.clone())
    });
    if let Some(settings) = known {
        return Ok(settings);
    }
    let args = flags
        .as_object()
        .unwrap()
        .iter()
        .map(|(flag, value)| match value {
            Value::String(s) => format!("--{flag}={s}"),
            other => format!("--{flag}={other}"),
        });
    let parsed = Flags::try_parse_from(std::iter::once("differential".to_string()).chain(args))
        .map_err(|err| format!("flags: {err}"))?;
    let settings = parsed.mutation.settings();
    PARSED.with_borrow_mut(|parsed| parsed.push((flags.clone(), settings.clone())));
    Ok(settings)
}

/// The driver built from the current tests/reference, or `None` after saying it is missing.
fn driver_or_skip(test: &str) -> Option<PathBuf> {
    let path = driver_path();
    if path.is_file() {
        return Some(path);
    }
    skip(
        "differential",
        test,
        &format!(
            "the reference driver built from tests/reference ({})",
            path.display()
        ),
        "run hack/install-reference.sh, which make tools runs",
    );
    None
}

/// Where hack/install-reference.sh puts the driver for the current tests/reference: keyed by
/// the reference version its go.mod requires and the same hash of its files as the script's.
fn driver_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let go_mod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
    let version = go_mod
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(REFERENCE_MODULE))
                .then(|| words.next())
                .flatten()
        })
        .expect("tests/reference/go.mod requires the reference module");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name())
        .collect();
    files.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for name in files {
        let content = std::fs::read(dir.join(&name)).unwrap();
        digest.update(name.as_encoded_bytes());
        digest.update(format!("\0{}\0", content.len()).as_bytes());
        digest.update(&content);
    }
    let hash: String = digest.finish().as_ref()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"),
    };
    cache
        .join("pod-identity-webhook")
        .join(format!("reference-webhook-{version}-{hash}"))
        .join("reference-driver")
}

/// Whether [`reference_case`] asks the reference about another case than ours.
fn asks_for_a_known_service_account(case: &Value) -> bool {
    mode(case) == Mode::ContainerCredentials && case["serviceAccount"].is_null()
}

/// The reference's answers to `cases`, each asked as [`reference_case`] says.
fn ask_reference(driver: &Path, cases: &[Value]) -> Vec<Value> {
    let asked: Vec<Value> = cases
        .iter()
        .map(|case| reference_case(case).unwrap_or_else(|| case.clone()))
        .collect();
    run_driver(driver, &asked)
}

/// Settled difference: "EKS Pod Identity for a ServiceAccount that is not known". The
/// reference then injects regional STS off and a one-day token whatever the flags say; ours
/// applies the flags, as the reference does for a known ServiceAccount without annotations.
/// So the reference is asked about that ServiceAccount instead.
fn reference_case(case: &Value) -> Option<Value> {
    if !asks_for_a_known_service_account(case) {
        return None;
    }
    let mut known = case.clone();
    let name = &case["pod"]["spec"]["serviceAccountName"];
    known["serviceAccount"] = json!({"name": name, "annotations": {}});
    Some(known)
}

/// Every case through one driver process: one JSON line in, one out, in order.
fn run_driver(driver: &Path, cases: &[Value]) -> Vec<Value> {
    let mut child = Command::new(driver)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", driver.display()));
    let mut input = String::new();
    for case in cases {
        input.push_str(&case.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    // Written from another thread while the answers are read, so neither pipe fills up.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stderr}",
        driver.display(),
        output.status
    );
    let answers: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(answers.len(), cases.len(), "answers missing:\n{stderr}");
    answers
}

// ---------------------------------------------------------------------------------------------
// Comparing

/// What one case tells about the run.
struct Compared {
    mutated: bool,
    fired: Vec<&'static str>,
}

/// How the two answers to a case differ beyond the rules: what, and both patches.
struct Mismatch {
    what: String,
    ours: String,
    reference: String,
}

/// Compares the reference's `answer` to a case with `ours`, [`run_ours`] on the case.
fn compare(case: &Value, answer: &Value, ours: Ours) -> Result<Compared, Mismatch> {
    let pod = &case["pod"];
    let ref_patch = &answer["patch"];
    let mismatch = |what: String, ours: Option<&json_patch::Patch>| Mismatch {
        what,
        ours: ours.map_or("-".into(), |patch| serde_json::to_string(patch).unwrap()),
        reference: answer.to_string(),
    };
    if let Some(error) = answer.get("error") {
        return Err(mismatch(format!("the reference failed: {error}"), None));
    }
    let (our_patch, our_warnings) =
        ours.map_err(|err| mismatch(format!("ours failed: {err}"), None))?;
    let mut our_pod = pod.clone();
    json_patch::patch(&mut our_pod, &our_patch)
        .map_err(|err| mismatch(format!("our patch does not apply: {err}"), Some(&our_patch)))?;
    let mut ref_pod = pod.clone();
    if !ref_patch.is_null() {
        let operations = json_patch::Patch::deserialize(ref_patch).unwrap();
        json_patch::patch(&mut ref_pod, &operations).map_err(|err| {
            mismatch(
                format!("the reference's patch does not apply: {err}"),
                Some(&our_patch),
            )
        })?;
    }
    let mutated = ref_pod != *pod;
    let context = Context {
        case,
        pod,
        skip_record: answer
            .get("skipRecord")
            .map(|record| Deserialize::deserialize(record).unwrap()),
        our_warnings: &our_warnings,
        mode: mode(case),
    };
    let mut fired = Vec::new();
    if asks_for_a_known_service_account(case) {
        fired.push(UNKNOWN_SERVICE_ACCOUNT_RULE);
    }
    for rule in RULES {
        match (rule.apply)(&context, &mut ref_pod, &mut our_pod) {
            Ok(true) => fired.push(rule.name),
            Ok(false) => {}
            Err(broken) => {
                return Err(mismatch(
                    format!("rule {:?}: {broken}", rule.name),
                    Some(&our_patch),
                ))
            }
        }
    }
    if ref_pod != our_pod {
        let mut differences = Vec::new();
        diff(&ref_pod, &our_pod, String::new(), &mut differences);
        return Err(mismatch(
            format!(
                "the pods differ (after the rules {fired:?}):\n    {}",
                differences.join("\n    ")
            ),
            Some(&our_patch),
        ));
    }
    Ok(Compared { mutated, fired })
}

/// `case` for a reader: the flags that differ from the defaults only.
fn readable(case: &Value) -> Value {
    let mut case = case.clone();
    let defaults = default_flags();
    if let Some(flags) = case["flags"].as_object_mut() {
        flags.retain(|flag, value| defaults[flag.as_str()] != *value);
    }
    case
}

/// A smaller case that still fails: one removal at a time (a container, a volume, an
/// annotation, a flag back to its default; then a container's field, env entry or mount), as
/// long as some removal keeps it failing. Each round's candidates go through one run of the
/// driver; the coarse removals come first so that few rounds are needed, and the rounds are
/// bounded so that a failure is reported soon whatever its size.
fn shrink(driver: &Path, mut case: Value) -> Value {
    for fine in [false, true] {
        for _ in 0..30 {
            let candidates = smaller(&case, fine);
            if candidates.is_empty() {
                break;
            }
            let answers = ask_reference(driver, &candidates);
            let failing = candidates
                .into_iter()
                .zip(&answers)
                .find(|(candidate, answer)| {
                    compare(candidate, answer, run_ours(candidate)).is_err()
                });
            match failing {
                Some((smaller, _)) => case = smaller,
                None => break,
            }
        }
    }
    case
}

/// Every case one removal smaller than `case` whose pod is still valid: whole containers,
/// volumes and members of the spec and metadata, or (`fine`) what is inside a container.
fn smaller(case: &Value, fine: bool) -> Vec<Value> {
    let mut removable = Vec::new();
    let pod = &case["pod"];
    for (key, value) in pod["spec"].as_object().into_iter().flatten() {
        let lists = [
            "containers",
            "initContainers",
            "ephemeralContainers",
            "volumes",
        ];
        if key == "serviceAccountName" || (fine && !lists.contains(&key.as_str())) {
            continue;
        }
        if key != "containers" && !fine {
            removable.push(format!("/spec/{key}"));
        }
        if !lists.contains(&key.as_str()) {
            continue;
        }
        for (i, item) in value.as_array().into_iter().flatten().enumerate() {
            if !fine && (key != "containers" || i > 0) {
                removable.push(format!("/spec/{key}/{i}"));
            }
            if !fine || key == "volumes" {
                continue;
            }
            for (member, value) in item.as_object().into_iter().flatten() {
                if member != "name" {
                    removable.push(format!("/spec/{key}/{i}/{member}"));
                }
                for j in 0..value.as_array().map_or(0, Vec::len) {
                    removable.push(format!("/spec/{key}/{i}/{member}/{j}"));
                }
            }
        }
    }
    for field in ["labels", "annotations"].into_iter().filter(|_| !fine) {
        let Some(members) = pod["metadata"][field].as_object() else {
            continue;
        };
        removable.push(format!("/metadata/{field}"));
        for key in members.keys() {
            let key = key.replace('~', "~0").replace('/', "~1");
            removable.push(format!("/metadata/{field}/{key}"));
        }
    }
    let mut candidates = Vec::new();
    for pointer in removable {
        let mut candidate = case.clone();
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        let last = last.replace("~1", "/").replace("~0", "~");
        match candidate["pod"].pointer_mut(parent) {
            Some(Value::Array(items)) => {
                items.remove(last.parse::<usize>().unwrap());
            }
            Some(Value::Object(members)) => {
                members.remove(&last);
            }
            _ => continue,
        }
        if valid(&candidate["pod"], &case["flags"]) {
            candidates.push(candidate);
        }
    }
    if fine {
        return candidates;
    }
    let defaults = default_flags();
    for (flag, value) in case["flags"].as_object().into_iter().flatten() {
        if *value != defaults[flag] {
            let mut candidate = case.clone();
            candidate["flags"][flag] = defaults[flag].clone();
            candidates.push(candidate);
        }
    }
    let annotations = case["serviceAccount"]["annotations"].as_object();
    for (key, _) in annotations.into_iter().flatten() {
        let mut candidate = case.clone();
        candidate["serviceAccount"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(key);
        candidates.push(candidate);
    }
    candidates
}

/// Whether a shrunk pod is still one the generator could make: a container left, and every
/// mount and device of a volume the pod has (or of a token volume the webhook adds).
fn valid(pod: &Value, flags: &Value) -> bool {
    let volumes: HashSet<&str> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| volume["name"].as_str())
        .chain([
            WEB_IDENTITY_VOLUME,
            flags["container-credentials-token-volume-name"]
                .as_str()
                .unwrap(),
        ])
        .collect();
    let containers = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    containers > 0
        && ["containers", "initContainers"].iter().all(|list| {
            pod["spec"][list].as_array().into_iter().flatten().all(|c| {
                ["volumeMounts", "volumeDevices"].iter().all(|field| {
                    items(c, field)
                        .iter()
                        .all(|item| item["name"].as_str().is_some_and(|n| volumes.contains(n)))
                })
            })
        })
}

/// Where two pods differ, as `path: reference ... ours ...` lines; at most a dozen.
fn diff(reference: &Value, ours: &Value, path: String, out: &mut Vec<String>) {
    if out.len() >= 12 || reference == ours {
        return;
    }
    match (reference, ours) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let at = format!("{path}/{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(x, y, at, out),
                    (x, y) => out.push(format!(
                        "{at}: reference {}, ours {}",
                        x.map_or("absent".into(), Value::to_string),
                        y.map_or("absent".into(), Value::to_string)
                    )),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, format!("{path}/{i}"), out);
            }
        }
        _ => out.push(format!("{path}: reference {reference}, ours {ours}")),
    }
}
