//! The Prometheus registry and every name we export. The reference webhook's metrics are all
//! kept, with their names, types, labels and units (`pod_identity_webhook_pod_count`,
//! `pod_identity_webhook_missing_sa_count`, `pod_identity_webhook_used`, `http_request_count`,
//! `http_request_latencies`, `http_request_duration_microseconds`), so existing dashboards and
//! alerts keep working; our own names sit beside them.

mod summary;

use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

pub use summary::WindowedSummary;

/// Latency buckets in seconds: the handler runs in microseconds, so they start at 25 µs.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The reference's latency buckets, in microseconds: 125 ms doubling up to 8 s.
pub const REFERENCE_LATENCY_BUCKETS: [f64; 7] = [
    125_000.0,
    250_000.0,
    500_000.0,
    1_000_000.0,
    2_000_000.0,
    4_000_000.0,
    8_000_000.0,
];

/// Quantiles of `http_request_duration_microseconds`, over its one-hour window.
pub(crate) const SUMMARY_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Mutated pods by `method`: `sts_web_identity` or `container_credentials`.
    pub pod_count: IntCounterVec,
    /// Pods whose ServiceAccount was not found within the grace period.
    pub missing_sa_count: IntCounter,
    /// HTTP requests by `verb`, `path` and `code`.
    pub http_request_count: IntCounterVec,
    /// Time to answer an admission request, by `path`.
    pub request_duration: HistogramVec,
    /// The reference's latency histogram, in microseconds, by `verb` and `path`.
    pub request_latencies: HistogramVec,
    /// The reference's latency summary, in microseconds, by `verb` and `path`.
    pub request_latency_summary: std::sync::Arc<WindowedSummary>,
    /// 1 once the ServiceAccount cache has synced: the reference's sign that the webhook is
    /// in use.
    pub webhook_used: IntGauge,
    /// 1 while `/readyz` answers 200, set when `/metrics` is read: what a dashboard counts as
    /// ready replicas without another exporter.
    pub ready: IntGauge,
    /// ServiceAccounts held in the cache.
    pub cache_service_accounts: IntGauge,
    /// Watch stream errors by `resource` (serviceaccounts, configmaps).
    pub watch_errors: IntCounterVec,
    /// Direct GETs after a cache miss, by `outcome`: found, not_found, forbidden, api_error,
    /// transport_error, timeout, rate_limited.
    pub lookup_fallbacks: IntCounterVec,
    /// Serving-certificate loads by `result`: success or failure.
    pub certificate_reloads: IntCounterVec,
    /// Expiry of the serving certificate in use, as a Unix timestamp.
    pub certificate_expiry: Gauge,
    /// Reloads of the ConfigMap mapping and container-credentials file, by `source` and
    /// `result`.
    pub config_reloads: IntCounterVec,
    /// Clients refused by a server limit, by `reason` (see `server::limits::Rejection`).
    pub rejections: IntCounterVec,
    /// `pod_count` for `sts_web_identity` and `container_credentials`, resolved on first use
    /// (so a series appears only once a pod was mutated that way, as before).
    mutated_by_method: [std::sync::OnceLock<IntCounter>; 2],
    /// The series of [`ANSWERED_REVIEW`], nearly every request: resolved once rather than by
    /// hashing its labels on every request.
    answered_review: std::sync::OnceLock<RequestSeries>,
}

/// The labels of an answered review: `verb`, `path`, `code`.
const ANSWERED_REVIEW: (&str, &str, &str) = ("POST", "/mutate", "200");

