//! The process's memory allocator: mimalloc, set up to give memory back to the system soon after
//! a burst (an attack, a large cluster's initial list) instead of keeping it for reuse. Chosen
//! by measurement (docs/benchmarks.md): faster than glibc's malloc on a request's many small,
//! short-lived allocations, and with these options it holds the least memory when idle.
//!
//! The library does not install it: a binary (or a test that measures memory) does, with
//! [`crate::global_allocator!`], so benchmarks stay free to count allocations with their own.

use std::ffi::{c_int, c_long};
use std::time::Duration;

pub use mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's option setter, exported by the library the allocator links.
    fn mi_option_set(option: c_int, value: c_long);
    /// Frees the calling thread's empty pages and purges the memory whose purge is due.
    fn mi_collect(force: bool);
}

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_t` (the same in v2 and v3).
const ARENA_EAGER_COMMIT: c_int = 4;
/// `mi_option_purge_delay`, in milliseconds (the same in v2 and v3).
const PURGE_DELAY: c_int = 15;
/// How long freed memory stays committed for reuse before it is handed back.
const PURGE_DELAY_MS: c_long = 100;
/// Sets mimalloc's options. Runs before `main` (see [`crate::global_allocator!`]), as the
/// arena options only apply to arenas reserved after they are set.
///
/// - Arena memory is committed as it is used rather than up front: about 8 MiB less resident
///   when idle.
/// - Freed memory is handed back after 100 ms rather than mimalloc's default 1 s, so a burst
///   of short-lived allocations (a large cluster's initial list, page by page) does not pile
///   up: the list's peak was 15-24% above the steady state with 1 s. Not at once (0): pages
///   would be handed back and faulted in again between requests.
///
/// [`return_freed_memory`] makes the purge happen when the server is idle.
pub fn configure() {
    // SAFETY: setters of process-wide integer options; any value is valid.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
    }
}

/// How often [`return_freed_memory`] purges.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// Runs for as long as the runtime: every second, hands back to the system the freed memory
/// whose purge delay has passed. mimalloc purges only from inside its own calls, so without
/// this an idle server (after a burst, an attack, a large cluster's initial list) would keep
/// that memory: after the initial list of 100,000 ServiceAccounts, 50 MiB resident instead of
/// about 31 (docs/benchmarks.md).
pub async fn return_freed_memory() {
    let mut ticks = tokio::time::interval(PURGE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // SAFETY: collects the calling thread's heap and purges what is due; safe at any time.
        unsafe { mi_collect(false) };
    }
}

/// Hands back, now, all the memory freed so far, whatever its purge delay. For a burst whose
/// garbage would otherwise pile up faster than the delay lets it go: the initial list of a
/// large cluster frees one page of objects every few milliseconds (docs/benchmarks.md).
/// Costs a few system calls; call it every few hundred objects, not per object.
pub fn return_freed_memory_now() {
    // SAFETY: collects the calling thread's heap and purges every freed page; safe at any time.
    unsafe { mi_collect(true) };
}

/// For the Tokio runtime's `on_thread_park`: a worker that runs out of work returns its empty
/// pages. mimalloc otherwise keeps a thread's emptied pages (and the blocks other threads freed
/// into them) until that thread allocates again, which an idle worker never does. It visits
/// only the thread's own pages: no difference in the load benchmark (docs/benchmarks.md).
pub fn on_worker_park() {
    // SAFETY: collects the calling thread's own heap; safe to call at any time.
    unsafe { mi_collect(false) };
}

/// Installs mimalloc as the global allocator with this module's options, set before `main`.
/// Used once, at the top level of a binary or test crate.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL_ALLOCATOR: $crate::ops::allocator::MiMalloc =
            $crate::ops::allocator::MiMalloc;

        /// Runs as a process constructor, before the first allocation reserves an arena.
        #[cfg(target_os = "linux")]
        #[used]
        #[link_section = ".init_array"]
        static CONFIGURE_GLOBAL_ALLOCATOR: extern "C" fn() = {
            extern "C" fn configure() {
                $crate::ops::allocator::configure();
            }
            configure
        };
    };
}
