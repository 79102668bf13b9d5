//! The HTTP surface: the webhook router (`POST /mutate`, health) served over TLS, and the admin
//! router (health, readiness, metrics, debugging) served in plain HTTP on the metrics port.
//! Built by plain functions so tests drive them in-process with `tower::ServiceExt::oneshot`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use axum::error_handling::HandleErrorLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;

use super::admission::Admission;
use super::limits::{read_body, BodyBudget, BodyReading, Rejection, RejectionLog};
use super::{Components, Limits};
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;

/// Routes of the HTTPS port: `POST /mutate`, `/healthz`, `/readyz`. Anything else is 404, a
/// wrong method 405. Every request is counted in `http_request_count` and timed, and bounded
/// by the whole-request timeout. `/mutate` is wrapped, outermost first, in: the body size
/// limit (413 on a declared length over it), the body reader (whole body in memory within
/// its deadline, rate and memory budget; see `limits::read_body`), and the review
/// concurrency limit, which answers 503 at once rather than queueing.
pub fn webhook_router(components: &Components, limits: &Limits) -> Router {
    let mutate = MutateState {
        admission: components.admission(),
        max_body_bytes: limits.max_body_bytes,
    };
    let rejections = Arc::new(RejectionLog::new(components.metrics.clone()));
    let budget = Arc::new(BodyBudget::new(
        limits.max_inflight_body_bytes,
        limits.max_inflight_body_bytes_per_peer,
    ));
    let reading = BodyReading::new(limits, budget, rejections.clone());
    let overloaded = move |_: tower::BoxError| {
        let rejections = rejections.clone();
        async move {
            rejections.reject(
                Rejection::Overloaded,
                None,
                "all review slots busy; answered 503",
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the webhook is answering as many reviews as it may at once; retry",
            )
        }
    };
    let mutate_route = post(mutate_handler).with_state(mutate).layer(
        ServiceBuilder::new()
            .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
            .map_request(|request: http::Request<_>| request.map(Body::new))
            .layer(middleware::from_fn_with_state(reading, read_body))
            .layer(HandleErrorLayer::new(overloaded))
            .load_shed()
            .concurrency_limit(limits.max_concurrent_reviews),
    );
    let metrics = components.metrics.clone();
    let readiness = components.readiness.clone();
    Router::new()
        .route("/mutate", mutate_route)
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || readyz(readiness.clone())))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(metrics, count_requests))
}

/// A JSON dump of the ServiceAccount cache for `/debug/alpha/cache`.
pub type CacheDumper = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Routes of the metrics port: `/healthz`, `/readyz`, `/metrics`, and `/debug/alpha/cache`
/// when a dumper is given (`--enable-debugging-handlers`).
pub fn admin_router(components: &Components) -> Router {
    let readiness = components.readiness.clone();
    let metrics = components.metrics.clone();
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || readyz(readiness.clone())))
        .route("/metrics", get(move || prometheus(metrics.clone())));
    if let Some(dump) = components.cache_dumper.clone() {
        router = router.route(
            "/debug/alpha/cache",
            get(move || {
                let dump = dump.clone();
                async move { axum::Json(dump()) }
            }),
        );
    }
    router
}

#[derive(Clone)]
struct MutateState {
    admission: Arc<Admission>,
    max_body_bytes: usize,
}

async fn mutate_handler(
    State(state): State<MutateState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(problem) = check_content_type(&headers) {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, problem).into_response();
    }
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body exceeds the {} byte limit",
                state.max_body_bytes
            ),
        )
            .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > state.max_body_bytes as u64) {
        return too_large();
    }
    // The layers in front have read the whole body within its deadline and the memory budget,
    // and the concurrency limit has admitted this review: this only collects it.
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let source = err.into_inner();
            if source.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {source}"),
            )
                .into_response();
        }
    };
    match state.admission.review(&bytes).await {
        Ok(answer) => ([(header::CONTENT_TYPE, "application/json")], answer).into_response(),
        Err(bad) => (StatusCode::BAD_REQUEST, bad.0).into_response(),
    }
}

/// The media type must be `application/json`; parameters such as `charset` are allowed.
fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err("Content-Type must be application/json, got none".into());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let media_type = text.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(format!(
            "Content-Type must be application/json, got {text:?}"
        ))
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(readiness: Arc<Readiness>) -> Response {
    match readiness.check() {
        Ok(()) => "ok".into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", reasons.join("; ")),
        )
            .into_response(),
    }
}

async fn prometheus(metrics: Arc<Metrics>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {limit:?}"),
        )
            .into_response(),
    }
}

/// `http_request_count{verb,path,code}` and the latency metrics. The path label is the
/// route, not the raw path, and the verb one of a fixed set, so that scanning clients cannot
/// grow the label set.
async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let verb = verb_label(request.method());
    // A cheap clone (a shared string), so nothing is copied per request.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let path = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let response = next.run(request).await;
    metrics.observe_request(verb, path, response.status().as_str(), started);
    response
}

/// The `verb` label: the standard methods by name, anything else `OTHER`, since HTTP lets a
/// client send any token as a method and each would otherwise become a series of its own.
fn verb_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
