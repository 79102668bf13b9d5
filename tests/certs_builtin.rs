//! Built-in certificate mode against a stand-in Kubernetes API: first start, a second replica,
//! replicas racing, renewal before expiry, damaged Secrets, and readiness waiting for the
//! caBundle.

// Shared with other test crates, which use other parts of it.
#[allow(dead_code)]
mod common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use common::tls::first_der;
use k8s_openapi::ByteString;
use pod_identity_webhook::certs::material::{self, CertificateSet, Policy};
use pod_identity_webhook::certs::{self, CertsConfig};
use pod_identity_webhook::ops::clock::unix_now;
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::server::tls::CertificateStore;
use serde_json::{json, Value};
use support::eventually;
use support::fake_api::{webhook_configuration, FakeApi, Verb};

const NAMESPACE: &str = "eks";
const SERVICE: &str = "pod-identity-webhook";
const SECRET: &str = "pod-identity-webhook-cert";
const CONFIG: &str = "pod-identity-webhook";
const WAIT: Duration = Duration::from_secs(15);

fn config() -> CertsConfig {
    let mut config = CertsConfig::new(NAMESPACE, SERVICE, SECRET, CONFIG);
    config.recheck_interval = Duration::from_millis(300);
    config
}

fn policy() -> Policy {
    Policy::for_service(
        SERVICE,
        NAMESPACE,
        CertsConfig::DEFAULT_CA_VALIDITY,
        CertsConfig::DEFAULT_SERVING_VALIDITY,
    )
}

/// One replica: its TLS store and readiness.
struct Replica {
    store: Arc<CertificateStore>,
    readiness: Arc<Readiness>,
}

impl Replica {
    fn start(api: &FakeApi) -> Self {
        Self::start_with(api, config())
    }

    fn start_with(api: &FakeApi, config: CertsConfig) -> Self {
        let readiness = Arc::new(Readiness::default());
        readiness.set_cache_synced();
        let store = Arc::new(CertificateStore::new(
            Arc::new(Metrics::new()),
            readiness.clone(),
        ));
        certs::spawn(api.client(), config, store.clone(), readiness.clone()).unwrap();
        Self { store, readiness }
    }

    async fn serving(&self) {
        let store = self.store.clone();
        let readiness = self.readiness.clone();
        eventually("a served certificate and readiness", WAIT, move || {
            store.is_loaded() && readiness.check().is_ok()
        })
        .await;
    }

    fn served_der(&self) -> Vec<u8> {
        self.store
            .current_certificate()
            .expect("a certificate is served")
            .to_vec()
    }
}

fn secret(api: &FakeApi) -> Value {
    api.get("secrets", NAMESPACE, SECRET)
        .expect("the Secret exists")
}

fn secret_pem(secret: &Value, key: &str) -> String {
    let bytes: ByteString =
        serde_json::from_value(secret["data"][key].clone()).expect("base64 data");
    String::from_utf8(bytes.0).unwrap()
}

fn ca_bundles(api: &FakeApi) -> Vec<Option<String>> {
    let config = api
        .get("mutatingwebhookconfigurations", "", CONFIG)
        .expect("the configuration exists");
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|webhook| {
            let bundle = &webhook["clientConfig"]["caBundle"];
            (!bundle.is_null()).then(|| {
                let bytes: ByteString = serde_json::from_value(bundle.clone()).unwrap();
                String::from_utf8(bytes.0).unwrap()
            })
        })
        .collect()
}

fn put_secret(api: &FakeApi, data: &[(&str, &str)]) {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(key, value)| {
            (
                key.to_string(),
                serde_json::to_value(ByteString(value.as_bytes().to_vec())).unwrap(),
            )
        })
        .collect();
    api.put(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": data,
    }));
}

fn put_set(api: &FakeApi, set: &CertificateSet) {
    put_secret(
        api,
        &[
            ("ca.crt", &set.ca_bundle),
            ("ca.key", &set.ca_key),
            ("tls.crt", &set.cert),
            ("tls.key", &set.key),
        ],
    );
}

