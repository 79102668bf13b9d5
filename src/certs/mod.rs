//! Built-in certificate mode (`--in-cluster=true`): the webhook makes its own CA and serving
//! certificate, shares them between replicas through one Secret, and publishes the CA as the
//! caBundle of its MutatingWebhookConfiguration, so no cert-manager is needed.
//!
//! How the pieces fit:
//! - The Secret (`--tls-secret` in `--namespace`) is the source of truth. It holds `ca.crt`
//!   (the signing CA first, then earlier CAs still trusted), `ca.key`, `tls.crt`, `tls.key`.
//!   Any replica may create or renew it; writes use create (AlreadyExists: adopt theirs) and
//!   resourceVersion-checked updates (Conflict: re-read, adopt the winner's), so replicas
//!   converge on one set and never overwrite each other ([`secret`]).
//! - What to do with the Secret is decided by a pure function of its contents and the time
//!   ([`material::assess`]): keep it; re-issue the serving certificate under the same CA
//!   (missing, damaged, wrong names, or less than a third of its one-year life left); or make
//!   a new CA (missing, damaged, or less than a third of its ten-year life left).
//! - CA rotation without downtime: a new CA is published *together with* the earlier CAs that
//!   are still valid (they stay in `ca.crt` until they expire), so certificates other replicas
//!   still serve stay trusted until those replicas pick up the new Secret.
//! - Readiness: the serving certificate is handed to the TLS store (which alone reports the
//!   certificate loaded) only after the caBundle is confirmed to carry the Secret's `ca.crt`.
//!   Until then this replica serves nothing and is not ready, so the API server is never sent
//!   to a replica whose certificate it cannot verify. Later failures to reach the API keep the
//!   current certificate serving and readiness unchanged: taking every replica out of the
//!   Service for an API hiccup would do more harm than a delayed renewal, which has months of
//!   slack.
//! - The manager re-checks every `recheck_interval` (10 minutes), right after the Secret or
//!   the webhook configuration changes (a `helm upgrade` resetting the caBundle is repaired at
//!   once), and after errors with exponential backoff. Key generation runs on the blocking pool.

mod ca_bundle;
mod manager;
pub mod material;
mod secret;

use std::time::Duration;

pub use ca_bundle::Published;
pub use manager::spawn;
pub use secret::Converged;

/// Settings of the built-in certificate mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertsConfig {
    /// `--namespace`: where the Service and the Secret live.
    pub namespace: String,
    /// `--service-name`: the Service the API server calls, named in the certificate.
    pub service_name: String,
    /// `--tls-secret`: the Secret shared by the replicas.
    pub secret_name: String,
    /// `--webhook-config-name`: the MutatingWebhookConfiguration whose caBundle is maintained.
    pub webhook_config_name: String,
    /// Lifetime of a new CA (ten years).
    pub ca_validity: Duration,
    /// Lifetime of a new serving certificate (one year).
    pub serving_validity: Duration,
    /// How often the Secret and the caBundle are re-checked without any change seen.
    pub recheck_interval: Duration,
    /// Watch the Secret and the webhook configuration to react to changes at once (needs
    /// list/watch on both, narrowed by name); without it only the periodic re-check runs.
    pub watch: bool,
}

impl CertsConfig {
    pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    pub const DEFAULT_SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
    pub(crate) const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(600);

    pub fn new(
        namespace: impl Into<String>,
        service_name: impl Into<String>,
        secret_name: impl Into<String>,
        webhook_config_name: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            service_name: service_name.into(),
            secret_name: secret_name.into(),
            webhook_config_name: webhook_config_name.into(),
            ca_validity: Self::DEFAULT_CA_VALIDITY,
            serving_validity: Self::DEFAULT_SERVING_VALIDITY,
            recheck_interval: Self::DEFAULT_RECHECK_INTERVAL,
            watch: true,
        }
    }

    fn validate(&self) -> Result<(), String> {
        for (flag, value) in [
            ("--namespace", &self.namespace),
            ("--service-name", &self.service_name),
            ("--tls-secret", &self.secret_name),
            ("--webhook-config-name", &self.webhook_config_name),
        ] {
            if value.is_empty() {
                return Err(format!("{flag} must not be empty with --in-cluster=true"));
            }
        }
        if self.serving_validity.is_zero() || self.ca_validity < self.serving_validity {
            return Err(format!(
                "certificate lifetimes are inconsistent: CA {:?}, serving {:?} (the CA must live at least as long)",
                self.ca_validity, self.serving_validity
            ));
        }
        Ok(())
    }

    fn policy(&self) -> material::Policy {
        material::Policy::for_service(
            &self.service_name,
            &self.namespace,
            self.ca_validity,
            self.serving_validity,
        )
    }
}

/// Where the serving certificate goes: the TLS server's certificate store. The sink, not the
/// manager, reports to readiness whether a certificate is loaded; the manager only decides
/// when a pair may be handed over.
pub trait ServingCertSink: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Self::Error>;
}

impl ServingCertSink for crate::server::tls::CertificateStore {
    type Error = crate::server::tls::CertificateError;

    fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Self::Error> {
        crate::server::tls::CertificateStore::set_pem(self, cert_pem, key_pem)
    }
}

/// Why a round of certificate management failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertsError {
    #[error("cannot {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("MutatingWebhookConfiguration {0:?} does not exist yet; its caBundle is written once it does (is --webhook-config-name right?)")]
    WebhookConfigurationMissing(String),
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] material::GenerateError),
    #[error("certificate generation stopped before it finished: {0}")]
    GenerationStopped(#[source] tokio::task::JoinError),
    #[error("Secret {0:?} kept changing during {1} attempts to renew it")]
    Contended(String, usize),
    #[error("the TLS server refused the certificate from the Secret: {0}")]
    Serve(#[source] Box<dyn std::error::Error + Send + Sync>),
}