/// One label set's handles in the per-request metrics.
#[derive(Clone)]
struct RequestSeries {
    count: IntCounter,
    duration: Histogram,
    latencies: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let pod_count = IntCounterVec::new(
            Opts::new(
                "pod_identity_webhook_pod_count",
                "Pods mutated, by credential method",
            ),
            &["method"],
        )
        .expect("valid metric");
        let missing_sa_count = IntCounter::new(
            "pod_identity_webhook_missing_sa_count",
            "Pods whose ServiceAccount was not found within the lookup grace period",
        )
        .expect("valid metric");
        let http_request_count = IntCounterVec::new(
            Opts::new("http_request_count", "HTTP requests to the webhook"),
            &["verb", "path", "code"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "pod_identity_webhook_request_duration_seconds",
                "Time to answer a webhook request",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["path"],
        )
        .expect("valid metric");
        let request_latencies = HistogramVec::new(
            HistogramOpts::new(
                "http_request_latencies",
                "Response latency distribution in microseconds for each verb and path",
            )
            .buckets(REFERENCE_LATENCY_BUCKETS.to_vec()),
            &["verb", "path"],
        )
        .expect("valid metric");
        let request_latency_summary = std::sync::Arc::new(
            WindowedSummary::new(
                "http_request_duration_microseconds",
                "Response latency summary in microseconds for each verb and path (quantiles over the last hour)",
                &["verb", "path"],
                &SUMMARY_QUANTILES,
                Duration::from_secs(3600),
                6,
            )
            .expect("valid metric"),
        );
        let webhook_used = IntGauge::new(
            "pod_identity_webhook_used",
            "1 once the ServiceAccount cache has synced: the webhook is in use",
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "pod_identity_webhook_ready",
            "1 while the webhook is ready to take reviews (what /readyz answers with 200)",
        )
        .expect("valid metric");
        let cache_service_accounts = IntGauge::new(
            "pod_identity_webhook_cache_service_accounts",
            "ServiceAccounts held in the cache",
        )
        .expect("valid metric");
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "pod_identity_webhook_watch_errors_total",
                "Errors of the Kubernetes watches, by resource",
            ),
            &["resource"],
        )
        .expect("valid metric");
        let lookup_fallbacks = IntCounterVec::new(
            Opts::new(
                "pod_identity_webhook_lookup_fallbacks_total",
                "Direct ServiceAccount GETs after a cache miss, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let certificate_reloads = IntCounterVec::new(
            Opts::new(
                "pod_identity_webhook_certificate_reloads_total",
                "Serving certificate loads, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let certificate_expiry = Gauge::new(
            "pod_identity_webhook_certificate_expiry_timestamp_seconds",
            "Expiry of the serving certificate in use (Unix time)",
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "pod_identity_webhook_config_reloads_total",
                "Reloads of the ConfigMap mapping and container-credentials file, by source and result",
            ),
            &["source", "result"],
        )
        .expect("valid metric");
        let rejections = IntCounterVec::new(
            Opts::new(
                "pod_identity_webhook_rejected_total",
                "Connections and requests refused by a server limit, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(pod_count.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(missing_sa_count.clone()),
            Box::new(http_request_count.clone()),
            Box::new(request_duration.clone()),
            Box::new(request_latencies.clone()),
            Box::new(SharedCollector(request_latency_summary.clone())),
            Box::new(webhook_used.clone()),
            Box::new(ready.clone()),
            Box::new(cache_service_accounts.clone()),
            Box::new(watch_errors.clone()),
            Box::new(lookup_fallbacks.clone()),
            Box::new(certificate_reloads.clone()),
            Box::new(certificate_expiry.clone()),
            Box::new(config_reloads.clone()),
            Box::new(rejections.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        Self {
            registry,
            pod_count,
            missing_sa_count,
            http_request_count,
            request_duration,
            request_latencies,
            request_latency_summary,
            webhook_used,
            ready,
            cache_service_accounts,
            watch_errors,
            lookup_fallbacks,
            certificate_reloads,
            certificate_expiry,
            config_reloads,
            rejections,
            mutated_by_method: Default::default(),
            answered_review: Default::default(),
        }
    }

    /// Records one answered HTTP request in every request metric: the count, our histogram
    /// (seconds, by path) and the reference's histogram and summary (microseconds, by verb
    /// and path). `verb` and `path` must come from bounded sets (the caller maps them).
    pub(crate) fn observe_request(&self, verb: &str, path: &str, code: &str, started: Instant) {
        let elapsed = started.elapsed();
        let resolved;
        let series = if (verb, path, code) == ANSWERED_REVIEW {
            self.answered_review
                .get_or_init(|| self.request_series(ANSWERED_REVIEW))
        } else {
            resolved = self.request_series((verb, path, code));
            &resolved
        };
        series.count.inc();
        series.duration.observe(elapsed.as_secs_f64());
        // Whole microseconds, as the reference's `time.Duration / time.Microsecond`.
        let micros = elapsed.as_micros() as f64;
        series.latencies.observe(micros);
        self.request_latency_summary.observe(&[verb, path], micros);
    }

    fn request_series(&self, (verb, path, code): (&str, &str, &str)) -> RequestSeries {
        RequestSeries {
            count: self
                .http_request_count
                .with_label_values(&[verb, path, code]),
            duration: self.request_duration.with_label_values(&[path]),
            latencies: self.request_latencies.with_label_values(&[verb, path]),
        }
    }

    /// The mutated-pod counter: `method="container_credentials"` when `container_credentials`,
    /// else `method="sts_web_identity"`. Resolved once rather than by hashing the label on
    /// every request.
    pub(crate) fn pods_mutated(&self, container_credentials: bool) -> &IntCounter {
        let (slot, method) = if container_credentials {
            (1, "container_credentials")
        } else {
            (0, "sts_web_identity")
        };
        self.mutated_by_method[slot].get_or_init(|| self.pod_count.with_label_values(&[method]))
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// Registers a collector that is also kept by [`Metrics`], as registration takes ownership.
struct SharedCollector(std::sync::Arc<WindowedSummary>);

impl prometheus::core::Collector for SharedCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_are_exported_unchanged() {
        let metrics = Metrics::new();
        metrics
            .pod_count
            .with_label_values(&["sts_web_identity"])
            .inc();
        metrics.missing_sa_count.inc();
        metrics
            .http_request_count
            .with_label_values(&["POST", "/mutate", "200"])
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains("pod_identity_webhook_pod_count{method=\"sts_web_identity\"} 1"),
            "{text}"
        );
        assert!(text.contains("pod_identity_webhook_missing_sa_count 1"));
        assert!(text.contains("http_request_count{code=\"200\",path=\"/mutate\",verb=\"POST\"} 1"));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains("process_open_fds"));
    }
}
