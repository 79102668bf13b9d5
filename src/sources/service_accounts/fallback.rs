//! Direct GETs for ServiceAccounts the watch has not delivered yet: one request per key however
//! many pods wait for it, a bounded number at a time, at a bounded rate, and no state left
//! behind once a request ends (the reference webhook leaks an entry per failed lookup).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::{watch, Semaphore};

use super::store::ServiceAccountStore;
use super::token_bucket::TokenBucket;
use crate::core::identity::ServiceAccountAnnotations;
use crate::ops::metrics::Metrics;

/// Limits on the fallback GETs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FallbackLimits {
    /// GETs in flight at once.
    pub concurrency: usize,
    /// Sustained GETs per second.
    pub per_second: f64,
    /// GETs allowed at once after a quiet period.
    pub burst: u32,
}

impl Default for FallbackLimits {
    fn default() -> Self {
        Self {
            concurrency: 8,
            per_second: 20.0,
            burst: 40,
        }
    }
}

/// Reads one ServiceAccount's annotations from the API server.
pub(crate) trait Fetch: Send + Sync + 'static {
    /// `Ok(None)` when the ServiceAccount does not exist; `Err` says what went wrong.
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<ServiceAccountAnnotations>, FetchError>>;
}

/// Why a GET for a ServiceAccount failed, kept apart so that logs and
/// `lookup_fallbacks{outcome}` tell a refusal from an outage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// 401 or 403: the webhook may not read ServiceAccounts.
    #[error("the API server refused the GET with HTTP {code} ({reason}): {message}; the webhook's ServiceAccount needs get on serviceaccounts")]
    Forbidden {
        code: u16,
        reason: String,
        message: String,
    },
    /// Any other error status (429, 5xx, ...).
    #[error("the API server answered HTTP {code} ({reason}): {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// No usable answer: the connection failed, timed out at the client or the body did not
    /// decode.
    #[error("no usable answer from the API server: {0}")]
    Transport(String),
}

impl FetchError {
    /// The `outcome` label this failure is counted under.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Forbidden { .. } => "forbidden",
            Self::Api { .. } => "api_error",
            Self::Transport(_) => "transport_error",
        }
    }
}

impl From<kube::Error> for FetchError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let kube::core::Status {
                    code,
                    reason,
                    message,
                    ..
                } = *status;
                if code == 401 || code == 403 {
                    Self::Forbidden {
                        code,
                        reason,
                        message,
                    }
                } else {
                    Self::Api {
                        code,
                        reason,
                        message,
                    }
                }
            }
            other => Self::Transport(other.to_string()),
        }
    }
}

/// How one fallback lookup ended; the label of `lookup_fallbacks{outcome}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchOutcome {
    Found(Arc<ServiceAccountAnnotations>),
    NotFound,
    /// The GET failed; says how.
    Error(FetchError),
    /// The GET did not finish within the grace period.
    Timeout,
    /// No GET was made: the rate limit was reached.
    RateLimited,
}

impl FetchOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Found(_) => "found",
            Self::NotFound => "not_found",
            Self::Error(error) => error.label(),
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
        }
    }
}

type Key = (Box<str>, Box<str>);
type Pending = watch::Receiver<Option<FetchOutcome>>;

/// The deduplicated, limited GETs.
pub(crate) struct FallbackLookups {
    fetcher: Arc<dyn Fetch>,
    store: Arc<ServiceAccountStore>,
    metrics: Arc<Metrics>,
    /// Keys with a GET under way; an entry lives exactly as long as its GET task.
    in_flight: Mutex<HashMap<Key, Pending>>,
    permits: Semaphore,
    bucket: Mutex<TokenBucket>,
    /// Bound on one GET, waiting for a permit included.
    timeout: Duration,
}

impl FallbackLookups {
    pub fn new(
        fetcher: Arc<dyn Fetch>,
        store: Arc<ServiceAccountStore>,
        metrics: Arc<Metrics>,
        limits: FallbackLimits,
        timeout: Duration,
    ) -> Self {
        Self {
            fetcher,
            store,
            metrics,
            in_flight: Mutex::new(HashMap::new()),
            permits: Semaphore::new(limits.concurrency.max(1)),
            bucket: Mutex::new(TokenBucket::new(
                limits.per_second,
                limits.burst,
                Instant::now(),
            )),
            timeout,
        }
    }

