//! Memory for request bodies in flight (BodyBudget), and how a body is read whole within its
//! deadline, rate and budget (BodyReading).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http_body_util::BodyExt;

use super::{Rejection, RejectionLog};
use crate::server::Limits;

/// Memory for request bodies in flight, in bytes: a budget for the whole server and a smaller
/// one per peer address for bodies still arriving, so that one peer holding its bodies open
/// cannot spend what the others need.
pub(crate) struct BodyBudget {
    total: Budget,
    /// Of `total`, what only bodies up to [`SMALL_BODY_BYTES`] may use (an eighth), so that large bodies
    /// sent from many addresses cannot leave real reviews (a few kilobytes) without memory.
    reserved_for_small: usize,
    per_peer_limit: usize,
    per_peer: Mutex<HashMap<IpAddr, Arc<Budget>>>,
}

/// Bytes reserved out of a fixed amount; reservations that do not fit fail at once.
struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    fn try_reserve(&self, bytes: usize) -> bool {
        self.try_reserve_within(bytes, self.limit)
    }

    fn try_reserve_within(&self, bytes: usize, limit: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bodies up to this size may use the budget's reserve; real pods are a few kilobytes.
pub(crate) const SMALL_BODY_BYTES: usize = 256 * 1024;
/// The reserve is this fraction (1/8) of the budget: enough for dozens of real reviews at
/// once, small enough that a body of the largest size still fits in the rest.
pub(crate) const SMALL_BODY_RESERVE_DIVISOR: usize = 8;

/// How much more than its size a body may cost while it is answered: the pod read from it
/// (whose lists and maps reading bounds, `review::LIST_BYTES_PER_BODY_BYTE`), the patch and
/// the answer; charged to the whole-server budget until the answer is made.
pub(crate) const PARSED_BODY_FACTOR: usize = 10;

impl BodyBudget {
    pub fn new(total: usize, per_peer: usize) -> Self {
        Self {
            total: Budget::new(total),
            reserved_for_small: total / SMALL_BODY_RESERVE_DIVISOR,
            per_peer_limit: per_peer,
            per_peer: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.total.used.load(Ordering::Acquire)
    }

    fn peer(&self, peer: Option<IpAddr>) -> Option<Arc<Budget>> {
        let peer = peer?;
        let mut map = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of peers with nothing in flight are dropped as they are met, so the map
        // stays as small as the set of peers sending bodies now.
        map.retain(|_, budget| Arc::strong_count(budget) > 1);
        Some(
            map.entry(peer)
                .or_insert_with(|| Arc::new(Budget::new(self.per_peer_limit)))
                .clone(),
        )
    }
}

/// Bytes held from a [`BodyBudget`], given back on drop.
struct Reservation<'a> {
    budget: &'a BodyBudget,
    peer: Option<Arc<Budget>>,
    total: usize,
    from_peer: usize,
}

impl Reservation<'_> {
    /// The most the server's budget may hold for a body of `body_len` bytes.
    fn limit_for(&self, body_len: usize) -> usize {
        if body_len <= SMALL_BODY_BYTES {
            self.budget.total.limit
        } else {
            self.budget.total.limit - self.budget.reserved_for_small
        }
    }

    /// More bytes of a body still arriving: charged to the server and to the peer.
    fn arriving(&mut self, bytes: usize, body_len: usize) -> bool {
        if !self
            .budget
            .total
            .try_reserve_within(bytes, self.limit_for(body_len))
        {
            return false;
        }
        if let Some(peer) = &self.peer {
            if !peer.try_reserve(bytes) {
                self.budget.total.release(bytes);
                return false;
            }
            self.from_peer += bytes;
        }
        self.total += bytes;
        true
    }

    /// The body is in: the peer's share is returned (it no longer waits on the network) and
    /// the server's grows to the body's parsed size.
    fn arrived(&mut self, body_len: usize) -> bool {
        if let Some(peer) = self.peer.take() {
            peer.release(std::mem::take(&mut self.from_peer));
        }
        let parsed = body_len.saturating_mul(PARSED_BODY_FACTOR);
        let more = parsed.saturating_sub(self.total);
        if !self
            .budget
            .total
            .try_reserve_within(more, self.limit_for(body_len))
        {
            return false;
        }
        self.total += more;
        true
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.total.release(self.total);
        if let Some(peer) = &self.peer {
            peer.release(self.from_peer);
        }
    }
}

/// How a request body is read: [`BodyReading::read`].
pub(crate) struct BodyReading {
    pub budget: Arc<BodyBudget>,
    pub rejections: Arc<RejectionLog>,
    pub max_bytes: usize,
    pub deadline: Duration,
    pub min_rate: u64,
    pub min_rate_grace: Duration,
}

/// A whole request body, and the memory it holds in the budget until dropped.
pub(crate) struct WholeBody<'a> {
    pub bytes: Bytes,
    _reservation: Reservation<'a>,
}

impl BodyReading {
    pub fn new(limits: &Limits, budget: Arc<BodyBudget>, rejections: Arc<RejectionLog>) -> Self {
        Self {
            budget,
            rejections,
            max_bytes: limits.max_body_bytes,
            deadline: limits.body_timeout,
            min_rate: limits.min_body_rate,
            min_rate_grace: limits.min_body_rate_grace,
        }
    }

