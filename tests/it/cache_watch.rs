//! The ServiceAccount cache against a stand-in Kubernetes API: the metadata-only list+watch
//! filling the store, relists, readiness, and the bounded fallback GET on a miss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::eventually_async;
use crate::support::fake_api::{service_account, FakeApi, Verb};
use pod_identity_webhook::core::settings::AnnotationKeys;
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::sources::service_accounts::{
    CacheSettings, FallbackLimits, KubeServiceAccountCache, ServiceAccountLookup,
};

const ROLE_A: &str = "arn:aws:iam::111122223333:role/a";
const ROLE_B: &str = "arn:aws:iam::111122223333:role/b";
const WAIT: Duration = Duration::from_secs(10);

struct Running {
    api: FakeApi,
    cache: Arc<KubeServiceAccountCache>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

async fn start_with(api: FakeApi, grace: Duration, limits: FallbackLimits) -> Running {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let cache = KubeServiceAccountCache::start(
        api.client(),
        AnnotationKeys::new("eks.amazonaws.com"),
        CacheSettings {
            grace_period: grace,
            fallback: limits,
        },
        metrics.clone(),
        &readiness,
    );
    Running {
        api,
        cache,
        metrics,
        readiness,
    }
}

async fn start(api: FakeApi, grace: Duration) -> Running {
    start_with(api, grace, FallbackLimits::default()).await
}

fn synced(readiness: &Readiness) -> bool {
    match readiness.check() {
        Ok(()) => true,
        Err(reasons) => !reasons.contains(&"ServiceAccount cache not yet synced"),
    }
}

async fn role(cache: &KubeServiceAccountCache, namespace: &str, name: &str) -> Option<String> {
    cache
        .lookup(namespace, name)
        .await
        .and_then(|entry| entry.role().map(str::to_string))
}

impl Running {
    async fn synced(&self) {
        let readiness = self.readiness.clone();
        eventually_async("the first full list", WAIT, move || synced(&readiness)).await;
    }

    fn fallbacks(&self, outcome: &str) -> u64 {
        self.metrics
            .lookup_fallbacks
            .with_label_values(&[outcome])
            .get()
    }

