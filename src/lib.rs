//! pod-identity-webhook: a Kubernetes mutating admission webhook that gives pods AWS
//! credentials (IRSA and EKS Pod Identity), compatible with aws/amazon-eks-pod-identity-webhook.

pub mod cache;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod config_map_watch;
pub mod container_credentials_watch;
pub mod file_watch;
pub mod go_syntax;
pub mod health;
pub mod identity;
pub mod irsa;
pub mod irsa_commands;
pub mod json;
pub mod logging;
pub mod manifests;
pub mod metrics;
pub mod mutate;
pub mod offline;
pub mod pipeline;
pub mod server;
pub mod settings;
pub mod sources;
pub mod tls;
pub mod watch_retry;
