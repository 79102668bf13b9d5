//! Doctor checks on the webhook as the API server sees it: a MutatingWebhookConfiguration
//! that sends this namespace's pod creations to it, a caBundle that verifies its serving
//! certificate, a ready endpoint, and a server-side dry-run pod that comes back mutated.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::core::engine::WEB_IDENTITY_VOLUME;
use crate::core::identity::{CredentialKind, Identity};
use crate::irsa::checklist::Check;

/// The name the chart and the reference manifests give the configuration (the chart prefixes
/// the release name).
pub(crate) const DEFAULT_CONFIG_NAME: &str = "pod-identity-webhook";

/// Where the API server sends reviews.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Url(String),
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
}

/// One webhook of a configuration that handles pod creation in the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEntry {
    pub config: String,
    pub name: String,
    pub target: Target,
    pub failure_policy: String,
    /// The decoded caBundle (PEM), empty when absent.
    pub ca_bundle: Vec<u8>,
}

impl WebhookEntry {
    pub(crate) fn describe(&self) -> String {
        let target = match &self.target {
            Target::Url(url) => url.clone(),
            Target::Service {
                namespace,
                name,
                port,
            } => format!("service {namespace}/{name}:{port}"),
        };
        format!(
            "{}/{} -> {target} (failurePolicy {})",
            self.config, self.name, self.failure_policy
        )
    }
}

