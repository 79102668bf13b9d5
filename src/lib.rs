//! pod-identity-webhook: a Kubernetes mutating admission webhook that gives pods AWS
//! credentials (IRSA and EKS Pod Identity), compatible with aws/amazon-eks-pod-identity-webhook.

pub mod go_syntax;
pub mod identity;
pub mod mutate;
pub mod settings;
pub mod pipeline;
pub mod cli;
pub mod health;
pub mod metrics;
pub mod sources;
pub mod cache;
pub mod manifests;
pub mod offline;
