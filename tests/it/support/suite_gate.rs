//! Keeps the heavy suites apart now that they share one test process. `real_cluster` and
//! `real_node` each bring up a control plane, `server_hostile` bounds latency and memory of
//! this process: when they were separate test binaries they ran one after another, and they
//! must still. A heavy test enters its suite's gate first thing and holds it to its end:
//! tests of one suite run together (the suite keeps its own finer locks), a test of another
//! heavy suite waits until the current suite has no test left running.
//!
//! A suite that measures the whole process (memory) needs more: no other test at all in
//! its process. `alone` runs such a test again in a child process of this test binary with
//! only that test selected, and the test here just waits for it.

use std::process::Command;
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

/// Set in the child that `alone` starts, to the name of the test it runs.
const ALONE_ENV: &str = "PIW_TEST_ALONE";
/// One child at a time: the tests of an `alone` suite measure one process on the machine.
static ONE_CHILD: Mutex<()> = Mutex::new(());

/// For a test of `suite` that needs the process to itself: in the child process that runs
/// it alone, `Some` (the test goes on); in the test binary's normal run, it runs the test in
/// such a child (inside the suite's gate, one child at a time), fails if the child failed,
/// and gives `None`: the test returns. The child's output is passed on as the test's own.
pub fn alone(suite: &'static str) -> Option<Gate> {
    let current = std::thread::current();
    // libtest runs each test on a thread named after it.
    let Some(test) = current.name().filter(|name| name.contains("::")) else {
        return Some(enter(suite));
    };
    if std::env::var(ALONE_ENV).is_ok_and(|alone| alone == test) {
        return Some(enter(suite));
    }
    let _gate = enter(suite);
    let _one = ONE_CHILD.lock().unwrap_or_else(PoisonError::into_inner);
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(&exe)
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(ALONE_ENV, test)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} for {test} alone: {e}", exe.display()));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{test}, run alone in a child process, failed ({}):\n{printed}",
        out.status
    );
    assert!(
        printed.contains("1 passed"),
        "{test}: the child process did not run it:\n{printed}"
    );
    eprintln!("{printed}");
    None
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
