//! One AdmissionReview in, one out: decode the review (`server::review`), look up the
//! ServiceAccount, decide in the pure core (`decision::decide`), encode the answer in one
//! pass. No HTTP here; the router turns a `BadReview` into a 400.

use std::ops::RangeInclusive;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use tracing::Level;

pub use super::review::BadReview;

use super::review::{decode, Object, Review};
use crate::core::decision::{decide, Decision, Method};
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

/// The answer to one review.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// The pod is not a valid Pod in a field the webhook reads: `allowed: false` with this
    /// message (bounded in length). The API server never sends such a pod.
    Deny(String),
    Admit(Decision),
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
        let answer = self.respond(&review).await;
        Ok(encode(review.api_version, &review.uid, &answer))
    }

    /// The I/O around `decide`: the ServiceAccount lookup before it, logs and counters after.
    async fn respond(&self, review: &Review<'_>) -> Answer {
        if !review.pod_creation {
            return Answer::Admit(Decision::default());
        }
        let request_namespace = review.namespace.as_deref().filter(|ns| !ns.is_empty());
        let mut about = About {
            uid: &review.uid,
            namespace: request_namespace.unwrap_or_default(),
            pod: "",
            service_account: "",
        };
        let pod = match &review.object {
            Object::Pod(pod) => pod,
            Object::Invalid(err) => {
                return rejected(&about, bound_owned(err.to_string(), MAX_ECHO))
            }
            Object::Absent => {
                return rejected(
                    &about,
                    "the review of a pod creation holds no object".into(),
                )
            }
            Object::TooLarge => {
                let warning = "the pod's lists and maps are too large for this webhook to read: left unchanged, without AWS credentials";
                review_event!(Level::WARN, about, "{warning}");
                return Answer::Admit(Decision {
                    warnings: vec![warning.into()],
                    ..Decision::default()
                });
            }
        };
        let namespace = request_namespace.unwrap_or(pod.namespace());
        about.namespace = namespace;
        about.pod = pod.name();
        about.service_account = pod.service_account();

        let annotations = self.annotations(namespace, about.service_account).await;
        // Read after the lookup, which may wait: the answer uses the sources current now,
        // and no guard is held across an await.
        let container_credentials = self.watched_config.container_credentials.load();
        let mapping = self.watched_config.mapping.load();
        let inputs = IdentityInputs {
            service_account: annotations.as_deref(),
            mapping: mapping.as_deref(),
            container_credentials: container_credentials.as_deref(),
        };
        let decision = decide(pod, namespace, inputs, &self.settings, &mut random_jitter);
        for warning in &decision.warnings {
            review_event!(Level::WARN, about, "{warning}");
        }
        match &decision.mutated {
            Some(mutated) => {
                review_event!(
                    Level::INFO,
                    about,
                    method = mutated.method.label(),
                    role = %bounded(&mutated.role, MAX_ECHO),
                    containers = %bounded_list(&mutated.containers, MAX_ECHO),
                    "mutated pod"
                );
                if mutated.method != Method::RegionOnly {
                    self.metrics
                        .pods_mutated(mutated.method == Method::ContainerCredentials)
                        .inc();
                }
            }
            None => review_event!(
                Level::DEBUG,
                about,
                "pod not mutated: no identity for its ServiceAccount, or already mutated"
            ),
        }
        Answer::Admit(decision)
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

/// Jitter from the thread-local random generator: the randomness the core is handed.
fn random_jitter(range: RangeInclusive<i64>) -> i64 {
    rand::random_range(range)
}

/// Which review a log line is about. Every line names it in fields of its own rather than
/// in a span: a span per review cost about as much CPU as the review's log line.
struct About<'a> {
    uid: &'a str,
    namespace: &'a str,
    pod: &'a str,
    /// Empty until read from the pod.
    service_account: &'a str,
}

