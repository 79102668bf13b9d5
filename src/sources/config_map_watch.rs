//! `--watch-config-map`: follows ConfigMap `pod-identity-webhook` in the webhook's namespace and
//! swaps the role mapping live. Deletion clears it; malformed content keeps the last good one.

use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::watcher;
use tracing::Instrument;

use crate::core::identity::{ConfigMapMapping, MappingError, ParsedMapping, CONFIG_KEY};
use crate::ops::health::{Condition, Readiness};
use crate::ops::metrics::Metrics;
use crate::sources::watch_retry::WatchRetry;
use crate::sources::WatchedConfig;

/// The ConfigMap's name, as the reference webhook has it.
pub const CONFIG_MAP_NAME: &str = "pod-identity-webhook";
/// The label of `config_reloads{source}` and `watch_errors{resource}`.
const SOURCE: &str = "config_map";
const RESOURCE: &str = "configmaps";

/// What a state of the ConfigMap means for the live mapping.
#[derive(Debug)]
pub(crate) enum MappingUpdate {
    /// Use this mapping.
    Set(ParsedMapping),
    /// No mapping: the ConfigMap does not exist, or its `config` key is absent or blank.
    Clear(&'static str),
    /// The content cannot be used; the last good mapping stays.
    Keep(MappingError),
}

/// Interprets the ConfigMap (`None` when it does not exist).
pub(crate) fn interpret(config_map: Option<&ConfigMap>) -> MappingUpdate {
    let Some(config_map) = config_map else {
        return MappingUpdate::Clear("the ConfigMap does not exist");
    };
    let config = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(CONFIG_KEY));
    match config {
        None => MappingUpdate::Clear("the ConfigMap has no \"config\" key"),
        Some(text) if text.trim().is_empty() => {
            MappingUpdate::Clear("the ConfigMap's \"config\" key is empty")
        }
        Some(text) => match ConfigMapMapping::parse(text) {
            Ok(parsed) => MappingUpdate::Set(parsed),
            Err(error) => MappingUpdate::Keep(error),
        },
    }
}

/// Applies watch events to the live sources.
pub(crate) struct MappingWatch {
    sources: Arc<WatchedConfig>,
    metrics: Arc<Metrics>,
    /// Whether the ConfigMap appeared in the list in progress: a (re)list that ends without it
    /// means it was deleted, possibly while the watch was down.
    listed: bool,
    /// The `config` text applied last (`None`: no mapping), so a relist delivering the same
    /// content is not logged and counted as a reload again.
    applied: Option<Option<String>>,
}

impl MappingWatch {
    pub fn new(sources: Arc<WatchedConfig>, metrics: Arc<Metrics>) -> Self {
        Self {
            sources,
            metrics,
            listed: false,
            applied: None,
        }
    }

    pub fn apply(&mut self, event: watcher::Event<ConfigMap>) {
        match event {
            watcher::Event::Init => self.listed = false,
            watcher::Event::InitApply(config_map) => {
                self.listed = true;
                self.update(Some(&config_map));
            }
            watcher::Event::Apply(config_map) => self.update(Some(&config_map)),
            watcher::Event::Delete(_) => self.update(None),
            watcher::Event::InitDone => {
                if !self.listed {
                    self.update(None);
                }
            }
        }
    }

