//! One AdmissionReview in, one out: decode, decide whether this is a Pod creation, find the
//! ServiceAccount, run the engine, and answer with a JSON patch. No HTTP here; the router
//! turns the errors into status codes.

use std::sync::Arc;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, TypeMeta};
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::cache::ServiceAccountLookup;
use crate::identity::{CredentialSource, IdentitySources};
use crate::json::json_type;
use crate::metrics::Metrics;
use crate::mutate::PodShapeError;
use crate::pipeline::{mutate_with_sources, random_jitter, service_account_name};
use crate::settings::MutationSettings;
use crate::sources::LiveSources;

const SUPPORTED_API_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Everything the admission handler reads.
#[derive(Clone)]
pub struct Admission {
    pub settings: Arc<MutationSettings>,
    pub service_accounts: Arc<dyn ServiceAccountLookup>,
    pub sources: Arc<LiveSources>,
    pub metrics: Arc<Metrics>,
}

/// The body is not an AdmissionReview with a request; the text is one line for a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

impl Admission {
    /// Answers one AdmissionReview body. `Err` only when the body cannot be answered with an
    /// AdmissionReview at all; a pod that is not a valid Pod gets `allowed: false` instead.
    pub async fn review(&self, body: &[u8]) -> Result<AdmissionReview<DynamicObject>, BadReview> {
        let (request, object) = decode(body)?;
        let span = tracing::info_span!(
            "admission",
            uid = %request.uid,
            namespace = tracing::field::Empty,
            pod = tracing::field::Empty,
            service_account = tracing::field::Empty,
        );
        let response = self.respond(&request, object).instrument(span).await;
        Ok(response.into_review())
    }

    async fn respond(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        pod: Value,
    ) -> AdmissionResponse {
        let allowed = AdmissionResponse::from(request);
        if !is_pod_creation(request) {
            return allowed;
        }
        let namespace = request
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .or_else(|| metadata_str(&pod, "namespace"))
            .unwrap_or_default();
        let pod_name = metadata_str(&pod, "name")
            .filter(|name| !name.is_empty())
            .or_else(|| metadata_str(&pod, "generateName"))
            .unwrap_or_default();
        let span = tracing::Span::current();
        span.record("namespace", namespace);
        span.record("pod", pod_name);
        let service_account = match service_account_name(&pod) {
            Ok(name) => name,
            Err(err) => return deny(allowed, &err),
        };
        span.record("service_account", service_account);

        let listed = self
            .sources
            .container_credentials
            .load()
            .as_deref()
            .is_some_and(|config| config.contains(namespace, service_account));
        // As the reference: a ServiceAccount listed for container credentials needs no role,
        // so its annotations (regional STS, expiration) are taken only if already cached;
        // admission neither waits for it nor asks the API server.
        let annotations = if listed {
            self.service_accounts.cached(namespace, service_account)
        } else {
            self.service_accounts
                .lookup(namespace, service_account)
                .await
        };
        if annotations.is_none() && !listed {
            self.metrics.missing_sa_count.inc();
        }
        // Read after the lookup, which may wait: the answer uses the sources current now,
        // and no guard is held across an await.
        let container_credentials = self.sources.container_credentials.load();
        let mapping = self.sources.mapping.load();
        let sources = IdentitySources {
            service_account: annotations.as_deref(),
            mapping: mapping.as_deref(),
            container_credentials: container_credentials.as_deref(),
        };
        let outcome = match mutate_with_sources(
            &pod,
            namespace,
            service_account,
            sources,
            &self.settings,
            &mut random_jitter,
        ) {
            Ok(outcome) => outcome,
            Err(err) => return deny(allowed, &err),
        };

        let mutation = outcome.mutation;
        let mut response = allowed;
        if !mutation.warnings.is_empty() {
            for warning in &mutation.warnings {
                tracing::warn!("{warning}");
            }
            response.warnings = Some(mutation.warnings);
        }
        let Some(identity) = outcome.identity.filter(|_| !mutation.patch.0.is_empty()) else {
            tracing::debug!(
                "pod not mutated: no identity for its ServiceAccount, or already mutated"
            );
            return response;
        };
        let (method, role) = match &identity.source {
            CredentialSource::WebIdentity { role_arn, .. } => {
                ("sts_web_identity", role_arn.as_str())
            }
            CredentialSource::ContainerCredentials => ("container_credentials", ""),
        };
        tracing::info!(
            namespace,
            pod = pod_name,
            service_account,
            method,
            role,
            containers = %mutation.containers.join(","),
            "mutated pod"
        );
        self.metrics.pod_count.with_label_values(&[method]).inc();
        match response.with_patch(mutation.patch) {
            Ok(response) => response,
            // Serializing a patch of JSON values cannot fail; if it ever did, admitting the
            // pod unchanged is the safe answer.
            Err(err) => {
                tracing::error!("cannot serialize the patch: {err}");
                AdmissionResponse::from(request)
            }
        }
    }
}

