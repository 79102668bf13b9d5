//! IRSA end to end, the pure parts: the issuer's public documents (discovery and JWKS) from
//! service-account keys, the role trust policy (written and evaluated as IAM does), token
//! verification, and the doctor's checks and checklist. No I/O here: the commands in
//! `commands` fetch from the cluster and the files and hand the facts in.

pub(crate) mod checklist;
pub mod discovery;
pub mod doctor;
pub(crate) mod evaluate;
pub mod issuer;
pub mod keys;
pub mod policy;
pub mod token;
pub mod trust_policy;
