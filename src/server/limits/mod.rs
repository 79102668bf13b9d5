//! What one client may hold of the server: connections (overall and per peer address), TLS
//! handshakes in progress, and memory for request bodies. Connections and handshakes are
//! shared fairly between addresses: one over a cap waits briefly for its turn, and an address
//! holding few takes the place of a quiet connection of the one holding the most. What
//! misbehaves (too slow, too large, flooding, still waiting at its deadline) is refused, and
//! counted in `pod_identity_webhook_rejected_total{reason}`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ops::metrics::Metrics;

mod body;
mod gate;

pub(crate) use body::{BodyBudget, BodyReading, PARSED_BODY_FACTOR, SMALL_BODY_RESERVE_DIVISOR};
pub(crate) use gate::{Activity, ConnectionGate, ConnectionSlot, Turn};

/// Why a client was refused: the `reason` label of the rejection counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The server holds `max_connections` already, and did not make room for this one by
    /// its deadline (or as many wait already).
    Connections,
    /// This peer address holds `max_connections_per_peer` already, and none of them made room
    /// by the deadline (or as many wait already).
    ConnectionsPerPeer,
    /// No TLS handshake turn came by the deadline: `max_handshakes` were in progress, or
    /// `max_handshakes_per_peer` from this peer address.
    Handshakes,
    /// The TLS handshake did not finish within its deadline.
    HandshakeTimeout,
    /// No request arrived within the first-request or idle deadline.
    Idle,
    /// An HTTP/1.1 request head did not arrive whole within the header deadline from its
    /// first byte.
    SlowHead,
    /// The body did not arrive within the body deadline or below the minimum data rate.
    SlowBody,
    /// The body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The memory budget for bodies in flight is spent.
    Memory,
    /// `max_concurrent_reviews` reviews are being answered.
    Overloaded,
    /// An HTTP/2 connection sent control frames faster than allowed.
    Http2ControlFlood,
    /// A quiet connection (or a handshake running long) was closed to make room for a client
    /// from an address holding fewer (see [`ConnectionGate`]).
    Displaced,
}

impl Rejection {
    pub const ALL: [Rejection; 12] = [
        Rejection::Connections,
        Rejection::ConnectionsPerPeer,
        Rejection::Handshakes,
        Rejection::HandshakeTimeout,
        Rejection::Idle,
        Rejection::SlowHead,
        Rejection::SlowBody,
        Rejection::BodyTooLarge,
        Rejection::Memory,
        Rejection::Overloaded,
        Rejection::Http2ControlFlood,
        Rejection::Displaced,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::Connections => "connections",
            Rejection::ConnectionsPerPeer => "connections_per_peer",
            Rejection::Handshakes => "handshakes",
            Rejection::HandshakeTimeout => "handshake_timeout",
            Rejection::Idle => "idle",
            Rejection::SlowHead => "slow_head",
            Rejection::SlowBody => "slow_body",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::Memory => "memory",
            Rejection::Overloaded => "overloaded",
            Rejection::Http2ControlFlood => "http2_control_flood",
            Rejection::Displaced => "displaced",
        }
    }
}

/// Counts rejections and logs them, at most [`RejectionLog::LINES_PER_WINDOW`] lines per
/// [`RejectionLog::WINDOW`], so an attacker cannot turn refusals into a flood of logs; the
/// next line logged says how many were left out.
pub(crate) struct RejectionLog {
    metrics: Arc<Metrics>,
    started: std::time::Instant,
    /// Start of the current window, in milliseconds since `started`.
    window_start: AtomicU64,
    logged: AtomicU64,
    suppressed: AtomicU64,
}

impl RejectionLog {
    pub(crate) const WINDOW: Duration = Duration::from_secs(10);
    pub(crate) const LINES_PER_WINDOW: u64 = 10;

    pub fn new(metrics: Arc<Metrics>) -> Self {
        for reason in Rejection::ALL {
            // Every series exists from the start, so a rate() over it works at the first attack.
            metrics.rejections.with_label_values(&[reason.label()]);
        }
        Self {
            metrics,
            started: std::time::Instant::now(),
            window_start: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    pub fn reject(&self, reason: Rejection, peer: Option<IpAddr>, detail: &str) {
        self.metrics
            .rejections
            .with_label_values(&[reason.label()])
            .inc();
        let now = self.started.elapsed().as_millis() as u64;
        let window = Self::WINDOW.as_millis() as u64;
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= window
            && self
                .window_start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.logged.store(0, Ordering::Relaxed);
        }
        if self.logged.fetch_add(1, Ordering::Relaxed) >= Self::LINES_PER_WINDOW {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let peer = peer.map(|ip| ip.to_string()).unwrap_or_default();
        tracing::info!(
            reason = reason.label(),
            peer,
            suppressed,
            "client refused: {detail}"
        );
    }
}

/// The answer to a request not completed within the request timeout, `limit`.
pub(crate) fn request_timed_out(limit: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        format!("request not completed within {limit:?}"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chart's refused-clients alert can leave out any reason, and its values schema lists
    /// them by hand: this keeps that list the server's.
    #[test]
    fn the_charts_values_schema_lists_every_rejection_reason() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/pod-identity-webhook/values.schema.json"
        );
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let listed: Vec<&str> = schema
            .pointer("/properties/metrics/properties/prometheusRule/properties/clientsRefused/properties/ignoreReasons/items/enum")
            .and_then(serde_json::Value::as_array)
            .expect("ignoreReasons has an enum")
            .iter()
            .map(|reason| reason.as_str().unwrap())
            .collect();
        let reasons: Vec<&str> = Rejection::ALL.iter().map(|reason| reason.label()).collect();
        assert_eq!(listed, reasons);
    }

    #[test]
    fn every_rejection_is_counted_but_only_ten_a_window_are_logged() {
        let metrics = Arc::new(Metrics::new());
        let log = RejectionLog::new(metrics.clone());
        for _ in 0..25 {
            log.reject(Rejection::SlowBody, None, "test");
        }
        let counted = metrics.rejections.with_label_values(&["slow_body"]).get();
        assert_eq!(counted, 25);
        assert_eq!(log.suppressed.load(Ordering::Relaxed), 15);
        assert!(
            metrics
                .encode()
                .contains(r#"pod_identity_webhook_rejected_total{reason="idle"} 0"#),
            "every reason is exported from the start"
        );
    }
}
