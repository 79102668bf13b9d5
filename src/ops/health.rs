//! Readiness: true once every registered condition is met, false again once shutdown starts.
//! Each component registers its own condition and is its only writer, so this module knows
//! nothing of what the conditions are.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the webhook waits for before it takes traffic. Conditions are registered while the
/// parts are built, before the server starts answering probes.
#[derive(Debug, Default)]
pub struct Readiness {
    conditions: Mutex<Vec<Arc<State>>>,
    shutting_down: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// How `/readyz` names the condition while it is not met.
    unmet: &'static str,
    met: AtomicBool,
}

/// One component's condition, held by that component alone: it is not `Clone`, so a
/// condition has exactly one writer. Starts unmet.
#[derive(Debug)]
pub struct Condition {
    state: Arc<State>,
}

impl Condition {
    pub fn set(&self, met: bool) {
        self.state.met.store(met, Ordering::Release);
    }

    #[cfg(test)]
    pub(crate) fn is_met(&self) -> bool {
        self.state.met.load(Ordering::Acquire)
    }
}

impl Readiness {
    /// Adds a condition, unmet until its holder sets it. `unmet` is what `/readyz` says while
    /// it is not met, e.g. "no serving certificate loaded".
    pub fn register(&self, unmet: &'static str) -> Condition {
        let state = Arc::new(State {
            unmet,
            met: AtomicBool::new(false),
        });
        self.lock().push(state.clone());
        Condition { state }
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// `Ok` when ready, else the unmet conditions in the order they were registered, then
    /// "shutting down" — for the `/readyz` body.
    pub fn check(&self) -> Result<(), Vec<&'static str>> {
        let mut reasons: Vec<&'static str> = self
            .lock()
            .iter()
            .filter(|state| !state.met.load(Ordering::Acquire))
            .map(|state| state.unmet)
            .collect();
        if self.is_shutting_down() {
            reasons.push("shutting down");
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<State>>> {
        self.conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_is_met_and_not_after_shutdown() {
        let readiness = Readiness::default();
        let cache = readiness.register("ServiceAccount cache not yet synced");
        let certificate = readiness.register("no serving certificate loaded");
        assert_eq!(readiness.check().unwrap_err().len(), 2);
        cache.set(true);
        assert_eq!(
            readiness.check().unwrap_err(),
            vec!["no serving certificate loaded"]
        );
        certificate.set(true);
        assert!(readiness.check().is_ok());
        readiness.set_shutting_down();
        assert_eq!(readiness.check().unwrap_err(), vec!["shutting down"]);
    }

    #[test]
    fn nothing_registered_means_nothing_to_wait_for() {
        assert!(Readiness::default().check().is_ok());
    }

    #[test]
    fn a_condition_registered_later_holds_readiness_back_until_met() {
        let readiness = Readiness::default();
        readiness
            .register("ServiceAccount cache not yet synced")
            .set(true);
        assert!(readiness.check().is_ok());
        let mapping = readiness.register("ConfigMap mapping not yet synced");
        assert_eq!(
            readiness.check().unwrap_err(),
            vec!["ConfigMap mapping not yet synced"]
        );
        mapping.set(true);
        assert!(mapping.is_met());
        assert!(readiness.check().is_ok());
        mapping.set(false);
        assert!(readiness.check().is_err(), "a condition can be unmet again");
    }
}
