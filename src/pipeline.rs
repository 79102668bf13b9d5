//! From a pod and what is known about its ServiceAccount to a mutation: the steps the server
//! and the offline `mutate` command share, so both give the same answer for the same input.

use std::ops::RangeInclusive;

use serde_json::Value;

use crate::identity::{resolve_identity, Identity, IdentitySources};
use crate::mutate::{mutate_pod, Mutation, PodContext, PodShapeError};
use crate::settings::MutationSettings;

/// The ServiceAccount a pod runs as: only `spec.serviceAccountName` counts; empty is `default`.
pub fn service_account_name(pod: &Value) -> Result<&str, PodShapeError> {
    let name = match pod.get("spec").and_then(Value::as_object) {
        Some(spec) => crate::mutate::string_member(spec, "serviceAccountName", || {
            "spec.serviceAccountName".into()
        })?,
        None => None,
    };
    Ok(name.filter(|name| !name.is_empty()).unwrap_or("default"))
}

/// The outcome for one pod: the identity used (if any) and the mutation (empty when none).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub identity: Option<Identity>,
    pub mutation: Mutation,
}

/// Resolves the identity of `service_account` in `namespace` and mutates `pod` with it.
pub fn mutate_with_sources(
    pod: &Value,
    namespace: &str,
    service_account: &str,
    sources: IdentitySources<'_>,
    settings: &MutationSettings,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Result<Outcome, PodShapeError> {
    let resolution = resolve_identity(namespace, service_account, sources, settings);
    let Some(identity) = resolution.identity else {
        // Still check the pod's shape, so bad input is reported whatever the ServiceAccount.
        // Warnings about annotations of a ServiceAccount that yields no identity are dropped:
        // nothing they affect is applied.
        crate::mutate::check_shape(pod, settings)?;
        return Ok(Outcome::default());
    };
    let context = PodContext {
        identity: &identity,
        settings,
    };
    let mut mutation = mutate_pod(pod, &context, jitter)?;
    let mut warnings = resolution.warnings;
    warnings.append(&mut mutation.warnings);
    mutation.warnings = warnings;
    Ok(Outcome {
        identity: Some(identity),
        mutation,
    })
}

/// Jitter from the thread-local random generator, for production use.
pub fn random_jitter(range: RangeInclusive<i64>) -> i64 {
    rand::random_range(range)
}