#[tokio::test]
async fn first_start_creates_the_secret_publishes_the_ca_then_serves() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 2));
    let replica = Replica::start(&api);
    replica.serving().await;

    let secret = secret(&api);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    let ca = secret_pem(&secret, "ca.crt");
    assert_eq!(
        ca_bundles(&api),
        vec![Some(ca.clone()), Some(ca.clone())],
        "every entry trusts the CA"
    );
    assert_eq!(
        replica.served_der(),
        first_der(&secret_pem(&secret, "tls.crt"))
    );
    let config = api
        .get("mutatingwebhookconfigurations", "", CONFIG)
        .unwrap();
    assert_eq!(
        config["webhooks"][1]["futureField"],
        json!({"kept": true}),
        "the patch leaves unknown fields alone"
    );
    assert_eq!(api.count(Verb::Create, "secrets"), 1);
    assert_eq!(
        material::assess(
            &material::StoredPems::from_data(
                serde_json::from_value(secret["data"].clone()).ok().as_ref()
            ),
            &policy(),
            unix_now()
        ),
        material::Verdict::Keep(CertificateSet {
            ca_bundle: ca,
            ca_key: secret_pem(&secret, "ca.key"),
            cert: secret_pem(&secret, "tls.crt"),
            key: secret_pem(&secret, "tls.key"),
        })
    );
}

#[tokio::test]
async fn a_second_replica_reuses_the_secret_without_writing() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    let first = Replica::start(&api);
    first.serving().await;
    let version = secret(&api)["metadata"]["resourceVersion"].clone();
    let patches = api.count(Verb::Patch, "mutatingwebhookconfigurations");

    let second = Replica::start(&api);
    second.serving().await;
    assert_eq!(second.served_der(), first.served_der());
    assert_eq!(
        secret(&api)["metadata"]["resourceVersion"],
        version,
        "the Secret was not rewritten"
    );
    assert_eq!(api.count(Verb::Create, "secrets"), 1);
    assert_eq!(api.count(Verb::Update, "secrets"), 0);
    assert_eq!(
        api.count(Verb::Patch, "mutatingwebhookconfigurations"),
        patches,
        "the caBundle was already right"
    );
}

#[tokio::test]
async fn replicas_starting_together_converge_on_one_secret() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    let replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&api)).collect();
    for replica in &replicas {
        replica.serving().await;
    }
    let served = first_der(&secret_pem(&secret(&api), "tls.crt"));
    for replica in &replicas {
        assert_eq!(replica.served_der(), served);
    }
    assert_eq!(
        ca_bundles(&api),
        vec![Some(secret_pem(&secret(&api), "ca.crt"))]
    );
}

#[tokio::test]
async fn a_certificate_due_for_renewal_is_renewed_under_the_same_ca() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    let now = unix_now();
    let day = 86_400;
    let due = material::generate_with_windows(
        &policy(),
        (now - 365 * day, now + 3000 * day),
        (now - 300 * day, now + 65 * day),
    )
    .unwrap();
    put_set(&api, &due);

    let replica = Replica::start(&api);
    replica.serving().await;
    let secret = secret(&api);
    assert_ne!(secret_pem(&secret, "tls.crt"), due.cert, "renewed");
    assert_eq!(secret_pem(&secret, "ca.crt"), due.ca_bundle, "same CA");
    assert_eq!(
        replica.served_der(),
        first_der(&secret_pem(&secret, "tls.crt"))
    );
    assert_eq!(ca_bundles(&api), vec![Some(due.ca_bundle.clone())]);
}

#[tokio::test]
async fn a_running_replica_renews_before_expiry_without_a_gap() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    let now = unix_now();
    // Lifetime 32 s, 12 s left: good now, due for renewal (under 1/3 left) in about 1.5 s.
    let short = material::generate_with_windows(
        &policy(),
        (now - 3600, now + 3000 * 86_400),
        (now - 20, now + 12),
    )
    .unwrap();
    put_set(&api, &short);

    let replica = Replica::start(&api);
    replica.serving().await;
    let first = replica.served_der();
    assert_eq!(
        first,
        first_der(&short.cert),
        "the still-good certificate is served first"
    );
    let store = replica.store.clone();
    eventually(
        "the renewed certificate to be served",
        Duration::from_secs(8),
        move || {
            store
                .current_certificate()
                .is_some_and(|der| der.to_vec() != first)
        },
    )
    .await;
    assert!(
        unix_now() < now + 12,
        "renewed before the old certificate expired"
    );
    assert!(replica.readiness.check().is_ok());
    assert_eq!(secret_pem(&secret(&api), "ca.crt"), short.ca_bundle);
}

