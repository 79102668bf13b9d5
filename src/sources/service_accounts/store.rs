//! The compact in-memory ServiceAccount store: namespace → name → the annotations the engine
//! reads, nothing else. Readers never wait on the watch; writers wake anyone waiting for a miss.
//! A relist updates the entries in place and then removes those it did not list, so it never
//! holds a second copy of the cluster's ServiceAccounts.
//!
//! A large cluster has a hundred thousand ServiceAccounts or more, and the webhook holds every
//! one, so each costs one allocation: its name and the annotation values kept, packed into one
//! byte string ([`Entry`]). A lookup unpacks the entry into the engine's
//! [`ServiceAccountAnnotations`], a few small allocations per admission (docs/benchmarks.md).

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::core::identity::ServiceAccountAnnotations;

/// One ServiceAccount in a single allocation: a header byte of which annotations are present
/// (bit `i` for field `i` in [`Entry::FIELDS`] order) and the relist mark ([`Entry::MARK`]),
/// each present value's length as LEB128, then the name, then the present values. Hashed and
/// compared by name only, so a namespace's entries form a set that is looked up by name.
struct Entry(Box<[u8]>);

impl Entry {
    /// How many annotation values an entry can hold, in the order of the presence bits.
    const FIELDS: usize = 6;
    /// The header bit a relist marks the entries it has listed with: see [`Entries`].
    const MARK: u8 = 0x80;

    fn new(name: &str, annotations: &ServiceAccountAnnotations, mark: bool) -> Self {
        let values = Self::values_of(annotations);
        let mut present = 0u8;
        let mut bytes = Vec::with_capacity(
            1 + name.len() + values.iter().flatten().map(|v| v.len() + 3).sum::<usize>(),
        );
        bytes.push(0);
        for (bit, value) in values.iter().enumerate() {
            if let Some(value) = value {
                present |= 1 << bit;
                let mut length = value.len();
                loop {
                    let low = (length & 0x7f) as u8;
                    length >>= 7;
                    if length == 0 {
                        bytes.push(low);
                        break;
                    }
                    bytes.push(low | 0x80);
                }
            }
        }
        bytes[0] = present | if mark { Self::MARK } else { 0 };
        bytes.extend_from_slice(name.as_bytes());
        for value in values.iter().flatten() {
            bytes.extend_from_slice(value.as_bytes());
        }
        Self(bytes.into_boxed_slice())
    }

    fn values_of(annotations: &ServiceAccountAnnotations) -> [Option<&str>; Self::FIELDS] {
        [
            annotations.role_arn.as_deref(),
            annotations.audience.as_deref(),
            annotations.sts_regional_endpoints.as_deref(),
            annotations.token_expiration.as_deref(),
            annotations.role_session_name_from_pod.as_deref(),
            annotations.region.as_deref(),
        ]
    }

