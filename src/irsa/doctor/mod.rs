//! The doctor's checks, each a pure function from what the adapter gathered (ServiceAccount,
//! webhook registration, dry-run result, token, published documents, trust policy, pods) to a
//! checklist line with cause and fix.

pub mod identity;
pub mod pods;
pub mod token;
pub mod webhook;