    fn update(&mut self, config_map: Option<&ConfigMap>) {
        let text = config_map
            .and_then(|cm| cm.data.as_ref())
            .and_then(|data| data.get(CONFIG_KEY))
            .cloned();
        if self.applied.as_ref() == Some(&text) {
            return;
        }
        match interpret(config_map) {
            MappingUpdate::Set(parsed) => {
                for skipped in &parsed.skipped {
                    tracing::warn!(config_map = CONFIG_MAP_NAME, "{skipped}");
                }
                tracing::info!(
                    config_map = CONFIG_MAP_NAME,
                    entries = parsed.mapping.len(),
                    skipped = parsed.skipped.len(),
                    "role mapping loaded"
                );
                self.sources.set_mapping(Some(parsed.mapping));
                self.count("success");
                self.applied = Some(text);
            }
            MappingUpdate::Clear(why) => {
                tracing::info!(config_map = CONFIG_MAP_NAME, "role mapping cleared: {why}");
                self.sources.set_mapping(None);
                self.count("success");
                self.applied = Some(text);
            }
            MappingUpdate::Keep(error) => {
                let kept = if self.sources.mapping.load().is_some() {
                    "keeping the last good mapping"
                } else {
                    "no mapping is in effect"
                };
                tracing::warn!(
                    config_map = CONFIG_MAP_NAME,
                    "role mapping not loaded: {error}; {kept}"
                );
                self.count("failure");
                // Not recorded as applied: the same bad text later is still a failure to report.
            }
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .config_reloads
            .with_label_values(&[SOURCE, result])
            .inc();
    }
}

/// Starts the watch on the current runtime. It runs for as long as the runtime does,
/// retrying errors with backoff and keeping the current mapping meanwhile. Registers its
/// readiness condition, met after the first complete list: pods whose role comes from the
/// ConfigMap would otherwise be admitted without credentials right after startup.
pub fn start(
    client: kube::Client,
    namespace: String,
    sources: Arc<WatchedConfig>,
    metrics: Arc<Metrics>,
    readiness: &Readiness,
) {
    let synced = readiness.register(NOT_SYNCED);
    // In the caller's span, which names the API server in every line the watch logs.
    tokio::spawn(run(client, namespace, sources, metrics, synced).in_current_span());
}

/// What `/readyz` says until the first complete list.
const NOT_SYNCED: &str = "ConfigMap mapping not yet synced";

async fn run(
    client: kube::Client,
    namespace: String,
    sources: Arc<WatchedConfig>,
    metrics: Arc<Metrics>,
    synced: Condition,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP_NAME}"));
    let mut events = pin!(watcher(api, config));
    let mut mapping = MappingWatch::new(sources, metrics.clone());
    // The error count exists from the start at 0, so an alert on its increase sees the first.
    metrics.watch_errors.with_label_values(&[RESOURCE]);
    let mut retry = WatchRetry::default();
    let mut synced_once = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if let Some(failed) = retry.on_event(&event) {
                    tracing::info!(%namespace, failed_attempts = failed, "ConfigMap watch reconnected");
                }
                // A list that ends without the ConfigMap counts too: "no mapping" is then known.
                let list_done = matches!(event, watcher::Event::InitDone);
                mapping.apply(event);
                if list_done && !synced_once {
                    synced_once = true;
                    synced.set(true);
                    tracing::info!(%namespace, "ConfigMap mapping synced");
                }
            }
            Err(error) => {
                let what = format!("the ConfigMap {CONFIG_MAP_NAME} in {namespace}");
                let meanwhile = "the current mapping stays";
                retry
                    .back_off(&error, &metrics.watch_errors, RESOURCE, &what, meanwhile)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn config_map(config: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIG_MAP_NAME.into()),
                namespace: Some("eks".into()),
                ..Default::default()
            },
            data: config.map(|c| [(CONFIG_KEY.to_string(), c.to_string())].into()),
            ..Default::default()
        }
    }

    const GOOD: &str = r#"{"ns/sa": {"RoleARN": "arn:aws:iam::111122223333:role/a"}}"#;
    const OTHER: &str =
        r#"{"ns/sa": {"RoleARN": "arn:aws:iam::111122223333:role/b"}, "bad key": {}}"#;

    fn watch() -> (Arc<WatchedConfig>, Arc<Metrics>, MappingWatch) {
        let sources = Arc::new(WatchedConfig::default());
        let metrics = Arc::new(Metrics::new());
        let watch = MappingWatch::new(sources.clone(), metrics.clone());
        (sources, metrics, watch)
    }

    fn role(sources: &WatchedConfig) -> Option<String> {
        sources
            .mapping
            .load()
            .as_ref()
            .and_then(|m| m.lookup("ns", "sa").and_then(|e| e.role_arn.clone()))
    }

    fn reloads(metrics: &Metrics, result: &str) -> u64 {
        metrics
            .config_reloads
            .with_label_values(&[SOURCE, result])
            .get()
    }

    #[test]
    fn updates_apply_without_restart_and_skipped_entries_do_not_block_the_rest() {
        let (sources, metrics, mut watch) = watch();
        watch.apply(watcher::Event::Init);
        watch.apply(watcher::Event::InitApply(config_map(Some(GOOD))));
        watch.apply(watcher::Event::InitDone);
        assert_eq!(
            role(&sources).as_deref(),
            Some("arn:aws:iam::111122223333:role/a")
        );
        watch.apply(watcher::Event::Apply(config_map(Some(OTHER))));
        assert_eq!(
            role(&sources).as_deref(),
            Some("arn:aws:iam::111122223333:role/b")
        );
        assert_eq!(reloads(&metrics, "success"), 2);
    }

    #[test]
    fn malformed_content_keeps_the_last_good_mapping_and_counts_a_failure() {
        let (sources, metrics, mut watch) = watch();
        watch.apply(watcher::Event::Apply(config_map(Some(GOOD))));
        watch.apply(watcher::Event::Apply(config_map(Some("{not json"))));
        watch.apply(watcher::Event::Apply(config_map(Some("[1, 2]"))));
        assert_eq!(
            role(&sources).as_deref(),
            Some("arn:aws:iam::111122223333:role/a")
        );
        assert_eq!(reloads(&metrics, "failure"), 2);
    }

    #[test]
    fn deletion_clears_the_mapping() {
        let (sources, _metrics, mut watch) = watch();
        watch.apply(watcher::Event::Apply(config_map(Some(GOOD))));
        watch.apply(watcher::Event::Delete(config_map(Some(GOOD))));
        assert!(sources.mapping.load().is_none());
    }

    #[test]
    fn a_relist_without_the_config_map_clears_the_mapping() {
        let (sources, _metrics, mut watch) = watch();
        watch.apply(watcher::Event::Apply(config_map(Some(GOOD))));
        watch.apply(watcher::Event::Init);
        watch.apply(watcher::Event::InitDone);
        assert!(sources.mapping.load().is_none());
    }

    #[test]
    fn missing_or_blank_config_key_means_no_mapping() {
        assert!(matches!(
            interpret(Some(&config_map(None))),
            MappingUpdate::Clear(_)
        ));
        assert!(matches!(
            interpret(Some(&config_map(Some("  \n")))),
            MappingUpdate::Clear(_)
        ));
        assert!(matches!(interpret(None), MappingUpdate::Clear(_)));
    }

    #[test]
    fn a_relist_with_unchanged_content_is_not_counted_again() {
        let (_sources, metrics, mut watch) = watch();
        for _ in 0..3 {
            watch.apply(watcher::Event::Init);
            watch.apply(watcher::Event::InitApply(config_map(Some(GOOD))));
            watch.apply(watcher::Event::InitDone);
        }
        assert_eq!(reloads(&metrics, "success"), 1);
    }
}
