//! An AdmissionReview body read into the fields the webhook uses, borrowing from the body:
//! the pod only for what the engine reads (`Node`), the request's other fields as strictly as
//! kube's `AdmissionRequest`, `oldObject`, `options` and unknown fields skipped. The engine's
//! scanner reads a real review in one pass; serde reads what it declines, and names what is
//! wrong in a review that is not well formed (see [`decode`]).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::core::engine::{read_pod, Node, Scanner, POD};
use crate::core::json::{bound_owned, bounded, MAX_ECHO};

/// The AdmissionReview versions the API server may send; the answer echoes the request's.
pub(super) const SUPPORTED_API_VERSIONS: [&str; 2] =
    ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The body is not an AdmissionReview with a request; the text is one line for a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

/// The fields of an AdmissionReview the webhook reads.
#[derive(Debug, PartialEq)]
pub(super) struct Review<'a> {
    /// One of [`SUPPORTED_API_VERSIONS`], echoed in the answer.
    pub api_version: &'static str,
    pub request: Request<'a>,
}

/// The request's typed fields, as strict as kube's `AdmissionRequest`, with the object read
/// as a pod (`engine::read_pod`) and `oldObject`, `options` and unknown fields skipped.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Request<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
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
    pub namespace: Option<Cow<'a, str>>,
    operation: Operation,
    #[serde(deserialize_with = "user_info_shape")]
    #[allow(dead_code)]
    user_info: (),
    #[serde(default, borrow, deserialize_with = "pod_object")]
    pub object: Option<Node<'a>>,
    #[serde(default)]
    #[allow(dead_code)]
    dry_run: bool,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Gvk<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Gvr<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    resource: Cow<'a, str>,
}

/// `userInfo` is read only to check its shape, as kube reads it; nothing in it is kept.
fn user_info_shape<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    UserInfo::deserialize(d).map(drop)
}

fn pod_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Node<'de>>, D::Error> {
    match read_pod(d)? {
        Node::Null => Ok(None),
        pod => Ok(Some(pod)),
    }
}

