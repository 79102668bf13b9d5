//! What the alerts and the dashboard read, and whether a real `/metrics` has it: the PromQL of
//! deploy/monitoring/prometheus-rules.yaml and of the chart's Grafana dashboard, its series
//! selectors (parsed by Prometheus's own parser, `promql-selectors` from
//! hack/install-promtool.sh), and the series of a Prometheus text exposition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

/// The rules file the chart renders with its default values (hack/render-deploy.sh).
pub fn rules_file() -> PathBuf {
    repo_root().join("deploy/monitoring/prometheus-rules.yaml")
}

/// The dashboard the chart's ConfigMap carries.
pub fn dashboard_file() -> PathBuf {
    repo_root().join("charts/pod-identity-webhook/files/grafana-dashboard.json")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` from `$env`, else the project's tool cache (what hack/install-promtool.sh fills),
/// else `PATH`.
pub fn tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    if let Some(cached) = cache.map(|c| c.join("pod-identity-webhook/bin").join(name)) {
        if cached.is_file() {
            return Some(cached);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// One query, and where it comes from (an alert or a dashboard panel), for messages.
#[derive(Debug, Clone)]
pub struct Query {
    pub source: String,
    pub expr: String,
}

/// Every alert's expression in a Prometheus rules file.
pub fn rule_queries(rules_yaml: &str) -> Vec<Query> {
    let rules: Value = serde_yaml_ng::from_str(rules_yaml).expect("the rules file is YAML");
    let mut queries = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("an alert or a record");
            queries.push(Query {
                source: format!("alert {name}"),
                expr: rule["expr"].as_str().expect("expr").to_owned(),
            });
        }
    }
    queries
}

/// Every query of a Grafana dashboard: the panels' targets and the variables' queries
/// (`label_values(SELECTOR, label)` gives its selector), with Grafana's variables replaced by
/// what they hold by default (`$__rate_interval` and the like by `5m`).
pub fn dashboard_queries(dashboard_json: &str) -> Vec<Query> {
    let dashboard: Value = serde_json::from_str(dashboard_json).expect("the dashboard is JSON");
    let variables = variable_defaults(&dashboard);
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        // A row holds panels of its own.
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(Query {
                    source: format!("panel {:?}", panel["title"].as_str().unwrap_or("")),
                    expr: substitute(expr, &variables),
                });
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _)| selector.trim());
        if let Some(selector) = selector {
            queries.push(Query {
                source: format!("variable ${}", variable["name"].as_str().unwrap_or("")),
                expr: substitute(selector, &variables),
            });
        }
    }
    queries.sort_by(|a, b| a.source.cmp(&b.source));
    queries
}

/// Each variable's default (its `current` value), or `x` when it has none.
fn variable_defaults(dashboard: &Value) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for name in ["__rate_interval", "__interval", "__range"] {
        values.insert(name.to_owned(), "5m".to_owned());
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = variable["name"].as_str().unwrap_or_default().to_owned();
        let current = variable["current"]["value"].as_str().unwrap_or("x");
        values.insert(name, current.to_owned());
    }
    values
}

/// `expr` with `$name` and `${name}` replaced by `values[name]`; an unknown name is left as
/// it is (and the parser then says so).
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, skip) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match values.get(name) {
            Some(value) if !name.is_empty() => {
                out.push_str(value);
                rest = &after[skip..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A label matcher of a selector: `name`, `type` (`=`, `!=`, `=~`, `!~`) and `value`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Matcher {
    pub name: String,
    #[serde(rename = "type")]
    pub op: String,
    pub value: String,
}

/// A series selector of a query: the metric's name and its other matchers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

/// The selectors of each query, in order, by Prometheus's parser (`promql-selectors`).
/// Err: the helper's message (a query that does not parse names itself).
pub fn selectors(helper: &Path, queries: &[Query]) -> Result<Vec<Vec<Selector>>, String> {
    let exprs: Vec<&str> = queries.iter().map(|q| q.expr.as_str()).collect();
    let mut child = Command::new(helper)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", helper.display()))?;
    let input = serde_json::to_vec(&exprs).expect("strings serialize");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(&input)
            .map_err(|e| format!("cannot write to {}: {e}", helper.display()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{} did not finish: {e}", helper.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unexpected answer: {e}"))
}

/// One sample line of a Prometheus text exposition: its metric name and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: String,
    pub labels: BTreeMap<String, String>,
}

/// The series of a Prometheus text exposition (comments and blank lines skipped).
/// Err names the first line that is not a sample.
pub fn exposition(text: &str) -> Result<Vec<Series>, String> {
    Ok(samples(text)?
        .into_iter()
        .map(|(series, _)| series)
        .collect())
}

/// The series of a Prometheus text exposition with their values.
pub fn samples(text: &str) -> Result<Vec<(Series, f64)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).ok_or_else(|| format!("not a sample line: {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<(Series, f64)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let metric = line[..name_end].to_owned();
    if metric.is_empty() {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (name, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(name.trim().to_owned(), value);
            rest = &after[end + 1..];
        }
    }
    // A value must follow (Rust's float syntax also reads Prometheus's +Inf, -Inf and NaN).
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((Series { metric, labels }, value))
}

/// Labels Prometheus gives a series when it scrapes it (target labels): no exporter's own
/// series carries them, so a selector's matchers on them are not checked here.
pub const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "endpoint",
    "container",
];

/// Whether `series` is one `selector` picks, leaving out target labels. `=` and `!=` are
/// compared; for `=~` and `!~` the label must be there (their values are regular expressions,
/// which these tests do not evaluate).
pub fn selects(selector: &Selector, series: &Series) -> bool {
    series.metric == selector.metric
        && selector
            .matchers
            .iter()
            .filter(|m| !TARGET_LABELS.contains(&m.name.as_str()))
            .all(|m| {
                let value = series.labels.get(&m.name);
                match m.op.as_str() {
                    "=" => value.map(String::as_str).unwrap_or("") == m.value,
                    "!=" => value.map(String::as_str).unwrap_or("") != m.value,
                    _ => value.is_some(),
                }
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_reads_names_labels_and_escaped_values() {
        let text = "# HELP x y\n# TYPE x counter\n\
                    x_total{a=\"1\",b=\"say \\\"hi\\\", then go\"} 3\n\
                    up 1 1700000000000\n";
        let series = exposition(text).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].metric, "x_total");
        assert_eq!(series[0].labels["a"], "1");
        assert_eq!(series[0].labels["b"], "say \"hi\", then go");
        assert_eq!(series[1].metric, "up");
        assert!(series[1].labels.is_empty());
        assert!(
            exposition("x{a=\"1\"}\n").is_err(),
            "a sample needs a value"
        );
        assert!(
            exposition("x{a=\"1\"} many\n").is_err(),
            "a value is a number"
        );
        let values: Vec<f64> = samples(text).unwrap().into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, [3.0, 1.0]);
        let special = samples("a +Inf\nb 1.5e+07\n").unwrap();
        assert_eq!(special[0].1, f64::INFINITY);
        assert_eq!(special[1].1, 1.5e7);
    }

    #[test]
    fn dashboard_variables_become_their_defaults() {
        let dashboard = r#"{"templating": {"list": [
              {"name": "webhook", "type": "query", "current": {"value": "w.example.com"},
               "query": {"query": "label_values(m_count{type=\"admit\"}, name)"}},
              {"name": "ns", "type": "query", "current": {},
               "query": "label_values(other{a=\"b\"}, namespace)"}]},
            "panels": [{"title": "p", "targets": [
              {"expr": "rate(m{name=\"$webhook\",namespace=\"${ns}\"}[$__rate_interval])"}]},
              {"type": "row", "panels": [{"title": "inner", "targets": [{"expr": "$unknown"}]}]}]}"#;
        let queries: Vec<String> = dashboard_queries(dashboard)
            .into_iter()
            .map(|q| format!("{}: {}", q.source, q.expr))
            .collect();
        assert_eq!(
            queries,
            [
                "panel \"inner\": $unknown",
                "panel \"p\": rate(m{name=\"w.example.com\",namespace=\"x\"}[5m])",
                "variable $ns: other{a=\"b\"}",
                "variable $webhook: m_count{type=\"admit\"}",
            ]
        );
    }

    #[test]
    fn selectors_compare_equality_and_skip_target_labels() {
        let series = Series {
            metric: "m".into(),
            labels: [("name".into(), "w".into()), ("code".into(), "503".into())].into(),
        };
        let selector = |matchers: &[(&str, &str, &str)]| Selector {
            metric: "m".into(),
            matchers: matchers
                .iter()
                .map(|(name, op, value)| Matcher {
                    name: name.to_string(),
                    op: op.to_string(),
                    value: value.to_string(),
                })
                .collect(),
        };
        assert!(selects(
            &selector(&[("name", "=", "w"), ("code", "!=", "200"), ("job", "=", "j")]),
            &series
        ));
        assert!(!selects(&selector(&[("name", "=", "other")]), &series));
        assert!(!selects(&selector(&[("code", "!=", "503")]), &series));
        assert!(selects(&selector(&[("code", "=~", "5..")]), &series));
        assert!(!selects(&selector(&[("reason", "!~", "idle")]), &series));
    }
}
