//! Helpers shared by the integration tests that need a Kubernetes API.
#![allow(dead_code)]

pub mod fake_api;

use std::time::{Duration, Instant};

/// Polls `condition` every 10 ms until it holds or `timeout` passes; says what it waited for.
pub async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
