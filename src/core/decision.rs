//! From a pod and what is known about its ServiceAccount to a decision: the pure core the
//! server, the offline `mutate` command and the golden tests share, so all give the same
//! answer for one input.

use std::ops::RangeInclusive;

use crate::core::engine::{self, Mutation, Patch};
use crate::core::identity::{resolve_identity, CredentialKind, IdentityInputs};
use crate::core::json::Warnings;
use crate::core::pod::Pod;
use crate::core::settings::MutationSettings;

/// The answer for one pod: its patch (if any), warnings bounded for the API server, and for
/// the log line and the counter what was done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Present only when there is something to change.
    pub patch: Option<Patch>,
    pub warnings: Vec<String>,
    pub mutated: Option<Mutated>,
}

/// What a mutation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutated {
    pub method: Method,
    /// The role ARN for web identity; empty for container credentials.
    pub role: String,
    pub containers: Vec<String>,
}

/// How the pod gets credentials; the `method` label of the pod counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    StsWebIdentity,
    ContainerCredentials,
    /// No credentials, only the region (`--inject-region-without-role`); not counted as a
    /// pod given credentials.
    RegionOnly,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::StsWebIdentity => "sts_web_identity",
            Method::ContainerCredentials => "container_credentials",
            Method::RegionOnly => "region_only",
        }
    }
}

/// The decision for `pod`, created in `namespace`: its ServiceAccount's identity resolved from
/// `inputs` and the settings, then the engine. `jitter` draws a uniformly random value from a
/// range (token lifetimes in container-credentials mode).
pub fn decide(
    pod: &Pod<'_>,
    namespace: &str,
    inputs: IdentityInputs<'_>,
    settings: &MutationSettings,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Decision {
    let resolution = resolve_identity(namespace, pod.service_account(), inputs, settings);
    // Warnings about the annotations of a ServiceAccount that yields no identity are dropped:
    // nothing they affect is applied.
    let Some(identity) = resolution.identity else {
        // Except one: per-container roles asked for by the pod itself, which the ServiceAccount
        // does not allow.
        if pod.annotation(&settings.keys.container_role_arns).is_some() {
            return Decision {
                warnings: vec![engine::roles_without_role(&settings.keys)],
                ..Decision::default()
            };
        }
        return Decision::default();
    };
    let Mutation {
        patch,
        warnings: engine_warnings,
        containers,
    } = engine::mutate(pod, &identity, settings, jitter);
    let mut warnings = Warnings::from(resolution.warnings);
    warnings.append(engine_warnings);
    let warnings = warnings.into_vec();
    if patch.is_empty() {
        return Decision {
            warnings,
            ..Decision::default()
        };
    }
    let (method, role) = match identity.source {
        CredentialKind::WebIdentity { role_arn, .. } => (Method::StsWebIdentity, role_arn),
        CredentialKind::ContainerCredentials => (Method::ContainerCredentials, String::new()),
        CredentialKind::RegionOnly => (Method::RegionOnly, String::new()),
    };
    Decision {
        patch: Some(patch),
        warnings,
        mutated: Some(Mutated {
            method,
            role,
            containers,
        }),
    }
}