    /// The name and each value's byte range, read from the header.
    fn layout(&self) -> (&[u8], [Option<&[u8]>; Self::FIELDS]) {
        let bytes = &self.0;
        let present = self.present();
        let mut at = 1;
        let mut lengths = [None; Self::FIELDS];
        for (bit, slot) in lengths.iter_mut().enumerate() {
            if present & (1 << bit) == 0 {
                continue;
            }
            let mut length = 0usize;
            let mut shift = 0;
            while let Some(&byte) = bytes.get(at) {
                at += 1;
                length |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            *slot = Some(length);
        }
        let values_len: usize = lengths.iter().flatten().sum();
        let name_end = bytes.len().saturating_sub(values_len).max(at);
        let name = &bytes[at..name_end];
        let mut values = [None; Self::FIELDS];
        let mut start = name_end;
        for (slot, length) in values.iter_mut().zip(lengths) {
            if let Some(length) = length {
                let end = (start + length).min(bytes.len());
                *slot = Some(&bytes[start..end]);
                start = end;
            }
        }
        (name, values)
    }

    fn name(&self) -> &[u8] {
        self.layout().0
    }

    /// The presence bits.
    fn present(&self) -> u8 {
        self.0.first().map_or(0, |&header| header & !Self::MARK)
    }

    fn has_annotations(&self) -> bool {
        self.present() != 0
    }

    fn mark(&self) -> bool {
        self.0
            .first()
            .is_some_and(|&header| header & Self::MARK != 0)
    }

    fn with_mark(mut self, mark: bool) -> Self {
        if let Some(header) = self.0.first_mut() {
            *header = (*header & !Self::MARK) | if mark { Self::MARK } else { 0 };
        }
        self
    }

    fn annotations(&self) -> ServiceAccountAnnotations {
        // Every part was copied from a `&str` whole, so it is UTF-8.
        let [role_arn, audience, sts_regional_endpoints, token_expiration, role_session_name_from_pod, region] =
            self.layout().1.map(|value| {
                value
                    .and_then(|bytes| std::str::from_utf8(bytes).ok())
                    .map(Box::from)
            });
        ServiceAccountAnnotations {
            role_arn,
            audience,
            sts_regional_endpoints,
            token_expiration,
            role_session_name_from_pod,
            region,
        }
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same hash as the `[u8]` it borrows as, so a set of entries is looked up by name.
        self.name().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Entry {}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.name()
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Entry")
            .field(&String::from_utf8_lossy(self.name()))
            .finish()
    }
}

/// Every entry, and where a relist stands.
///
/// A relist marks what it lists: every entry carries a mark bit, and `mark` is the value that
/// means "listed by the relist under way, or written by the watch since it began". Outside a
/// relist every entry carries `mark`. Beginning a relist flips `mark`, so every entry becomes
/// unlisted at once; each listed entry is written again with the new value; at its end the
/// entries still without it, the ServiceAccounts deleted while the watch was down, are removed.
#[derive(Debug, Default)]
struct Entries {
    by_namespace: HashMap<Box<str>, HashSet<Entry>>,
    len: usize,
    mark: bool,
    relisting: bool,
}

impl Entries {
    /// Inserts or replaces one entry, with the given mark.
    fn upsert(
        &mut self,
        namespace: &str,
        name: &str,
        annotations: &ServiceAccountAnnotations,
        mark: bool,
    ) {
        let names = match self.by_namespace.get_mut(namespace) {
            Some(names) => names,
            None => self.by_namespace.entry(namespace.into()).or_default(),
        };
        if names.replace(Entry::new(name, annotations, mark)).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) -> bool {
        let Some(names) = self.by_namespace.get_mut(namespace) else {
            return false;
        };
        let removed = names.remove(name.as_bytes());
        if removed {
            self.len -= 1;
            if names.is_empty() {
                self.by_namespace.remove(namespace);
            } else {
                give_back_unused_room(names);
            }
        }
        removed
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Entry> {
        self.by_namespace.get(namespace)?.get(name.as_bytes())
    }

    /// Removes every entry whose mark is not `mark`.
    fn remove_unmarked(&mut self) {
        let mark = self.mark;
        let mut left = 0;
        self.by_namespace.retain(|_, names| {
            let had = names.len();
            names.retain(|entry| entry.mark() == mark);
            if names.len() < had {
                give_back_unused_room(names);
            }
            left += names.len();
            !names.is_empty()
        });
        self.len = left;
    }

    /// Gives every entry the mark `mark`.
    fn mark_all(&mut self, mark: bool) {
        for names in self.by_namespace.values_mut() {
            *names = std::mem::take(names)
                .into_iter()
                .map(|entry| entry.with_mark(mark))
                .collect();
        }
    }
}

/// A namespace whose ServiceAccounts were mostly deleted gives its table back.
fn give_back_unused_room(names: &mut HashSet<Entry>) {
    if names.len() < names.capacity() / 4 {
        names.shrink_to_fit();
    }
}

/// The ServiceAccount store shared by the watch, the fallback lookups and the admission path.
///
/// ServiceAccounts without any annotation we read (most of them: every namespace's `default`)
/// cost only their name and a map slot, and are all answered with one shared empty entry.
#[derive(Debug)]
pub struct ServiceAccountStore {
    entries: RwLock<Entries>,
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
            entries: RwLock::new(Entries::default()),
            inserted: Notify::new(),
            deletions: AtomicU64::new(0),
            empty: Arc::new(ServiceAccountAnnotations::default()),
        }
    }