#[tokio::test]
async fn a_damaged_secret_is_replaced() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    let good = material::generate_with_windows(
        &policy(),
        (unix_now() - 60, unix_now() + 3000 * 86_400),
        (unix_now() - 60, unix_now() + 300 * 86_400),
    )
    .unwrap();
    // A serving certificate that is not PEM under a good CA: re-issued under that CA.
    put_secret(
        &api,
        &[
            ("ca.crt", &good.ca_bundle),
            ("ca.key", &good.ca_key),
            ("tls.crt", "not a certificate"),
            ("tls.key", &good.key),
        ],
    );
    let replica = Replica::start(&api);
    replica.serving().await;
    let repaired = secret(&api);
    assert_eq!(secret_pem(&repaired, "ca.crt"), good.ca_bundle);
    assert_eq!(
        replica.served_der(),
        first_der(&secret_pem(&repaired, "tls.crt"))
    );

    // Garbage throughout, while running: a new CA, published, then served.
    put_secret(
        &api,
        &[
            ("ca.crt", "junk"),
            ("ca.key", "junk"),
            ("tls.crt", "junk"),
            ("tls.key", "junk"),
        ],
    );
    let api_ref = &api;
    let before = replica.served_der();
    let store = replica.store.clone();
    eventually("a replacement certificate to be served", WAIT, move || {
        store
            .current_certificate()
            .is_some_and(|der| der.to_vec() != before)
    })
    .await;
    let replaced = secret(api_ref);
    let ca = secret_pem(&replaced, "ca.crt");
    assert_ne!(ca, good.ca_bundle);
    assert_eq!(ca_bundles(api_ref), vec![Some(ca)]);
    assert_eq!(
        replica.served_der(),
        first_der(&secret_pem(&replaced, "tls.crt"))
    );
}

#[tokio::test]
async fn readiness_waits_until_the_ca_bundle_is_published() {
    let api = FakeApi::start().await;
    let replica = Replica::start(&api);
    eventually("the Secret to be created", WAIT, || {
        api.get("secrets", NAMESPACE, SECRET).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !replica.store.is_loaded(),
        "nothing is served before the caBundle trusts it"
    );
    assert!(replica.readiness.check().is_err());

    api.put(webhook_configuration(CONFIG, 1));
    replica.serving().await;
    assert_eq!(
        ca_bundles(&api),
        vec![Some(secret_pem(&secret(&api), "ca.crt"))]
    );
}

#[tokio::test]
async fn a_reset_ca_bundle_is_published_again_at_once() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    // No periodic re-check during the test: only the watch can notice the reset.
    let mut slow = config();
    slow.recheck_interval = Duration::from_secs(3600);
    let replica = Replica::start_with(&api, slow);
    replica.serving().await;
    // As a `helm upgrade` re-applying the configuration without a caBundle would.
    api.put(webhook_configuration(CONFIG, 1));
    let ca = secret_pem(&secret(&api), "ca.crt");
    let api_ref = &api;
    eventually("the caBundle to be restored", WAIT, move || {
        ca_bundles(api_ref) == vec![Some(ca.clone())]
    })
    .await;
}

#[tokio::test]
async fn a_conflicting_update_is_retried_from_a_fresh_read() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    put_secret(&api, &[("tls.crt", "junk"), ("tls.key", "junk")]);
    api.fail(Verb::Update, "secrets", 409, 1);
    let replica = Replica::start(&api);
    replica.serving().await;
    assert_eq!(api.count(Verb::Update, "secrets"), 2);
    assert_eq!(
        replica.served_der(),
        first_der(&secret_pem(&secret(&api), "tls.crt"))
    );
}

#[tokio::test]
async fn without_permission_to_watch_the_periodic_recheck_still_repairs_the_ca_bundle() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    api.fail(Verb::List, "secrets", 403, 100);
    api.fail(Verb::List, "mutatingwebhookconfigurations", 403, 100);
    let replica = Replica::start(&api);
    replica.serving().await;
    api.put(webhook_configuration(CONFIG, 1));
    let ca = secret_pem(&secret(&api), "ca.crt");
    let api_ref = &api;
    eventually("the re-check to restore the caBundle", WAIT, move || {
        ca_bundles(api_ref) == vec![Some(ca.clone())]
    })
    .await;
    assert_eq!(
        api.count(Verb::List, "secrets"),
        1,
        "a forbidden watch is not retried"
    );
    assert_eq!(api.count(Verb::List, "mutatingwebhookconfigurations"), 1);
}
