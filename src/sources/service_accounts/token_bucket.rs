//! A token bucket bounding how fast cache misses may turn into API requests, so a burst of
//! pods under unknown ServiceAccounts cannot turn the webhook into a load on the API server.

use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Starts full: `burst` requests may go at once, then `per_second` on average.
    pub fn new(per_second: f64, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        Self {
            capacity,
            per_second: per_second.max(0.0),
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token if one is available at `now`.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_at_the_configured_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3, start);
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start), "burst of 3 used up");
        assert!(!bucket.try_take(start + Duration::from_millis(50)));
        assert!(
            bucket.try_take(start + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, 2, start);
        let later = start + Duration::from_secs(60);
        assert!(bucket.try_take(later));
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn a_clock_going_backwards_does_not_mint_tokens() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(1.0, 1, start);
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start - Duration::from_millis(500)));
        assert!(!bucket.try_take(start + Duration::from_millis(500)));
        assert!(bucket.try_take(start + Duration::from_secs(1)));
    }
}
