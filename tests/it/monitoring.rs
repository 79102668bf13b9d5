//! The alerts (deploy/monitoring/prometheus-rules.yaml, the chart's PrometheusRule rendered
//! with its default values) and the Grafana dashboard (charts/pod-identity-webhook/files/):
//! promtool accepts the rules and passes their unit tests (tests/alerts/); every alert has a
//! test where it fires and one where it stays quiet, says what broke and what to do, and has
//! its runbook in the chart README; every query parses and names its metric. That those
//! metrics exist is proven against a real API server and webhook by the real-node suite.
//!
//! promtool and promql-selectors come from hack/install-promtool.sh (`$PROMTOOL` and
//! `$PROMQL_SELECTORS`, else the tool cache, else `PATH`); without them the tests that run
//! them print SKIPPED and pass, unless `PIW_REQUIRE_TOOLS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::promql::{self, Query};
use crate::support::skip::skip;

const HINT: &str = "run hack/install-promtool.sh";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool_or_skip(test: &str) -> Option<PathBuf> {
    let found = promql::tool("promtool", "PROMTOOL");
    if found.is_none() {
        skip("monitoring", test, "promtool", HINT);
    }
    found
}

fn selectors_helper_or_skip(test: &str) -> Option<PathBuf> {
    let found = promql::tool("promql-selectors", "PROMQL_SELECTORS");
    if found.is_none() {
        skip("monitoring", test, "promql-selectors", HINT);
    }
    found
}

/// Runs promtool; Err holds what it printed.
fn promtool(promtool: &Path, args: &[&Path], sub: &[&str]) -> Result<String, String> {
    let out = Command::new(promtool)
        .args(sub)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(printed)
    } else {
        Err(printed)
    }
}

fn rules() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(promql::rules_file()).unwrap()).unwrap()
}

fn alerts(rules: &Value) -> Vec<&Value> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect()
}

fn alert_names(rules: &Value) -> Vec<String> {
    alerts(rules)
        .iter()
        .map(|a| {
            a["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_owned()
        })
        .collect()
}

/// The promtool unit-test files.
fn unit_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/alerts"))
        .expect("tests/alerts")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool tests in tests/alerts");
    files
}

#[test]
fn promtool_accepts_the_rules() {
    let Some(bin) = promtool_or_skip("promtool_accepts_the_rules") else {
        return;
    };
    let file = promql::rules_file();
    let printed = promtool(&bin, &[&file], &["check", "rules", "--lint-fatal"])
        .unwrap_or_else(|e| panic!("promtool check rules {}:\n{e}", file.display()));
    let count = alert_names(&rules()).len();
    assert!(
        printed.contains(&format!("SUCCESS: {count} rules found")),
        "{printed}"
    );
}

