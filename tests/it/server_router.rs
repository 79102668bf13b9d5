//! The HTTP surface in-process: each request goes through the real routers with
//! `tower::ServiceExt::oneshot`, no sockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::eventually_async;
use crate::support::fake_api::{FakeApi, Verb};
use crate::support::server::*;
use axum::body::Body;

use axum::Router;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use pod_identity_webhook::core::identity::{ContainerCredentialsConfig, ServiceAccountAnnotations};
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::server::{admin_router, webhook_router, Components, Limits};
use pod_identity_webhook::sources::service_accounts::{
    CacheSettings, FixedServiceAccounts, KubeServiceAccountCache, ServiceAccountLookup,
};
use rstest::rstest;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tower::ServiceExt;

async fn call(router: Router, request: Request<Body>) -> (StatusCode, Bytes) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn post(content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post("/mutate");
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(body.into()).unwrap()
}

async fn admit(components: &Components, review: &Value) -> Value {
    let router = webhook_router(components, &Limits::default());
    let (status, body) = call(router, post(Some("application/json"), review.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[rstest]
#[case::v1("pod-create-v1.json", V1)]
#[case::v1beta1("pod-create-v1beta1.json", V1BETA1)]
#[tokio::test]
async fn pod_creation_round_trip_keeps_api_version_and_uid_and_patch_applies(
    #[case] fixture_name: &str,
    #[case] api_version: &str,
) {
    let components = components(service_accounts());
    let request = fixture(fixture_name);
    let answer = admit(&components, &request).await;
    assert_eq!(answer["apiVersion"], api_version);
    assert_eq!(answer["kind"], "AdmissionReview");
    assert!(answer.get("request").is_none());
    let response = &answer["response"];
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["allowed"], true);

    let pod = apply_patch(response, &request["request"]["object"]);
    for container in 0..2 {
        assert_eq!(env(&pod, container, "AWS_ROLE_ARN").as_deref(), Some(ROLE));
        assert_eq!(
            env(&pod, container, "AWS_WEB_IDENTITY_TOKEN_FILE").as_deref(),
            Some("/var/run/secrets/eks.amazonaws.com/serviceaccount/token")
        );
    }
    assert_eq!(
        env(&pod, 0, "LOG_LEVEL").as_deref(),
        Some("info"),
        "existing env kept"
    );
    assert_eq!(pod["spec"]["volumes"][0]["name"], "aws-iam-token");
    assert_eq!(pod["spec"]["volumes"][1]["name"], "kube-api-access-x7k2p");
    assert_eq!(
        pod["spec"]["containers"][1]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/eks.amazonaws.com/serviceaccount"
    );
    let metrics = components.metrics.encode();
    assert!(
        metrics.contains("pod_identity_webhook_pod_count{method=\"sts_web_identity\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_count{code=\"200\",path=\"/mutate\",verb=\"POST\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pod_identity_webhook_request_duration_seconds_count{path=\"/mutate\"} 1")
    );
}

#[rstest]
#[case::update_of_a_pod(review(V1, "UPDATE", ("", "v1", "Pod"), "pods", pod("api")))]
#[case::delete_of_a_pod(review(V1, "DELETE", ("", "v1", "Pod"), "pods", Value::Null))]
#[case::creation_of_a_config_map(review(V1, "CREATE", ("", "v1", "ConfigMap"), "configmaps", json!({"data": {}})))]
#[case::pod_of_another_group(review(V1, "CREATE", ("example.com", "v1", "Pod"), "pods", pod("api")))]
#[case::pod_binding_subresource({
    let mut review = pod_review("api");
    review["request"]["subResource"] = json!("binding");
    review
})]
#[tokio::test]
async fn anything_but_pod_creation_is_allowed_unchanged(#[case] request: Value) {
    let components = components(service_accounts());
    let answer = admit(&components, &request).await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert!(response.get("patch").is_none(), "{response}");
    assert!(response.get("patchType").is_none());
}

#[tokio::test]
async fn unknown_service_account_is_allowed_unchanged_and_counted_missing() {
    let components = components(FixedServiceAccounts::default());
    let answer = admit(&components, &pod_review("nobody")).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    assert!(components
        .metrics
        .encode()
        .contains("pod_identity_webhook_missing_sa_count 1"));
}

/// Lists payments/worker in the container-credentials file, as its watch would.
fn list_worker_for_container_credentials(components: &Components) {
    let config = ContainerCredentialsConfig::parse(
        br#"{"identities":[{"namespace":"payments","serviceAccount":"worker"}]}"#,
    )
    .unwrap();
    components
        .watched_config
        .set_container_credentials(Some(config));
}