/// The denial of a review with `message`, logged as every denial is.
fn rejected(about: &About<'_>, message: String) -> Answer {
    review_event!(Level::WARN, about, "rejected: {message}");
    Answer::Deny(message)
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
fn encode(api_version: &str, uid: &str, answer: &Answer) -> Vec<u8> {
    // Room for the patch in base64 from the start: a large one would otherwise be copied
    // as the answer grows around it.
    let patch_base64_len = match answer {
        Answer::Admit(Decision {
            patch: Some(patch), ..
        }) => base64::encoded_len(patch.as_bytes().len(), true).unwrap_or(0),
        _ => 0,
    };
    let mut out = Vec::with_capacity(256 + uid.len() + patch_base64_len);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(api_version.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    write_json(&mut out, uid);
    match answer {
        Answer::Deny(message) => {
            out.extend_from_slice(b",\"allowed\":false,\"status\":{\"code\":400,\"message\":");
            write_json(&mut out, message);
            out.extend_from_slice(b",\"reason\":\"BadRequest\"}");
        }
        Answer::Admit(admit) => {
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
                let start = out.len();
                out.resize(start + patch_base64_len, 0);
                let written = STANDARD
                    .encode_slice(patch.as_bytes(), &mut out[start..])
                    .unwrap_or(0);
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
    async fn many_containers_and_variables_are_mutated_not_refused() {
        let env: Vec<Value> = (0..5000)
            .map(|i| serde_json::json!({"name": format!("E{i}"), "value": "v"}))
            .collect();
        let mut containers: Vec<Value> = (0..300)
            .map(|i| serde_json::json!({"name": format!("c{i}"), "image": "app"}))
            .collect();
        containers[0]["env"] = env.into();
        let body = pod_review(serde_json::json!({"spec": {"containers": containers}}));
        let answer = answer_of(&admission().review(&body).await.unwrap());
        assert_eq!(answer["allowed"], true, "{answer}");
        assert!(answer["patch"].is_string(), "{answer}");
    }

    #[tokio::test]
    async fn a_pod_of_countless_tiny_entries_is_admitted_unchanged_with_a_warning() {
        let containers = vec![serde_json::json!({}); 200_000];
        let body = pod_review(serde_json::json!({"spec": {"containers": containers}}));
        let answer = answer_of(&admission().review(&body).await.unwrap());
        assert_eq!(answer["allowed"], true, "{answer}");
        assert!(answer.get("patch").is_none(), "{answer}");
        let warning = answer["warnings"][0].as_str().unwrap();
        assert!(warning.contains("left unchanged"), "{warning}");
    }

    #[tokio::test]
    async fn a_malformed_pod_is_refused_naming_the_field() {
        let body = pod_review(
            serde_json::json!({"spec": {"containers": [{"name": "a", "env": [{"name": 5}]}]}}),
        );
        let answer = answer_of(&admission().review(&body).await.unwrap());
        assert_eq!(answer["allowed"], false);
        assert_eq!(answer["status"]["code"], 400);
        assert_eq!(
            answer["status"]["message"],
            "object is not a valid Pod: spec.containers[0].env[0].name: invalid type: integer `5`, expected a string"
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
        // A pod that cannot be read is named by its review alone.
        for (line, fields) in [
            (
                mutated,
                &[r#"uid=u"1"#, "namespace=payments", "pod=web-1"][..],
            ),
            (rejected, &[r#"uid=u"1"#, "namespace=payments"]),
        ] {
            let line = line.unwrap_or_else(|| panic!("a line is missing:\n{lines}"));
            for field in fields {
                assert!(line.contains(field), "{field} not in {line}");
            }
        }
        assert!(lines.contains("service_account=default method="), "{lines}");
    }

    /// kube's serialization of the same answer, with the patch as base64 appended last: the
    /// form the webhook wrote before it encoded in one pass.
    fn through_kube(api_version: &str, answer: &Answer) -> Vec<u8> {
        use base64::Engine as _;
        let body = String::from_utf8_lossy(POD_REVIEW).replace("admission.k8s.io/v1", api_version);
        let review: AdmissionReview<DynamicObject> = serde_json::from_str(&body).unwrap();
        let request: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
        let mut response = AdmissionResponse::from(&request);
        let mut patch_text = None;
        match answer {
            Answer::Deny(message) => {
                response = response.deny(message);
                response.result.code = 400;
                response.result.reason = "BadRequest".into();
            }
            Answer::Admit(admit) => {
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
        let answers = [
            Answer::Admit(Decision::default()),
            Answer::Admit(Decision {
                patch: Some(patch.clone()),
                warnings: vec!["careful \"here\"".into()],
                mutated: Some(mutated.clone()),
            }),
            Answer::Admit(Decision {
                patch: Some(patch),
                warnings: vec![],
                mutated: Some(mutated),
            }),
            Answer::Admit(Decision {
                patch: None,
                warnings: vec!["only a warning".into()],
                mutated: None,
            }),
            Answer::Deny(
                "object is not a valid Pod: spec: invalid type: null, expected an object".into(),
            ),
        ];
        for api_version in SUPPORTED_API_VERSIONS {
            for answer in &answers {
                assert_eq!(
                    String::from_utf8(encode(api_version, "u\"1", answer)).unwrap(),
                    String::from_utf8(through_kube(api_version, answer)).unwrap()
                );
            }
        }
        let empty = Answer::Admit(Decision {
            patch: Some(Patch::default()),
            ..Decision::default()
        });
        let text = String::from_utf8(encode("admission.k8s.io/v1", "u", &empty)).unwrap();
        assert!(
            text.ends_with(r#""patchType":"JSONPatch","patch":"W10="}}"#),
            "{text}"
        );
    }
}
