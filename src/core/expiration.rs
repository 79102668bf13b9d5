//! Token lifetimes: how an expiration annotation is read, and how one day is spread in
//! container-credentials mode. Shared by identity resolution (ServiceAccount annotations) and
//! the engine (the pod's annotation), which both read and describe lifetimes.

use std::ops::RangeInclusive;

use crate::core::settings::clamp_expiration;

/// Token lifetimes of exactly one day are spread over [22h, 24h] in container-credentials
/// mode so that a fleet's refreshes do not all land at once.
pub(crate) const JITTERED_EXPIRATION: i64 = 86400;
pub const JITTER_RANGE: RangeInclusive<i64> = 79200..=86400;

/// An expiration annotation: whole seconds (Go's `ParseInt` syntax), clamped to the minimum.
pub(crate) fn parse_expiration(value: &str) -> Option<i64> {
    value.parse::<i64>().ok().map(clamp_expiration)
}

/// The lifetime a token of `seconds` gets, for warnings: in container-credentials mode one day
/// is spread at random over [`JITTER_RANGE`], so the text names the range actually applied.
pub(crate) fn describe_expiration(seconds: i64, container_credentials: bool) -> String {
    if container_credentials && seconds == JITTERED_EXPIRATION {
        format!(
            "a random lifetime from {} to {} seconds ({JITTERED_EXPIRATION}, spread in container-credentials mode)",
            JITTER_RANGE.start(),
            JITTER_RANGE.end()
        )
    } else {
        seconds.to_string()
    }
}
