//! Waiting for a condition, the one rule every test uses: check, and until the deadline has
//! passed, wait a moment and check again; on timeout, say what was awaited and the last
//! reason the check gave. Two ways to wait between checks: a thread sleep for the suites
//! that drive external processes from plain test threads, and tokio's clock for in-process
//! tests (so the deadline is virtual under `tokio::time::pause`, like the code under test).

use std::time::Duration;

/// How often `eventually_async` checks again.
const ASYNC_INTERVAL: Duration = Duration::from_millis(10);

/// What a check returns: `true` / `Ok` when the condition holds (with a value for the
/// caller), `false` / `Err(reason)` when not yet.
pub trait Outcome {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("still false".to_owned())
        }
    }
}

impl<T> Outcome for Result<T, String> {
    type Value = T;
    fn into_result(self) -> Self {
        self
    }
}

/// `Some` with the final answer once `outcome` holds or the time is up, `None` to go on.
fn judge<O: Outcome>(
    what: &str,
    timeout: Duration,
    expired: bool,
    outcome: O,
) -> Option<Result<O::Value, String>> {
    match outcome.into_result() {
        Ok(value) => Some(Ok(value)),
        Err(reason) if expired => {
            Some(Err(format!("{what}: not true after {timeout:?}: {reason}")))
        }
        Err(_) => None,
    }
}

/// Polls `check` every `interval` (sleeping the thread) until it holds; after `timeout`,
/// an error with `what` and the last reason.
pub fn eventually<O: Outcome>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> O,
) -> Result<O::Value, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let outcome = check();
        let expired = std::time::Instant::now() >= deadline;
        if let Some(answer) = judge(what, timeout, expired, outcome) {
            return answer;
        }
        std::thread::sleep(interval);
    }
}

/// Polls `check` every 10 ms of tokio's clock until it holds; after `timeout` (on the same
/// clock) the test fails with `what` and the last reason.
pub async fn eventually_async<O: Outcome>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> O,
) -> O::Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let outcome = check();
        let expired = tokio::time::Instant::now() >= deadline;
        if let Some(answer) = judge(what, timeout, expired, outcome) {
            return answer.unwrap_or_else(|message| panic!("{message}"));
        }
        tokio::time::sleep(ASYNC_INTERVAL).await;
    }
}
