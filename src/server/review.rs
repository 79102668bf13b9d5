//! An AdmissionReview body read into what the webhook uses, by serde's derive, borrowing from
//! the body: the request's uid, kind, resource, operation and namespace, and the pod
//! ([`Pod`]). Fields the webhook does not use are not read.
//!
//! A body is read once. Only when that fails is it read again, tracking where: to tell a body
//! that is no AdmissionReview (a 400 naming the field) from a review whose pod is malformed
//! (`allowed: false` naming the field) or too unusual to read within its memory bound (left
//! unchanged, with a warning).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::core::json::{bound_owned, bounded, MAX_ECHO};
use crate::core::pod::{
    leading_json_type, object, without_position, Allowance, FromObject, Pod, PodError, Str,
};

/// What reading may take for a pod's lists and maps, per byte of body: the body budget charges
/// a body being answered at `limits::PARSED_BODY_FACTOR` (10) times its size, and a list's
/// storage may be up to twice what is charged for it (its capacity doubles as it grows).
const LIST_BYTES_PER_BODY_BYTE: usize = 4;

/// The AdmissionReview versions the API server may send; the answer echoes the request's.
pub(super) const SUPPORTED_API_VERSIONS: [&str; 2] =
    ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The body is not an AdmissionReview with a request; the text is one line for a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

/// A review, read.
#[derive(Debug)]
pub(super) struct Review<'a> {
    /// One of [`SUPPORTED_API_VERSIONS`], echoed in the answer.
    pub api_version: &'static str,
    pub uid: Str<'a>,
    /// The request's namespace, if it names one.
    pub namespace: Option<Str<'a>>,
    /// Only CREATE of core/v1 Pods (not a subresource) is mutated.
    pub pod_creation: bool,
    pub object: Object<'a>,
}

/// The request's object.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per review, held on the stack while it is answered
pub(super) enum Object<'a> {
    Absent,
    Pod(Pod<'a>),
    /// Not a valid Pod in a field the webhook reads.
    Invalid(PodError),
    /// Its lists and maps would take more memory than its size allows ([`Allowance`]).
    TooLarge,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an AdmissionReview object")]
struct Envelope<'a, O> {
    #[serde(borrow)]
    api_version: Str<'a>,
    #[serde(borrow)]
    kind: Str<'a>,
    #[serde(borrow, deserialize_with = "object", bound = "O: Deserialize<'de>")]
    request: Request<'a, O>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
struct Request<'a, O> {
    #[serde(borrow)]
    uid: Str<'a>,
    #[serde(borrow, deserialize_with = "object")]
    kind: GroupVersionKind<'a>,
    #[serde(borrow, deserialize_with = "object")]
    resource: GroupVersionResource<'a>,
    #[serde(borrow, default)]
    sub_resource: Option<Str<'a>>,
    #[serde(borrow, default)]
    namespace: Option<Str<'a>>,
    #[serde(borrow)]
    operation: Str<'a>,
    // A function rather than `default`, which would ask `O: Default` of the derive.
    #[serde(default = "Option::default")]
    object: Option<O>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object")]
struct GroupVersionKind<'a> {
    #[serde(borrow)]
    group: Str<'a>,
    #[serde(borrow)]
    version: Str<'a>,
    #[serde(borrow)]
    kind: Str<'a>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object")]
struct GroupVersionResource<'a> {
    #[serde(borrow)]
    group: Str<'a>,
    #[serde(borrow)]
    version: Str<'a>,
    #[serde(borrow)]
    resource: Str<'a>,
}

impl<O> Request<'_, O> {
    fn is_pod_creation(&self) -> bool {
        let (kind, resource) = (&self.kind, &self.resource);
        &*self.operation == "CREATE"
            && kind.group.is_empty()
            && &*kind.version == "v1"
            && &*kind.kind == "Pod"
            && resource.group.is_empty()
            && &*resource.version == "v1"
            && &*resource.resource == "pods"
            && self.sub_resource.as_deref().unwrap_or_default().is_empty()
    }
}

impl<'a> Review<'a> {
    /// The review, once its apiVersion and kind are checked.
    fn new<O>(
        envelope: Envelope<'a, O>,
        object: impl FnOnce(O) -> Object<'a>,
    ) -> Result<Self, BadReview> {
        let Some(api_version) = SUPPORTED_API_VERSIONS
            .into_iter()
            .find(|supported| *supported == &*envelope.api_version)
        else {
            return Err(not_review(format!(
                "apiVersion must be {} or {}, got {:?}",
                SUPPORTED_API_VERSIONS[0],
                SUPPORTED_API_VERSIONS[1],
                bounded(&envelope.api_version, MAX_ECHO)
            )));
        };
        if &*envelope.kind != "AdmissionReview" {
            return Err(not_review(format!(
                "kind must be AdmissionReview, got {:?}",
                bounded(&envelope.kind, MAX_ECHO)
            )));
        }
        let request = envelope.request;
        Ok(Self {
            api_version,
            pod_creation: request.is_pod_creation(),
            uid: request.uid,
            namespace: request.namespace,
            object: request.object.map_or(Object::Absent, object),
        })
    }
}