    /// Joins the GET under way for `namespace/name`, or starts one (on the current runtime).
    /// The GET runs to its end even when every waiter gives up, so its result still lands in
    /// the store; dropping the returned future leaves nothing behind.
    pub(crate) fn fetch(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
    ) -> impl std::future::Future<Output = FetchOutcome> + Send + 'static {
        let pending = self.join_or_start(namespace, name);
        async move {
            let Some(mut pending) = pending else {
                return FetchOutcome::RateLimited;
            };
            let outcome = match pending.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                // The task ended without an answer: only when the runtime shuts down.
                Err(_) => None,
            };
            outcome.unwrap_or_else(|| {
                FetchOutcome::Error(FetchError::Transport(
                    "the lookup was cancelled: the runtime is shutting down".into(),
                ))
            })
        }
    }

    /// GETs under way; zero whenever no lookup is running.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock_in_flight().len()
    }

    fn join_or_start(self: &Arc<Self>, namespace: &str, name: &str) -> Option<Pending> {
        let key: Key = (namespace.into(), name.into());
        let mut in_flight = self.lock_in_flight();
        if let Some(pending) = in_flight.get(&key) {
            return Some(pending.clone());
        }
        let allowed = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_take(Instant::now());
        if !allowed {
            self.count(&FetchOutcome::RateLimited);
            tracing::debug!(
                namespace,
                name,
                "ServiceAccount lookup not sent: rate limit reached"
            );
            return None;
        }
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(key.clone(), receiver.clone());
        drop(in_flight);
        tokio::spawn(self.clone().run(key, sender));
        Some(receiver)
    }

    async fn run(self: Arc<Self>, key: Key, sender: watch::Sender<Option<FetchOutcome>>) {
        // Removes the in-flight entry however this task ends, cancellation included.
        let entry = InFlightEntry {
            owner: &self,
            key: &key,
        };
        let (namespace, name) = (&*key.0, &*key.1);
        let deletions_before = self.store.deletions();
        let attempt = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .expect("the semaphore is never closed");
            self.fetcher.fetch(namespace, name).await
        };
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => FetchOutcome::Timeout,
            Ok(Ok(Some(annotations))) => FetchOutcome::Found(self.store.insert_fetched(
                namespace,
                name,
                annotations,
                deletions_before,
            )),
            Ok(Ok(None)) => FetchOutcome::NotFound,
            Ok(Err(error)) => {
                tracing::warn!(
                    namespace,
                    name,
                    kind = error.label(),
                    %error,
                    "ServiceAccount lookup failed"
                );
                FetchOutcome::Error(error)
            }
        };
        self.count(&outcome);
        tracing::debug!(
            namespace,
            name,
            outcome = outcome.label(),
            "ServiceAccount lookup done"
        );
        // Forget the key before answering, so a lookup arriving later starts afresh rather
        // than joining a finished GET.
        drop(entry);
        sender.send_replace(Some(outcome));
    }

    fn count(&self, outcome: &FetchOutcome) {
        self.metrics
            .lookup_fallbacks
            .with_label_values(&[outcome.label()])
            .inc();
    }

    fn lock_in_flight(&self) -> MutexGuard<'_, HashMap<Key, Pending>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct InFlightEntry<'a> {
    owner: &'a FallbackLookups,
    key: &'a Key,
}