/// Finds the webhook configurations of this webhook (named `wanted`, or containing
/// [`DEFAULT_CONFIG_NAME`]) and the webhooks in them that handle pod creation in a namespace
/// with `namespace_labels`.
pub fn registration(
    configs: &[Value],
    wanted: Option<&str>,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> (Check, Vec<WebhookEntry>) {
    let check = Check::new(
        "webhook.registered",
        "a MutatingWebhookConfiguration sends this namespace's pod creations to the webhook",
    );
    let name_of = |c: &Value| {
        c["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let ours: Vec<&Value> = configs.iter().filter(|c| is_ours(c, wanted)).collect();
    if ours.is_empty() {
        let looked_for = match wanted {
            Some(name) => format!("named {name}"),
            None => format!("whose name contains {DEFAULT_CONFIG_NAME}"),
        };
        let others: Vec<String> = configs.iter().map(name_of).collect();
        return (
            check.fail(
                format!(
                    "no MutatingWebhookConfiguration {looked_for} (the cluster has: {}): the webhook is not registered, so the API server never calls it",
                    if others.is_empty() { "none".into() } else { others.join(", ") }
                ),
                "install the webhook (helm install ... charts/pod-identity-webhook, or kubectl apply -k deploy/), or pass --webhook-config-name NAME",
            ),
            Vec::new(),
        );
    }
    let mut check = check;
    let mut entries = Vec::new();
    let mut excluded = Vec::new();
    for config in ours {
        for webhook in config["webhooks"].as_array().into_iter().flatten() {
            if !handles_pod_create(webhook) {
                continue;
            }
            let entry = entry(&name_of(config), webhook);
            match selector_matches(&webhook["namespaceSelector"], namespace_labels) {
                Ok(true) => entries.push(entry),
                Ok(false) => excluded.push(entry),
                Err(problem) => {
                    check = check.warn(
                        format!("{}: namespaceSelector {problem}", entry.describe()),
                        "fix the selector",
                    );
                }
            }
        }
    }
    for entry in &entries {
        check = check.detail(entry.describe());
    }
    if entries.is_empty() {
        if excluded.is_empty() {
            return (
                check.fail(
                    "the configuration has no webhook for CREATE of v1 pods",
                    "reinstall the chart; its rules cover pods/CREATE",
                ),
                entries,
            );
        }
        let labels: Vec<String> = namespace_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return (
            check.fail(
                format!(
                    "namespace {namespace} (labels: {}) is left out by the namespaceSelector of {}",
                    if labels.is_empty() { "none".into() } else { labels.join(", ") },
                    excluded.iter().map(|e| format!("{}/{}", e.config, e.name)).collect::<Vec<_>>().join(", ")
                ),
                format!("remove the label that opts the namespace out (e.g. kubectl label namespace {namespace} eks.amazonaws.com/skip-pod-identity-webhook-) or widen the selector"),
            ),
            entries,
        );
    }
    (check, entries)
}

/// Whether a MutatingWebhookConfiguration is this webhook's: named `wanted`, or by default
/// one whose name contains [`DEFAULT_CONFIG_NAME`].
pub(crate) fn is_ours(config: &Value, wanted: Option<&str>) -> bool {
    let name = config["metadata"]["name"].as_str().unwrap_or_default();
    match wanted {
        Some(wanted) => name == wanted,
        None => name.contains(DEFAULT_CONFIG_NAME),
    }
}

fn entry(config: &str, webhook: &Value) -> WebhookEntry {
    let client = &webhook["clientConfig"];
    let target = match (client["url"].as_str(), client.get("service")) {
        (Some(url), _) => Target::Url(url.to_string()),
        (None, Some(service)) => Target::Service {
            namespace: service["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name: service["name"].as_str().unwrap_or_default().to_string(),
            port: service["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(443),
        },
        (None, None) => Target::Url(String::new()),
    };
    let ca_bundle = client["caBundle"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    WebhookEntry {
        config: config.to_string(),
        name: webhook["name"].as_str().unwrap_or_default().to_string(),
        target,
        failure_policy: webhook["failurePolicy"]
            .as_str()
            .unwrap_or("Fail")
            .to_string(),
        ca_bundle,
    }
}

pub(crate) fn handles_pod_create(webhook: &Value) -> bool {
    let has = |list: &Value, wanted: &str| {
        list.as_array()
            .is_some_and(|items| items.iter().any(|i| i == wanted || i == "*"))
    };
    webhook["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| {
            has(&rule["operations"], "CREATE")
                && has(&rule["apiGroups"], "")
                && has(&rule["apiVersions"], "v1")
                && (has(&rule["resources"], "pods") || has(&rule["resources"], "*/*"))
        })
}

/// A Kubernetes label selector against labels; an absent selector matches everything.
pub(crate) fn selector_matches(
    selector: &Value,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    if selector.is_null() {
        return Ok(true);
    }
    if let Some(match_labels) = selector["matchLabels"].as_object() {
        for (key, value) in match_labels {
            if labels.get(key).map(String::as_str) != value.as_str() {
                return Ok(false);
            }
        }
    }
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let value = labels.get(key).map(String::as_str);
        let holds = match expression["operator"].as_str() {
            Some("In") => value.is_some_and(|v| values.contains(&v)),
            Some("NotIn") => !value.is_some_and(|v| values.contains(&v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            other => return Err(format!("has an unknown operator {other:?}")),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The caBundle of each webhook: present, PEM certificates, valid at `now` (Unix seconds).
pub fn ca_bundle(entries: &[WebhookEntry], now: i64) -> Check {
    let mut check = Check::new(
        "webhook.ca-bundle",
        "the caBundle holds valid CA certificates",
    );
    if entries.is_empty() {
        return check.skip("no webhook to check");
    }
    for entry in entries {
        let who = format!("{}/{}", entry.config, entry.name);
        if entry.ca_bundle.is_empty() {
            if matches!(entry.target, Target::Url(ref u) if u.starts_with("https://")) {
                check = check.detail(format!(
                    "{who}: no caBundle: the API server uses its own trust roots"
                ));
                continue;
            }
            check = check.fail(
                format!("{who} has an empty caBundle: the API server cannot verify the webhook's certificate, so every call fails"),
                "let the built-in certificate mode or cert-manager's CA injector fill it, or set the chart's webhook.caBundle",
            );
            continue;
        }
        let blocks = match pem::parse_many(&entry.ca_bundle) {
            Ok(blocks) if !blocks.is_empty() => blocks,
            _ => {
                check = check.fail(
                    format!("{who}: the caBundle is not PEM certificates"),
                    "set caBundle to the base64 of the CA certificate's PEM",
                );
                continue;
            }
        };
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            match x509_parser::parse_x509_certificate(block.contents()) {
                Ok((_, cert)) => {
                    let validity = cert.validity();
                    let subject = cert.subject().to_string();
                    let (from, until) = (
                        validity.not_before.timestamp(),
                        validity.not_after.timestamp(),
                    );
                    if now < from || now > until {
                        check = check.fail(
                            format!(
                                "{who}: CA {subject} is valid only from {} to {}",
                                validity.not_before, validity.not_after
                            ),
                            "renew the CA and update the caBundle",
                        );
                    } else {
                        check = check.detail(format!(
                            "{who}: CA {subject}, valid until {}",
                            validity.not_after
                        ));
                    }
                }
                Err(err) => {
                    check = check.fail(
                        format!("{who}: a caBundle certificate is unreadable: {err}"),
                        "replace the caBundle",
                    );
                }
            }
        }
    }
    check
}

/// What probing the webhook's endpoint found (done by the adapter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// HTTPS `GET /readyz` at the URL's host, verified with the caBundle: status and body, or
    /// the connection or TLS error.
    Url {
        url: String,
        result: Result<(u16, String), String>,
    },
    /// Ready and total endpoints of the Service (EndpointSlices), or the error.
    Service {
        namespace: String,
        name: String,
        ready: Result<(usize, usize), String>,
    },
}

/// The readiness check from the probes of every webhook.
pub fn readiness(probes: &[Probe]) -> Check {
    let mut check = Check::new(
        "webhook.ready",
        "the webhook answers with a certificate the caBundle verifies, and is ready",
    );
    if probes.is_empty() {
        return check.skip("no webhook to probe");
    }
    for probe in probes {
        match probe {
            Probe::Url {
                url,
                result: Ok((200, _)),
            } => {
                check = check.detail(format!(
                    "{url}: TLS verified with the caBundle, /readyz 200"
                ));
            }
            Probe::Url {
                url,
                result: Ok((status, body)),
            } => {
                check = check.fail(
                    format!("{url}: /readyz answered {status}: {}", body.trim()),
                    "the webhook is running but not ready: see its log (ServiceAccount cache not synced, certificate not loaded)",
                );
            }
            Probe::Url {
                url,
                result: Err(err),
            } => {
                let (cause, fix) = if err.contains("certificate")
                    || err.contains("UnknownIssuer")
                    || err.contains("NotValidForName")
                {
                    (format!("{url}: the serving certificate does not verify with the caBundle: {err}"),
                     "put the CA that signed the serving certificate in the caBundle, or a serving certificate that names the URL's host")
                } else {
                    (format!("{url}: cannot connect: {err}"),
                     "the webhook is not running or not listening there: start it, or fix clientConfig.url")
                };
                check = check.fail(cause, fix);
            }
            Probe::Service {
                namespace,
                name,
                ready: Ok((ready, total)),
            } if *ready > 0 => {
                check = check.detail(format!("service {namespace}/{name}: {ready} of {total} endpoints ready (the certificate is verified by the dry run below)"));
            }
            Probe::Service {
                namespace,
                name,
                ready: Ok((_, total)),
            } => {
                check = check.fail(
                    format!("service {namespace}/{name} has no ready endpoint ({total} in total): no webhook pod is ready"),
                    format!("kubectl get pods -n {namespace} and look at the webhook pods' readiness and logs"),
                );
            }
            Probe::Service {
                namespace,
                name,
                ready: Err(err),
            } => {
                check = check.fail(
                    format!("cannot read the endpoints of service {namespace}/{name}: {err}"),
                    "check that the Service exists and that you may list endpointslices",
                );
            }
        }
    }
    check
}

/// Label the doctor's dry-run pods carry, so they are recognisable in audit logs.
pub(crate) const PROBE_LABEL: &str = "pod-identity-webhook/doctor";

/// The pod the doctor creates with `dryRun=All`: minimal, acceptable under the `restricted`
/// Pod Security level, never stored.
pub fn probe_pod(service_account: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "pod-identity-webhook-doctor-", "labels": {PROBE_LABEL: "dry-run"}},
        "spec": {
            "serviceAccountName": service_account,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe",
                "image": "registry.k8s.io/pause:3.10",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    })
}

fn env<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The dry-run result: created (the pod as the admission chain returned it, with warnings)
/// or refused (the API server's message).
pub(crate) fn dry_run(
    result: &Result<(Value, Vec<String>), String>,
    identity: Option<&Identity>,
) -> Check {
    let check = Check::new(
        "webhook.dry-run",
        "a server-side dry-run pod of this ServiceAccount comes back mutated",
    );
    let Some(identity) = identity else {
        return check.skip("no identity resolved: there is nothing the webhook would inject");
    };
    let (pod, warnings) = match result {
        Ok(created) => created,
        Err(message) => {
            let fix = if message.contains("failed calling webhook") {
                "the API server cannot reach the webhook and its failurePolicy is Fail: make the webhook ready (see the checks above)"
            } else {
                "read the API server's message; the doctor's pod is minimal and meets the restricted Pod Security level"
            };
            return check.fail(format!("the dry-run create was refused: {message}"), fix);
        }
    };
    let mut check = check;
    for warning in warnings {
        check = check.detail(format!("admission warning: {warning}"));
    }
    let not_called = "the API server admitted the pod without the injection: the webhook was not called (not registered for this namespace, or down with failurePolicy Ignore) or does not see this ServiceAccount's identity";
    match &identity.source {
        CredentialKind::WebIdentity { role_arn, audience } => {
            let Some(injected) = env(pod, "AWS_ROLE_ARN") else {
                return check.fail(not_called, "make the webhook ready and registered (checks above), then create the pod again");
            };
            if injected != role_arn {
                return check.fail(
                    format!("the webhook injected role {injected}, the ServiceAccount resolves to {role_arn}"),
                    "the running webhook reads other settings (--annotation-prefix, the role mapping) or a stale cache: compare its flags with the doctor's",
                );
            }
            let volume_audience = pod["spec"]["volumes"].as_array().into_iter().flatten()
                .find(|v| v["name"] == WEB_IDENTITY_VOLUME)
                .and_then(|v| v["projected"]["sources"][0]["serviceAccountToken"]["audience"].as_str());
            if volume_audience != Some(audience.as_str()) {
                return check.fail(
                    format!("the token volume's audience is {volume_audience:?}, the ServiceAccount resolves to {audience}"),
                    "compare the webhook's --token-audience with the doctor's",
                );
            }
            check.detail(format!("AWS_ROLE_ARN={injected}, token audience {audience}"))
        }
        CredentialKind::ContainerCredentials => match env(pod, "AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            Some(uri) => check.detail(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI={uri}")),
            None => check.fail(not_called, "make the webhook ready and registered (checks above), and give it the same container-credentials file"),
        },
        CredentialKind::RegionOnly => match env(pod, "AWS_REGION") {
            Some(region) => check.detail(format!("AWS_REGION={region} (no credentials: the ServiceAccount has no role)")),
            None => check.fail(not_called, "make the webhook ready and registered (checks above), with --inject-region-without-role as the doctor was given"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irsa::checklist::Status;

    fn config(name: &str, selector: Value) -> Value {
        json!({"metadata": {"name": name}, "webhooks": [{
            "name": "pod-identity-webhook.amazonaws.com", "failurePolicy": "Ignore",
            "clientConfig": {"url": "https://127.0.0.1:8443/mutate", "caBundle": ""},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": selector}]})
    }

    #[test]
    fn registration_found_by_name_and_selector() {
        let labels = BTreeMap::new();
        let configs = [
            config("other", Value::Null),
            config("piw-pod-identity-webhook", Value::Null),
        ];
        let (check, entries) = registration(&configs, None, "ns", &labels);
        assert_eq!(check.status, Status::Pass);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].target,
            Target::Url("https://127.0.0.1:8443/mutate".into())
        );
        assert!(check.details[0].contains("failurePolicy Ignore"));
    }

    #[test]
    fn missing_registration_and_excluded_namespace_fail_with_the_fix() {
        let (check, _) = registration(
            &[config("other", Value::Null)],
            None,
            "ns",
            &BTreeMap::new(),
        );
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.problems[0].cause.contains("the cluster has: other"),
            "{:?}",
            check.problems
        );
        let skip = json!({"matchExpressions": [{"key": "eks.amazonaws.com/skip-pod-identity-webhook", "operator": "DoesNotExist"}]});
        let labels: BTreeMap<String, String> = [(
            "eks.amazonaws.com/skip-pod-identity-webhook".to_string(),
            "true".to_string(),
        )]
        .into();
        let (check, entries) =
            registration(&[config("pod-identity-webhook", skip)], None, "ns", &labels);
        assert!(entries.is_empty());
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.problems[0]
                .cause
                .contains("left out by the namespaceSelector"),
            "{:?}",
            check.problems
        );
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        for (selector, expected) in [
            (json!({"matchLabels": {"a": "1"}}), true),
            (json!({"matchLabels": {"a": "2"}}), false),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "b", "operator": "Exists"}]}),
                false,
            ),
            (json!({}), true),
        ] {
            assert_eq!(
                selector_matches(&selector, &labels),
                Ok(expected),
                "{selector}"
            );
        }
    }

    #[test]
    fn probes_say_not_running_not_ready_or_untrusted() {
        let url = "https://127.0.0.1:1/mutate".to_string();
        let check = readiness(&[Probe::Url {
            url: url.clone(),
            result: Err("Connection refused (os error 111)".into()),
        }]);
        assert_eq!(check.status, Status::Fail);
        assert!(check.problems[0].fix.contains("not running"));
        let check = readiness(&[Probe::Url {
            url: url.clone(),
            result: Ok((503, "cache not synced".into())),
        }]);
        assert!(check.problems[0].cause.contains("503: cache not synced"));
        let check = readiness(&[Probe::Url {
            url,
            result: Err("invalid peer certificate: UnknownIssuer".into()),
        }]);
        assert!(check.problems[0]
            .cause
            .contains("does not verify with the caBundle"));
        let check = readiness(&[Probe::Service {
            namespace: "eks".into(),
            name: "piw".into(),
            ready: Ok((0, 2)),
        }]);
        assert!(check.problems[0]
            .cause
            .contains("no ready endpoint (2 in total)"));
    }

    #[test]
    fn dry_run_without_injection_fails() {
        let identity = Identity {
            source: CredentialKind::WebIdentity {
                role_arn: "arn:aws:iam::111122223333:role/app".into(),
                audience: "sts.amazonaws.com".into(),
            },
            regional_sts: false,
            token_expiration: 86400,
            region: None,
            session_name_from_pod: false,
        };
        let pod = probe_pod("app");
        let check = dry_run(&Ok((pod.clone(), vec![])), Some(&identity));
        assert_eq!(check.status, Status::Fail);
        assert!(check.problems[0].cause.contains("without the injection"));
        let mut mutated = pod;
        mutated["spec"]["containers"][0]["env"] =
            json!([{"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/app"}]);
        mutated["spec"]["volumes"] = json!([{"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com"}}]}}]);
        assert_eq!(
            dry_run(&Ok((mutated, vec![])), Some(&identity)).status,
            Status::Pass
        );
        let refused = dry_run(
            &Err("Internal error occurred: failed calling webhook \"x\"".into()),
            Some(&identity),
        );
        assert!(refused.problems[0].fix.contains("failurePolicy is Fail"));
    }
}
