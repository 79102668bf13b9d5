//! The server's ServiceAccount cache: a metadata-only watch over every ServiceAccount feeding
//! the compact store, and, on a miss, a bounded wait for the watch or a direct GET.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::runtime::watcher;
use tracing::Instrument;

use super::fallback::{FallbackLimits, FallbackLookups, Fetch, FetchError, FetchOutcome};
use super::store::ServiceAccountStore;
use super::store_writer::{Applied, ServiceAccountMeta, StoreWriter};
use super::ServiceAccountLookup;
use crate::core::identity::ServiceAccountAnnotations;
use crate::core::settings::AnnotationKeys;
use crate::ops::health::{Condition, Readiness};
use crate::ops::metrics::Metrics;
use crate::sources::watch_retry::WatchRetry;

/// The label of `watch_errors{resource}` for this watch.
const RESOURCE: &str = "serviceaccounts";

/// ServiceAccounts from the watch, with a bounded fallback for ones it has not delivered yet.
pub struct KubeServiceAccountCache {
    store: Arc<ServiceAccountStore>,
    fallback: Arc<FallbackLookups>,
    grace_period: Duration,
}

/// How lookups that miss the cache are answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheSettings {
    /// How long a lookup may wait for a ServiceAccount missing from the cache, for the watch
    /// or a direct GET; zero answers a miss at once, as the reference webhook does by default.
    pub grace_period: Duration,
    /// Limits on the direct GETs.
    pub fallback: FallbackLimits,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(1),
            fallback: FallbackLimits::default(),
        }
    }
}

/// What `/readyz` says until the first complete list.
const NOT_SYNCED: &str = "ServiceAccount cache not yet synced";

impl KubeServiceAccountCache {
    /// Starts the watch on the current tokio runtime. Registers the cache's readiness
    /// condition, met after the first complete list.
    pub fn start(
        client: kube::Client,
        keys: AnnotationKeys,
        settings: CacheSettings,
        metrics: Arc<Metrics>,
        readiness: &Readiness,
    ) -> Arc<Self> {
        let synced = readiness.register(NOT_SYNCED);
        let store = Arc::new(ServiceAccountStore::new());
        let fetcher = Arc::new(KubeFetch {
            client: client.clone(),
            keys: keys.clone(),
        });
        let cache = Arc::new(Self::with_fetcher(
            store.clone(),
            fetcher,
            settings.grace_period,
            settings.fallback,
            metrics.clone(),
        ));
        // In the caller's span, which names the API server in every line the watch logs.
        tokio::spawn(
            watch_service_accounts(client, keys, store, metrics, synced).in_current_span(),
        );
        cache
    }

    /// A cache over `store` whose misses go to `fetcher`; nothing is spawned.
    pub(crate) fn with_fetcher(
        store: Arc<ServiceAccountStore>,
        fetcher: Arc<dyn Fetch>,
        grace_period: Duration,
        limits: FallbackLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let fallback = Arc::new(FallbackLookups::new(
            fetcher,
            store.clone(),
            metrics,
            limits,
            grace_period,
        ));
        Self {
            store,
            fallback,
            grace_period,
        }
    }

    /// ServiceAccounts held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Fallback GETs under way. Zero whenever no lookup is waiting: failed lookups leave
    /// nothing behind.
    pub fn in_flight_lookups(&self) -> usize {
        self.fallback.in_flight()
    }

    /// The whole cache as JSON for `/debug/alpha/cache`: `"namespace/name"` → the annotations
    /// kept, sorted by key.
    pub fn dump(&self) -> serde_json::Value {
        let entries = self.store.sorted_entries();
        let mut service_accounts = serde_json::Map::with_capacity(entries.len());
        for (key, entry) in entries {
            let value = serde_json::to_value(&*entry).unwrap_or(serde_json::Value::Null);
            service_accounts.insert(key, value);
        }
        serde_json::json!({
            "count": service_accounts.len(),
            "inFlightLookups": self.in_flight_lookups(),
            "serviceAccounts": service_accounts,
        })
    }

    /// The store, for callers that fill it themselves (tests, benchmarks).
    pub fn store(&self) -> &Arc<ServiceAccountStore> {
        &self.store
    }

