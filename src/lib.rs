//! pod-identity-webhook: a Kubernetes mutating admission webhook that gives pods AWS
//! credentials (IRSA and EKS Pod Identity), compatible with aws/amazon-eks-pod-identity-webhook.
//!
//! The map: `core` is pure (settings, identity resolution, the engine, the admission
//! decision); everything else is an adapter around it. `server` answers the API server over
//! TLS; `sources` feeds the core at run time (the ServiceAccount cache, the ConfigMap and file
//! watches); `certs` manages built-in certificates; `ops` is health, metrics, logs and the
//! clock; `commands` runs the other subcommands (`mutate`, `oidc`, `trust-policy`, `doctor`)
//! on top of `irsa`, the pure IRSA tools. `cli` is the command line, read only by `main.rs`
//! and `commands`, which turn it into plain settings.

#![forbid(unsafe_code)]

pub mod certs;
pub mod cli;
pub mod commands;
pub mod core;
pub mod irsa;
pub mod ops;
pub mod server;
pub mod sources;
