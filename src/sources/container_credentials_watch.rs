//! Keeps the container-credentials (EKS Pod Identity) file live: loaded at startup and
//! reloaded whenever it changes, including through the kubelet's `..data` symlink swap.

use std::path::PathBuf;
use std::sync::Arc;

use crate::core::identity::ContainerCredentialsConfig;
use crate::ops::metrics::Metrics;
use crate::sources::file_watch::{self, FileState, FileWatch, WatchOptions};
use crate::sources::WatchedConfig;

const SOURCE: &str = "container_credentials";

/// Loads `path` into `sources` now and on every change. A missing or empty file turns the
/// mode off; content that does not parse keeps the last good list and is logged with the
/// reason. Keep the returned watch alive.
pub fn start(
    path: PathBuf,
    sources: Arc<WatchedConfig>,
    metrics: Arc<Metrics>,
    options: WatchOptions,
) -> FileWatch {
    file_watch::watch(vec![path.clone()], options, move |states| {
        let count = |result: &str| {
            metrics
                .config_reloads
                .with_label_values(&[SOURCE, result])
                .inc()
        };
        match &states[0] {
            FileState::Missing => {
                tracing::info!(file = %path.display(), "container credentials file is missing; no ServiceAccount uses container credentials");
                sources.set_container_credentials(None);
                count("success");
            }
            FileState::Unreadable(err) => {
                tracing::error!(file = %path.display(), "cannot read the container credentials file: {err}; keeping the last good content");
                count("failure");
            }
            FileState::Content(content) => match ContainerCredentialsConfig::parse(content) {
                Ok(config) if config.is_empty() => {
                    tracing::info!(file = %path.display(), "container credentials file lists no identities");
                    sources.set_container_credentials(None);
                    count("success");
                }
                Ok(config) => {
                    tracing::info!(file = %path.display(), identities = config.len(), "container credentials file loaded");
                    sources.set_container_credentials(Some(config));
                    count("success");
                }
                Err(err) => {
                    tracing::error!(file = %path.display(), "{err}; keeping the last good content");
                    count("failure");
                }
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LISTED: &str = r#"{"identities":[{"namespace":"ns","serviceAccount":"sa"}]}"#;

    async fn eventually(mut condition: impl FnMut() -> bool) {
        for _ in 0..200 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("condition not reached within 5 s");
    }

    fn listed(sources: &WatchedConfig) -> bool {
        sources
            .container_credentials
            .load()
            .as_ref()
            .is_some_and(|config| config.contains("ns", "sa"))
    }

    #[tokio::test]
    async fn invalid_content_keeps_last_good_and_empty_or_missing_clears() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("identities.json");
        std::fs::write(&file, LISTED).unwrap();
        let sources = Arc::new(WatchedConfig::default());
        let metrics = Arc::new(Metrics::new());
        let options = WatchOptions {
            poll_interval: Duration::from_millis(100),
            settle: Duration::from_millis(10),
        };
        let _watch = start(file.clone(), sources.clone(), metrics.clone(), options);
        assert!(listed(&sources), "loaded synchronously at start");

        std::fs::write(&file, "{not json").unwrap();
        let failures = || {
            metrics
                .config_reloads
                .with_label_values(&[SOURCE, "failure"])
                .get()
        };
        eventually(|| failures() == 1).await;
        assert!(listed(&sources), "last good content kept");

        std::fs::write(&file, "").unwrap();
        eventually(|| sources.container_credentials.load().is_none()).await;

        std::fs::write(&file, LISTED).unwrap();
        eventually(|| listed(&sources)).await;
        std::fs::remove_file(&file).unwrap();
        eventually(|| sources.container_credentials.load().is_none()).await;
    }
}
