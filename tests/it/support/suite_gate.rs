//! Keeps the heavy suites apart now that they share one test process. `real_cluster` and
//! `real_node` each bring up a control plane, `server_hostile` bounds the latency and memory
//! of a server process under attack: when they were separate test binaries they ran one after
//! another, and they must still. A heavy test enters its suite's gate first thing and holds it
//! to its end: tests of one suite run together (the suite keeps its own finer locks), a test
//! of another heavy suite waits until the current suite has no test left running.

use std::sync::{Condvar, Mutex, PoisonError};

struct Current {
    suite: Option<&'static str>,
    /// Tests of `suite` between `enter` and the drop of their `Gate`.
    inside: usize,
    /// The suite of every test waiting for its turn (one entry per test).
    waiting: Vec<&'static str>,
}

static CURRENT: Mutex<Current> = Mutex::new(Current {
    suite: None,
    inside: 0,
    waiting: Vec::new(),
});
static LEFT: Condvar = Condvar::new();

/// A test's place in its suite's turn; the turn ends when the suite's last one is dropped.
#[must_use = "the gate is held until this is dropped"]
pub struct Gate(());

/// Waits until no other heavy suite has a test running, then counts this test in `suite`.
pub fn enter(suite: &'static str) -> Gate {
    let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    current.waiting.push(suite);
    while current.suite.is_some_and(|running| running != suite) {
        current = LEFT.wait(current).unwrap_or_else(PoisonError::into_inner);
    }
    if let Some(at) = current.waiting.iter().position(|&waiting| waiting == suite) {
        current.waiting.swap_remove(at);
    }
    current.suite = Some(suite);
    current.inside += 1;
    Gate(())
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        current.inside -= 1;
        if current.inside == 0 {
            current.suite = None;
            LEFT.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::eventually;
    use std::time::Duration;

    fn is_waiting(suite: &str) -> bool {
        let current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        current.waiting.contains(&suite)
    }

    #[test]
    fn a_suite_runs_together_and_another_waits_until_its_last_test_left() {
        let first = enter("gate-test-a");
        let second = enter("gate-test-a");
        let entered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = entered.clone();
        let other = std::thread::spawn(move || {
            let _gate = enter("gate-test-b");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let waiting = || {
            eventually(
                "b waiting",
                Duration::from_secs(10),
                Duration::from_millis(5),
                || is_waiting("gate-test-b"),
            )
        };
        waiting().unwrap();
        drop(first);
        // Woken by nothing (a's count is not zero yet): b waits on.
        assert!(is_waiting("gate-test-b"));
        assert!(!entered.load(std::sync::atomic::Ordering::SeqCst));
        drop(second);
        other.join().unwrap();
        assert!(entered.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!is_waiting("gate-test-b"));
    }
}
