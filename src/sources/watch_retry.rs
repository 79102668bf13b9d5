//! Pacing of the API watches' retries: exponential backoff, capped, that only progress resets.
//! kube's `default_backoff()` resets on every `Ok` item, and the watcher emits an `Ok(Init)`
//! marker before each list attempt, so against an unreachable API server it never backs off.

use std::time::Duration;

use kube::runtime::watcher::{self, DefaultBackoff, Event};
use prometheus::IntCounterVec;

/// The longest wait kube's default backoff can give (30 s, plus up to as much again of jitter);
/// used should the backoff ever stop yielding.
const LONGEST_DELAY: Duration = Duration::from_secs(60);

/// One failed attempt: its number since the last progress and how long to wait before the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retry {
    pub attempt: u32,
    pub delay: Duration,
}

/// Retry state of one watch. Feed it every item the watcher yields.
#[derive(Default)]
pub(crate) struct WatchRetry {
    backoff: DefaultBackoff,
    failures: u32,
}

impl WatchRetry {
    /// An event arrived. Anything but the `Init` marker means the API server answered, so the
    /// backoff starts over; returns how many attempts had failed before, when any had.
    pub(crate) fn on_event<K>(&mut self, event: &Event<K>) -> Option<u32> {
        if matches!(event, Event::Init) || self.failures == 0 {
            return None;
        }
        kube::runtime::utils::Backoff::reset(&mut self.backoff);
        Some(std::mem::take(&mut self.failures))
    }

    /// An attempt failed: counts it in `errors` under `resource`, says so (naming `what` was
    /// watched and what happens `meanwhile`), and waits before the next attempt.
    pub(crate) async fn back_off(
        &mut self,
        error: &watcher::Error,
        errors: &IntCounterVec,
        resource: &str,
        what: &str,
        meanwhile: &str,
    ) {
        errors.with_label_values(&[resource]).inc();
        let next = self.on_error();
        tracing::warn!(
            attempt = next.attempt,
            retry_in = ?next.delay,
            %error,
            "cannot list or watch {what} on the API server; retrying, {meanwhile}"
        );
        tokio::time::sleep(next.delay).await;
    }

    /// An attempt failed: how long to wait before the next one (800 ms doubling up to 30 s,
    /// with jitter, as client-go's reflector does).
    pub(crate) fn on_error(&mut self) -> Retry {
        self.failures = self.failures.saturating_add(1);
        Retry {
            attempt: self.failures,
            delay: self.backoff.next().unwrap_or(LONGEST_DELAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    /// What the watcher yields against an unreachable server: `Init`, then the failed list.
    fn failed_attempts(retry: &mut WatchRetry, count: usize) -> Vec<Duration> {
        (0..count)
            .map(|_| {
                assert_eq!(retry.on_event(&Event::<ConfigMap>::Init), None);
                retry.on_error().delay
            })
            .collect()
    }

    #[test]
    fn init_markers_between_failures_do_not_reset_the_backoff() {
        let mut retry = WatchRetry::default();
        let delays = failed_attempts(&mut retry, 12);
        // 800 ms doubling, each with up to as much again of jitter.
        assert!(delays[0] >= Duration::from_millis(800), "{delays:?}");
        assert!(delays[0] < Duration::from_millis(1600), "{delays:?}");
        assert!(delays[4] >= Duration::from_millis(12_800), "{delays:?}");
        assert!(delays[11] >= Duration::from_secs(30), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= LONGEST_DELAY), "{delays:?}");
        assert_eq!(retry.on_error().attempt, 13);
    }

    #[test]
    fn progress_resets_the_backoff_and_reports_the_failed_attempts() {
        let mut retry = WatchRetry::default();
        failed_attempts(&mut retry, 6);
        assert_eq!(retry.on_event(&Event::<ConfigMap>::InitDone), Some(6));
        assert_eq!(retry.on_event(&Event::<ConfigMap>::InitDone), None);
        let next = retry.on_error();
        assert_eq!(next.attempt, 1);
        assert!(next.delay < Duration::from_millis(1600), "{next:?}");
    }
}
