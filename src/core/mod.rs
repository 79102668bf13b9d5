//! The pure core: settings, identity resolution, the engine and the admission decision
//! (pod + identity inputs + settings -> patch, warnings, what to log and count); `pod` is
//! the one reader of a pod. No async, no
//! I/O, no clock or randomness except what the caller passes in; the adapters around it
//! (`server`, `sources`, `commands`) do the rest.

pub mod decision;
pub mod engine;
pub mod expiration;
pub mod go_syntax;
pub mod identity;
pub mod json;
pub mod pod;
pub mod settings;
