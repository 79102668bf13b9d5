//! The doctor's checks, each a pure function from what the adapter gathered (ServiceAccount,
//! webhook registration, dry-run result, token, published documents, trust policies, pods,
//! roles per container) to a checklist line with cause and fix; and the audit of every pod of
//! the cluster.

pub mod audit;
pub mod identity;
pub mod pods;
pub mod roles;
pub mod stale;
pub mod token;
pub mod webhook;
