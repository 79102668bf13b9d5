//! One AdmissionReview in, one out: decode the review, borrowing from the body and reading
//! only the fields the engine needs (the pod by the engine's scanner, the rest by serde; see
//! `decode`); look up the ServiceAccount; decide in the pure core (`decision::decide`);
//! encode the answer in one pass. No HTTP here; the router turns a `BadReview` into a 400.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::Level;

use crate::core::decision::{
    decide, node_service_account, pod_names, random_jitter, Admit, Decision, Method,
};
use crate::core::engine::{read_pod, Node, Scanner, POD};
use crate::core::identity::{IdentityInputs, ServiceAccountAnnotations, ServiceAccountNeed};
use crate::core::json::{bound_owned, bounded, bounded_list, MAX_ECHO};
use crate::core::settings::MutationSettings;
use crate::ops::metrics::Metrics;
use crate::sources::service_accounts::ServiceAccountLookup;
use crate::sources::WatchedConfig;

const SUPPORTED_API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

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

/// The body is not an AdmissionReview with a request; the text is one line for a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

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
        let mut remainder = String::new();
        let review = decode(body, &mut remainder)?;
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

/// The fields of an AdmissionReview the webhook reads.
struct Review<'a> {
    /// One of [`SUPPORTED_API_VERSIONS`], echoed in the answer.
    api_version: &'static str,
    request: Request<'a>,
}

/// The request's typed fields, as strict as kube's `AdmissionRequest`, with the object read
/// as a pod (`mutate::read_pod`) and `oldObject`, `options` and unknown fields skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: Gvk<'a>,
    #[serde(borrow)]
    resource: Gvr<'a>,
    #[serde(default, borrow)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    #[allow(dead_code)] // read to check its shape, as kube does
    request_kind: Option<Gvk<'a>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    request_resource: Option<Gvr<'a>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    request_sub_resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
    operation: Operation,
    #[allow(dead_code)]
    user_info: UserInfo,
    #[serde(default, borrow, deserialize_with = "pod_object")]
    object: Option<Node<'a>>,
    #[serde(default)]
    #[allow(dead_code)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct Gvk<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Gvr<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    resource: Cow<'a, str>,
}

fn pod_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Node<'de>>, D::Error> {
    match read_pod(d)? {
        Node::Null => Ok(None),
        pod => Ok(Some(pod)),
    }
}

impl Request<'_> {
    /// Only CREATE of core/v1 Pods (not a subresource) is mutated.
    fn is_pod_creation(&self) -> bool {
        let (kind, resource) = (&self.kind, &self.resource);
        self.operation == Operation::Create
            && kind.group.is_empty()
            && kind.version == "v1"
            && kind.kind == "Pod"
            && resource.group.is_empty()
            && resource.version == "v1"
            && resource.resource == "pods"
            && self.sub_resource.as_deref().unwrap_or("").is_empty()
    }
}

/// Reads the review, fastest way first:
/// 1. The scanner reads the pod (the bulk of the body) and checks the whole body; serde then
///    reads the rest of the review from a copy with the pod cut out (`remainder`).
/// 2. Where the scanner declines (a number where it keeps a value, say), serde reads it all in
///    one pass.
/// 3. A review that is not well formed is read again in two steps to say what is wrong: the
///    envelope (apiVersion, kind, a request object) first, so the first thing wrong is what
///    the message names, then the request with its field path.
fn decode<'a>(body: &'a [u8], remainder: &'a mut String) -> Result<Review<'a>, BadReview> {
    // One vectorised UTF-8 check of the whole body is cheaper than serde_json's check of
    // every string read from a byte slice; a body that is not UTF-8 gets the slow path's
    // message.
    if let Ok(text) = simdutf8::basic::from_utf8(body) {
        let scanned = scan_review(text);
        let (rest, pod) = match scanned {
            Some(Some((span, pod))) => {
                remainder.clear();
                remainder.reserve(text.len() - span.len() + 4);
                remainder.push_str(text.get(..span.start).unwrap_or_default());
                remainder.push_str("null");
                remainder.push_str(text.get(span.end..).unwrap_or_default());
                (remainder.as_str(), Some(pod))
            }
            _ => (text, None),
        };
        let mut deserializer = serde_json::Deserializer::from_str(rest);
        if let Ok(Top::Object(envelope)) =
            read_envelope::<ObjectOnly<Request<'_>>, _>(&mut deserializer)
        {
            if let Ok((api_version, ObjectOnly(mut request))) = check_envelope(envelope) {
                if let Some(pod) = pod {
                    request.object = Some(pod).filter(|pod| *pod != Node::Null);
                }
                return Ok(Review {
                    api_version,
                    request,
                });
            }
        }
    }
    let envelope =
        match read_envelope::<&RawValue, _>(&mut serde_json::Deserializer::from_slice(body)) {
            Ok(Top::Object(envelope)) => envelope,
            Ok(Top::Other(got)) => {
                return Err(not_review(format!("expected a JSON object, got {got}")))
            }
            Err(err) => return Err(not_review(format!("invalid JSON: {err}"))),
        };
    let (api_version, request) = check_envelope(envelope)?;
    if !request.get().starts_with('{') {
        return Err(no_request());
    }
    let mut deserializer = serde_json::Deserializer::from_str(request.get());
    let request: Request<'_> =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let at = if path == "." {
                "request".to_string()
            } else {
                format!("request.{path}")
            };
            not_review(format!("{at}: {}", err.inner()))
        })?;
    Ok(Review {
        api_version,
        request,
    })
}

