//! The compact in-memory ServiceAccount store: namespace → name → the annotations the engine
//! reads, nothing else. Readers never wait on the watch; writers wake anyone waiting for a miss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::core::identity::ServiceAccountAnnotations;

type Names = HashMap<Box<str>, Arc<ServiceAccountAnnotations>>;

/// A full set of entries, built off to the side during a relist and swapped in at once.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_namespace: HashMap<Box<str>, Names>,
    len: usize,
}

impl Snapshot {
    /// Inserts or replaces one entry; looks up before inserting so that replacing an entry
    /// (the common watch event) allocates no key.
    /// Use [`ServiceAccountStore::intern`] to make `entry`.
    pub fn upsert(&mut self, namespace: &str, name: &str, entry: Arc<ServiceAccountAnnotations>) {
        let names = match self.by_namespace.get_mut(namespace) {
            Some(names) => names,
            None => self.by_namespace.entry(namespace.into()).or_default(),
        };
        match names.get_mut(name) {
            Some(slot) => *slot = entry,
            None => {
                names.insert(name.into(), entry);
                self.len += 1;
            }
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) -> bool {
        let Some(names) = self.by_namespace.get_mut(namespace) else {
            return false;
        };
        let removed = names.remove(name).is_some();
        if removed {
            self.len -= 1;
            if names.is_empty() {
                self.by_namespace.remove(namespace);
            }
        }
        removed
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceAccountAnnotations>> {
        self.by_namespace.get(namespace)?.get(name)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The ServiceAccount store shared by the watch, the fallback lookups and the admission path.
///
/// ServiceAccounts without any annotation we read (most of them: every namespace's `default`)
/// all point at one shared empty entry, so they cost only their name and a map slot.
#[derive(Debug)]
pub struct ServiceAccountStore {
    entries: RwLock<Snapshot>,
    /// Woken on every insertion, so a lookup waiting out a miss sees the watch deliver.
    inserted: Notify,
    /// Counts deletions, so a fallback GET that raced with a delete does not resurrect the
    /// entry (see [`ServiceAccountStore::insert_fetched`]).
    deletions: AtomicU64,
    empty: Arc<ServiceAccountAnnotations>,
}

impl Default for ServiceAccountStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceAccountStore {
    pub fn new() -> Self {
        Self {
            entries: RwLock::new(Snapshot::default()),
            inserted: Notify::new(),
            deletions: AtomicU64::new(0),
            empty: Arc::new(ServiceAccountAnnotations::default()),
        }
    }

    /// The entry to store for these annotations: the shared one when there is nothing to keep.
    pub fn intern(&self, annotations: ServiceAccountAnnotations) -> Arc<ServiceAccountAnnotations> {
        if annotations == *self.empty {
            self.empty.clone()
        } else {
            Arc::new(annotations)
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccountAnnotations>> {
        self.read().get(namespace, name).cloned()
    }

    /// Adds or replaces the entry (a watch event) and wakes waiting lookups.
    pub fn upsert(&self, namespace: &str, name: &str, annotations: ServiceAccountAnnotations) {
        let entry = self.intern(annotations);
        self.write().upsert(namespace, name, entry);
        self.inserted.notify_waiters();
    }

    /// Removes the entry (a watch delete event).
    pub fn remove(&self, namespace: &str, name: &str) {
        let mut entries = self.write();
        // Counted under the lock, so an `insert_fetched` right after sees the deletion.
        if entries.remove(namespace, name) {
            self.deletions.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Replaces every entry at once (the end of a relist): ServiceAccounts deleted while the
    /// watch was down disappear, and readers see either the old or the new set, never a mix.
    pub fn replace_all(&self, snapshot: Snapshot) {
        let old = {
            let mut entries = self.write();
            // Counted under the lock, so an `insert_fetched` after the swap sees the change.
            self.deletions.fetch_add(1, Ordering::AcqRel);
            std::mem::replace(&mut *entries, snapshot)
        };
        // Freeing up to every ServiceAccount in the cluster takes a while: done after the lock
        // is released, so admission reads are not held up by it.
        drop(old);
        self.inserted.notify_waiters();
    }

    /// Adds an entry found by a direct GET, unless the watch already has one (the watch is the
    /// authority) or a deletion happened since `deletions_before` was read (the GET may have
    /// seen the object just before it was deleted). Returns the entry now in effect.
    pub fn insert_fetched(
        &self,
        namespace: &str,
        name: &str,
        annotations: ServiceAccountAnnotations,
        deletions_before: u64,
    ) -> Arc<ServiceAccountAnnotations> {
        let entry = self.intern(annotations);
        let mut entries = self.write();
        if let Some(existing) = entries.get(namespace, name) {
            return existing.clone();
        }
        if self.deletions.load(Ordering::Acquire) != deletions_before {
            return entry;
        }
        entries.upsert(namespace, name, entry.clone());
        drop(entries);
        self.inserted.notify_waiters();
        entry
    }

    /// A counter that changes whenever an entry may have been deleted.
    pub fn deletions(&self) -> u64 {
        self.deletions.load(Ordering::Acquire)
    }

    /// Resolves at the next insertion. Call `enable()` on the pinned future before checking the
    /// store, so an insertion between the check and the wait is not missed.
    pub fn inserted(&self) -> Notified<'_> {
        self.inserted.notified()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry as `("namespace/name", entry)`, sorted, for the debugging handler.
    pub fn sorted_entries(&self) -> Vec<(String, Arc<ServiceAccountAnnotations>)> {
        let entries = self.read();
        let mut all: Vec<_> = entries
            .by_namespace
            .iter()
            .flat_map(|(namespace, names)| {
                names
                    .iter()
                    .map(move |(name, entry)| (format!("{namespace}/{name}"), entry.clone()))
            })
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        // A panic while holding the lock cannot leave a HashMap half-updated in a way that
        // matters here, so a poisoned lock is still used.
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(arn: &str) -> ServiceAccountAnnotations {
        ServiceAccountAnnotations {
            role_arn: Some(arn.into()),
            ..Default::default()
        }
    }

    #[test]
    fn upsert_replaces_and_remove_forgets_and_len_follows() {
        let store = ServiceAccountStore::new();
        store.upsert("ns", "a", role("r1"));
        store.upsert("ns", "a", role("r2"));
        store.upsert("other", "a", ServiceAccountAnnotations::default());
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("ns", "a").unwrap().role(), Some("r2"));
        store.remove("ns", "a");
        store.remove("ns", "never-there");
        assert_eq!(store.len(), 1);
        assert!(store.get("ns", "a").is_none());
        assert!(store.get("other", "a").is_some());
    }

    #[test]
    fn service_accounts_without_annotations_share_one_entry() {
        let store = ServiceAccountStore::new();
        store.upsert("a", "default", ServiceAccountAnnotations::default());
        store.upsert("b", "default", ServiceAccountAnnotations::default());
        assert!(Arc::ptr_eq(
            &store.get("a", "default").unwrap(),
            &store.get("b", "default").unwrap()
        ));
    }

    #[test]
    fn replace_all_drops_entries_missing_from_the_new_set() {
        let store = ServiceAccountStore::new();
        store.upsert("ns", "kept", role("r"));
        store.upsert("ns", "gone", role("r"));
        let mut snapshot = Snapshot::default();
        snapshot.upsert("ns", "kept", store.intern(role("r-new")));
        store.replace_all(snapshot);
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("ns", "kept").unwrap().role(), Some("r-new"));
        assert!(store.get("ns", "gone").is_none());
    }

    #[test]
    fn fetched_entry_never_overrides_the_watch_or_resurrects_a_deleted_one() {
        let store = ServiceAccountStore::new();
        store.upsert("ns", "watched", role("from-watch"));
        let before = store.deletions();
        let kept = store.insert_fetched("ns", "watched", role("from-get"), before);
        assert_eq!(kept.role(), Some("from-watch"));

        let before = store.deletions();
        store.upsert("ns", "raced", role("r"));
        store.remove("ns", "raced");
        let returned = store.insert_fetched("ns", "raced", role("r"), before);
        assert_eq!(
            returned.role(),
            Some("r"),
            "the caller still gets what the GET saw"
        );
        assert!(
            store.get("ns", "raced").is_none(),
            "but the store stays without it"
        );

        let before = store.deletions();
        store.insert_fetched("ns", "new", role("r"), before);
        assert!(store.get("ns", "new").is_some());
    }

    #[tokio::test]
    async fn insertion_wakes_an_enabled_waiter() {
        let store = Arc::new(ServiceAccountStore::new());
        let mut waiter = std::pin::pin!(store.inserted());
        waiter.as_mut().enable();
        store.upsert("ns", "a", role("r"));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("the insertion wakes the waiter");
    }
}