    /// Reads the whole body, from `started` (when its head arrived): within `deadline`, at
    /// `min_rate` bytes per second or faster once `min_rate_grace` has passed, and inside the
    /// memory budget. The caller then has the bytes in memory, so nothing after this (the
    /// review concurrency limit in particular) ever waits on the client's network. A client
    /// too slow, too large or arriving when the budget is spent loses its own request: the
    /// `Err` is its answer (408, 413, 503; 400 when the body breaks off).
    pub async fn read<B>(
        &self,
        mut body: B,
        peer: Option<IpAddr>,
        started: tokio::time::Instant,
    ) -> Result<WholeBody<'_>, Response>
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut reservation = Reservation {
            budget: &self.budget,
            peer: self.budget.peer(peer),
            total: 0,
            from_peer: 0,
        };
        let deadline = started + self.deadline;
        // Chunks as they came (no copying, no doubling of a growing buffer); joined once at the end.
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut received_len = 0usize;
        loop {
            // What has arrived is taken without a clock read or a timer; only a wait is timed,
            // and the deadline and rate are checked after each one.
            let (frame, waited) = match body.frame().now_or_never() {
                Some(frame) => (Some(frame), false),
                None => {
                    // Wake at least once a second to check the rate even when nothing arrives.
                    let check_at =
                        deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
                    let frame = tokio::time::timeout_at(check_at, body.frame()).await;
                    (frame.ok(), true)
                }
            };
            match frame {
                Some(None) => break,
                Some(Some(Err(err))) => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {err}"),
                    )
                        .into_response())
                }
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if received_len + data.len() > self.max_bytes {
                            return Err(self.too_large(peer));
                        }
                        if !reservation.arriving(data.len(), received_len + data.len()) {
                            return Err(self.out_of_memory(peer));
                        }
                        received_len += data.len();
                        chunks.push(data);
                    }
                }
                // Nothing arrived by the time the pace is due for a check.
                None => {}
            }
            if let Some(problem) = waited
                .then(|| self.too_slow(started, received_len))
                .flatten()
            {
                return Err(self.reject(
                    Rejection::SlowBody,
                    peer,
                    StatusCode::REQUEST_TIMEOUT,
                    problem,
                ));
            }
        }
        if !reservation.arrived(received_len) {
            return Err(self.out_of_memory(peer));
        }
        let bytes = match chunks.len() {
            1 => chunks.pop().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        };
        Ok(WholeBody {
            bytes,
            _reservation: reservation,
        })
    }

    /// The answer to a body over `max_bytes`, declared or found so while reading.
    pub fn too_large(&self, peer: Option<IpAddr>) -> Response {
        self.reject(
            Rejection::BodyTooLarge,
            peer,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the {} byte limit", self.max_bytes),
        )
    }

    fn out_of_memory(&self, peer: Option<IpAddr>) -> Response {
        self.reject(
            Rejection::Memory,
            peer,
            StatusCode::SERVICE_UNAVAILABLE,
            "the server's memory for request bodies is in use; retry".into(),
        )
    }

    /// What is wrong when the body is past its deadline, or arriving slower than `min_rate`.
    fn too_slow(&self, started: tokio::time::Instant, received_len: usize) -> Option<String> {
        let elapsed = tokio::time::Instant::now() - started;
        if elapsed >= self.deadline {
            return Some(format!(
                "request body not received within {:?}",
                self.deadline
            ));
        }
        let rated = elapsed.checked_sub(self.min_rate_grace)?;
        let expected = (self.min_rate as f64 * rated.as_secs_f64()) as usize;
        (received_len < expected).then(|| {
            format!(
                "request body arriving slower than {} bytes per second",
                self.min_rate
            )
        })
    }

    fn reject(
        &self,
        reason: Rejection,
        peer: Option<IpAddr>,
        status: StatusCode,
        message: String,
    ) -> Response {
        self.rejections.reject(reason, peer, &message);
        (status, message).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_budget_charges_peer_while_arriving_and_server_for_the_parsed_size() {
        let budget = BodyBudget::new(1500, 150);
        let peer: IpAddr = [10, 0, 0, 1].into();
        let mut first = Reservation {
            budget: &budget,
            peer: budget.peer(Some(peer)),
            total: 0,
            from_peer: 0,
        };
        assert!(first.arriving(100, 100));
        let mut second = Reservation {
            budget: &budget,
            peer: budget.peer(Some(peer)),
            total: 0,
            from_peer: 0,
        };
        assert!(!second.arriving(100, 100), "the peer's share is spent");
        assert!(first.arrived(100));
        assert_eq!(budget.in_use(), 100 * PARSED_BODY_FACTOR);
        assert!(
            second.arriving(100, 100),
            "the first body no longer waits on the network"
        );
        assert!(
            !second.arrived(100),
            "two parsed bodies do not fit in 1500 bytes"
        );
        drop(second);
        drop(first);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn large_bodies_leave_an_eighth_of_the_budget_to_small_ones() {
        let total = 8 * SMALL_BODY_BYTES;
        let budget = BodyBudget::new(total, usize::MAX);
        let mut large = Reservation {
            budget: &budget,
            peer: None,
            total: 0,
            from_peer: 0,
        };
        assert!(large.arriving(SMALL_BODY_BYTES, SMALL_BODY_BYTES));
        assert!(large.arriving(5 * SMALL_BODY_BYTES, 6 * SMALL_BODY_BYTES));
        assert!(
            !large.arriving(2 * SMALL_BODY_BYTES, 8 * SMALL_BODY_BYTES),
            "the last eighth is kept for small bodies"
        );
        let mut small = Reservation {
            budget: &budget,
            peer: None,
            total: 0,
            from_peer: 0,
        };
        assert!(small.arriving(1000, 1000));
        assert!(small.arrived(1000));
    }
}