    async fn lookup_within_grace(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<ServiceAccountAnnotations>> {
        if let Some(found) = self.store.get(namespace, name) {
            return Some(found);
        }
        if self.grace_period.is_zero() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + self.grace_period;
        let mut inserted = pin!(self.store.inserted());
        inserted.as_mut().enable();
        if let Some(found) = self.store.get(namespace, name) {
            return Some(found);
        }
        // Whichever answers first wins: the watch delivering the ServiceAccount or the GET.
        let mut get = pin!(self.fallback.fetch(namespace, name).fuse());
        let mut get_pending = true;
        let mut expired = pin!(tokio::time::sleep_until(deadline));
        loop {
            tokio::select! {
                () = inserted.as_mut() => {
                    if let Some(found) = self.store.get(namespace, name) {
                        return Some(found);
                    }
                    inserted.set(self.store.inserted());
                    inserted.as_mut().enable();
                    if let Some(found) = self.store.get(namespace, name) {
                        return Some(found);
                    }
                }
                outcome = &mut get, if get_pending => match outcome {
                    FetchOutcome::Found(found) => return Some(found),
                    // The API server says it does not exist: nothing left to wait for.
                    FetchOutcome::NotFound => return self.store.get(namespace, name),
                    // No answer from the GET (not sent, failed, or a joined GET that started
                    // earlier timed out) says nothing about the ServiceAccount; the watch can
                    // still deliver it before the deadline, which is what the grace period is for.
                    FetchOutcome::RateLimited | FetchOutcome::Error(_) | FetchOutcome::Timeout => {
                        get_pending = false;
                    }
                },
                () = expired.as_mut() => return self.store.get(namespace, name),
            }
        }
    }
}

impl ServiceAccountLookup for KubeServiceAccountCache {
    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<ServiceAccountAnnotations>>> {
        Box::pin(self.lookup_within_grace(namespace, name))
    }

    fn cached(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccountAnnotations>> {
        self.store.get(namespace, name)
    }
}

/// GETs only the metadata: the annotations are all we keep, and it spares decoding the rest.
struct KubeFetch {
    client: kube::Client,
    keys: AnnotationKeys,
}

impl Fetch for KubeFetch {
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
    ) -> BoxFuture<'static, Result<Option<ServiceAccountAnnotations>, FetchError>> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let keys = self.keys.clone();
        let name = name.to_string();
        Box::pin(async move {
            match api.get_metadata_opt(&name).await {
                Ok(Some(object)) => Ok(Some(
                    object
                        .metadata
                        .annotations
                        .as_ref()
                        .map(|annotations| {
                            ServiceAccountAnnotations::from_annotations(annotations, &keys)
                        })
                        .unwrap_or_default(),
                )),
                Ok(None) => Ok(None),
                Err(error) => Err(FetchError::from(error)),
            }
        })
    }
}

