//! Memory held per ServiceAccount by the cache: fills the store with 100k synthetic
//! ServiceAccounts through the same path the watch uses and prints heap bytes per entry.
//!
//! Run: `cargo bench --bench cache_memory`
//!
//! A counting global allocator measures live heap bytes (what the program asked for; the
//! allocator's own per-block overhead comes on top and is estimated from the block count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use pod_identity_webhook::core::settings::AnnotationKeys;
use pod_identity_webhook::sources::service_accounts::{ServiceAccountStore, StoreWriter};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ENTRIES: usize = 100_000;
const NAMESPACES: usize = 1_000;
/// glibc malloc's per-block overhead on 64-bit (size header, 16-byte rounding on average).
const MALLOC_OVERHEAD_PER_BLOCK: f64 = 16.0;

fn service_account(
    namespace: String,
    name: String,
    role: Option<String>,
) -> Event<PartialObjectMeta<ServiceAccount>> {
    let annotations = role.map(|role| {
        BTreeMap::from([
            ("eks.amazonaws.com/role-arn".to_string(), role),
            (
                "eks.amazonaws.com/token-expiration".to_string(),
                "86400".to_string(),
            ),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\"}".to_string(),
            ),
        ])
    });
    Event::InitApply(PartialObjectMeta {
        types: None,
        metadata: ObjectMeta {
            namespace: Some(namespace),
            name: Some(name),
            annotations,
            resource_version: Some("123456789".into()),
            uid: Some("6f1c1b9e-3b9a-4d6e-9a55-0c1f2e3d4a5b".into()),
            ..Default::default()
        },
        _phantom: Default::default(),
    })
}

/// Lists `ENTRIES` ServiceAccounts into a fresh store the way the watch does, returning the
/// store and the heap it holds (bytes, blocks).
fn fill(with_role: impl Fn(usize) -> bool) -> (Arc<ServiceAccountStore>, isize, isize) {
    let store = Arc::new(ServiceAccountStore::new());
    let mut reflector = StoreWriter::new(store.clone(), AnnotationKeys::new("eks.amazonaws.com"));
    let bytes_before = LIVE_BYTES.load(Ordering::SeqCst);
    let blocks_before = LIVE_BLOCKS.load(Ordering::SeqCst);
    reflector.apply(Event::Init);
    for i in 0..ENTRIES {
        let namespace = format!("team-{:04}", i % NAMESPACES);
        let name = format!("workload-{i:06}-sa");
        let role =
            with_role(i).then(|| format!("arn:aws:iam::111122223333:role/{namespace}-{name}"));
        // Each event is dropped once applied, as in the watch: only what the store keeps stays.
        reflector.apply(service_account(namespace, name, role));
    }
    reflector.apply(Event::InitDone);
    drop(reflector);
    let bytes = LIVE_BYTES.load(Ordering::SeqCst) - bytes_before;
    let blocks = LIVE_BLOCKS.load(Ordering::SeqCst) - blocks_before;
    (store, bytes, blocks)
}

fn report(label: &str, with_role: impl Fn(usize) -> bool) {
    let (store, bytes, blocks) = fill(with_role);
    assert_eq!(store.len(), ENTRIES);
    let per_entry = bytes as f64 / ENTRIES as f64;
    let blocks_per_entry = blocks as f64 / ENTRIES as f64;
    println!(
        "{label}: {per_entry:.0} heap bytes/ServiceAccount ({blocks_per_entry:.2} allocations each; \
         ~{:.0} bytes with malloc overhead), {:.1} MiB for {ENTRIES}",
        per_entry + blocks_per_entry * MALLOC_OVERHEAD_PER_BLOCK,
        bytes as f64 / (1024.0 * 1024.0),
    );
}

fn main() {
    println!("ServiceAccount cache memory, {ENTRIES} ServiceAccounts in {NAMESPACES} namespaces");
    report("every ServiceAccount with a role-arn annotation", |_| true);
    report("no ServiceAccount annotated", |_| false);
    report("one in ten annotated", |i| i % 10 == 0);
}
