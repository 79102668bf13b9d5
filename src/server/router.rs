//! The HTTP surface: the webhook router (`POST /mutate`, health) served over TLS, and the admin
//! router (health, readiness, metrics, debugging) served in plain HTTP on the metrics port.
//! Built by plain functions so tests drive them in-process with `tower::ServiceExt::oneshot`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{BoxError, Router};
use futures::future::BoxFuture;
use tower::ServiceExt;

use super::limits::request_timed_out;
use super::mutate::{MutateEndpoint, MUTATE_PATH};
use super::{Components, Limits};
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;

/// What one port serves: an axum router, and on the webhook port the `POST /mutate`
/// endpoint, which requests reach directly rather than through the router (see
/// `server::mutate`). A tower service, so tests drive it in-process with `oneshot`.
#[derive(Clone)]
pub struct Routes {
    router: Router,
    mutate: Option<Arc<MutateEndpoint>>,
}

impl Routes {
    /// Answers `request` from `peer` (`None` when not known).
    pub(crate) fn answer<B>(
        &self,
        request: http::Request<B>,
        peer: Option<IpAddr>,
    ) -> BoxFuture<'static, Response>
    where
        B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError> + std::fmt::Display + Send,
    {
        match &self.mutate {
            Some(mutate)
                if request.method() == Method::POST && request.uri().path() == MUTATE_PATH =>
            {
                let mutate = mutate.clone();
                Box::pin(async move { mutate.serve(request, peer).await })
            }
            _ => {
                let routed = self.router.clone().oneshot(request.map(Body::new));
                Box::pin(async move { routed.await.unwrap_or_else(|never| match never {}) })
            }
        }
    }
}

impl From<Router> for Routes {
    fn from(router: Router) -> Self {
        Self {
            router,
            mutate: None,
        }
    }
}

impl<B> tower::Service<http::Request<B>> for Routes
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let answer = self.answer(request, None);
        Box::pin(async move { Ok(answer.await) })
    }
}

/// Routes of the HTTPS port: `POST /mutate`, `/healthz`, `/readyz`. Anything else is 404, a
/// wrong method 405. Every request is counted in `http_request_count` and timed, and bounded
/// by the whole-request timeout; `/mutate` does that itself, with its other limits (see
/// `server::mutate`).
pub fn webhook_router(components: &Components, limits: &Limits) -> Routes {
    let readiness = components.readiness.clone();
    let router = Router::new()
        // `POST` is answered before the router; any other method lands here.
        .route(MUTATE_PATH, any(only_post))
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || readyz(readiness.clone())))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            components.metrics.clone(),
            count_requests,
        ));
    Routes {
        router,
        mutate: Some(Arc::new(MutateEndpoint::new(components, limits))),
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

/// A JSON dump of the ServiceAccount cache for `/debug/alpha/cache`.
pub type CacheDumper = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Routes of the metrics port: `/healthz`, `/readyz`, `/metrics`, and `/debug/alpha/cache`
/// when a dumper is given (`--enable-debugging-handlers`).
pub fn admin_router(components: &Components) -> Routes {
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
    router.into()
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