/// Reads the review; `Err` only when the body is no AdmissionReview with a request.
pub(super) fn decode(body: &[u8]) -> Result<Review<'_>, BadReview> {
    let text = std::str::from_utf8(body)
        .map_err(|err| not_review(format!("invalid JSON: not UTF-8 ({err})")))?;
    // serde's derive would read an array as a struct, field by field in order (`FromObject`
    // guards the fields within).
    if let Some(other) = leading_json_type(text).filter(|kind| *kind != "an object") {
        return Err(not_review(format!("expected a JSON object, got {other}")));
    }
    let allowance = text.len().saturating_mul(LIST_BYTES_PER_BODY_BYTE);
    {
        let _bound = Allowance::new(allowance);
        if let Ok(envelope) = serde_json::from_str::<Envelope<'_, FromObject<Pod<'_>>>>(text) {
            return Review::new(envelope, |FromObject(pod)| Object::Pod(pod));
        }
    }
    // Read again, tracking where it went wrong: the envelope first, then the pod alone.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let envelope = serde_path_to_error::deserialize::<_, Envelope<'_, &RawValue>>(
        &mut deserializer,
    )
    .map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = without_position(&inner.to_string());
        not_review(match path.as_str() {
            _ if inner.is_syntax() || inner.is_eof() => format!("invalid JSON: {inner}"),
            "." => message,
            path => format!("{path}: {message}"),
        })
    })?;
    deserializer
        .end()
        .map_err(|err| not_review(format!("invalid JSON: {err}")))?;
    Review::new(envelope, |raw| {
        let bound = Allowance::new(allowance);
        match Pod::from_json(raw.get()) {
            Ok(pod) => Object::Pod(pod),
            Err(_) if bound.spent() => Object::TooLarge,
            Err(err) => Object::Invalid(err),
        }
    })
}

