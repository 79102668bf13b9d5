//! One AdmissionReview in, one out: decode the review (`server::review`), look up the
//! ServiceAccount, decide in the pure core (`decision::decide`), encode the answer in one
//! pass. No HTTP here; `server::mutate` turns a `BadReview` into a 400.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use tracing::Level;

pub use super::review::BadReview;

use super::review::{decode, Request};
use crate::core::decision::{
    decide, node_service_account, pod_names, random_jitter, Admit, Decision, Method,
};
use crate::core::engine::Node;
use crate::core::identity::{IdentityInputs, ServiceAccountAnnotations, ServiceAccountNeed};
use crate::core::json::{bound_owned, bounded, bounded_list, MAX_ECHO};
use crate::core::settings::MutationSettings;
use crate::ops::metrics::Metrics;
use crate::sources::service_accounts::ServiceAccountLookup;
use crate::sources::WatchedConfig;

/// Reviews up to this size are answered on the async worker that read them: reading and
/// deciding take tens of microseconds there, less than a hop to another thread. Larger ones
/// (up to the body limit, megabytes) are answered on Tokio's blocking pool so they never hold
/// a worker for milliseconds; how many run at once is bounded by the router's review slots.
const INLINE_BODY_BYTES: usize = 64 * 1024;

/// Everything the admission handler reads.
#[derive(Clone)]
pub struct Admission {
    pub settings: Arc<MutationSettings>,
    pub service_accounts: Arc<dyn ServiceAccountLookup>,
    pub watched_config: Arc<WatchedConfig>,
    pub metrics: Arc<Metrics>,
}

impl Admission {
    /// Answers one AdmissionReview body with the response body. `Err` only when the body
    /// cannot be answered with an AdmissionReview at all; a pod that is not a valid Pod gets
    /// `allowed: false` instead.
    pub async fn review(&self, body: &Bytes) -> Result<Vec<u8>, BadReview> {
        if body.len() <= INLINE_BODY_BYTES {
            return self.answer(body).await;
        }
        let admission = self.clone();
        let body = body.clone();
        let runtime = tokio::runtime::Handle::current();
        // A blocking-pool thread is no async context, so it may wait for the lookup itself.
        tokio::task::spawn_blocking(move || runtime.block_on(admission.answer(&body)))
            .await
            .unwrap_or_else(|err| {
                Err(BadReview(format!(
                    "the review could not be answered ({err}); retry"
                )))
            })
    }

    async fn answer(&self, body: &[u8]) -> Result<Vec<u8>, BadReview> {
        let review = decode(body)?;
        let request = &review.request;
        let decision = self.respond(request).await;
        Ok(encode(review.api_version, &request.uid, &decision))
    }

    /// The I/O around `decide`: the ServiceAccount lookup before it, logs and counters after.
    async fn respond(&self, request: &Request<'_>) -> Decision {
        if !request.is_pod_creation() {
            return Decision::Admit(Admit::default());
        }
        let pod = request.object.as_ref().unwrap_or(&Node::Null);
        let (namespace, pod_name) = pod_names(pod, request.namespace.as_deref());
        let mut about = About {
            uid: &request.uid,
            namespace,
            pod: pod_name,
            service_account: "",
        };
        let service_account = match node_service_account(pod) {
            Ok(name) => name,
            Err(err) => return rejected(&about, bound_owned(err.to_string(), MAX_ECHO)),
        };
        about.service_account = service_account;

        let annotations = self.annotations(namespace, service_account).await;
        // Read after the lookup, which may wait: the answer uses the sources current now,
        // and no guard is held across an await.
        let container_credentials = self.watched_config.container_credentials.load();
        let mapping = self.watched_config.mapping.load();
        let inputs = IdentityInputs {
            service_account: annotations.as_deref(),
            mapping: mapping.as_deref(),
            container_credentials: container_credentials.as_deref(),
        };
        let decision = decide(
            pod,
            namespace,
            service_account,
            inputs,
            &self.settings,
            &mut random_jitter,
        );
        let admit = match decision {
            Decision::Admit(admit) => admit,
            Decision::Deny(message) => return rejected(&about, message),
        };
        for warning in &admit.warnings {
            review_event!(Level::WARN, about, "{warning}");
        }
        match &admit.mutated {
            Some(mutated) => {
                review_event!(
                    Level::INFO,
                    about,
                    method = mutated.method.label(),
                    role = %bounded(&mutated.role, MAX_ECHO),
                    containers = %bounded_list(&mutated.containers, MAX_ECHO),
                    "mutated pod"
                );
                self.metrics
                    .pods_mutated(mutated.method == Method::ContainerCredentials)
                    .inc();
            }
            None => review_event!(
                Level::DEBUG,
                about,
                "pod not mutated: no identity for its ServiceAccount, or already mutated"
            ),
        }
        Decision::Admit(admit)
    }

