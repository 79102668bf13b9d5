//! The command line of the IRSA tools: `oidc`, `trust-policy` and `doctor`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::MutationFlags;

/// How to reach the cluster, as the server's flags of the same names.
#[derive(Debug, Clone, Args)]
pub struct ClusterAccess {
    /// Path to a kubeconfig; in-cluster configuration or $KUBECONFIG when absent.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// URL of the API server, overriding the kubeconfig's.
    #[arg(long)]
    pub kube_api: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct OidcArgs {
    /// The public https URL where the documents will be served; it must equal the API
    /// server's --service-account-issuer.
    #[arg(long)]
    pub issuer_url: String,
    /// Service-account public key file(s) (PEM, RSA or EC, several during a rotation), as
    /// given to the API server's --service-account-key-file. Without it the keys are read
    /// from the cluster's /openid/v1/jwks.
    #[arg(long = "key-file")]
    pub key_files: Vec<PathBuf>,
    /// Directory to write .well-known/openid-configuration and openid/v1/jwks into.
    #[arg(long)]
    pub out: PathBuf,
    /// Do not contact the cluster (needs --key-file); the issuer and a fresh token are then
    /// not checked.
    #[arg(long)]
    pub offline: bool,
    /// ServiceAccount (NAMESPACE/NAME) a test token is requested for.
    #[arg(long, default_value = "default/default")]
    pub service_account: String,
    #[command(flatten)]
    pub cluster: ClusterAccess,
}

#[derive(Debug, Clone, Args)]
pub struct TrustPolicyArgs {
    /// ServiceAccounts allowed to assume the role, as NAMESPACE:NAME; `*` and `?` are
    /// wildcards (they switch the condition to StringLike).
    #[arg(value_name = "NAMESPACE:SERVICEACCOUNT", required = true)]
    pub service_accounts: Vec<String>,
    /// The 12-digit AWS account of the role and the OIDC provider.
    #[arg(
        long,
        required_unless_present = "provider_arn",
        conflicts_with = "provider_arn"
    )]
    pub account: Option<String>,
    /// AWS partition of the ARNs (aws, aws-cn, aws-us-gov).
    #[arg(long, default_value = "aws", conflicts_with = "provider_arn")]
    pub partition: String,
    /// The IAM OIDC provider ARN, instead of --account.
    #[arg(long)]
    pub provider_arn: Option<String>,
    /// The issuer URL (the API server's --service-account-issuer); optional with
    /// --provider-arn, which then must name the same provider.
    #[arg(long, required_unless_present = "provider_arn")]
    pub issuer_url: Option<String>,
    /// Token audience(s) the role accepts; repeatable.
    #[arg(long = "audience", default_value = crate::core::settings::DEFAULT_TOKEN_AUDIENCE)]
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// A readable checklist.
    Text,
    /// The checks as JSON, for scripts.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The ServiceAccount to examine, as NAMESPACE/NAME.
    #[arg(
        value_name = "NAMESPACE/SERVICEACCOUNT",
        required_unless_present = "all_namespaces"
    )]
    pub service_account: Option<String>,
    /// Instead of one ServiceAccount, judge every running pod of the cluster: list those that
    /// lack the identity the webhook gives now or run with an older one, by workload, with the
    /// command that restarts each.
    #[arg(
        short = 'A',
        long,
        conflicts_with_all = ["service_account", "trust_policies", "jwks"]
    )]
    pub all_namespaces: bool,
    /// With --all-namespaces: how many objects each list request asks for (one page is held
    /// in memory at a time).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000),
          conflicts_with = "service_account")]
    pub page_size: u32,
    /// The role's trust policy: the document, or `aws iam get-role --role-name NAME` output;
    /// repeatable, or a directory of them, for the roles containers get of their own (each
    /// matched to the role it names, or to the role its file is named after).
    #[arg(long = "trust-policy", value_name = "FILE|DIR")]
    pub trust_policies: Vec<PathBuf>,
    /// The published documents: a JWKS file, or the directory `oidc` wrote.
    #[arg(long)]
    pub jwks: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: ReportFormat,
    /// The webhook's MutatingWebhookConfiguration [default: those whose name contains
    /// pod-identity-webhook].
    #[arg(long)]
    pub webhook_config_name: Option<String>,
    /// Namespace of the webhook's role-mapping ConfigMap (the server's --namespace).
    #[arg(long, default_value = "eks")]
    pub webhook_namespace: String,
    #[command(flatten)]
    pub cluster: ClusterAccess,
    #[command(flatten)]
    pub mutation: MutationFlags,
}
