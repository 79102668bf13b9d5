//! Turns the ServiceAccount watch's events into store updates: every object, listed or
//! watched, is applied as it arrives, and a completed (re)list removes what it did not list.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

use super::store::ServiceAccountStore;
use crate::core::identity::ServiceAccountAnnotations;
use crate::core::settings::AnnotationKeys;

/// What the watch sees of a ServiceAccount: only its metadata, which holds the annotations.
pub type ServiceAccountMeta = PartialObjectMeta<ServiceAccount>;

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A single entry changed, or a relist is still under way.
    Incremental,
    /// A full list was applied; the store is in sync with the API server.
    Synced { entries: usize },
}

/// Applies watch events to a store, keeping only the annotations `keys` names.
pub struct StoreWriter {
    store: Arc<ServiceAccountStore>,
    keys: AnnotationKeys,
}

impl StoreWriter {
    pub fn new(store: Arc<ServiceAccountStore>, keys: AnnotationKeys) -> Self {
        Self { store, keys }
    }

    pub fn apply(&mut self, event: Event<ServiceAccountMeta>) -> Applied {
        match event {
            // Lookups keep being answered from the entries held while a relist is under way,
            // so it never looks like a cluster without ServiceAccounts.
            Event::Apply(object) | Event::InitApply(object) => {
                if let Some((namespace, name, annotations)) = self.extract(&object) {
                    self.store.upsert(namespace, name, annotations);
                }
            }
            Event::Delete(object) => {
                if let (Some(namespace), Some(name)) = (
                    object.metadata.namespace.as_deref(),
                    object.metadata.name.as_deref(),
                ) {
                    self.store.remove(namespace, name);
                }
            }
            Event::Init => self.store.begin_relist(),
            Event::InitDone => {
                let entries = self.store.end_relist();
                return Applied::Synced { entries };
            }
        }
        Applied::Incremental
    }

    fn extract<'o>(
        &self,
        object: &'o ServiceAccountMeta,
    ) -> Option<(&'o str, &'o str, ServiceAccountAnnotations)> {
        let metadata = &object.metadata;
        let namespace = metadata.namespace.as_deref()?;
        let name = metadata.name.as_deref()?;
        let annotations = metadata
            .annotations
            .as_ref()
            .map(|annotations| ServiceAccountAnnotations::from_annotations(annotations, &self.keys))
            .unwrap_or_default();
        Some((namespace, name, annotations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn sa(namespace: &str, name: &str, role: Option<&str>) -> ServiceAccountMeta {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                annotations: role.map(|role| {
                    [
                        ("eks.amazonaws.com/role-arn".to_string(), role.to_string()),
                        ("unrelated".to_string(), "dropped".to_string()),
                    ]
                    .into()
                }),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    fn reflector() -> (Arc<ServiceAccountStore>, StoreWriter) {
        let store = Arc::new(ServiceAccountStore::new());
        let reflector = StoreWriter::new(store.clone(), AnnotationKeys::new("eks.amazonaws.com"));
        (store, reflector)
    }

    #[test]
    fn apply_and_delete_events_update_the_store_with_prefixed_annotations_only() {
        let (store, mut reflector) = reflector();
        reflector.apply(Event::Apply(sa("ns", "app", Some("r1"))));
        let entry = store.get("ns", "app").unwrap();
        assert_eq!(entry.role(), Some("r1"));
        assert_eq!(
            *entry,
            ServiceAccountAnnotations {
                role_arn: Some("r1".into()),
                ..Default::default()
            }
        );
        reflector.apply(Event::Apply(sa("ns", "app", Some("r2"))));
        assert_eq!(store.get("ns", "app").unwrap().role(), Some("r2"));
        reflector.apply(Event::Delete(sa("ns", "app", Some("r2"))));
        assert!(store.get("ns", "app").is_none());
    }

    #[test]
    fn a_relist_serves_old_or_new_entries_meanwhile_and_drops_the_deleted_ones_at_its_end() {
        let (store, mut reflector) = reflector();
        reflector.apply(Event::Apply(sa("ns", "deleted-while-away", Some("r"))));
        reflector.apply(Event::Apply(sa("ns", "kept", Some("old"))));
        reflector.apply(Event::Apply(sa("ns", "not-yet-listed", Some("old"))));
        assert_eq!(reflector.apply(Event::Init), Applied::Incremental);
        assert_eq!(store.get("ns", "kept").unwrap().role(), Some("old"));
        reflector.apply(Event::InitApply(sa("ns", "kept", Some("new"))));
        reflector.apply(Event::InitApply(sa("ns", "added", None)));
        assert_eq!(store.get("ns", "kept").unwrap().role(), Some("new"));
        assert_eq!(
            store.get("ns", "not-yet-listed").unwrap().role(),
            Some("old"),
            "an entry the relist has not reached yet is still answered"
        );
        assert!(store.get("ns", "added").is_some());
        assert!(store.get("ns", "deleted-while-away").is_some());
        reflector.apply(Event::InitApply(sa("ns", "not-yet-listed", Some("new"))));
        assert_eq!(
            reflector.apply(Event::InitDone),
            Applied::Synced { entries: 3 }
        );
        assert!(store.get("ns", "deleted-while-away").is_none());
        assert_eq!(store.get("ns", "kept").unwrap().role(), Some("new"));
        assert_eq!(
            store.get("ns", "not-yet-listed").unwrap().role(),
            Some("new")
        );
        assert!(store.get("ns", "added").is_some());
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn a_relist_that_failed_half_way_and_started_over_keeps_only_what_the_new_list_holds() {
        let (store, mut reflector) = reflector();
        reflector.apply(Event::Apply(sa("ns", "a", Some("r"))));
        reflector.apply(Event::Apply(sa("ns", "b", Some("r"))));
        reflector.apply(Event::Init);
        reflector.apply(Event::InitApply(sa("ns", "a", Some("r"))));
        // The list failed; kube's watcher starts over with `Init`, and `a` was deleted since.
        reflector.apply(Event::Init);
        reflector.apply(Event::InitApply(sa("ns", "b", Some("r"))));
        assert_eq!(
            reflector.apply(Event::InitDone),
            Applied::Synced { entries: 1 }
        );
        assert!(store.get("ns", "a").is_none());
        assert!(store.get("ns", "b").is_some());
    }

    #[test]
    fn a_relist_of_several_pages_keeps_every_object() {
        let (store, mut reflector) = reflector();
        // Three pages of kube's list (500 objects each) and a few.
        let count = 3 * 500 + 7;
        reflector.apply(Event::Init);
        for i in 0..count {
            let role = format!("role-{i}");
            reflector.apply(Event::InitApply(sa("ns", &format!("sa-{i}"), Some(&role))));
        }
        assert_eq!(
            reflector.apply(Event::InitDone),
            Applied::Synced { entries: count }
        );
        assert_eq!(store.len(), count);
        let last = format!("role-{}", count - 1);
        let got = store.get("ns", &format!("sa-{}", count - 1)).unwrap();
        assert_eq!(got.role(), Some(last.as_str()));
    }

    #[test]
    fn objects_without_namespace_or_name_are_ignored() {
        let (store, mut reflector) = reflector();
        let mut nameless = sa("ns", "x", Some("r"));
        nameless.metadata.name = None;
        reflector.apply(Event::Apply(nameless));
        assert!(store.is_empty());
    }
}