    /// What a lookup answers for a stored entry: the shared empty one when there is nothing.
    fn unpack(&self, entry: &Entry) -> Arc<ServiceAccountAnnotations> {
        if entry.has_annotations() {
            Arc::new(entry.annotations())
        } else {
            self.empty.clone()
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccountAnnotations>> {
        let entries = self.read();
        let entry = entries.get(namespace, name)?;
        Some(self.unpack(entry))
    }

    /// Adds or replaces the entry (a watch event, or one object of a list) and wakes waiting
    /// lookups.
    pub fn upsert(&self, namespace: &str, name: &str, annotations: ServiceAccountAnnotations) {
        {
            let mut entries = self.write();
            let mark = entries.mark;
            entries.upsert(namespace, name, &annotations, mark);
        }
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

    /// A (re)list begins: every entry is kept and answered, but counts as unlisted until the
    /// list or the watch writes it again. A list that failed half-way and starts over forgets
    /// what it had listed, so only what the new list holds is kept at its end.
    pub fn begin_relist(&self) {
        let mut entries = self.write();
        if entries.relisting {
            let unlisted = !entries.mark;
            entries.mark_all(unlisted);
        } else {
            entries.mark = !entries.mark;
            entries.relisting = true;
        }
    }

    /// The (re)list is complete: the entries it did not list, ServiceAccounts deleted while
    /// the watch was down, are removed. Returns how many entries are held.
    pub fn end_relist(&self) -> usize {
        let mut entries = self.write();
        // Counted under the lock, so an `insert_fetched` that began before sees the change.
        self.deletions.fetch_add(1, Ordering::AcqRel);
        entries.remove_unmarked();
        entries.relisting = false;
        entries.len
    }

    /// Adds an entry found by a direct GET, unless the watch already has one (the watch is the
    /// authority) or a deletion happened since `deletions_before` was read (the GET may have
    /// seen the object just before it was deleted). Returns the entry now in effect. During a
    /// relist the entry is added unlisted: should the object be deleted before the list is
    /// read, no deletion event would come for it, and the relist's end removes it.
    pub fn insert_fetched(
        &self,
        namespace: &str,
        name: &str,
        annotations: ServiceAccountAnnotations,
        deletions_before: u64,
    ) -> Arc<ServiceAccountAnnotations> {
        let mut entries = self.write();
        if let Some(existing) = entries.get(namespace, name) {
            return self.unpack(existing);
        }
        if self.deletions.load(Ordering::Acquire) != deletions_before {
            return Arc::new(annotations);
        }
        let mark = if entries.relisting {
            !entries.mark
        } else {
            entries.mark
        };
        entries.upsert(namespace, name, &annotations, mark);
        drop(entries);
        self.inserted.notify_waiters();
        if annotations == *self.empty {
            self.empty.clone()
        } else {
            Arc::new(annotations)
        }
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
        self.read().len
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
                names.iter().map(move |entry| {
                    let name = String::from_utf8_lossy(entry.name());
                    (format!("{namespace}/{name}"), self.unpack(entry))
                })
            })
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries> {
        // A panic while holding the lock cannot leave a HashMap half-updated in a way that
        // matters here, so a poisoned lock is still used.
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
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
    fn entries_keep_every_annotation_whatever_its_length() {
        let store = ServiceAccountStore::new();
        let long = "x".repeat(70_000);
        let all = ServiceAccountAnnotations {
            role_arn: Some("arn:aws:iam::111122223333:role/app".into()),
            audience: Some("".into()),
            sts_regional_endpoints: Some(long.as_str().into()),
            token_expiration: Some("86400".into()),
            role_session_name_from_pod: Some("true".into()),
            region: Some("".into()),
        };
        store.upsert("ns", "all", all.clone());
        let some = ServiceAccountAnnotations {
            audience: Some("sts.amazonaws.com".into()),
            token_expiration: Some("3600".into()),
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        store.upsert("ns", "some", some.clone());
        store.upsert("ns", "", some.clone());
        assert_eq!(*store.get("ns", "all").unwrap(), all);
        assert_eq!(*store.get("ns", "some").unwrap(), some);
        assert_eq!(*store.get("ns", "").unwrap(), some);
        assert!(store.get("ns", "al").is_none());
        assert_eq!(
            store
                .sorted_entries()
                .into_iter()
                .map(|(key, entry)| (key, (*entry).clone()))
                .collect::<Vec<_>>(),
            [
                ("ns/".to_string(), some.clone()),
                ("ns/all".to_string(), all),
                ("ns/some".to_string(), some),
            ]
        );
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
    fn a_relist_answers_every_entry_meanwhile_and_drops_the_unlisted_at_its_end() {
        let store = ServiceAccountStore::new();
        store.upsert("ns", "kept", role("r"));
        store.upsert("ns", "gone", role("r"));
        store.upsert("emptied", "gone", role("r"));
        store.begin_relist();
        store.upsert("ns", "kept", role("r-new"));
        store.upsert("ns", "added", role("r"));
        assert_eq!(store.get("ns", "kept").unwrap().role(), Some("r-new"));
        assert_eq!(store.get("ns", "gone").unwrap().role(), Some("r"));
        assert!(store.get("ns", "added").is_some());
        assert_eq!(store.len(), 4);
        assert_eq!(store.end_relist(), 2);
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("ns", "kept").unwrap().role(), Some("r-new"));
        assert!(store.get("ns", "added").is_some());
        assert!(store.get("ns", "gone").is_none());
        assert!(store.get("emptied", "gone").is_none());
        assert_eq!(store.sorted_entries().len(), 2);

        // The next relist starts from what this one left, all of it listed.
        store.begin_relist();
        store.upsert("ns", "added", role("r"));
        assert_eq!(store.end_relist(), 1);
        assert!(store.get("ns", "kept").is_none());
    }

    #[test]
    fn a_relist_that_starts_over_keeps_only_what_the_last_attempt_listed() {
        let store = ServiceAccountStore::new();
        store.upsert("ns", "a", role("r"));
        store.upsert("ns", "b", role("r"));
        store.begin_relist();
        store.upsert("ns", "a", role("r"));
        store.upsert("ns", "b", role("r"));
        // The list failed half-way; the next one no longer sees `a`.
        store.begin_relist();
        store.upsert("ns", "b", role("r"));
        assert_eq!(store.end_relist(), 1);
        assert!(store.get("ns", "a").is_none());
        assert!(store.get("ns", "b").is_some());
    }

    #[test]
    fn a_fetched_entry_added_during_a_relist_stays_only_if_the_relist_lists_it() {
        let store = ServiceAccountStore::new();
        store.begin_relist();
        store.insert_fetched(
            "ns",
            "deleted-before-the-list",
            role("r"),
            store.deletions(),
        );
        store.insert_fetched("ns", "listed", role("r"), store.deletions());
        assert!(store.get("ns", "deleted-before-the-list").is_some());
        store.upsert("ns", "listed", role("r"));
        assert_eq!(store.end_relist(), 1);
        assert!(store.get("ns", "deleted-before-the-list").is_none());
        assert!(store.get("ns", "listed").is_some());

        // Outside a relist a fetched entry is kept through the next one only if listed too.
        store.insert_fetched("ns", "fetched", role("r"), store.deletions());
        store.begin_relist();
        store.upsert("ns", "listed", role("r"));
        store.upsert("ns", "fetched", role("r"));
        assert_eq!(store.end_relist(), 2);
    }

    #[test]
    fn a_get_begun_before_a_relist_ended_adds_nothing_after_it() {
        let store = ServiceAccountStore::new();
        let before = store.deletions();
        store.begin_relist();
        store.end_relist();
        let returned = store.insert_fetched("ns", "late", role("r"), before);
        assert_eq!(returned.role(), Some("r"));
        assert!(store.get("ns", "late").is_none());
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
