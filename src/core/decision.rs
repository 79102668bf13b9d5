//! From a pod and what is known about its ServiceAccount to a decision: the pure core the
//! server and the offline `mutate` command share, so both give the same answer for one input.

use std::ops::RangeInclusive;

use serde_json::Value;

use crate::core::engine::{self, mutate_node, Mutation, Node, Patch, PodContext, PodShapeError};
use crate::core::identity::{resolve_identity, CredentialKind, Identity, IdentityInputs};
use crate::core::json::{bound_owned, bounded_warnings, MAX_ECHO};
use crate::core::settings::MutationSettings;

/// The ServiceAccount a pod runs as: only `spec.serviceAccountName` counts; empty is `default`.
pub fn service_account_name(pod: &Value) -> Result<&str, PodShapeError> {
    let name = match pod.get("spec").and_then(Value::as_object) {
        Some(spec) => match spec.get("serviceAccountName") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.as_str()),
            Some(other) => {
                return Err(PodShapeError {
                    field: "spec.serviceAccountName".into(),
                    expected: "a string".into(),
                    got: crate::core::json::json_type(other).into(),
                })
            }
        },
        None => None,
    };
    Ok(name.filter(|name| !name.is_empty()).unwrap_or("default"))
}

/// [`service_account_name`] of a pod read with [`engine::read_pod`].
pub(crate) fn node_service_account<'a>(pod: &'a Node<'a>) -> Result<&'a str, PodShapeError> {
    let name = match pod.get("spec") {
        Some(Node::Object(spec)) => engine::string_member(spec, "serviceAccountName", || {
            "spec.serviceAccountName".into()
        })?,
        _ => None,
    };
    Ok(name.filter(|name| !name.is_empty()).unwrap_or("default"))
}

/// The namespace (the request's, else the pod's) and the pod's name (else its generateName),
/// read leniently: they label logs, and shape errors are reported by the engine.
pub(crate) fn pod_names<'a>(
    pod: &'a Node<'a>,
    request_namespace: Option<&'a str>,
) -> (&'a str, &'a str) {
    let metadata = |field| {
        pod.get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Node::as_str)
    };
    let namespace = request_namespace
        .filter(|ns| !ns.is_empty())
        .or_else(|| metadata("namespace"))
        .unwrap_or_default();
    let name = metadata("name")
        .filter(|name| !name.is_empty())
        .or_else(|| metadata("generateName"))
        .unwrap_or_default();
    (namespace, name)
}

/// The outcome for one pod: the identity used (if any) and the mutation (empty when none).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub identity: Option<Identity>,
    pub mutation: Mutation,
}

/// Resolves the identity of `service_account` in `namespace` and mutates `pod` with it.
pub fn mutate_with_inputs(
    pod: &Value,
    namespace: &str,
    service_account: &str,
    inputs: IdentityInputs<'_>,
    settings: &MutationSettings,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Result<Outcome, PodShapeError> {
    let pod = engine::read_value(pod)?;
    mutate_node_with_inputs(&pod, namespace, service_account, inputs, settings, jitter)
}

/// [`mutate_with_inputs`] on a pod read with [`engine::read_pod`].
pub(crate) fn mutate_node_with_inputs(
    pod: &Node<'_>,
    namespace: &str,
    service_account: &str,
    inputs: IdentityInputs<'_>,
    settings: &MutationSettings,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Result<Outcome, PodShapeError> {
    let resolution = resolve_identity(namespace, service_account, inputs, settings);
    let Some(identity) = resolution.identity else {
        // Still check the pod's shape, so bad input is reported whatever the ServiceAccount.
        // Warnings about annotations of a ServiceAccount that yields no identity are dropped:
        // nothing they affect is applied.
        engine::check_node(pod, settings)?;
        return Ok(Outcome::default());
    };
    let context = PodContext {
        identity: &identity,
        settings,
    };
    let mut mutation = mutate_node(pod, &context, jitter)?;
    let mut warnings = resolution.warnings;
    warnings.append(&mut mutation.warnings);
    mutation.warnings = warnings;
    Ok(Outcome {
        identity: Some(identity),
        mutation,
    })
}

/// The webhook's answer for one pod creation, and what to log and count about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// The pod is not a valid Pod in a field the engine reads: `allowed: false` with this
    /// message (bounded in length).
    Deny(String),
    Admit(Admit),
}

/// An admitted pod: its patch (if any), warnings bounded for the API server, and for the log
/// line and the counter what was done.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Admit {
    /// Present only when there is something to change.
    pub patch: Option<Patch>,
    pub warnings: Vec<String>,
    pub mutated: Option<Mutated>,
}

/// What a mutation did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mutated {
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
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::StsWebIdentity => "sts_web_identity",
            Method::ContainerCredentials => "container_credentials",
        }
    }
}

/// The decision for one pod creation: pure, from the read pod, the identity sources already
/// resolved for its ServiceAccount, and the settings.
pub(crate) fn decide(
    pod: &Node<'_>,
    namespace: &str,
    service_account: &str,
    inputs: IdentityInputs<'_>,
    settings: &MutationSettings,
    jitter: &mut dyn FnMut(RangeInclusive<i64>) -> i64,
) -> Decision {
    let outcome =
        match mutate_node_with_inputs(pod, namespace, service_account, inputs, settings, jitter) {
            Ok(outcome) => outcome,
            Err(err) => return Decision::Deny(bound_owned(err.to_string(), MAX_ECHO)),
        };
    let Mutation {
        patch,
        warnings,
        containers,
    } = outcome.mutation;
    let warnings = bounded_warnings(warnings);
    let Some(identity) = outcome.identity.filter(|_| !patch.is_empty()) else {
        return Decision::Admit(Admit {
            patch: None,
            warnings,
            mutated: None,
        });
    };
    let (method, role) = match identity.source {
        CredentialKind::WebIdentity { role_arn, .. } => (Method::StsWebIdentity, role_arn),
        CredentialKind::ContainerCredentials => (Method::ContainerCredentials, String::new()),
    };
    Decision::Admit(Admit {
        patch: Some(patch),
        warnings,
        mutated: Some(Mutated {
            method,
            role,
            containers,
        }),
    })
}

/// Jitter from the thread-local random generator, for production use.
pub(crate) fn random_jitter(range: RangeInclusive<i64>) -> i64 {
    rand::random_range(range)
}
