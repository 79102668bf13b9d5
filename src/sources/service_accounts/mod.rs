//! Looking up a ServiceAccount's annotations at admission time. The server uses the watched
//! cache; the offline `mutate` command and handler tests use a fixed set.

mod fallback;
mod kube_cache;
mod store;
mod store_writer;
mod token_bucket;

pub use fallback::{FallbackLimits, FetchError};
pub use kube_cache::{CacheSettings, KubeServiceAccountCache};
pub use store::ServiceAccountStore;
pub use store_writer::{Applied, ServiceAccountMeta, StoreWriter};

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::core::identity::ServiceAccountAnnotations;

/// Where the admission handler finds ServiceAccounts.
pub trait ServiceAccountLookup: Send + Sync + 'static {
    /// The ServiceAccount `namespace/name`, or `None` when it does not exist (or could not be
    /// found within the implementation's time bound).
    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<ServiceAccountAnnotations>>>;

    /// The ServiceAccount if it is already held, answered at once: no waiting and no request
    /// to the API server, for callers that can do without it.
    fn cached(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccountAnnotations>>;
}

/// A fixed set of ServiceAccounts, keyed by namespace then name.
#[derive(Debug, Default, Clone)]
pub struct FixedServiceAccounts {
    by_namespace: HashMap<String, HashMap<String, Arc<ServiceAccountAnnotations>>>,
}

impl FixedServiceAccounts {
    pub fn insert(&mut self, namespace: &str, name: &str, annotations: ServiceAccountAnnotations) {
        self.by_namespace
            .entry(namespace.to_string())
            .or_default()
            .insert(name.to_string(), Arc::new(annotations));
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccountAnnotations>> {
        self.by_namespace.get(namespace)?.get(name).cloned()
    }
}

impl ServiceAccountLookup for FixedServiceAccounts {
    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<ServiceAccountAnnotations>>> {
        Box::pin(std::future::ready(self.get(namespace, name)))
    }

    fn cached(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccountAnnotations>> {
        self.get(namespace, name)
    }
}
