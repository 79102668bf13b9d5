//! Readiness: false until the ServiceAccount cache has its first full list, a serving
//! certificate is loaded and, with `--watch-config-map`, the ConfigMap mapping has been listed
//! once; false again once shutdown starts.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Readiness {
    cache_synced: AtomicBool,
    certificate_loaded: AtomicBool,
    /// Set at startup only when the mapping is watched: without it there is nothing to wait for.
    mapping_required: AtomicBool,
    mapping_synced: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn set_cache_synced(&self) {
        self.cache_synced.store(true, Ordering::Release);
    }

    /// Holds readiness back until [`Readiness::set_mapping_synced`]: pods whose role comes from
    /// the ConfigMap would otherwise be admitted without credentials right after startup.
    pub fn require_mapping(&self) {
        self.mapping_required.store(true, Ordering::Release);
    }

    /// The ConfigMap mapping's first list completed, whether or not the ConfigMap exists.
    pub fn set_mapping_synced(&self) {
        self.mapping_synced.store(true, Ordering::Release);
    }

    pub fn set_certificate_loaded(&self, loaded: bool) {
        self.certificate_loaded.store(loaded, Ordering::Release);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else the reasons why not, for the `/readyz` body.
    pub fn check(&self) -> Result<(), Vec<&'static str>> {
        let mut reasons = Vec::new();
        if !self.cache_synced.load(Ordering::Acquire) {
            reasons.push("ServiceAccount cache not yet synced");
        }
        if self.mapping_required.load(Ordering::Acquire)
            && !self.mapping_synced.load(Ordering::Acquire)
        {
            reasons.push("ConfigMap mapping not yet synced");
        }
        if !self.certificate_loaded.load(Ordering::Acquire) {
            reasons.push("no serving certificate loaded");
        }
        if self.is_shutting_down() {
            reasons.push("shutting down");
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_cache_and_certificate_and_not_after_shutdown() {
        let readiness = Readiness::default();
        assert_eq!(readiness.check().unwrap_err().len(), 2);
        readiness.set_cache_synced();
        assert_eq!(
            readiness.check().unwrap_err(),
            vec!["no serving certificate loaded"]
        );
        readiness.set_certificate_loaded(true);
        assert!(readiness.check().is_ok());
        readiness.set_shutting_down();
        assert_eq!(readiness.check().unwrap_err(), vec!["shutting down"]);
    }

    fn ready_apart_from_the_mapping() -> Readiness {
        let readiness = Readiness::default();
        readiness.set_cache_synced();
        readiness.set_certificate_loaded(true);
        readiness
    }

    #[test]
    fn the_mapping_is_not_waited_for_unless_required() {
        let readiness = ready_apart_from_the_mapping();
        assert!(readiness.check().is_ok());
    }

    #[test]
    fn a_required_mapping_holds_readiness_back_until_synced() {
        let readiness = ready_apart_from_the_mapping();
        readiness.require_mapping();
        assert_eq!(
            readiness.check().unwrap_err(),
            vec!["ConfigMap mapping not yet synced"]
        );
        readiness.set_mapping_synced();
        assert!(readiness.check().is_ok());
    }
}
