//! The identity sources that change at run time (the ConfigMap mapping and the
//! container-credentials file), swapped atomically so a request never waits on a watcher.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::identity::{ConfigMapMapping, ContainerCredentialsConfig};

#[derive(Debug, Default)]
pub struct LiveSources {
    pub mapping: ArcSwapOption<ConfigMapMapping>,
    pub container_credentials: ArcSwapOption<ContainerCredentialsConfig>,
}

impl LiveSources {
    pub fn set_mapping(&self, mapping: Option<ConfigMapMapping>) {
        self.mapping.store(mapping.map(Arc::new));
    }

    pub fn set_container_credentials(&self, config: Option<ContainerCredentialsConfig>) {
        self.container_credentials.store(config.map(Arc::new));
    }
}
