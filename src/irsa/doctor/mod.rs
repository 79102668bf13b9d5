//! The doctor's checks, each a pure function from what the adapter gathered (ServiceAccount,
//! webhook registration, dry-run result, token, published documents, trust policies, pods,
//! roles per container) to a checklist line with cause and fix.

pub mod identity;
pub mod pods;
pub mod roles;
pub mod token;
pub mod webhook;