impl Request<'_> {
    /// Only CREATE of core/v1 Pods (not a subresource) is mutated.
    pub fn is_pod_creation(&self) -> bool {
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
/// 1. The scanner reads the whole review in one pass (`scan_review`).
/// 2. Where it declines (a number where it keeps a value, say), serde reads it all in one
///    pass.
/// 3. A review that is not well formed is read again in two steps to say what is wrong: the
///    envelope (apiVersion, kind, a request object) first, so the first thing wrong is what
///    the message names, then the request with its field path.
pub(super) fn decode(body: &[u8]) -> Result<Review<'_>, BadReview> {
    // One vectorised UTF-8 check of the whole body is cheaper than serde_json's check of
    // every string read from a byte slice; a body that is not UTF-8 gets the slow path's
    // message.
    if let Ok(text) = simdutf8::basic::from_utf8(body) {
        if let Some(review) = scan_review(text) {
            return Ok(review);
        }
        if let Ok(review) = read_by_serde(text) {
            return Ok(review);
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

/// The review as serde reads it in one pass; `Err` with a message that may not say what is
/// wrong first (the slow path in `decode` does).
fn read_by_serde(text: &str) -> Result<Review<'_>, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match read_envelope::<ObjectOnly<Request<'_>>, _>(&mut deserializer) {
        Ok(Top::Object(envelope)) => {
            let (api_version, ObjectOnly(request)) = check_envelope(envelope).map_err(|e| e.0)?;
            Ok(Review {
                api_version,
                request,
            })
        }
        Ok(Top::Other(got)) => Err(format!("expected a JSON object, got {got}")),
        Err(err) => Err(err.to_string()),
    }
}

/// The review read by the engine's scanner in one pass: the pod by its shape, the other
/// request fields as [`Request`] reads them. `None` where the scanner declines (see
/// `Scanner`), and wherever serde's answer could differ: a repeated member, a `null` or a
/// type serde may take or refuse, a required field missing, an apiVersion or kind that is
/// not accepted. serde then reads the body, and its answer and messages stay the reference.
fn scan_review(text: &str) -> Option<Review<'_>> {
    let mut scanner = Scanner::new(text);
    let mut once = Once::default();
    let (mut api_version, mut kind, mut request) = (None, None, None);
    scanner.object(|scanner, key| {
        match &*key {
            "apiVersion" => {
                once.first(0)?;
                api_version = Some(scanner.string()?);
            }
            "kind" => {
                once.first(1)?;
                kind = Some(scanner.string()?);
            }
            "request" => {
                once.first(2)?;
                request = Some(scan_request(scanner)?);
            }
            _ => return scanner.skip_value(),
        }
        Some(())
    })?;
    scanner.end()?;
    let api_version = SUPPORTED_API_VERSIONS
        .into_iter()
        .find(|supported| api_version.as_deref() == Some(*supported))?;
    (kind.as_deref() == Some("AdmissionReview")).then_some(())?;
    Some(Review {
        api_version,
        request: request?,
    })
}

/// The request object, as [`Request`] reads it; see [`scan_review`].
fn scan_request<'a>(scanner: &mut Scanner<'a>) -> Option<Request<'a>> {
    let mut once = Once::default();
    let (mut uid, mut kind, mut resource, mut operation, mut user_info) =
        (None, None, None, None, None);
    let (mut sub_resource, mut request_kind, mut request_resource, mut request_sub_resource) =
        (None, None, None, None);
    let (mut name, mut namespace, mut object, mut dry_run) = (Cow::Borrowed(""), None, None, false);
    scanner.object(|scanner, key| {
        match &*key {
            "uid" => {
                once.first(0)?;
                uid = Some(scanner.string()?);
            }
            "kind" => {
                once.first(1)?;
                kind = Some(scan_gvk(scanner)?);
            }
            "resource" => {
                once.first(2)?;
                resource = Some(scan_gvr(scanner)?);
            }
            "subResource" => {
                once.first(3)?;
                sub_resource = nullable(scanner, Scanner::string)?;
            }
            "requestKind" => {
                once.first(4)?;
                request_kind = nullable(scanner, scan_gvk)?;
            }
            "requestResource" => {
                once.first(5)?;
                request_resource = nullable(scanner, scan_gvr)?;
            }
            "requestSubResource" => {
                once.first(6)?;
                request_sub_resource = nullable(scanner, Scanner::string)?;
            }
            "name" => {
                once.first(7)?;
                name = scanner.string()?;
            }
            "namespace" => {
                once.first(8)?;
                namespace = nullable(scanner, Scanner::string)?;
            }
            "operation" => {
                once.first(9)?;
                operation = Some(match &*scanner.string()? {
                    "CREATE" => Operation::Create,
                    "UPDATE" => Operation::Update,
                    "DELETE" => Operation::Delete,
                    "CONNECT" => Operation::Connect,
                    _ => return None,
                });
            }
            "userInfo" => {
                once.first(10)?;
                user_info = Some(scan_user_info(scanner)?);
            }
            "object" => {
                once.first(11)?;
                object = Some(scanner.shaped(&POD)?).filter(|pod| *pod != Node::Null);
            }
            "dryRun" => {
                once.first(12)?;
                dry_run = scanner.boolean()?;
            }
            _ => return scanner.skip_value(),
        }
        Some(())
    })?;
    Some(Request {
        uid: uid?,
        kind: kind?,
        resource: resource?,
        sub_resource,
        request_kind,
        request_resource,
        request_sub_resource,
        name,
        namespace,
        operation: operation?,
        user_info: user_info?,
        object,
        dry_run,
    })
}

fn scan_gvk<'a>(scanner: &mut Scanner<'a>) -> Option<Gvk<'a>> {
    let [group, version, kind] = scan_group_version(scanner, "kind")?;
    Some(Gvk {
        group,
        version,
        kind,
    })
}

fn scan_gvr<'a>(scanner: &mut Scanner<'a>) -> Option<Gvr<'a>> {
    let [group, version, resource] = scan_group_version(scanner, "resource")?;
    Some(Gvr {
        group,
        version,
        resource,
    })
}

/// A group-version object ([`Gvk`] with `third` = `kind`, [`Gvr`] with `resource`): its
/// `group`, `version` and `third`, each required once.
fn scan_group_version<'a>(scanner: &mut Scanner<'a>, third: &str) -> Option<[Cow<'a, str>; 3]> {
    let mut once = Once::default();
    let mut parts = [None, None, None];
    scanner.object(|scanner, key| {
        let part = match &*key {
            "group" => 0,
            "version" => 1,
            other if other == third => 2,
            _ => return scanner.skip_value(),
        };
        once.first(part)?;
        parts[part] = Some(scanner.string()?);
        Some(())
    })?;
    let [group, version, last] = parts;
    Some([group?, version?, last?])
}

