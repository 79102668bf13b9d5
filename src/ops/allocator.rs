//! The process's memory allocator: mimalloc, set up to give memory back to the system soon after
//! a burst (an attack, a large cluster's initial list) instead of keeping it for reuse. Chosen
//! by measurement (docs/benchmarks.md): faster than glibc's malloc on a request's many small,
//! short-lived allocations, and with these options it holds the least memory when idle.
//!
//! The library does not install it: a binary (or a test that measures memory) does, with
//! [`crate::global_allocator!`], so benchmarks stay free to count allocations with their own.

use std::ffi::{c_int, c_long};

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

/// Sets mimalloc's options. Runs before `main` (see [`crate::global_allocator!`]), as the
/// arena options only apply to arenas reserved after they are set.
///
/// - Arena memory is committed as it is used rather than up front: about 8 MiB less resident
///   when idle.
/// - Freed memory is returned to the system at once (purge delay 0) rather than after 1 s of
///   further allocator activity, which never comes to an idle server: after the initial list of
///   100,000 ServiceAccounts, 40 MiB resident instead of 50, and after an attack the memory
///   comes back within a second. No measurable cost in throughput.
pub fn configure() {
    // SAFETY: setters of process-wide integer options; any value is valid.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

/// For the Tokio runtime's `on_thread_park`: a worker that runs out of work returns its empty
/// pages. mimalloc otherwise keeps a thread's emptied pages (and the blocks other threads freed
/// into them) until that thread allocates again, which an idle worker never does. A collection
/// visits only the thread's own pages, a few microseconds; under load workers park rarely.
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
