//! The certificate manager's loop: converge the Secret, publish the caBundle, then serve —
//! again on a timer, on changes to either object, and after errors with backoff.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::task::JoinHandle;

use super::ca_bundle::{self, Published};
use super::material::{CertificateSet, Policy};
use super::secret::{self, Converged};
use super::{CertsConfig, CertsError, ServingCertSink};
use crate::ops::clock::unix_now;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Changes arriving together (our own write echoed back, several events of one update) are
/// handled in one round.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts the manager on the current runtime, serving through `sink`, and returns at once;
/// the first certificate is handed to the sink (which then reports it loaded) once the Secret
/// and the caBundle are in place. Fails only on an unusable configuration.
pub fn spawn<S: ServingCertSink>(
    client: kube::Client,
    config: CertsConfig,
    sink: Arc<S>,
) -> anyhow::Result<JoinHandle<()>> {
    config
        .validate()
        .map_err(|problem| anyhow::anyhow!("built-in certificate mode: {problem}"))?;
    let manager = Manager {
        secrets: Api::namespaced(client.clone(), &config.namespace),
        webhook_configs: Api::all(client),
        policy: config.policy(),
        config,
        sink,
        served: None,
    };
    Ok(tokio::spawn(manager.run()))
}

struct Manager<S> {
    secrets: Api<Secret>,
    webhook_configs: Api<MutatingWebhookConfiguration>,
    config: CertsConfig,
    policy: Policy,
    sink: Arc<S>,
    /// The pair handed to the sink last, to hand it over only when it changes.
    served: Option<(String, String)>,
}

impl<S: ServingCertSink> Manager<S> {
    async fn run(mut self) {
        // Nothing is handed to the sink before the caBundle trusts it; in this mode nothing
        // else feeds the sink, so it stays empty (and not ready) until then.
        let mut changes = pin!(self.changes());
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match self.reconcile().await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    self.config.recheck_interval
                }
                Err(error) => {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    tracing::warn!(%error, retry_in = ?wait, "built-in certificate management failed; retrying");
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                Some(()) = changes.next() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while changes.next().now_or_never().flatten().is_some() {}
                }
            }
        }
    }

    /// One round: the Secret, then the caBundle, then (only then) the serving certificate.
    async fn reconcile(&mut self) -> Result<(), CertsError> {
        let secret_name = &self.config.secret_name;
        let (set, how) =
            secret::converge(&self.secrets, secret_name, &self.policy, unix_now).await?;
        match &how {
            Converged::Reused => {
                tracing::debug!(secret = %secret_name, "webhook certificates in the Secret are good")
            }
            Converged::Created => {
                tracing::info!(secret = %secret_name, "created the webhook CA and serving certificate")
            }
            Converged::Updated(reason) => {
                tracing::info!(secret = %secret_name, %reason, "renewed the webhook certificates")
            }
        }
        let config_name = &self.config.webhook_config_name;
        match ca_bundle::publish(&self.webhook_configs, config_name, set.ca_bundle.as_bytes())
            .await?
        {
            Published::AlreadyCurrent => {}
            Published::Patched(entries) => tracing::info!(
                webhook_configuration = %config_name,
                entries,
                "published the CA bundle"
            ),
        }
        self.serve(&set)
    }

    fn serve(&mut self, set: &CertificateSet) -> Result<(), CertsError> {
        let pair = (set.cert.clone(), set.key.clone());
        if self.served.as_ref() != Some(&pair) {
            self.sink
                .set_pem(set.cert.as_bytes(), set.key.as_bytes())
                .map_err(|err| CertsError::Serve(Box::new(err)))?;
            tracing::info!(
                not_after = set.serving_not_after(),
                "serving the certificate from the Secret"
            );
            self.served = Some(pair);
        }
        Ok(())
    }

    /// A tick per change to the Secret or the webhook configuration (none when watching is
    /// off). Watch errors are retried by the watchers; the periodic re-check covers gaps.
    fn changes(&self) -> BoxStream<'static, ()> {
        if !self.config.watch {
            return stream::pending().boxed();
        }
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let secret =
            watcher(self.secrets.clone(), by_name(&self.config.secret_name)).default_backoff();
        let config = watcher(
            self.webhook_configs.clone(),
            by_name(&self.config.webhook_config_name),
        )
        .default_backoff();
        stream::select(
            change_ticks(secret, "the certificate Secret"),
            change_ticks(config, "the MutatingWebhookConfiguration"),
        )
        .boxed()
    }
}

/// Ticks for one watch. Every error is retried with the watcher's backoff, a 403 included: a
/// kube-apiserver that has just started answers 403 until its RBAC caches are filled, so
/// giving up on the first one would leave a renewal or a damaged Secret to the periodic
/// re-check alone. A 403 is logged as a warning once per streak, the rest at debug.
fn change_ticks<K: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    what: &'static str,
) -> BoxStream<'static, ()> {
    events
        .scan(false, move |forbidden_before, event| {
            std::future::ready(Some(is_change(event, what, forbidden_before)))
        })
        .filter_map(|change| std::future::ready(change.then_some(())))
        .boxed()
}

/// A change worth a round: an object applied or deleted, or a (re)list completed (which may
/// have missed a deletion). `forbidden_before` remembers a 403 streak, so that a watch RBAC
/// does not allow warns once rather than on every retry.
fn is_change<K>(
    event: Result<watcher::Event<K>, watcher::Error>,
    what: &str,
    forbidden_before: &mut bool,
) -> bool {
    match event {
        Ok(event) => {
            *forbidden_before = false;
            matches!(
                event,
                watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
            )
        }
        Err(error) if forbidden(&error) => {
            if !std::mem::replace(forbidden_before, true) {
                tracing::warn!(
                    %error,
                    "not allowed to watch {what}; retrying with backoff, and the periodic re-check still runs (grant list and watch on it, narrowed by name, if this lasts)"
                );
            } else {
                tracing::debug!(%error, "watch of {what} still forbidden; retrying");
            }
            false
        }
        Err(error) => {
            tracing::debug!(%error, "watch of {what} failed; retrying");
            false
        }
    }
}

fn forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
        | watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use kube::core::Status;
    use kube::runtime::watcher;

    use super::change_ticks;

    fn forbidden() -> Result<watcher::Event<()>, watcher::Error> {
        let status: Status =
            serde_json::from_value(serde_json::json!({"code": 403, "reason": "Forbidden"}))
                .expect("a Status");
        Err(watcher::Error::WatchError(Box::new(status)))
    }

    #[tokio::test]
    async fn a_forbidden_watch_keeps_going_so_a_change_after_it_still_ticks() {
        // As after a kube-apiserver restart: 403 until RBAC's caches are filled, then events.
        let events = futures::stream::iter(vec![
            forbidden(),
            forbidden(),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(())),
            forbidden(),
            Ok(watcher::Event::Delete(())),
        ]);
        let ticks = change_ticks(events, "the test object").count().await;
        assert_eq!(
            ticks, 3,
            "InitDone, Apply and Delete each tick; errors do not end the stream"
        );
    }
}