/// The response body. kube serializes the patch bytes as a JSON array of numbers; the API
/// server also accepts that, but Go's (and the reference webhook's) wire form of `[]byte` is a
/// base64 string, which is what tools reading audit logs expect and is half the size.
pub fn encode_review(mut review: AdmissionReview<DynamicObject>) -> Vec<u8> {
    use base64::Engine as _;
    let patch = review
        .response
        .as_mut()
        .and_then(|response| response.patch.take())
        .map(|patch| base64::engine::general_purpose::STANDARD.encode(patch));
    let wire = WireReview {
        types: &review.types,
        request: review.request.as_ref(),
        response: review
            .response
            .as_ref()
            .map(|response| WireResponse { response, patch }),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// An `AdmissionReview` as kube writes it, but with the patch as base64 text.
#[derive(Serialize)]
struct WireReview<'a> {
    #[serde(flatten)]
    types: &'a TypeMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a AdmissionRequest<DynamicObject>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<WireResponse<'a>>,
}

/// kube's response fields (its `patch` taken out, so skipped), then the base64 patch.
#[derive(Serialize)]
struct WireResponse<'a> {
    #[serde(flatten)]
    response: &'a AdmissionResponse,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// Splits the body into the typed request and the raw object. The object is taken out before
/// typing so that a malformed pod (which kube's `DynamicObject` would reject, failing the
/// whole review) still gets an AdmissionReview answer naming the problem, and so the engine
/// reads the JSON as sent with no re-encoding.
fn decode(body: &[u8]) -> Result<(AdmissionRequest<DynamicObject>, Value), BadReview> {
    let not_review = |why: String| BadReview(format!("body is not an AdmissionReview: {why}"));
    let mut document: Value =
        serde_json::from_slice(body).map_err(|err| not_review(format!("invalid JSON: {err}")))?;
    let got = json_type(&document);
    let root = document
        .as_object_mut()
        .ok_or_else(|| not_review(format!("expected a JSON object, got {got}")))?;
    let api_version = root.get("apiVersion");
    if !api_version
        .and_then(Value::as_str)
        .is_some_and(|version| SUPPORTED_API_VERSIONS.contains(&version))
    {
        return Err(not_review(format!(
            "apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, got {}",
            describe(api_version)
        )));
    }
    let kind = root.get("kind");
    if kind.and_then(Value::as_str) != Some("AdmissionReview") {
        return Err(not_review(format!(
            "kind must be AdmissionReview, got {}",
            describe(kind)
        )));
    }
    let Some(Value::Object(request)) = root.get_mut("request") else {
        return Err(BadReview("AdmissionReview has no request object".into()));
    };
    let object = request.remove("object").unwrap_or(Value::Null);
    request.remove("oldObject");
    let review: AdmissionReview<DynamicObject> = serde_path_to_error::deserialize(document)
        .map_err(|err| not_review(format!("{}: {}", err.path(), err.inner())))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| BadReview("AdmissionReview has no request object".into()))?;
    Ok((request, object))
}