#[test]
fn promtool_unit_tests_of_the_alerts_pass() {
    let Some(bin) = promtool_or_skip("promtool_unit_tests_of_the_alerts_pass") else {
        return;
    };
    let files = unit_test_files();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let printed = promtool(&bin, &refs, &["test", "rules"])
        .unwrap_or_else(|e| panic!("promtool test rules:\n{e}"));
    assert!(printed.contains("SUCCESS"), "{printed}");
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet() {
    let mut fires = std::collections::BTreeSet::new();
    let mut quiet = std::collections::BTreeSet::new();
    for file in unit_test_files() {
        let tests: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert!(
            tests["rule_files"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f
                    .as_str()
                    .is_some_and(|f| f.ends_with("deploy/monitoring/prometheus-rules.yaml")))),
            "{} does not test deploy/monitoring/prometheus-rules.yaml",
            file.display()
        );
        for group in tests["tests"].as_array().expect("tests") {
            for case in group["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_owned();
                match case["exp_alerts"].as_array() {
                    Some(expected) if !expected.is_empty() => fires.insert(name),
                    _ => quiet.insert(name),
                };
            }
        }
    }
    let names = alert_names(&rules());
    let untested: Vec<String> = names
        .iter()
        .filter(|n| !fires.contains(*n) || !quiet.contains(*n))
        .map(|n| {
            format!(
                "{n} (fires: {}, stays quiet: {})",
                fires.contains(n),
                quiet.contains(n)
            )
        })
        .collect();
    assert!(
        untested.is_empty(),
        "alerts without a firing and a quiet case in tests/alerts: {untested:?}"
    );
    let unknown: Vec<&String> = fires.union(&quiet).filter(|n| !names.contains(n)).collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn every_alert_says_what_broke_and_what_to_do_and_has_its_runbook_in_the_chart_readme() {
    let readme =
        std::fs::read_to_string(root().join("charts/pod-identity-webhook/README.md")).unwrap();
    let rules = rules();
    let mut problems = Vec::new();
    for alert in alerts(&rules) {
        let name = alert["alert"].as_str().unwrap();
        for (field, what) in [
            (&alert["labels"]["severity"], "labels.severity"),
            (&alert["annotations"]["summary"], "annotations.summary"),
            (
                &alert["annotations"]["description"],
                "annotations.description",
            ),
        ] {
            if field.as_str().is_none_or(|v| v.trim().is_empty()) {
                problems.push(format!("{name} has no {what}"));
            }
        }
        let section = readme
            .split(&format!("\n#### {name}\n"))
            .nth(1)
            .map(|rest| rest.split("\n#").next().unwrap_or(rest));
        match section {
            None => problems.push(format!("the chart README has no section #### {name}")),
            Some(section) => {
                for part in ["**What broke**", "**What to do**"] {
                    if !section.contains(part) {
                        problems.push(format!("the README section of {name} lacks {part}"));
                    }
                }
            }
        }
        let row = format!("| [`{name}`](#{}) |", name.to_lowercase());
        if !readme.contains(&row) {
            problems.push(format!("the README's alert table lacks {row}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every query of the rules and the dashboard, with where it comes from.
pub fn all_queries() -> Vec<Query> {
    let mut queries = promql::rule_queries(&std::fs::read_to_string(promql::rules_file()).unwrap());
    queries.extend(promql::dashboard_queries(
        &std::fs::read_to_string(promql::dashboard_file()).unwrap(),
    ));
    queries
}

#[test]
fn every_query_of_the_alerts_and_the_dashboard_parses_and_names_its_metrics() {
    let Some(helper) = selectors_helper_or_skip(
        "every_query_of_the_alerts_and_the_dashboard_parses_and_names_its_metrics",
    ) else {
        return;
    };
    let queries = all_queries();
    assert!(queries.len() > 20, "too few queries found: {queries:?}");
    let selectors = promql::selectors(&helper, &queries).unwrap_or_else(|e| panic!("{e}"));
    for (query, found) in queries.iter().zip(&selectors) {
        assert!(
            !found.is_empty() && found.iter().all(|s| !s.metric.is_empty()),
            "{}: every selector must name its metric: {} gives {found:?}",
            query.source,
            query.expr
        );
    }
    // The fail-open alert counts this webhook's calls, under the name it has in the chart's
    // default configuration (the API server's `name` label), for mutating admission.
    let values: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root().join("charts/pod-identity-webhook/values.yaml")).unwrap(),
    )
    .unwrap();
    let webhook_name = values["webhook"]["name"].as_str().unwrap();
    let at = queries
        .iter()
        .position(|q| q.source == "alert PodIdentityWebhookFailOpen")
        .expect("the fail-open alert");
    for selector in &selectors[at] {
        assert_eq!(
            selector.metric,
            "apiserver_admission_webhook_fail_open_count"
        );
        let equal: Vec<(&str, &str)> = selector
            .matchers
            .iter()
            .filter(|m| m.op == "=")
            .map(|m| (m.name.as_str(), m.value.as_str()))
            .collect();
        assert_eq!(equal, [("name", webhook_name), ("type", "admit")]);
    }
}