/// The pod of a review and where it lies in the text, read by the scanner: `None` when it
/// declines, `Some(None)` for a review without a pod. It checks the whole text, so the part
/// serde reads after the pod is cut out is what serde would have read. A repeated `request`,
/// or `object` in it, is declined: serde keeps or refuses those in ways not worth repeating.
fn scan_review(text: &str) -> Option<Option<(Range<usize>, Node<'_>)>> {
    let mut scanner = Scanner::new(text);
    let (mut requests, mut pod) = (0, None);
    scanner.object(|scanner, key| {
        if key != "request" {
            return scanner.skip_value();
        }
        requests += 1;
        let mut objects = 0;
        scanner.object(|scanner, key| {
            if key != "object" {
                return scanner.skip_value();
            }
            objects += 1;
            let start = scanner.value_start()?;
            let node = scanner.shaped(&POD)?;
            pod = Some((start..scanner.position(), node));
            Some(())
        })?;
        (requests == 1 && objects <= 1).then_some(())
    })?;
    scanner.end()?;
    Some(pod)
}

fn not_review(why: String) -> BadReview {
    BadReview(bound_owned(
        format!("body is not an AdmissionReview: {why}"),
        MAX_ECHO,
    ))
}

fn no_request() -> BadReview {
    BadReview("AdmissionReview has no request object".into())
}

fn read_envelope<'a, R: Deserialize<'a>, S: serde_json::de::Read<'a>>(
    deserializer: &mut serde_json::Deserializer<S>,
) -> Result<Top<'a, R>, serde_json::Error> {
    let envelope = deserializer.deserialize_any(EnvelopeVisitor(PhantomData))?;
    deserializer.end()?;
    Ok(envelope)
}

/// The envelope's checks, in the order their messages take precedence.
fn check_envelope<R>(envelope: Envelope<'_, R>) -> Result<(&'static str, R), BadReview> {
    let api_version = match &envelope.api_version {
        Seen::Str(version) => SUPPORTED_API_VERSIONS
            .into_iter()
            .find(|supported| supported == version),
        _ => None,
    };
    let Some(api_version) = api_version else {
        return Err(not_review(format!(
            "apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, got {}",
            envelope.api_version
        )));
    };
    if !matches!(&envelope.kind, Seen::Str(kind) if kind == "AdmissionReview") {
        return Err(not_review(format!(
            "kind must be AdmissionReview, got {}",
            envelope.kind
        )));
    }
    let request = envelope.request.ok_or_else(no_request)?;
    Ok((api_version, request))
}

/// A struct read only from a JSON object (serde's derive also takes an array).
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(PhantomData)).map(ObjectOnly)
    }
}

/// The top level of the body.
enum Top<'a, R> {
    Object(Envelope<'a, R>),
    Other(&'static str),
}

struct Envelope<'a, R> {
    api_version: Seen<'a>,
    kind: Seen<'a>,
    request: Option<R>,
}