/// `userInfo`, checked as kube's `UserInfo` reads it: `username` and `uid` strings, `groups`
/// a list of strings, `extra` a map of lists of strings, any of them `null`.
fn scan_user_info(scanner: &mut Scanner<'_>) -> Option<()> {
    let strings = |scanner: &mut Scanner<'_>| scanner.array(|scanner| scanner.string().map(drop));
    let mut once = Once::default();
    scanner.object(|scanner, key| {
        let member = match &*key {
            "username" => 0,
            "uid" => 1,
            "groups" => 2,
            "extra" => 3,
            _ => return scanner.skip_value(),
        };
        once.first(member)?;
        if scanner.null()? {
            return Some(());
        }
        match member {
            0 | 1 => scanner.string().map(drop),
            2 => strings(scanner),
            _ => scanner.object(|scanner, _| strings(scanner)),
        }
    })
}

/// `null` as `Some(None)`; anything else read by `read`, as serde reads an `Option`.
fn nullable<'a, T>(
    scanner: &mut Scanner<'a>,
    read: impl FnOnce(&mut Scanner<'a>) -> Option<T>,
) -> Option<Option<T>> {
    if scanner.null()? {
        return Some(None);
    }
    read(scanner).map(Some)
}

/// The members of one object read so far, by number, so that a repeated one is declined.
#[derive(Default)]
struct Once(u32);

impl Once {
    fn first(&mut self, member: usize) -> Option<()> {
        let bit = 1 << member;
        (self.0 & bit == 0).then(|| self.0 |= bit)
    }
}