    /// The ServiceAccount's annotations, waited for only when the rule in
    /// [`ServiceAccountNeed`] says so; a missing one that was needed is counted.
    async fn annotations(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Option<Arc<ServiceAccountAnnotations>> {
        let need = ServiceAccountNeed::of(
            self.watched_config.container_credentials.load().as_deref(),
            namespace,
            service_account,
        );
        match need {
            ServiceAccountNeed::CachedOnly => {
                self.service_accounts.cached(namespace, service_account)
            }
            ServiceAccountNeed::Wait => {
                let found = self
                    .service_accounts
                    .lookup(namespace, service_account)
                    .await;
                if found.is_none() {
                    self.metrics.missing_sa_count.inc();
                }
                found
            }
        }
    }
}

/// Which review a log line is about. Every line names it in fields of its own rather than
/// in a span: a span per review cost as much CPU as the review's log line (about 1.5 µs of a
/// small review's 24).
struct About<'a> {
    uid: &'a str,
    namespace: &'a str,
    pod: &'a str,
    /// Empty until read from the pod.
    service_account: &'a str,
}

/// The denial of a review with `message`, logged as every denial is.
fn rejected(about: &About<'_>, message: String) -> Decision {
    review_event!(Level::WARN, about, "rejected: {message}");
    Decision::Deny(message)
}

/// A log event at `level` about one review ([`About`]); further fields and the message follow.
macro_rules! review_event {
    ($level:expr, $about:expr, $($fields_and_message:tt)+) => {
        tracing::event!(
            $level,
            uid = %bounded($about.uid, MAX_ECHO),
            namespace = %bounded($about.namespace, MAX_ECHO),
            pod = %bounded($about.pod, MAX_ECHO),
            service_account = %bounded($about.service_account, MAX_ECHO),
            $($fields_and_message)+
        )
    };
}
use review_event;

/// The response body, written in one pass. Field order and form are kube's
/// `AdmissionReview` serialization, except the patch: Go's (and the reference webhook's) wire
/// form of `[]byte` is a base64 string, which is what tools reading audit logs expect and is
/// half the size of kube's array of numbers (the API server accepts both).
fn encode(api_version: &str, uid: &str, decision: &Decision) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(api_version.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    write_json(&mut out, uid);
    match decision {
        Decision::Deny(message) => {
            out.extend_from_slice(b",\"allowed\":false,\"status\":{\"code\":400,\"message\":");
            write_json(&mut out, message);
            out.extend_from_slice(b",\"reason\":\"BadRequest\"}");
        }
        Decision::Admit(admit) => {
            out.extend_from_slice(b",\"allowed\":true,\"status\":{}");
            if admit.patch.is_some() {
                out.extend_from_slice(b",\"patchType\":\"JSONPatch\"");
            }
            if !admit.warnings.is_empty() {
                out.extend_from_slice(b",\"warnings\":");
                write_json(&mut out, &admit.warnings);
            }
            if let Some(patch) = &admit.patch {
                out.extend_from_slice(b",\"patch\":\"");
                let json = patch.as_json().as_bytes();
                let start = out.len();
                out.resize(
                    start + base64::encoded_len(json.len(), true).unwrap_or(0),
                    0,
                );
                let written = STANDARD.encode_slice(json, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
                out.push(b'"');
            }
        }
    }
    out.extend_from_slice(b"}}");
    out
}

/// Strings, string lists and patches always serialize; writing into memory cannot fail.
fn write_json<W: std::io::Write>(out: &mut W, value: &(impl serde::Serialize + ?Sized)) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        let _ = out.write_all(b"null");
    }
}