    /// Failed lists and watches of ServiceAccounts counted so far.
    fn watch_errors(&self) -> u64 {
        self.metrics
            .watch_errors
            .with_label_values(&["serviceaccounts"])
            .get()
    }
}

#[tokio::test]
async fn the_watch_fills_the_store_from_the_list_and_follows_add_modify_delete() {
    let api = FakeApi::start().await;
    api.put(service_account("ns", "listed", Some(ROLE_A)));
    api.put(service_account("ns", "default", None));
    let running = start(api, Duration::ZERO).await;
    running.synced().await;
    let cache = &running.cache;
    assert_eq!(cache.len(), 2);
    assert_eq!(running.metrics.cache_service_accounts.get(), 2);
    // The error count is exported at 0 before any error, so an alert on its increase sees
    // the first one.
    let exported = running.metrics.encode();
    assert!(
        exported
            .contains("pod_identity_webhook_watch_errors_total{resource=\"serviceaccounts\"} 0"),
        "{exported}"
    );
    assert_eq!(role(cache, "ns", "listed").await.as_deref(), Some(ROLE_A));
    assert!(
        cache.lookup("ns", "default").await.is_some(),
        "known, without a role"
    );

    running
        .api
        .put(service_account("other", "added", Some(ROLE_B)));
    let c = cache.clone();
    eventually_async("the added ServiceAccount", WAIT, move || {
        c.store().get("other", "added").is_some()
    })
    .await;

    running
        .api
        .put(service_account("ns", "listed", Some(ROLE_B)));
    let c = cache.clone();
    eventually_async("the modified role", WAIT, move || {
        c.store()
            .get("ns", "listed")
            .is_some_and(|e| e.role() == Some(ROLE_B))
    })
    .await;

    running.api.delete("serviceaccounts", "ns", "listed");
    let c = cache.clone();
    eventually_async("the deletion", WAIT, move || {
        c.store().get("ns", "listed").is_none()
    })
    .await;
    assert_eq!(cache.len(), 2);
    let metrics = running.metrics.clone();
    eventually_async("the size gauge", WAIT, move || {
        metrics.cache_service_accounts.get() == 2
    })
    .await;
    assert_eq!(
        running.api.count(Verb::Get, "serviceaccounts"),
        0,
        "no GET while the watch answers"
    );
}

#[tokio::test]
async fn the_cache_keeps_only_the_prefixed_annotations_and_reads_metadata_only() {
    let api = FakeApi::start().await;
    api.put(service_account("ns", "app", Some(ROLE_A)));
    let running = start(api, Duration::ZERO).await;
    running.synced().await;
    let dump = running.cache.dump();
    assert_eq!(
        dump["serviceAccounts"]["ns/app"],
        serde_json::json!({"role_arn": ROLE_A})
    );
    // Only metadata travels: the API server never sends (nor do we decode) whole objects.
    let lists = running.api.count(Verb::List, "serviceaccounts");
    assert!(lists >= 1);
    assert_eq!(
        running
            .api
            .count_metadata_only(Verb::List, "serviceaccounts"),
        lists
    );
    assert_eq!(
        running
            .api
            .count_metadata_only(Verb::Watch, "serviceaccounts"),
        running.api.count(Verb::Watch, "serviceaccounts")
    );
}

#[tokio::test]
async fn a_relist_after_the_watch_expired_drops_service_accounts_deleted_meanwhile() {
    let api = FakeApi::start().await;
    api.put(service_account("ns", "stays", Some(ROLE_A)));
    api.put(service_account("ns", "deleted-while-away", Some(ROLE_A)));
    let running = start(api, Duration::ZERO).await;
    running.synced().await;
    assert_eq!(running.cache.len(), 2);

    // The deletion event is lost (compacted); the resumed watch gets 410 Gone and relists.
    running
        .api
        .delete_silently("serviceaccounts", "ns", "deleted-while-away");
    running.api.cut_watches();
    let c = running.cache.clone();
    eventually_async(
        "the relist to drop the deleted ServiceAccount",
        WAIT,
        move || c.store().get("ns", "deleted-while-away").is_none(),
    )
    .await;
    assert!(running.cache.store().get("ns", "stays").is_some());
    assert!(running.api.count(Verb::List, "serviceaccounts") >= 2);
}

#[tokio::test]
async fn readiness_turns_true_only_after_the_first_list_and_list_errors_are_counted() {
    let api = FakeApi::start().await;
    api.put(service_account("ns", "app", Some(ROLE_A)));
    api.fail(Verb::List, "serviceaccounts", 500, 1);
    let running = start(api, Duration::ZERO).await;
    eventually_async("the failed list to be counted", WAIT, || {
        running.watch_errors() == 1
    })
    .await;
    assert!(
        !synced(&running.readiness),
        "not ready before a list succeeded"
    );
    running.synced().await;
    assert_eq!(running.cache.len(), 1);
}

#[tokio::test]
async fn watch_errors_are_retried_while_lookups_keep_answering_from_the_cache() {
    let api = FakeApi::start().await;
    api.put(service_account("ns", "app", Some(ROLE_A)));
    let running = start(api, Duration::ZERO).await;
    running.synced().await;
    running.api.fail(Verb::Watch, "serviceaccounts", 500, 2);
    running.api.cut_watches();
    eventually_async("the watch failures to be counted", WAIT, || {
        running.watch_errors() >= 2
    })
    .await;
    assert_eq!(
        role(&running.cache, "ns", "app").await.as_deref(),
        Some(ROLE_A)
    );
    // Once the API answers again the watch resumes and delivers new ServiceAccounts.
    running
        .api
        .put(service_account("ns", "later", Some(ROLE_B)));
    let c = running.cache.clone();
    eventually_async("the watch to resume", Duration::from_secs(20), move || {
        c.store().get("ns", "later").is_some()
    })
    .await;
}

#[tokio::test]
async fn a_miss_is_answered_by_the_watch_within_the_grace_period() {
    let api = FakeApi::start().await;
    // The direct GET is slow here, so only the watch can answer in time.
    api.delay(Verb::Get, "serviceaccounts", Duration::from_secs(5));
    let running = start(api, Duration::from_secs(3)).await;
    running.synced().await;
    let api = Arc::new(running.api);
    let creator = api.clone();
    let cache = running.cache.clone();
    tokio::spawn(async move {
        // Created once the lookup has missed and is waiting (its slow GET under way).
        eventually_async("the lookup to be waiting", WAIT, || {
            cache.in_flight_lookups() == 1
        })
        .await;
        creator.put(service_account("ns", "created-with-the-pod", Some(ROLE_A)));
    });
    let started = Instant::now();
    let found = role(&running.cache, "ns", "created-with-the-pod").await;
    assert_eq!(found.as_deref(), Some(ROLE_A));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_miss_falls_back_to_a_get_whose_result_is_returned_and_stored() {
    let api = FakeApi::start().await;
    let running = start(api, Duration::from_secs(2)).await;
    running.synced().await;
    running
        .api
        .put_unwatched(service_account("ns", "unseen", Some(ROLE_A)));
    assert_eq!(
        role(&running.cache, "ns", "unseen").await.as_deref(),
        Some(ROLE_A)
    );
    assert_eq!(running.api.count(Verb::Get, "serviceaccounts"), 1);
    assert_eq!(
        running
            .api
            .count_metadata_only(Verb::Get, "serviceaccounts"),
        1
    );
    assert_eq!(running.fallbacks("found"), 1);
    assert!(
        running.cache.store().get("ns", "unseen").is_some(),
        "inserted into the store"
    );
    assert_eq!(
        role(&running.cache, "ns", "unseen").await.as_deref(),
        Some(ROLE_A)
    );
    assert_eq!(
        running.api.count(Verb::Get, "serviceaccounts"),
        1,
        "the second lookup is a hit"
    );
    assert_eq!(running.cache.in_flight_lookups(), 0);
}

#[tokio::test]
async fn a_missing_service_account_gives_none_at_once_and_leaves_no_state() {
    let api = FakeApi::start().await;
    let running = start(api, Duration::from_secs(5)).await;
    running.synced().await;
    let started = Instant::now();
    assert!(running.cache.lookup("ns", "nowhere").await.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "NotFound does not wait out the grace period"
    );
    assert_eq!(running.fallbacks("not_found"), 1);
    assert_eq!(running.cache.in_flight_lookups(), 0);
    assert!(running.cache.is_empty());
    assert_eq!(running.cache.dump()["inFlightLookups"], 0);
}

/// Creates `namespace/name` through the watch once `ready` holds (checked every 10 ms).
fn create_when(
    api: &Arc<FakeApi>,
    ready: impl FnMut() -> bool + Send + 'static,
    namespace: &'static str,
    name: &'static str,
) {
    let creator = api.clone();
    tokio::spawn(async move {
        eventually_async("the moment to create the ServiceAccount", WAIT, ready).await;
        creator.put(service_account(namespace, name, Some(ROLE_A)));
    });
}

#[tokio::test]
async fn an_api_error_on_the_fallback_still_waits_for_the_watch_within_the_grace_period() {
    let api = FakeApi::start().await;
    api.fail(Verb::Get, "serviceaccounts", 500, 1);
    let running = start(api, Duration::from_secs(3)).await;
    running.synced().await;
    let api = Arc::new(running.api);
    // Created only once the GET has failed, so the watch is what answers.
    let metrics = running.metrics.clone();
    create_when(
        &api,
        move || {
            metrics
                .lookup_fallbacks
                .with_label_values(&["api_error"])
                .get()
                == 1
        },
        "ns",
        "created-with-the-pod",
    );
    let started = Instant::now();
    let found = role(&running.cache, "ns", "created-with-the-pod").await;
    assert_eq!(found.as_deref(), Some(ROLE_A));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(api.count(Verb::Get, "serviceaccounts"), 1);
    assert_eq!(running.cache.in_flight_lookups(), 0);
}

#[tokio::test]
async fn a_throttled_fallback_still_waits_for_the_watch_and_leaves_no_state_once_it_times_out() {
    let api = FakeApi::start().await;
    // More 429s than the client retries within the grace period: the GET never answers.
    api.fail(Verb::Get, "serviceaccounts", 429, 1000);
    let grace = Duration::from_secs(1);
    let running = start(api, grace).await;
    running.synced().await;
    let api = Arc::new(running.api);
    let throttled = api.clone();
    create_when(
        &api,
        move || throttled.count(Verb::Get, "serviceaccounts") >= 2,
        "ns",
        "created-with-the-pod",
    );
    let started = Instant::now();
    let found = role(&running.cache, "ns", "created-with-the-pod").await;
    assert_eq!(found.as_deref(), Some(ROLE_A));
    assert!(started.elapsed() < grace, "{:?}", started.elapsed());
    let metrics = running.metrics.clone();
    eventually_async("the throttled GET to time out", WAIT, move || {
        metrics
            .lookup_fallbacks
            .with_label_values(&["timeout"])
            .get()
            == 1
    })
    .await;
    let cache = running.cache.clone();
    eventually_async("no lookup left in flight", WAIT, move || {
        cache.in_flight_lookups() == 0
    })
    .await;
}

#[tokio::test]
async fn an_api_error_on_the_fallback_with_nothing_from_the_watch_gives_none_at_the_grace_period_and_leaves_no_state(
) {
    let api = FakeApi::start().await;
    api.fail(Verb::Get, "serviceaccounts", 500, 1);
    let grace = Duration::from_millis(500);
    let running = start(api, grace).await;
    running.synced().await;
    let started = Instant::now();
    assert!(running.cache.lookup("ns", "app").await.is_none());
    let waited = started.elapsed();
    assert!(
        waited >= grace && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert_eq!(running.fallbacks("api_error"), 1);
    assert_eq!(running.cache.in_flight_lookups(), 0);
    assert!(running.cache.is_empty());
    assert_eq!(running.cache.dump()["inFlightLookups"], 0);
}

#[tokio::test]
async fn fallback_failures_are_counted_by_kind_forbidden_apart_from_other_api_errors() {
    let api = FakeApi::start().await;
    api.fail(Verb::Get, "serviceaccounts", 403, 1);
    api.fail(Verb::Get, "serviceaccounts", 500, 1);
    let running = start(api, Duration::from_secs(1)).await;
    running.synced().await;
    // A failed GET still waits out the grace period for the watch: wait for both at once.
    let (refused, failing) = futures::join!(
        running.cache.lookup("ns", "refused"),
        running.cache.lookup("ns", "failing")
    );
    assert!(refused.is_none() && failing.is_none());
    assert_eq!(running.fallbacks("forbidden"), 1);
    assert_eq!(running.fallbacks("api_error"), 1);
    assert_eq!(running.cache.in_flight_lookups(), 0);
}

#[tokio::test]
async fn concurrent_misses_for_one_service_account_make_exactly_one_get() {
    let api = FakeApi::start().await;
    api.delay(Verb::Get, "serviceaccounts", Duration::from_millis(200));
    let running = start(api, Duration::from_secs(3)).await;
    running.synced().await;
    running
        .api
        .put_unwatched(service_account("ns", "popular", Some(ROLE_A)));
    let lookups = (0..25).map(|_| role(&running.cache, "ns", "popular"));
    let roles = futures::future::join_all(lookups).await;
    assert!(
        roles.iter().all(|r| r.as_deref() == Some(ROLE_A)),
        "{roles:?}"
    );
    assert_eq!(running.api.count(Verb::Get, "serviceaccounts"), 1);
    assert_eq!(running.cache.in_flight_lookups(), 0);
}

#[tokio::test]
async fn misses_beyond_the_rate_limit_send_no_get() {
    let api = FakeApi::start().await;
    let limits = FallbackLimits {
        concurrency: 8,
        per_second: 0.01,
        burst: 2,
    };
    let running = start_with(api, Duration::from_millis(300), limits).await;
    running.synced().await;
    for i in 0..4 {
        assert!(running
            .cache
            .lookup("ns", &format!("missing-{i}"))
            .await
            .is_none());
    }
    assert_eq!(running.api.count(Verb::Get, "serviceaccounts"), 2);
    assert_eq!(running.fallbacks("not_found"), 2);
    assert_eq!(running.fallbacks("rate_limited"), 2);
    assert_eq!(running.cache.in_flight_lookups(), 0);
}
