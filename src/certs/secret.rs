//! Converging on one Secret across replicas: read it, keep it when good, otherwise write a
//! replacement with optimistic concurrency. Whoever loses a race adopts the winner's Secret,
//! so replicas never overwrite each other's fresh certificates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::material::{assess, renew, CertificateSet, Policy, StoredPems, Verdict};
use super::CertsError;

/// The Secret type written on creation; an existing Secret keeps its type (it is immutable).
pub(crate) const SECRET_TYPE: &str = "kubernetes.io/tls";
/// Reads and write attempts per convergence before giving up until the next retry.
const MAX_ATTEMPTS: usize = 5;

/// How the certificate set in use was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converged {
    /// The Secret held a good set.
    Reused,
    /// There was no Secret; this replica created it.
    Created,
    /// This replica replaced the Secret's certificates, for the reason given.
    Updated(String),
}

/// Returns the certificate set every replica should use, writing the Secret when it is
/// missing, damaged or due for renewal. `now` gives Unix seconds.
pub(crate) async fn converge(
    api: &Api<Secret>,
    name: &str,
    policy: &Policy,
    now: impl Fn() -> i64,
) -> Result<(CertificateSet, Converged), CertsError> {
    let api_error = |action: &str, source| CertsError::Api {
        action: format!("{action} Secret {name}"),
        source,
    };
    for _ in 0..MAX_ATTEMPTS {
        let existing = api.get_opt(name).await.map_err(|e| api_error("read", e))?;
        let stored = StoredPems::from_data(existing.as_ref().and_then(|s| s.data.as_ref()));
        let at = now();
        let verdict = assess(&stored, policy, at);
        let reason = match &verdict {
            Verdict::Keep(set) => return Ok((set.clone(), Converged::Reused)),
            Verdict::Reissue(reason) | Verdict::NewCa(reason) => reason.clone(),
        };
        let job_policy = policy.clone();
        // Key generation is CPU work: keep it off the threads serving admission requests.
        let set = tokio::task::spawn_blocking(move || renew(&stored, &verdict, &job_policy, at))
            .await
            .map_err(CertsError::GenerationStopped)??;
        match existing {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        ..Default::default()
                    },
                    type_: Some(SECRET_TYPE.to_string()),
                    data: Some(set.to_data()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => return Ok((set, Converged::Created)),
                    // Another replica created it first: read and judge theirs.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        tracing::debug!(
                            secret = name,
                            "Secret created by another replica meanwhile; adopting it"
                        );
                    }
                    Err(err) => return Err(api_error("create", err)),
                }
            }
            Some(mut secret) => {
                tracing::debug!(secret = name, %reason, "replacing the webhook certificates");
                // The resourceVersion read above stays in the metadata: the update succeeds only
                // if nobody changed the Secret since.
                let mut data: BTreeMap<_, _> = secret.data.take().unwrap_or_default();
                data.extend(set.to_data());
                secret.data = Some(data);
                secret.string_data = None;
                match api.replace(name, &PostParams::default(), &secret).await {
                    Ok(_) => return Ok((set, Converged::Updated(reason))),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        tracing::debug!(
                            secret = name,
                            "Secret changed by another replica meanwhile; re-reading it"
                        );
                    }
                    Err(err) => return Err(api_error("update", err)),
                }
            }
        }
    }
    Err(CertsError::Contended(name.to_string(), MAX_ATTEMPTS))
}
