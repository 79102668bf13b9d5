//! Operating the webhook: readiness and liveness, the reference's metrics and ours, logs, and
//! the wall clock that certificate lifetimes are measured against.

pub mod clock;
pub mod health;
pub mod logging;
pub mod metrics;
