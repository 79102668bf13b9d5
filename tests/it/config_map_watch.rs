//! `--watch-config-map` against a stand-in Kubernetes API: the mapping follows the ConfigMap
//! live, deletion clears it, malformed content keeps the last good mapping, and readiness
//! waits for the first list.

use std::sync::Arc;
use std::time::Duration;

use crate::support::eventually_async;
use crate::support::fake_api::{config_map, FakeApi, Verb};
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::sources::config_map_watch::{self, CONFIG_MAP_NAME};
use pod_identity_webhook::sources::WatchedConfig;

const WAIT: Duration = Duration::from_secs(10);

fn mapping(role: &str) -> String {
    format!(r#"{{"apps/payments": {{"RoleARN": "arn:aws:iam::111122223333:role/{role}"}}}}"#)
}

fn mapped_role(sources: &WatchedConfig) -> Option<String> {
    let mapping = sources.mapping.load();
    mapping.as_ref().and_then(|m| {
        m.lookup("apps", "payments")
            .and_then(|e| e.role_arn.clone())
    })
}

/// Whether readiness no longer waits for the mapping (the other conditions are not set here).
fn mapping_synced(readiness: &Readiness) -> bool {
    match readiness.check() {
        Ok(()) => true,
        Err(reasons) => !reasons.contains(&"ConfigMap mapping not yet synced"),
    }
}

fn reloads(metrics: &Metrics, result: &str) -> u64 {
    metrics
        .config_reloads
        .with_label_values(&["config_map", result])
        .get()
}

/// Starts the watch against `api` in namespace `eks`; returns what it updates.
fn start_watch(api: &FakeApi) -> (Arc<WatchedConfig>, Arc<Metrics>, Arc<Readiness>) {
    let sources = Arc::new(WatchedConfig::default());
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    config_map_watch::start(
        api.client(),
        "eks".into(),
        sources.clone(),
        metrics.clone(),
        &readiness,
    );
    (sources, metrics, readiness)
}

#[tokio::test]
async fn the_mapping_follows_the_config_map_without_restart() {
    let api = FakeApi::start().await;
    api.put(config_map(
        "eks",
        CONFIG_MAP_NAME,
        &[("config", &mapping("first"))],
    ));
    // Same name in another namespace, and another name here: both ignored.
    api.put(config_map(
        "other",
        CONFIG_MAP_NAME,
        &[("config", &mapping("wrong-namespace"))],
    ));
    api.put(config_map(
        "eks",
        "unrelated",
        &[("config", &mapping("wrong-name"))],
    ));
    let (sources, metrics, readiness) = start_watch(&api);
    assert!(
        !mapping_synced(&readiness),
        "not ready before the first list"
    );

    let r = readiness.clone();
    eventually_async("readiness after the first list", WAIT, move || {
        mapping_synced(&r)
    })
    .await;
    assert_eq!(
        mapped_role(&sources).as_deref(),
        Some("arn:aws:iam::111122223333:role/first"),
        "the mapping is in effect by the time readiness turns true"
    );

    api.put(config_map(
        "eks",
        CONFIG_MAP_NAME,
        &[("config", &mapping("second"))],
    ));
    let s = sources.clone();
    eventually_async("the updated mapping", WAIT, move || {
        mapped_role(&s).is_some_and(|role| role.ends_with("/second"))
    })
    .await;

    api.put(config_map(
        "eks",
        CONFIG_MAP_NAME,
        &[("config", "{ this is not json")],
    ));
    let m = metrics.clone();
    eventually_async("the failed reload to be counted", WAIT, move || {
        reloads(&m, "failure") == 1
    })
    .await;
    assert!(
        mapped_role(&sources).unwrap().ends_with("/second"),
        "the last good mapping stays"
    );

    api.delete("configmaps", "eks", CONFIG_MAP_NAME);
    let s = sources.clone();
    eventually_async("the mapping to be cleared", WAIT, move || {
        s.mapping.load().is_none()
    })
    .await;
    assert_eq!(reloads(&metrics, "success"), 3, "first, second, cleared");
}

#[tokio::test]
async fn a_config_map_created_later_is_picked_up_and_watch_errors_are_counted() {
    let api = FakeApi::start().await;
    api.fail(Verb::List, "configmaps", 500, 1);
    let (sources, metrics, _readiness) = start_watch(&api);
    let m = metrics.clone();
    eventually_async("the list error to be counted", WAIT, move || {
        m.watch_errors.with_label_values(&["configmaps"]).get() == 1
    })
    .await;
    let a = &api;
    eventually_async("the watch to be established", WAIT, move || {
        a.count(Verb::Watch, "configmaps") >= 1
    })
    .await;
    assert!(sources.mapping.load().is_none());

    api.put(config_map(
        "eks",
        CONFIG_MAP_NAME,
        &[("config", &mapping("late"))],
    ));
    let s = sources.clone();
    eventually_async("the late mapping", WAIT, move || mapped_role(&s).is_some()).await;
}

#[tokio::test]
async fn readiness_waits_for_a_successful_first_list_even_when_the_config_map_does_not_exist() {
    let api = FakeApi::start().await;
    api.fail(Verb::List, "configmaps", 500, 1);
    let (sources, metrics, readiness) = start_watch(&api);
    let m = metrics.clone();
    eventually_async("the list error to be counted", WAIT, move || {
        m.watch_errors.with_label_values(&["configmaps"]).get() == 1
    })
    .await;
    assert!(!mapping_synced(&readiness), "a failed list is not a sync");

    // The retried list is empty: "no mapping" is then known, and that is enough to be ready.
    let r = readiness.clone();
    eventually_async("readiness after the empty list", WAIT, move || {
        mapping_synced(&r)
    })
    .await;
    assert!(sources.mapping.load().is_none());
}