#[tokio::test]
async fn service_account_listed_for_container_credentials_gets_pod_identity() {
    let components = components(FixedServiceAccounts::default());
    list_worker_for_container_credentials(&components);
    let request = pod_review("worker");
    let answer = admit(&components, &request).await;
    let pod = apply_patch(&answer["response"], &request["request"]["object"]);
    assert_eq!(
        env(&pod, 0, "AWS_CONTAINER_CREDENTIALS_FULL_URI").as_deref(),
        Some("http://169.254.170.23/v1/credentials")
    );
    assert_eq!(
        pod["metadata"]["labels"]["eks.amazonaws.com/pod-identity"],
        "enabled"
    );
    let metrics = components.metrics.encode();
    assert!(
        metrics.contains("pod_count{method=\"container_credentials\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("missing_sa_count 0"),
        "listed accounts are not missing"
    );
}

#[tokio::test]
async fn engine_warnings_are_surfaced_in_the_response() {
    let mut accounts = FixedServiceAccounts::default();
    accounts.insert(
        "payments",
        "api",
        ServiceAccountAnnotations {
            role_arn: Some("my-role".into()),
            ..Default::default()
        },
    );
    let answer = admit(&components(accounts), &pod_review("api")).await;
    let warnings = answer["response"]["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].as_str().unwrap().contains("\"my-role\""),
        "{warnings:?}"
    );
    assert!(answer["response"]["patch"].is_string(), "still mutated");
}

#[tokio::test]
async fn already_mutated_pod_gets_no_patch() {
    let components = components(service_accounts());
    let request = pod_review("api");
    let first = admit(&components, &request).await;
    let mutated = apply_patch(&first["response"], &request["request"]["object"]);
    let again = review(V1, "CREATE", ("", "v1", "Pod"), "pods", mutated);
    let second = admit(&components, &again).await;
    assert_eq!(second["response"]["allowed"], true);
    assert!(second["response"].get("patch").is_none(), "{second}");
}

#[tokio::test]
async fn namespace_falls_back_to_the_object_metadata() {
    let components = components(service_accounts());
    let mut request = pod_review("api");
    request["request"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let answer = admit(&components, &request).await;
    assert!(answer["response"]["patch"].is_string(), "{answer}");
}

#[rstest]
#[case::containers_not_a_list(json!({"spec": {"serviceAccountName": "api", "containers": "app"}}), "spec.containers")]
#[case::service_account_not_a_string(json!({"spec": {"serviceAccountName": 7}}), "spec.serviceAccountName")]
#[case::no_spec(json!({"metadata": {"name": "x"}}), "spec")]
#[case::container_name_a_number(json!({"spec": {"serviceAccountName": "api", "containers": [{"name": 3}]}}), "spec.containers[0].name")]
#[case::label_value_a_number(json!({"metadata": {"labels": {"a": 1}}, "spec": {"serviceAccountName": "api", "containers": [{"name": "a"}]}}), "metadata.labels.a")]
#[case::pod_an_array(json!([{"spec": {}}]), "expected an object, got an array")]
#[tokio::test]
async fn object_that_is_not_a_pod_is_denied_naming_the_problem(
    #[case] object: Value,
    #[case] field: &str,
) {
    let components = components(service_accounts());
    let request = review(V1, "CREATE", ("", "v1", "Pod"), "pods", object);
    let answer = admit(&components, &request).await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["uid"], request["request"]["uid"]);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains(field), "{message} does not name {field}");
    assert_eq!(response["status"]["code"], 400);
}

