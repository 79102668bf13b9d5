//! One AdmissionReview in, one out: decode, decide whether this is a Pod creation, find the
//! ServiceAccount, run the engine, and answer with a JSON patch. No HTTP here; the router
//! turns the errors into status codes.

use std::sync::Arc;

use futures::FutureExt;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde_json::Value;
use tracing::Instrument;

use crate::cache::ServiceAccountLookup;
use crate::identity::{json_type, CredentialSource, IdentitySources};
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

        let container_credentials = self.sources.container_credentials.load();
        let mapping = self.sources.mapping.load();
        let listed = container_credentials
            .as_deref()
            .is_some_and(|config| config.contains(namespace, service_account));
        let lookup = self.service_accounts.lookup(namespace, service_account);
        // As the reference: a ServiceAccount listed for container credentials needs no role,
        // so its annotations (regional STS, expiration) are taken only if already cached and
        // admission never waits for it.
        let annotations = if listed {
            lookup.now_or_never().flatten()
        } else {
            lookup.await
        };
        if annotations.is_none() && !listed {
            self.metrics.missing_sa_count.inc();
        }
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
        .and_then(|response| response.patch.take());
    let mut value = serde_json::to_value(&review).unwrap_or(Value::Null);
    if let (Some(patch), Some(Value::Object(response))) = (patch, value.get_mut("response")) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
        response.insert("patch".into(), Value::String(encoded));
    }
    serde_json::to_vec(&value).unwrap_or_default()
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
    let api_version = root.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if !SUPPORTED_API_VERSIONS.contains(&api_version) {
        return Err(not_review(format!(
            "apiVersion must be admission.k8s.io/v1 or admission.k8s.io/v1beta1, got {api_version:?}"
        )));
    }
    let kind = root.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "AdmissionReview" {
        return Err(not_review(format!(
            "kind must be AdmissionReview, got {kind:?}"
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
}
