//! What feeds the core at run time: the ServiceAccount cache, the ConfigMap mapping's watch and
//! the container-credentials file's watch. The last two land in `WatchedConfig`, swapped
//! atomically so a request never waits on a watcher.

pub mod config_map_watch;
pub mod container_credentials_watch;
pub mod file_watch;
pub mod service_accounts;
pub(crate) mod watch_retry;
mod watched_config;

pub use watched_config::WatchedConfig;