#[rstest]
#[case::missing(None, StatusCode::UNSUPPORTED_MEDIA_TYPE)]
#[case::text(Some("text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE)]
#[case::json_lookalike(Some("application/jsonx"), StatusCode::UNSUPPORTED_MEDIA_TYPE)]
#[case::yaml(Some("application/yaml"), StatusCode::UNSUPPORTED_MEDIA_TYPE)]
#[case::json(Some("application/json"), StatusCode::OK)]
#[case::json_with_charset(Some("application/json; charset=utf-8"), StatusCode::OK)]
#[case::json_upper_case(Some("Application/JSON"), StatusCode::OK)]
#[tokio::test]
async fn content_type_must_be_json_media_type(
    #[case] content_type: Option<&str>,
    #[case] expected: StatusCode,
) {
    let router = webhook_router(&components(service_accounts()), &Limits::default());
    let (status, body) = call(router, post(content_type, pod_review("api").to_string())).await;
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
    if expected == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        assert!(String::from_utf8_lossy(&body).starts_with("Content-Type must be application/json"));
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413_with_or_without_content_length() {
    let limits = Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    };
    let components = components(service_accounts());
    let big = vec![b' '; 2048];
    let router = webhook_router(&components, &limits);
    let (status, body) = call(router.clone(), post(Some("application/json"), big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&body).contains("1024 byte limit"));
    let declared = Request::post("/mutate")
        .header("content-type", "application/json")
        .header("content-length", "999999999")
        .body(Body::from(big))
        .unwrap();
    assert_eq!(
        call(router, declared).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn default_body_limit_is_four_mebibytes() {
    assert_eq!(Limits::default().max_body_bytes, 4 * 1024 * 1024);
    let router = webhook_router(&components(service_accounts()), &Limits::default());
    // A real review padded to just under the limit is still answered.
    let mut request = pod_review("api");
    request["request"]["object"]["metadata"]["annotations"] =
        json!({"padding": "x".repeat(4 * 1024 * 1024 - 2048)});
    let (status, _) = call(router, post(Some("application/json"), request.to_string())).await;
    assert_eq!(status, StatusCode::OK);
}

#[rstest]
#[case::not_json("{", "invalid JSON")]
#[case::not_an_object("[1]", "expected a JSON object, got an array")]
#[case::pod_not_review(r#"{"apiVersion":"v1","kind":"Pod","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE"}}"#, "apiVersion must be")]
#[case::no_request(
    r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    "missing field `request`"
)]
#[case::null_request(
    r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}"#,
    "request: invalid type: null"
)]
#[case::request_without_uid(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"group":"","version":"v1","kind":"Pod"}}}"#, "uid")]
#[tokio::test]
async fn body_that_is_not_an_admission_review_is_400_with_one_line(
    #[case] body: &'static str,
    #[case] expected: &str,
) {
    let router = webhook_router(&components(service_accounts()), &Limits::default());
    let (status, body) = call(router, post(Some("application/json"), body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = String::from_utf8(body.to_vec()).unwrap();
    assert!(message.contains(expected), "{message} lacks {expected}");
    assert!(!message.contains('\n'), "one line: {message}");
}

/// A number beyond the range of a 64-bit float (`1e400`) in a field the webhook does not read
/// changes nothing: such fields are passed over undecoded, and the pod is answered like any
/// other (here: mutated). The API server never sends one anyway: it decodes every object
/// into Go types first, which refuse it.
#[tokio::test]
async fn a_number_out_of_float_range_in_a_field_not_read_is_passed_over() {
    let components = components(service_accounts());
    let mut review = pod_review("api");
    let body = review
        .to_string()
        .replace(r#""image":"app:1""#, r#""image":"app:1","x":1e400"#);
    assert!(body.contains("1e400"), "{body}");
    let router = webhook_router(&components, &Limits::default());
    let (status, answer) = call(router, post(Some("application/json"), body)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let object = review["request"]["object"].take();
    let patched = apply_patch(&answer["response"], &object);
    assert!(env(&patched, 0, "AWS_ROLE_ARN").is_some(), "{patched}");
}

#[tokio::test]
async fn wrong_method_is_405_and_wrong_path_is_404() {
    let components = components(service_accounts());
    let router = webhook_router(&components, &Limits::default());
    let get = Request::get("/mutate").body(Body::empty()).unwrap();
    assert_eq!(
        call(router.clone(), get).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let elsewhere = Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(call(router, elsewhere).await.0, StatusCode::NOT_FOUND);
    let metrics = components.metrics.encode();
    assert!(
        metrics.contains("http_request_count{code=\"404\",path=\"unmatched\",verb=\"POST\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_count{code=\"405\",path=\"/mutate\",verb=\"GET\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_reports_reasons_until_cache_and_certificate_are_ready() {
    let components = components(service_accounts());
    // The server's parts register their conditions as they are built: a stand-in for the
    // ServiceAccount cache's, and the certificate store itself.
    let cache_synced = components
        .readiness
        .register("ServiceAccount cache not yet synced");
    let store = new_store(&components);
    for router in [
        admin_router(&components),
        webhook_router(&components, &Limits::default()),
    ] {
        let (status, body) = call(
            router.clone(),
            Request::get("/readyz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("ServiceAccount cache not yet synced"),
            "{body}"
        );
        assert!(body.contains("no serving certificate loaded"), "{body}");
        let (status, _) = call(
            router,
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "liveness does not depend on readiness"
        );
    }
    assert_eq!(ready_gauge(&components).await, "0");
    cache_synced.set(true);
    let (cert, key) = TestCa::new().leaf("first");
    store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let (status, _) = call(
        admin_router(&components),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready_gauge(&components).await, "1");
    components.readiness.set_shutting_down();
    let (status, body) = call(
        admin_router(&components),
        Request::get("/readyz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("shutting down"));
    assert_eq!(ready_gauge(&components).await, "0");
}

/// The value of `pod_identity_webhook_ready` in what `/metrics` answers now.
async fn ready_gauge(components: &Components) -> String {
    let (status, body) = call(
        admin_router(components),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix("pod_identity_webhook_ready "))
        .unwrap_or_else(|| panic!("no pod_identity_webhook_ready in:\n{text}"))
        .to_owned()
}

#[tokio::test]
async fn metrics_port_serves_prometheus_text_and_cache_dump_only_when_enabled() {
    let mut components = components(service_accounts());
    let (status, body) = call(
        admin_router(&components),
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body)
        .contains("# TYPE pod_identity_webhook_missing_sa_count counter"));
    let debug = || {
        Request::get("/debug/alpha/cache")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        call(admin_router(&components), debug()).await.0,
        StatusCode::NOT_FOUND
    );

    components.cache_dumper = Some(Arc::new(|| json!({"payments/api": {"role_arn": ROLE}})));
    let (status, body) = call(admin_router(&components), debug()).await;
    assert_eq!(status, StatusCode::OK);
    let dump: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(dump["payments/api"]["role_arn"], ROLE);
}

#[tokio::test]
async fn made_up_methods_are_counted_as_other_not_as_series_of_their_own() {
    let components = components(service_accounts());
    let router = webhook_router(&components, &Limits::default());
    for method in ["BREW", "PROPFIND", "X-SCAN-1"] {
        let request = Request::builder()
            .method(method)
            .uri("/mutate")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            call(router.clone(), request).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
    let metrics = components.metrics.encode();
    assert!(
        metrics.contains("http_request_count{code=\"405\",path=\"/mutate\",verb=\"OTHER\"} 3"),
        "{metrics}"
    );
    for method in ["BREW", "PROPFIND", "X-SCAN-1"] {
        assert!(!metrics.contains(method), "{method} in {metrics}");
    }
}

/// Lookups that count their callers and wait until the gate opens.
struct GatedLookup {
    entered: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl ServiceAccountLookup for GatedLookup {
    fn lookup<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<ServiceAccountAnnotations>>> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let _open = self.gate.acquire().await;
            None
        })
    }

    fn cached(&self, _namespace: &str, _name: &str) -> Option<Arc<ServiceAccountAnnotations>> {
        None
    }
}

// On virtual time: the 1 s bound below can only be hit by a request that waits, however
// slow the machine.
#[tokio::test(start_paused = true)]
async fn reviews_beyond_the_concurrency_limit_are_answered_503_at_once() {
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let components = components(GatedLookup {
        entered: entered.clone(),
        gate: gate.clone(),
    });
    let limits = Limits {
        max_concurrent_reviews: 1,
        ..Limits::default()
    };
    let router = webhook_router(&components, &limits);
    let send = || {
        let router = router.clone();
        tokio::spawn(async move {
            call(
                router,
                post(Some("application/json"), pod_review("api").to_string()),
            )
            .await
        })
    };
    let first = send();
    eventually_async(
        "the first review to hold the slot",
        Duration::from_secs(10),
        || entered.load(Ordering::SeqCst) > 0,
    )
    .await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(1), send())
        .await
        .expect("the second is answered without waiting for the first")
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("retry"));
    gate.add_permits(Semaphore::MAX_PERMITS);
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    assert_eq!(entered.load(Ordering::SeqCst), 1);
    let metrics = components.metrics.encode();
    assert!(
        metrics.contains(r#"pod_identity_webhook_rejected_total{reason="overloaded"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn listed_service_account_missing_from_the_cache_sends_no_get() {
    // A stand-in API server holding no ServiceAccounts; it counts the GETs.
    let api = FakeApi::start().await;
    let cache_metrics = Arc::new(Metrics::new());
    let mut components = components(FixedServiceAccounts::default());
    components.service_accounts = KubeServiceAccountCache::start(
        api.client(),
        components.settings.keys.clone(),
        CacheSettings {
            grace_period: Duration::from_secs(1),
            ..CacheSettings::default()
        },
        cache_metrics.clone(),
        &Readiness::default(),
    );
    list_worker_for_container_credentials(&components);
    let request = pod_review("worker");
    let answer = admit(&components, &request).await;
    let pod = apply_patch(&answer["response"], &request["request"]["object"]);
    assert!(env(&pod, 0, "AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some());
    // A GET would be started in the background; give it time to show.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.count(Verb::Get, "serviceaccounts"), 0);
    let metrics = cache_metrics.encode();
    assert!(!metrics.contains("lookup_fallbacks_total{"), "{metrics}");

    // An unlisted one still falls back to a GET.
    admit(&components, &pod_review("api")).await;
    assert_eq!(api.count(Verb::Get, "serviceaccounts"), 1);
}

#[tokio::test]
async fn non_ascii_content_type_is_shown_in_the_415_message() {
    let router = webhook_router(&components(service_accounts()), &Limits::default());
    let request = Request::post("/mutate")
        .header(
            "content-type",
            http::HeaderValue::from_bytes("application/jsön".as_bytes()).unwrap(),
        )
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = call(router, request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = String::from_utf8_lossy(&body);
    assert!(message.ends_with("got \"application/jsön\""), "{message}");
}