impl Drop for InFlightEntry<'_> {
    fn drop(&mut self) {
        self.owner.lock_in_flight().remove(self.key);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fetcher answering from a fixed reply after a delay, counting calls.
    pub(crate) struct FakeFetch {
        pub calls: AtomicUsize,
        pub delay: Duration,
        pub reply: Result<Option<ServiceAccountAnnotations>, FetchError>,
    }

    impl FakeFetch {
        pub fn new(
            delay: Duration,
            reply: Result<Option<ServiceAccountAnnotations>, FetchError>,
        ) -> Arc<Self> {
            Arc::new(Self {
                calls: AtomicUsize::new(0),
                delay,
                reply,
            })
        }

        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Fetch for FakeFetch {
        fn fetch(
            &self,
            _namespace: &str,
            _name: &str,
        ) -> BoxFuture<'static, Result<Option<ServiceAccountAnnotations>, FetchError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (delay, reply) = (self.delay, self.reply.clone());
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                reply
            })
        }
    }

    /// An error status from the API server, as kube reports it.
    pub(crate) fn api_error(code: u16, reason: &str) -> FetchError {
        let status = kube::core::Status::failure("stand-in failure", reason).with_code(code);
        FetchError::from(kube::Error::Api(Box::new(status)))
    }

    pub(crate) fn role(arn: &str) -> ServiceAccountAnnotations {
        ServiceAccountAnnotations {
            role_arn: Some(arn.into()),
            ..Default::default()
        }
    }

    fn lookups(
        fetch: Arc<FakeFetch>,
        limits: FallbackLimits,
    ) -> (Arc<FallbackLookups>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let lookups = Arc::new(FallbackLookups::new(
            fetch,
            Arc::new(ServiceAccountStore::new()),
            metrics.clone(),
            limits,
            Duration::from_millis(500),
        ));
        (lookups, metrics)
    }

    fn outcomes(metrics: &Metrics, outcome: &str) -> u64 {
        metrics.lookup_fallbacks.with_label_values(&[outcome]).get()
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_for_one_key_share_one_get() {
        let fetch = FakeFetch::new(Duration::from_millis(50), Ok(Some(role("r"))));
        let (lookups, metrics) = lookups(fetch.clone(), FallbackLimits::default());
        let results = futures::future::join_all((0..20).map(|_| lookups.fetch("ns", "sa"))).await;
        assert_eq!(fetch.calls(), 1);
        assert!(results
            .iter()
            .all(|r| matches!(r, FetchOutcome::Found(a) if a.role() == Some("r"))));
        assert_eq!(outcomes(&metrics, "found"), 1);
        assert_eq!(lookups.in_flight(), 0);
        assert_eq!(
            lookups.store.get("ns", "sa").unwrap().role(),
            Some("r"),
            "found entry is stored"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_and_errors_leave_no_state_behind() {
        for (reply, label) in [
            (Ok(None), "not_found"),
            (Err(api_error(500, "InternalError")), "api_error"),
            (Err(api_error(403, "Forbidden")), "forbidden"),
            (
                Err(FetchError::Transport("connection refused".into())),
                "transport_error",
            ),
        ] {
            let fetch = FakeFetch::new(Duration::from_millis(5), reply);
            let (lookups, metrics) = lookups(fetch, FallbackLimits::default());
            let outcome = lookups.fetch("ns", "missing").await;
            assert_eq!(outcome.label(), label);
            assert_eq!(lookups.in_flight(), 0, "{label}");
            assert!(lookups.store.is_empty(), "{label}");
            assert_eq!(outcomes(&metrics, label), 1);
        }
    }

    #[test]
    fn kube_errors_are_told_apart_by_kind_and_keep_the_status() {
        for (code, label) in [
            (401, "forbidden"),
            (403, "forbidden"),
            (429, "api_error"),
            (503, "api_error"),
        ] {
            let error = api_error(code, "Reason");
            assert_eq!(error.label(), label, "{code}");
            let text = error.to_string();
            assert!(text.contains(&format!("HTTP {code} (Reason)")), "{text}");
        }
        let forbidden = api_error(403, "Forbidden").to_string();
        assert!(
            forbidden.contains("needs get on serviceaccounts"),
            "{forbidden}"
        );
        let transport = FetchError::from(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(transport.label(), "transport_error");
        assert!(transport
            .to_string()
            .starts_with("no usable answer from the API server: "));
    }

    #[tokio::test(start_paused = true)]
    async fn a_get_slower_than_the_bound_times_out_and_is_forgotten() {
        let fetch = FakeFetch::new(Duration::from_secs(30), Ok(Some(role("r"))));
        let (lookups, metrics) = lookups(fetch, FallbackLimits::default());
        let outcome = lookups.fetch("ns", "slow").await;
        assert_eq!(outcome, FetchOutcome::Timeout);
        assert_eq!(lookups.in_flight(), 0);
        assert_eq!(outcomes(&metrics, "timeout"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_giving_up_does_not_cancel_the_get_or_leak_its_entry() {
        let fetch = FakeFetch::new(Duration::from_millis(50), Ok(Some(role("r"))));
        let (lookups, _metrics) = lookups(fetch, FallbackLimits::default());
        let abandoned =
            tokio::time::timeout(Duration::from_millis(5), lookups.fetch("ns", "sa")).await;
        assert!(abandoned.is_err());
        assert_eq!(lookups.in_flight(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(lookups.in_flight(), 0);
        assert!(
            lookups.store.get("ns", "sa").is_some(),
            "the GET still filled the store"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gets_beyond_the_rate_limit_are_not_sent() {
        let fetch = FakeFetch::new(Duration::from_millis(1), Ok(None));
        let limits = FallbackLimits {
            concurrency: 8,
            per_second: 0.001,
            burst: 3,
        };
        let (lookups, metrics) = lookups(fetch.clone(), limits);
        let mut labels = Vec::new();
        for i in 0..5 {
            labels.push(lookups.fetch("ns", &format!("sa-{i}")).await.label());
        }
        assert_eq!(
            labels,
            [
                "not_found",
                "not_found",
                "not_found",
                "rate_limited",
                "rate_limited"
            ]
        );
        assert_eq!(fetch.calls(), 3);
        assert_eq!(outcomes(&metrics, "rate_limited"), 2);
        assert_eq!(lookups.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_gets_run_at_once_than_the_concurrency_limit() {
        #[derive(Default)]
        struct Gauge {
            running: Arc<AtomicUsize>,
            peak: Arc<AtomicUsize>,
        }
        impl Fetch for Gauge {
            fn fetch(
                &self,
                _: &str,
                _: &str,
            ) -> BoxFuture<'static, Result<Option<ServiceAccountAnnotations>, FetchError>>
            {
                let (running, peak) = (self.running.clone(), self.peak.clone());
                Box::pin(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(None)
                })
            }
        }
        let gauge = Arc::new(Gauge::default());
        let limits = FallbackLimits {
            concurrency: 2,
            ..FallbackLimits::default()
        };
        let lookups = Arc::new(FallbackLookups::new(
            gauge.clone(),
            Arc::new(ServiceAccountStore::new()),
            Arc::new(Metrics::new()),
            limits,
            Duration::from_secs(5),
        ));
        let names: Vec<String> = (0..6).map(|i| format!("sa-{i}")).collect();
        let results = futures::future::join_all(names.iter().map(|n| lookups.fetch("ns", n))).await;
        assert!(results.iter().all(|r| *r == FetchOutcome::NotFound));
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 2);
    }
}