/// A string field's value for a message: the string quoted, else what it is instead.
fn describe(value: Option<&Value>) -> String {
    match value {
        None => "none".into(),
        Some(Value::String(text)) => format!("{text:?}"),
        Some(other) => json_type(other).into(),
    }
}

/// Only CREATE of core/v1 Pods (not a subresource) is mutated.
fn is_pod_creation(request: &AdmissionRequest<DynamicObject>) -> bool {
    let kind = &request.kind;
    let resource = &request.resource;
    request.operation == Operation::Create
        && kind.group.is_empty()
        && kind.version == "v1"
        && kind.kind == "Pod"
        && resource.group.is_empty()
        && resource.version == "v1"
        && resource.resource == "pods"
        && request.sub_resource.as_deref().unwrap_or("").is_empty()
}

fn metadata_str<'a>(pod: &'a Value, field: &str) -> Option<&'a str> {
    pod.get("metadata")?.get(field)?.as_str()
}

fn deny(response: AdmissionResponse, err: &PodShapeError) -> AdmissionResponse {
    tracing::warn!("rejected: {err}");
    let mut response = response.deny(err);
    response.result.code = 400;
    response.result.reason = "BadRequest".into();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_keeps_v1beta1_api_version_on_the_request() {
        let body =
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
            "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
            "userInfo":{},"object":{"metadata":{"labels":{"a":1}},"spec":{}}}}"#;
        let (request, object) = decode(body).unwrap();
        assert_eq!(request.types.api_version, "admission.k8s.io/v1beta1");
        assert_eq!(object["metadata"]["labels"]["a"], 1, "object kept as sent");
        let review = AdmissionResponse::from(&request).into_review();
        assert_eq!(review.types.api_version, "admission.k8s.io/v1beta1");
        assert_eq!(review.types.kind, "AdmissionReview");
    }

    #[test]
    fn decode_names_what_is_wrong() {
        for (body, expected) in [
            (&b"{"[..], "invalid JSON"),
            (b"[]", "expected a JSON object"),
            (b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}", "apiVersion must be"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Pod\"}", "kind must be AdmissionReview"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "no request"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":1}}", "uid"),
        ] {
            let err = decode(body).unwrap_err().0;
            assert!(err.contains(expected), "{err} lacks {expected}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
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
            let err = decode(body).unwrap_err().0;
            assert!(
                err.ends_with(expected),
                "{err} does not end with {expected}"
            );
        }
    }

    /// What `encode_review` wrote before it serialized in one pass: kube's JSON with the patch
    /// replaced by base64 text, appended after the other response fields.
    fn encode_through_value(mut review: AdmissionReview<DynamicObject>) -> Vec<u8> {
        use base64::Engine as _;
        let patch = review.response.as_mut().and_then(|r| r.patch.take());
        let mut value = serde_json::to_value(&review).unwrap();
        if let (Some(patch), Some(Value::Object(response))) = (patch, value.get_mut("response")) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
            response.insert("patch".into(), Value::String(encoded));
        }
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn encode_review_writes_kube_fields_in_order_and_the_patch_as_base64_last() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
            "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
            "userInfo":{},"object":{}}}"#;
        let (request, _) = decode(body).unwrap();
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"test","path":"/a","value":true}]"#).unwrap();
        let mut patched = AdmissionResponse::from(&request).with_patch(patch).unwrap();
        patched.warnings = Some(vec!["careful".into()]);
        let denied = AdmissionResponse::from(&request).deny("no");
        for response in [AdmissionResponse::from(&request), patched, denied] {
            let review = response.into_review();
            let encoded = encode_review(review.clone());
            assert_eq!(
                String::from_utf8(encoded).unwrap(),
                String::from_utf8(encode_through_value(review)).unwrap()
            );
        }
        let review = AdmissionResponse::from(&request)
            .with_patch(json_patch::Patch(vec![]))
            .unwrap()
            .into_review();
        let text = String::from_utf8(encode_review(review)).unwrap();
        assert!(
            text.ends_with(r#""patchType":"JSONPatch","patch":"W10="}}"#),
            "{text}"
        );
    }
}
