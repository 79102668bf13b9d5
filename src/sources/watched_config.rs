//! The run-time identity configuration (the ConfigMap mapping and the container-credentials
//! file), swapped atomically by its watches so a request never waits on a watcher.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::core::identity::{ConfigMapMapping, ContainerCredentialsConfig};

#[derive(Debug, Default)]
pub struct WatchedConfig {
    pub mapping: ArcSwapOption<ConfigMapMapping>,
    pub container_credentials: ArcSwapOption<ContainerCredentialsConfig>,
}

impl WatchedConfig {
    pub(crate) fn set_mapping(&self, mapping: Option<ConfigMapMapping>) {
        self.mapping.store(mapping.map(Arc::new));
    }

    pub fn set_container_credentials(&self, config: Option<ContainerCredentialsConfig>) {
        self.container_credentials.store(config.map(Arc::new));
    }
}