/// Runs the watch for as long as the runtime does. Errors are retried with a capped exponential
/// backoff, one log line per failed attempt, while lookups keep being answered from what the
/// store holds.
async fn watch_service_accounts(
    client: kube::Client,
    keys: AnnotationKeys,
    store: Arc<ServiceAccountStore>,
    metrics: Arc<Metrics>,
    synced: Condition,
) {
    let api: Api<ServiceAccountMeta> = Api::all(client);
    // kube lists in pages of 500, so a list or relist holds one page of ServiceAccounts beside
    // the store, never the whole cluster's. A paged list is a consistent read whatever the list
    // semantic (kube sends no resourceVersion with a limit): the API server, not the webhook,
    // bounds the time to ready with many ServiceAccounts (docs/benchmarks.md).
    let config = watcher::Config::default();
    let mut events = pin!(watcher(api, config));
    let mut reflector = StoreWriter::new(store.clone(), keys);
    // The error count exists from the start at 0, so an alert on its increase sees the first.
    metrics.watch_errors.with_label_values(&[RESOURCE]);
    let mut retry = WatchRetry::default();
    let mut synced_once = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if let Some(failed) = retry.on_event(&event) {
                    tracing::info!(failed_attempts = failed, "ServiceAccount watch reconnected");
                }
                if let Applied::Synced { entries } = reflector.apply(event) {
                    if !synced_once {
                        synced_once = true;
                        synced.set(true);
                        metrics.webhook_used.set(1);
                        tracing::info!(entries, "ServiceAccount cache synced");
                    } else {
                        tracing::debug!(entries, "ServiceAccount cache relisted");
                    }
                }
                metrics
                    .cache_service_accounts
                    .set(i64::try_from(store.len()).unwrap_or(i64::MAX));
            }
            Err(error) => {
                let meanwhile = "lookups are answered from the cache meanwhile";
                retry
                    .back_off(
                        &error,
                        &metrics.watch_errors,
                        RESOURCE,
                        "ServiceAccounts",
                        meanwhile,
                    )
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::service_accounts::fallback::tests::{api_error, role, FakeFetch};

    /// The watch delivers `ns/sa` 50 ms from now, well inside the grace periods used here.
    fn deliver_by_watch_soon(store: Arc<ServiceAccountStore>) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.upsert("ns", "sa", role("from-watch"));
        });
    }

    fn cache(fetch: Arc<FakeFetch>, grace: Duration) -> KubeServiceAccountCache {
        KubeServiceAccountCache::with_fetcher(
            Arc::new(ServiceAccountStore::new()),
            fetch,
            grace,
            FallbackLimits::default(),
            Arc::new(Metrics::new()),
        )
    }

    /// A lookup of `ns/sa` answers "unknown" once `grace` has passed, not before and not
    /// much later (virtual time: exact whatever the machine's load).
    async fn assert_gives_up_at_the_grace_period(cache: &KubeServiceAccountCache, grace: Duration) {
        let started = tokio::time::Instant::now();
        assert!(cache.lookup("ns", "sa").await.is_none());
        let waited = started.elapsed();
        assert!(waited >= grace && waited < grace * 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hit_answers_without_any_get() {
        let fetch = FakeFetch::new(Duration::ZERO, Ok(None));
        let cache = cache(fetch.clone(), Duration::from_secs(1));
        cache.store().upsert("ns", "sa", role("r"));
        assert_eq!(cache.lookup("ns", "sa").await.unwrap().role(), Some("r"));
        assert_eq!(fetch.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_grace_period_answers_a_miss_at_once_without_a_get() {
        let fetch = FakeFetch::new(Duration::ZERO, Ok(Some(role("r"))));
        let cache = cache(fetch.clone(), Duration::ZERO);
        assert!(cache.lookup("ns", "sa").await.is_none());
        assert_eq!(fetch.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_delivering_during_the_wait_wins_over_a_slow_get() {
        let fetch = FakeFetch::new(Duration::from_secs(10), Ok(None));
        let cache = Arc::new(cache(fetch, Duration::from_secs(2)));
        deliver_by_watch_soon(cache.store().clone());
        let started = tokio::time::Instant::now();
        let found = cache.lookup("ns", "sa").await;
        assert_eq!(found.unwrap().role(), Some("from-watch"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_miss_still_waits_for_the_watch() {
        let fetch = FakeFetch::new(Duration::ZERO, Ok(None));
        let limits = FallbackLimits {
            concurrency: 1,
            per_second: 0.0,
            burst: 1,
        };
        let cache = Arc::new(KubeServiceAccountCache::with_fetcher(
            Arc::new(ServiceAccountStore::new()),
            fetch.clone(),
            Duration::from_secs(2),
            limits,
            Arc::new(Metrics::new()),
        ));
        assert!(cache.lookup("ns", "uses-the-token").await.is_none());
        deliver_by_watch_soon(cache.store().clone());
        assert_eq!(
            cache.lookup("ns", "sa").await.unwrap().role(),
            Some("from-watch")
        );
        assert_eq!(fetch.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_get_still_waits_for_the_watch() {
        let fetch = FakeFetch::new(Duration::ZERO, Err(api_error(503, "ServiceUnavailable")));
        let cache = Arc::new(cache(fetch.clone(), Duration::from_secs(2)));
        deliver_by_watch_soon(cache.store().clone());
        assert_eq!(
            cache.lookup("ns", "sa").await.unwrap().role(),
            Some("from-watch")
        );
        assert_eq!(fetch.calls(), 1);
        assert_eq!(cache.in_flight_lookups(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_get_with_nothing_from_the_watch_gives_up_at_the_grace_period() {
        let fetch = FakeFetch::new(Duration::ZERO, Err(api_error(429, "TooManyRequests")));
        let cache = cache(fetch.clone(), Duration::from_millis(100));
        assert_gives_up_at_the_grace_period(&cache, Duration::from_millis(100)).await;
        assert_eq!(fetch.calls(), 1);
        assert_eq!(cache.in_flight_lookups(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_not_found_get_answers_at_once() {
        let fetch = FakeFetch::new(Duration::ZERO, Ok(None));
        let cache = cache(fetch.clone(), Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        assert!(cache.lookup("ns", "sa").await.is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(fetch.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_miss_nobody_answers_gives_up_at_the_grace_period() {
        let fetch = FakeFetch::new(Duration::from_secs(10), Ok(None));
        let cache = cache(fetch, Duration::from_millis(100));
        assert_gives_up_at_the_grace_period(&cache, Duration::from_millis(100)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.in_flight_lookups(), 0);
    }

    #[test]
    fn dump_lists_entries_sorted_by_namespace_and_name() {
        let cache = cache(FakeFetch::new(Duration::ZERO, Ok(None)), Duration::ZERO);
        cache.store().upsert("b", "sa", role("r2"));
        cache
            .store()
            .upsert("a", "sa", ServiceAccountAnnotations::default());
        cache.store().upsert("a", "app", role("r1"));
        let dump = cache.dump();
        assert_eq!(dump["count"], 3);
        let keys: Vec<_> = dump["serviceAccounts"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["a/app", "a/sa", "b/sa"]);
        assert_eq!(dump["serviceAccounts"]["a/app"]["role_arn"], "r1");
        assert_eq!(dump["serviceAccounts"]["a/sa"], serde_json::json!({}));
    }
}