fn not_review(why: String) -> BadReview {
    BadReview(bound_owned(
        format!("body is not an AdmissionReview: {why}"),
        MAX_ECHO,
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use kube::core::admission::AdmissionReview;
    use kube::core::DynamicObject;

    use super::*;

    pub(in crate::server) const POD_REVIEW: &[u8] =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
        "uid":"u\"1","kind":{"group":"","version":"v1","kind":"Pod"},
        "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
        "userInfo":{},"object":{"metadata":{"labels":{"a":"b"}},"spec":{}}}}"#;

    fn pod_of<'a>(review: &'a Review<'_>) -> &'a Pod<'a> {
        match &review.object {
            Object::Pod(pod) => pod,
            other => panic!("no pod: {other:?}"),
        }
    }

    #[test]
    fn decode_keeps_v1beta1_api_version_and_the_object() {
        let body = String::from_utf8_lossy(POD_REVIEW).replace("/v1\"", "/v1beta1\"");
        let review = decode(body.as_bytes()).unwrap();
        assert_eq!(review.api_version, "admission.k8s.io/v1beta1");
        assert_eq!(&*review.uid, "u\"1");
        assert!(review.pod_creation);
        assert_eq!(pod_of(&review).label("a"), Some("b"));
    }

    #[test]
    fn decode_names_what_is_wrong() {
        for (body, expected) in [
            (&b"{"[..], "invalid JSON"),
            (b"{} x", "missing field `apiVersion`"),
            (b"[]", "expected a JSON object, got an array"),
            (b" 7", "expected a JSON object, got a number"),
            (b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"request\":{}}", "request: missing field `uid`"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "missing field `request`"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":[]}", "request: invalid type: sequence, expected an object"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"kind\":[\"\",\"v1\",\"Pod\"]}}", "request.kind: invalid type: sequence, expected an object"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":1}}", "request.uid: invalid type: integer `1`, expected a string"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}}", "request: missing field `uid`"),
            (b"{\"apiVersion\":1}", "apiVersion: invalid type: integer `1`, expected a string"),
            (b"\xff", "invalid JSON: not UTF-8"),
        ] {
            let err = decode(body).err().unwrap().0;
            assert!(err.starts_with("body is not an AdmissionReview: "), "{err}");
            assert!(err.contains(expected), "{err} lacks {expected}");
            assert!(!err.contains('\n'), "one line: {err}");
            // Where the text stops being JSON is worth saying; elsewhere a field is named.
            assert!(err.contains("invalid JSON") || !err.contains(" at line "), "{err}");
        }
    }

    #[test]
    fn a_review_of_another_version_or_kind_is_refused_naming_it() {
        let text = String::from_utf8_lossy(POD_REVIEW);
        for (from, to, expected) in [
            (
                "admission.k8s.io/v1",
                "v1",
                "apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, got \"v1\"",
            ),
            (
                "\"AdmissionReview\"",
                "\"Pod\"",
                "kind must be AdmissionReview, got \"Pod\"",
            ),
        ] {
            let body = text.replacen(from, to, 1);
            let err = decode(body.as_bytes()).err().unwrap().0;
            assert_eq!(err, format!("body is not an AdmissionReview: {expected}"));
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_even_in_a_field_never_read() {
        let mut body = String::from_utf8_lossy(POD_REVIEW)
            .replace(r#""userInfo":{}"#, r#""userInfo":{"username":"BAD"}"#)
            .into_bytes();
        let at = body.windows(3).position(|w| w == b"BAD").unwrap();
        body[at] = 0xff;
        let err = decode(&body).expect_err("refused").0;
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn a_malformed_pod_is_named_and_the_review_still_read() {
        let review_of = |object: &str| {
            String::from_utf8_lossy(POD_REVIEW)
                .replace(r#"{"metadata":{"labels":{"a":"b"}},"spec":{}}"#, object)
        };
        for (object, expected) in [
            (
                r#"{"spec":{"containers":[{"name":["x"]}]}}"#,
                "spec.containers[0].name: invalid type: sequence, expected a string",
            ),
            // An array where an object belongs is no object, however its items would
            // fill the object's fields in order.
            (r#"[null,{}]"#, "expected an object, got an array"),
            (
                r#"{"spec":[]}"#,
                "spec: invalid type: sequence, expected an object",
            ),
            (
                r#"{"spec":{"containers":[[]]}}"#,
                "spec.containers[0]: invalid type: sequence, expected an object",
            ),
        ] {
            let body = review_of(object);
            let review = decode(body.as_bytes()).unwrap();
            assert_eq!(&*review.uid, "u\"1");
            let Object::Invalid(err) = &review.object else {
                panic!("{object}: {:?}", review.object);
            };
            assert_eq!(
                err.to_string(),
                format!("object is not a valid Pod: {expected}")
            );
        }
    }

    #[test]
    fn a_pod_of_countless_tiny_entries_is_too_large_not_malformed() {
        let containers = "{},".repeat(100_000);
        let body = String::from_utf8_lossy(POD_REVIEW).replace(
            r#""spec":{}"#,
            &format!(r#""spec":{{"containers":[{containers}{{}}]}}"#),
        );
        let review = decode(body.as_bytes()).unwrap();
        assert!(
            matches!(review.object, Object::TooLarge),
            "{:?}",
            review.object
        );
        assert!(review.pod_creation);
    }

    #[test]
    fn only_pod_creations_are_pod_creations() {
        let base = String::from_utf8_lossy(POD_REVIEW).into_owned();
        for (from, to, creation) in [
            ("", "", true),
            (r#""CREATE""#, r#""UPDATE""#, false),
            (r#""kind":"Pod""#, r#""kind":"Node""#, false),
            (r#""resource":"pods""#, r#""resource":"pods","x":1"#, true),
            (r#""resource":"pods""#, r#""resource":"nodes""#, false),
            (
                r#""group":"","version":"v1","kind""#,
                r#""group":"apps","version":"v1","kind""#,
                false,
            ),
            (
                r#""operation""#,
                r#""subResource":"status","operation""#,
                false,
            ),
            (r#""operation""#, r#""subResource":null,"operation""#, true),
        ] {
            let body = base.replacen(from, to, 1);
            assert!(from.is_empty() || body != base, "{from}");
            assert_eq!(
                decode(body.as_bytes()).unwrap().pod_creation,
                creation,
                "{body}"
            );
        }
    }

    #[test]
    fn what_kube_reads_as_a_pod_review_is_read() {
        let review = |request: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#
            )
        };
        let good = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{"username":"x"},"oldObject":{"any":[1]},"options":5,"namespace":null}"#;
        for request in [
            good.to_string(),
            good.replace("\"CREATE\"", "\"DELETE\""),
            good.replace("\"namespace\":null", "\"namespace\":\"ns\",\"dryRun\":true"),
        ] {
            let body = review(&request);
            serde_json::from_str::<AdmissionReview<DynamicObject>>(&body).expect("kube reads it");
            decode(body.as_bytes()).expect("and so do we");
        }
        for broken in [
            good.replace("\"resource\":\"pods\"", "\"resource\":1"),
            good.replace(",\"operation\":\"CREATE\"", ""),
        ] {
            let body = review(&broken);
            assert!(
                serde_json::from_str::<AdmissionReview<DynamicObject>>(&body).is_err(),
                "kube refuses {broken}"
            );
            assert!(decode(body.as_bytes()).is_err(), "and so do we: {broken}");
        }
    }

    #[test]
    fn a_long_echo_in_a_message_is_bounded() {
        let text = String::from_utf8_lossy(POD_REVIEW);
        for from in ["admission.k8s.io/v1", "AdmissionReview"] {
            let body = text.replacen(from, &"v".repeat(1 << 20), 1);
            let err = decode(body.as_bytes()).err().unwrap().0;
            assert!(err.len() <= MAX_ECHO, "{}", err.len());
        }
        let body = format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{}"}}}}"#, "u".repeat(1 << 20)).replace(r#""uid":"u"#, r#""uid":["u"#).replace("\"}}", "\"]}}");
        let err = decode(body.as_bytes()).err().unwrap().0;
        assert!(
            err.len() <= MAX_ECHO && err.contains("request.uid"),
            "{err}"
        );
    }
}