#[cfg(test)]
mod tests {
    use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
    use kube::core::DynamicObject;
    use serde_json::Value;

    use super::*;
    use crate::core::decision::Mutated;
    use crate::core::engine::{Json, Patch};
    use crate::server::review::tests::POD_REVIEW;
    use crate::server::review::SUPPORTED_API_VERSIONS;

    fn admission() -> Admission {
        let mut accounts = crate::sources::service_accounts::FixedServiceAccounts::default();
        let annotations = ServiceAccountAnnotations {
            role_arn: Some("arn:aws:iam::111122223333:role/app".into()),
            ..Default::default()
        };
        accounts.insert("payments", "default", annotations);
        Admission {
            settings: Arc::new(MutationSettings::default()),
            service_accounts: Arc::new(accounts),
            watched_config: Arc::new(WatchedConfig::default()),
            metrics: Arc::new(Metrics::new()),
        }
    }

    fn pod_review(pod: serde_json::Value) -> Bytes {
        let mut review: Value = serde_json::from_slice(POD_REVIEW).unwrap();
        review["request"]["namespace"] = "payments".into();
        review["request"]["object"] = pod;
        Bytes::from(serde_json::to_vec(&review).unwrap())
    }

    fn answer_of(body: &[u8]) -> Value {
        serde_json::from_slice::<Value>(body).unwrap()["response"].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_large_review_is_answered_off_the_worker_the_same_way() {
        let admission = admission();
        let small = serde_json::json!({"spec": {"containers": [{"name": "app"}]}});
        let mut large = small.clone();
        large["metadata"] =
            serde_json::json!({"annotations": {"pad": "x".repeat(INLINE_BODY_BYTES)}});
        let small = pod_review(small);
        let large = pod_review(large);
        assert!(small.len() <= INLINE_BODY_BYTES && large.len() > INLINE_BODY_BYTES);
        let inline = answer_of(&admission.review(&small).await.unwrap());
        let blocking = answer_of(&admission.review(&large).await.unwrap());
        assert_eq!(inline["allowed"], true);
        assert!(inline["patch"].is_string(), "{inline}");
        assert_eq!(inline, blocking);
    }

    #[tokio::test]
    async fn too_many_containers_get_allowed_false_naming_the_cap() {
        let containers: Vec<Value> = (0..=crate::core::engine::MAX_CONTAINERS)
            .map(|i| serde_json::json!({"name": format!("c{i}")}))
            .collect();
        let body = pod_review(serde_json::json!({"spec": {"containers": containers}}));
        let answer = answer_of(&admission().review(&body).await.unwrap());
        assert_eq!(answer["allowed"], false);
        let message = answer["status"]["message"].as_str().unwrap();
        assert_eq!(
            message,
            format!(
                "object is not a valid Pod: spec.containers must be an array of at most {} entries (a limit of this webhook), got {} entries",
                crate::core::engine::MAX_CONTAINERS,
                crate::core::engine::MAX_CONTAINERS + 1
            )
        );
    }

    #[tokio::test]
    async fn echoed_names_in_warnings_are_bounded() {
        let name = "n".repeat(1 << 20);
        let pod = serde_json::json!({"spec": {
            "containers": [{"name": name, "volumeMounts": [{"name": "certs", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount"}]}],
            "volumes": [{"name": "certs", "emptyDir": {}}]
        }});
        let answer = answer_of(&admission().review(&pod_review(pod)).await.unwrap());
        let warnings = answer["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1);
        let warning = warnings[0].as_str().unwrap();
        assert!(warning.len() <= MAX_ECHO, "{}", warning.len());
        assert!(warning.starts_with("container \"nnn") && warning.ends_with('…'));
    }

    /// Log output of what runs while the guard lives, on this thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn start(&self) -> tracing::subscriber::DefaultGuard {
            let writer = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_default(subscriber)
        }
        fn lines(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn every_line_about_a_review_names_it() {
        let logs = Captured::default();
        let _guard = logs.start();
        let mut pod = serde_json::json!({"metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "app"}]}});
        admission().review(&pod_review(pod.clone())).await.unwrap();
        pod["spec"]["serviceAccountName"] = 7.into();
        admission().review(&pod_review(pod)).await.unwrap();
        let lines = logs.lines();
        let mutated = lines.lines().find(|line| line.contains("mutated pod"));
        let rejected = lines.lines().find(|line| line.contains("rejected:"));
        for line in [mutated, rejected] {
            let line = line.unwrap_or_else(|| panic!("a line is missing:\n{lines}"));
            for field in [r#"uid=u"1"#, "namespace=payments", "pod=web-1"] {
                assert!(line.contains(field), "{field} not in {line}");
            }
        }
        assert!(lines.contains("service_account=default method="), "{lines}");
    }

    /// kube's serialization of the same answer, with the patch as base64 appended last: the
    /// form the webhook wrote before it encoded in one pass.
    fn through_kube(api_version: &str, decision: &Decision) -> Vec<u8> {
        use base64::Engine as _;
        let body = String::from_utf8_lossy(POD_REVIEW)
            .replace("admission.k8s.io/v1", api_version)
            .replace(r#"{"a":1}"#, "{}");
        let review: AdmissionReview<DynamicObject> = serde_json::from_str(&body).unwrap();
        let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
        let mut response = AdmissionResponse::from(&request);
        let mut patch_text = None;
        match decision {
            Decision::Deny(message) => {
                response = response.deny(message);
                response.result.code = 400;
                response.result.reason = "BadRequest".into();
            }
            Decision::Admit(admit) => {
                if let Some(patch) = &admit.patch {
                    response = response.with_patch(patch.operations().unwrap()).unwrap();
                    patch_text = response.patch.take();
                }
                if !admit.warnings.is_empty() {
                    response.warnings = Some(admit.warnings.clone());
                }
            }
        }
        let mut value = serde_json::to_value(response.into_review()).unwrap();
        if let (Some(patch), Some(Value::Object(response))) =
            (patch_text, value.get_mut("response"))
        {
            let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
            response.insert("patch".into(), Value::String(encoded));
        }
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn encode_writes_what_kube_writes_with_the_patch_as_base64_last() {
        let mut patch = Patch::default();
        patch.add(&["a"], Json::Str("é\"x"));
        let mutated = Mutated {
            method: Method::StsWebIdentity,
            role: String::new(),
            containers: vec![],
        };
        let decisions = [
            Decision::Admit(Admit::default()),
            Decision::Admit(Admit {
                patch: Some(patch.clone()),
                warnings: vec!["careful \"here\"".into()],
                mutated: Some(mutated.clone()),
            }),
            Decision::Admit(Admit {
                patch: Some(patch),
                warnings: vec![],
                mutated: Some(mutated),
            }),
            Decision::Admit(Admit {
                patch: None,
                warnings: vec!["only a warning".into()],
                mutated: None,
            }),
            Decision::Deny("object is not a valid Pod: spec must be an object, got null".into()),
        ];
        for api_version in SUPPORTED_API_VERSIONS {
            for decision in &decisions {
                assert_eq!(
                    String::from_utf8(encode(api_version, "u\"1", decision)).unwrap(),
                    String::from_utf8(through_kube(api_version, decision)).unwrap()
                );
            }
        }
        let empty = Decision::Admit(Admit {
            patch: Some(Patch::default()),
            ..Admit::default()
        });
        let text = String::from_utf8(encode("admission.k8s.io/v1", "u", &empty)).unwrap();
        assert!(
            text.ends_with(r#""patchType":"JSONPatch","patch":"W10="}}"#),
            "{text}"
        );
    }
}
