//! The HTTP surface: the webhook router (`POST /mutate`, health) served over TLS, and the admin
//! router (health, readiness, metrics, debugging) served in plain HTTP on the metrics port.
//! Built by plain functions so tests drive them in-process with `tower::ServiceExt::oneshot`.
//!
//! Every request takes the same route through declared layers: counted and timed
//! (`count_requests`), bounded by the whole-request timeout (`request_timeout`), and for
//! `/mutate`, the body read whole within its limits ([`read_whole_body`]), then a review slot
//! (503 at once when all are taken, rather than a queue), then the review.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use tower::ServiceBuilder;

use super::admission::Admission;
use super::limits::{request_timed_out, BodyBudget, BodyReading, Rejection, RejectionLog};
use super::{Components, Limits};
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;

/// The path of the admission endpoint, also its `path` label in the request metrics.
pub(crate) const MUTATE_PATH: &str = "/mutate";

/// The client's address, put on each request by the connection that carried it (absent in
/// in-process tests): per-peer limits and the refusal log read it.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub IpAddr);

/// Routes of the HTTPS port: `POST /mutate`, `/healthz`, `/readyz`. Anything else is 404, a
/// wrong method 405.
pub fn webhook_router(components: &Components, limits: &Limits) -> Router {
    let rejections = Arc::new(RejectionLog::new(components.metrics.clone()));
    let budget = Arc::new(BodyBudget::new(
        limits.max_inflight_body_bytes,
        limits.max_inflight_body_bytes_per_peer,
    ));
    let reading = Arc::new(BodyReading::new(limits, budget, rejections.clone()));
    let overloaded = move |_: BoxError| {
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
    let mutate = post(review)
        .fallback(only_post)
        .with_state(components.admission())
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(reading, read_whole_body))
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .concurrency_limit(limits.max_concurrent_reviews)
                // The body is already whole and within `max_body_bytes`.
                .layer(DefaultBodyLimit::disable()),
        );
    let readiness = components.readiness.clone();
    Router::new()
        .route(MUTATE_PATH, mutate)
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || readyz(readiness.clone())))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            components.metrics.clone(),
            count_requests,
        ))
}

/// Answers one review; its body is whole and within the limits ([`read_whole_body`]).
async fn review(
    State(admission): State<Arc<Admission>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(problem) = check_content_type(&headers) {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, problem).into_response();
    }
    match admission.review(&body).await {
        Ok(answer) => ([(header::CONTENT_TYPE, "application/json")], answer).into_response(),
        Err(bad) => (StatusCode::BAD_REQUEST, bad.0).into_response(),
    }
}

async fn only_post() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST")],
        "/mutate takes POST only",
    )
        .into_response()
}

/// Reads the whole body before anything else may wait on it ([`BodyReading::read`]): a
/// declared length over the limit is answered 413 before anything is read. The memory it takes
/// stays reserved in the body budget until the answer is made.
async fn read_whole_body(
    State(reading): State<Arc<BodyReading>>,
    request: Request,
    next: Next,
) -> Response {
    let started = tokio::time::Instant::now();
    let peer = request.extensions().get::<PeerAddr>().map(|peer| peer.0);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > reading.max_bytes as u64) {
        return reading.too_large(peer);
    }
    let (head, body) = request.into_parts();
    let whole = match reading.read(body, peer, started).await {
        Ok(whole) => whole,
        Err(refused) => return refused,
    };
    let request = Request::from_parts(head, whole.bytes.clone().into());
    next.run(request).await
}

/// The media type must be `application/json`; parameters such as `charset` are allowed.
fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err("Content-Type must be application/json, got none".into());
    };
    let bytes = value.as_bytes();
    let media_type = bytes.split(|byte| *byte == b';').next().unwrap_or_default();
    if media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
    {
        return Ok(());
    }
    Err(format!(
        "Content-Type must be application/json, got {:?}",
        String::from_utf8_lossy(bytes)
    ))
}

/// A JSON dump of the ServiceAccount cache for `/debug/alpha/cache`.
pub type CacheDumper = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Routes of the metrics port: `/healthz`, `/readyz`, `/metrics`, and `/debug/alpha/cache`
/// when a dumper is given (`--enable-debugging-handlers`).
pub fn admin_router(components: &Components) -> Router {
    let readiness = components.readiness.clone();
    let metrics = components.metrics.clone();
    let scraped = components.readiness.clone();
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || readyz(readiness.clone())))
        .route(
            "/metrics",
            get(move || prometheus(metrics.clone(), scraped.clone())),
        );
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

async fn prometheus(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Response {
    // Read at each scrape, so the gauge is exactly what `/readyz` would answer now.
    metrics.ready.set(i64::from(readiness.check().is_ok()));
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
    tokio::time::timeout(limit, next.run(request))
        .await
        .unwrap_or_else(|_| request_timed_out(limit))
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