/// A member read only to check it: its string value, or what it was instead.
#[derive(Default)]
enum Seen<'a> {
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Missing => f.write_str("none"),
            Seen::Str(text) => write!(f, "{:?}", bounded(text, MAX_ECHO)),
            Seen::Other(what) => f.write_str(what),
        }
    }
}

struct EnvelopeVisitor<R>(PhantomData<R>);

impl<'de, R: Deserialize<'de>> Visitor<'de> for EnvelopeVisitor<R> {
    type Value = Top<'de, R>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionReview")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope {
            api_version: Seen::Missing,
            kind: Seen::Missing,
            request: None,
        };
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::ApiVersion => envelope.api_version = map.next_value_seed(SeenSeed)?,
                EnvelopeKey::Kind => envelope.kind = map.next_value_seed(SeenSeed)?,
                EnvelopeKey::Request => envelope.request = map.next_value()?,
                EnvelopeKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Top::Object(envelope))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other("an array"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Top::Other("a string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Top::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Top::Other("a number"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Top::Other("null"))
    }
}

/// A top-level key, matched without being copied.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum EnvelopeKey {
    ApiVersion,
    Kind,
    Request,
    #[serde(other)]
    Other,
}

struct SeenSeed;

impl<'de> DeserializeSeed<'de> for SeenSeed {
    type Value = Seen<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SeenSeed {
    type Value = Seen<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Seen<'de>, E> {
        Ok(Seen::Str(Cow::Borrowed(text)))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Seen<'de>, E> {
        Ok(Seen::Str(Cow::Owned(text.to_owned())))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Seen::Other("an object"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Seen::Other("an array"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Seen<'de>, E> {
        Ok(Seen::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Seen<'de>, E> {
        Ok(Seen::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Seen<'de>, E> {
        Ok(Seen::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Seen<'de>, E> {
        Ok(Seen::Other("a number"))
    }
    fn visit_unit<E>(self) -> Result<Seen<'de>, E> {
        Ok(Seen::Other("null"))
    }
}

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

    const POD_REVIEW: &[u8] =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
        "uid":"u\"1","kind":{"group":"","version":"v1","kind":"Pod"},
        "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
        "userInfo":{},"object":{"metadata":{"labels":{"a":1}},"spec":{}}}}"#;

    #[test]
    fn decode_keeps_v1beta1_api_version_and_the_object() {
        let body = String::from_utf8_lossy(POD_REVIEW).replace("/v1\"", "/v1beta1\"");
        let mut remainder = String::new();
        let review = decode(body.as_bytes(), &mut remainder).unwrap();
        assert_eq!(review.api_version, "admission.k8s.io/v1beta1");
        assert_eq!(review.request.uid, "u\"1");
        assert!(review.request.is_pod_creation());
        let pod = review.request.object.as_ref().unwrap();
        let labels = pod.get("metadata").unwrap().get("labels").unwrap();
        assert_eq!(labels.get("a"), Some(&Node::Number), "object kept as sent");
    }

    #[test]
    fn a_scanned_review_is_read_as_serde_alone_reads_it() {
        let body = String::from_utf8_lossy(POD_REVIEW).replace(r#"{"a":1}"#, r#"{"a":"b"}"#);
        assert!(matches!(scan_review(&body), Some(Some(_))), "scanned");
        let mut remainder = String::new();
        let review = decode(body.as_bytes(), &mut remainder).unwrap();
        let whole: Value = serde_json::from_str(&body).unwrap();
        let object = serde_json::to_string(&whole["request"]["object"]).unwrap();
        let by_serde = read_pod(&mut serde_json::Deserializer::from_str(&object)).unwrap();
        assert_eq!(review.request.object.as_ref(), Some(&by_serde));
        assert_eq!(review.request.uid, "u\"1");
        assert!(review.request.is_pod_creation());

        let null = body.replace(
            r#""object":{"metadata":{"labels":{"a":"b"}},"spec":{}}"#,
            r#""object":null"#,
        );
        assert_ne!(null, body);
        assert!(decode(null.as_bytes(), &mut String::new())
            .unwrap()
            .request
            .object
            .is_none());
        let twice = body.replace(r#""object":"#, r#""object":{},"object":"#);
        assert_eq!(scan_review(&twice), None, "declined");
        let err = decode(twice.as_bytes(), &mut String::new())
            .err()
            .unwrap()
            .0;
        assert!(err.contains("duplicate field `object`"), "{err}");
    }

    #[test]
    fn decode_names_what_is_wrong() {
        for (body, expected) in [
            (&b"{"[..], "invalid JSON"),
            (b"{} x", "invalid JSON"),
            (b"[]", "expected a JSON object"),
            (b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}", "apiVersion must be"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Pod\"}", "kind must be AdmissionReview"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "no request"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":[]}", "no request"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":1}}", "request.uid"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}}", "request: missing field `uid`"),
        ] {
            let err = decode(body, &mut String::new()).err().unwrap().0;
            assert!(err.contains(expected), "{err} lacks {expected}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_even_in_a_field_never_read() {
        let text = String::from_utf8_lossy(POD_REVIEW).replace(
            r#""userInfo":{}"#,
            r#""userInfo":{"username":"BAD"},"oldObject":{"x":"BAD"}"#,
        );
        let mut body = text.into_bytes();
        while let Some(i) = body.windows(3).position(|w| w == b"BAD") {
            body[i] = 0xff;
        }
        let err = decode(&body, &mut String::new()).err().expect("refused").0;
        assert!(
            err.contains("invalid JSON: invalid unicode code point"),
            "{err}"
        );
        body = String::from_utf8_lossy(&body)
            .replace('\u{fffd}', "O")
            .into_bytes();
        assert!(
            decode(&body, &mut String::new()).is_ok(),
            "the same review in UTF-8 is read"
        );
    }

    #[test]
    fn decode_names_the_type_of_a_non_string_api_version_or_kind() {
        for (body, expected) in [
            (
                &br#"{"apiVersion":1,"kind":"AdmissionReview"}"#[..],
                "got a number",
            ),
            (br#"{"kind":"AdmissionReview"}"#, "got none"),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":["AdmissionReview"]}"#,
                "got an array",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":null}"#,
                "got null",
            ),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#,
                "got \"Pod\"",
            ),
        ] {
            let err = decode(body, &mut String::new()).err().unwrap().0;
            assert!(
                err.ends_with(expected),
                "{err} does not end with {expected}"
            );
        }
    }

    #[test]
    fn decode_is_as_strict_as_kube_on_the_request_fields() {
        let review = |request: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#
            )
        };
        let good = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{"username":"x"},"oldObject":{"any":[1]},"options":5}"#;
        let cases = [
            (good.to_string(), true),
            (good.replace("\"CREATE\"", "\"MAKE\""), false),
            (
                good.replace(",\"userInfo\":{\"username\":\"x\"}", ""),
                false,
            ),
            (
                good.replace("{\"username\":\"x\"}", "{\"username\":5}"),
                false,
            ),
            (
                good.replace("\"resource\":\"pods\"", "\"resource\":1"),
                false,
            ),
            (good.replace("\"options\":5", "\"dryRun\":\"yes\""), false),
        ];
        for (request, ok) in cases {
            let body = review(&request);
            let ours = decode(body.as_bytes(), &mut String::new()).is_ok();
            let kube = serde_json::from_str::<AdmissionReview<DynamicObject>>(&body)
                .map(drop)
                .is_ok();
            assert_eq!(ours, ok, "{request}");
            assert_eq!(kube, ok, "kube disagrees on {request}");
        }
    }

    #[test]
    fn a_long_echo_in_a_message_is_bounded() {
        let body = format!(
            r#"{{"apiVersion":"{}","kind":"AdmissionReview"}}"#,
            "v".repeat(1 << 20)
        );
        let err = decode(body.as_bytes(), &mut String::new()).err().unwrap().0;
        assert!(err.len() <= MAX_ECHO, "{}", err.len());
        let body = String::from_utf8_lossy(POD_REVIEW)
            .replace("\"CREATE\"", &format!("\"{}\"", "X".repeat(1 << 20)));
        let err = decode(body.as_bytes(), &mut String::new()).err().unwrap().0;
        assert!(
            err.len() <= MAX_ECHO && err.contains("request.operation"),
            "{err}"
        );
    }

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