/// The scanner's promise for reviews, checked on one body (for the tests and the `review`
/// fuzz target): where it reads `text`, serde reads it too, to the same review.
#[doc(hidden)]
pub fn check_review_scan_against_serde(text: &str) -> Result<(), String> {
    let Some(scanned) = scan_review(text) else {
        return Ok(());
    };
    match read_by_serde(text) {
        Ok(by_serde) if by_serde == scanned => Ok(()),
        Ok(by_serde) => Err(format!("the scanner read {scanned:?}, serde {by_serde:?}")),
        Err(err) => Err(format!("the scanner read it, serde refused it: {err}")),
    }
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

#[cfg(test)]
pub(super) mod tests {
    use kube::core::admission::AdmissionReview;
    use kube::core::DynamicObject;
    use serde_json::Value;

    use super::*;

    pub(in crate::server) const POD_REVIEW: &[u8] =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
        "uid":"u\"1","kind":{"group":"","version":"v1","kind":"Pod"},
        "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
        "userInfo":{},"object":{"metadata":{"labels":{"a":1}},"spec":{}}}}"#;

    #[test]
    fn decode_keeps_v1beta1_api_version_and_the_object() {
        let body = String::from_utf8_lossy(POD_REVIEW).replace("/v1\"", "/v1beta1\"");
        let review = decode(body.as_bytes()).unwrap();
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
        assert!(scan_review(&body).is_some(), "scanned");
        let review = decode(body.as_bytes()).unwrap();
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
        assert!(decode(null.as_bytes()).unwrap().request.object.is_none());
        let twice = body.replace(r#""object":"#, r#""object":{},"object":"#);
        assert_eq!(scan_review(&twice), None, "declined");
        let err = decode(twice.as_bytes()).err().unwrap().0;
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
            let err = decode(body).err().unwrap().0;
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
        let err = decode(&body).expect_err("refused").0;
        assert!(
            err.contains("invalid JSON: invalid unicode code point"),
            "{err}"
        );
        body = String::from_utf8_lossy(&body)
            .replace('\u{fffd}', "O")
            .into_bytes();
        assert!(decode(&body).is_ok(), "the same review in UTF-8 is read");
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
            let err = decode(body).err().unwrap().0;
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
            let ours = decode(body.as_bytes()).is_ok();
            let kube = serde_json::from_str::<AdmissionReview<DynamicObject>>(&body)
                .map(drop)
                .is_ok();
            assert_eq!(ours, ok, "{request}");
            assert_eq!(kube, ok, "kube disagrees on {request}");
            check_review_scan_against_serde(&body).unwrap();
        }
    }

    #[test]
    fn the_scanner_reads_a_review_as_serde_does_or_declines() {
        let base = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"7e5b","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":{"group":"","version":"v1","resource":"pods"},"name":"","namespace":"payments","operation":"CREATE","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller","uid":"9c1","groups":["system:serviceaccounts","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=1"]}},"object":{"metadata":{"generateName":"api-","namespace":"payments"},"spec":{"serviceAccountName":"api","containers":[{"name":"app","image":"app"}]}},"oldObject":null,"dryRun":false,"options":{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}"#;
        // (what is replaced, by what, whether the scanner reads the result)
        let cases = [
            ("", "", true),
            (
                r#""namespace":"payments","op"#,
                r#""namespace":null,"op"#,
                true,
            ),
            (r#""dryRun":false"#, r#""dryRun":true"#, true),
            (r#""dryRun":false"#, r#""dryRun":null"#, false),
            (r#""name":"","#, r#""name":null,"#, false),
            (r#""name":"","#, r#""name":"a\u0062","#, true),
            (r#""uid":"7e5b""#, r#""ui\u0064":"7e5b""#, true),
            (r#""uid":"7e5b""#, r#""uid":"7e5b","uid":"x""#, false),
            (r#""uid":"7e5b","#, "", false),
            (r#""CREATE""#, r#""DELETE""#, true),
            (r#""CREATE""#, r#""create""#, false),
            (
                r#""requestKind":{"group":"","version":"v1","kind":"Pod"}"#,
                r#""requestKind":null"#,
                true,
            ),
            (
                r#""requestResource":{"group":"","version":"v1","resource":"pods"}"#,
                r#""requestResource":{"group":"","version":"v1"}"#,
                false,
            ),
            (
                r#"{"group":"","version":"v1","kind":"Pod"},"resource""#,
                r#"{"group":"","version":"v1","kind":"Pod","x":[1]},"resource""#,
                true,
            ),
            (
                r#"{"group":"","version":"v1","kind":"Pod"},"resource""#,
                r#"{"group":"","group":"","version":"v1","kind":"Pod"},"resource""#,
                false,
            ),
            (
                r#""groups":["system:serviceaccounts","system:authenticated"]"#,
                r#""groups":null"#,
                true,
            ),
            (
                r#""groups":["system:serviceaccounts","system:authenticated"]"#,
                r#""groups":[1]"#,
                false,
            ),
            (r#"["JTI=1"]"#, "null", false),
            (r#""uid":"9c1","#, r#""uid":9,"#, false),
            (
                r#""uid":"9c1","#,
                r#""uid":"9c1","more":{"a":[true]},"#,
                true,
            ),
            (r#""userInfo":{"#, r#""userInfo":null,"x":{"#, false),
            (
                r#""kind":"AdmissionReview""#,
                r#""kind":"AdmissionReviewList""#,
                false,
            ),
            (
                r#""apiVersion":"admission.k8s.io/v1""#,
                r#""apiVersion":"admission.k8s.io/v1beta1""#,
                true,
            ),
            (
                r#""apiVersion":"admission.k8s.io/v1""#,
                r#""apiVersion":"admission.k8s.io/v1","apiVersion":"admission.k8s.io/v1""#,
                false,
            ),
            (
                r#""oldObject":null"#,
                r#""oldObject":{"spec":[1.5e3]}"#,
                true,
            ),
            (r#""object":{"#, r#""object":null,"ignored":{"#, true),
            (r#""generateName":"api-""#, r#""generateName":1"#, false),
        ];
        for (from, to, scanned) in cases {
            let body = base.replacen(from, to, 1);
            assert!(
                from.is_empty() || body != base,
                "{from} not in the base review"
            );
            assert_eq!(scan_review(&body).is_some(), scanned, "{body}");
            check_review_scan_against_serde(&body).unwrap();
        }
    }

    #[test]
    fn a_long_echo_in_a_message_is_bounded() {
        let body = format!(
            r#"{{"apiVersion":"{}","kind":"AdmissionReview"}}"#,
            "v".repeat(1 << 20)
        );
        let err = decode(body.as_bytes()).err().unwrap().0;
        assert!(err.len() <= MAX_ECHO, "{}", err.len());
        let body = String::from_utf8_lossy(POD_REVIEW)
            .replace("\"CREATE\"", &format!("\"{}\"", "X".repeat(1 << 20)));
        let err = decode(body.as_bytes()).err().unwrap().0;
        assert!(
            err.len() <= MAX_ECHO && err.contains("request.operation"),
            "{err}"
        );
    }
}
