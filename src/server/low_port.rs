//! Ports below 1024 as a non-root user. The image's binary carries the file capability
//! `cap_net_bind_service` in its permitted set only (an effective bit would make exec fail
//! outright where the capability is dropped, as in the chart's restricted setup), so the
//! process raises it to effective itself before binding, as the reference's root user needs
//! not. Where it is not permitted the bind fails with its own clear error.

use caps::{CapSet, Capability};

/// Makes `CAP_NET_BIND_SERVICE` effective when it is permitted and not already effective.
pub(crate) fn allow_binding() {
    let cap = Capability::CAP_NET_BIND_SERVICE;
    if caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false) {
        return;
    }
    if caps::has_cap(None, CapSet::Permitted, cap).unwrap_or(false) {
        if let Err(err) = caps::raise(None, CapSet::Effective, cap) {
            tracing::warn!("cannot raise CAP_NET_BIND_SERVICE to bind a port below 1024: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capabilities are per thread: this changes only the test's own thread.
    #[test]
    fn a_permitted_capability_becomes_effective() {
        let cap = Capability::CAP_NET_BIND_SERVICE;
        if !caps::has_cap(None, CapSet::Permitted, cap).unwrap() {
            // Nothing to raise here; allow_binding must still not fail.
            allow_binding();
            assert!(!caps::has_cap(None, CapSet::Effective, cap).unwrap());
            return;
        }
        caps::drop(None, CapSet::Effective, cap).unwrap();
        assert!(!caps::has_cap(None, CapSet::Effective, cap).unwrap());
        allow_binding();
        assert!(caps::has_cap(None, CapSet::Effective, cap).unwrap());
    }
}
