//! Built-in certificate mode against a stand-in Kubernetes API: first start, a second replica,
//! replicas racing, renewal before expiry, damaged Secrets, and readiness waiting for the
//! caBundle.

use std::sync::Arc;
use std::time::Duration;

use crate::support::eventually_async;
use crate::support::fake_api::{webhook_configuration, FakeApi, Verb};
use crate::support::tls::first_der;
use k8s_openapi::ByteString;
use pod_identity_webhook::certs::material::{self, CertificateSet, Policy, StoredPems, Verdict};
use pod_identity_webhook::certs::{self, CertsConfig};
use pod_identity_webhook::ops::clock::unix_now;
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::server::tls::{server_config, CertificateStore, TlsSettings};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{json, Value};

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

/// A new CA and serving certificate for the Service, made as if at `made_at` (Unix seconds)
/// with the given lifetimes: certificates at a chosen point of their life, made the way the
/// manager makes them.
fn made_at(made_at: i64, ca_validity: Duration, serving_validity: Duration) -> CertificateSet {
    let policy = Policy::for_service(SERVICE, NAMESPACE, ca_validity, serving_validity);
    let verdict = Verdict::NewCa("the test needs one".into());
    material::renew(&StoredPems::default(), &verdict, &policy, made_at).unwrap()
}

const DAY: Duration = Duration::from_secs(86_400);

/// One replica: its TLS store and readiness, and a TLS listener serving from the store, to
/// see the certificate a client is served.
struct Replica {
    store: Arc<CertificateStore>,
    readiness: Arc<Readiness>,
    listener: std::net::SocketAddr,
}

impl Replica {
    fn start(api: &FakeApi) -> Self {
        Self::start_with(api, config())
    }

    fn start_with(api: &FakeApi, config: CertsConfig) -> Self {
        let readiness = Arc::new(Readiness::default());
        let store = Arc::new(CertificateStore::new(Arc::new(Metrics::new()), &readiness));
        certs::spawn(api.client(), config, store.clone()).unwrap();
        let listener = serve_handshakes(&store);
        Self {
            store,
            readiness,
            listener,
        }
    }

    async fn serving(&self) {
        let store = self.store.clone();
        let readiness = self.readiness.clone();
        eventually_async("a served certificate and readiness", WAIT, move || {
            store.is_loaded() && readiness.check().is_ok()
        })
        .await;
    }

    /// The end-entity certificate a client is served now.
    async fn served_der(&self) -> Vec<u8> {
        self.try_served_der()
            .await
            .unwrap_or_else(|err| panic!("no certificate served: {err}"))
    }

    async fn try_served_der(&self) -> Result<Vec<u8>, String> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.listener)
            .await
            .map_err(|err| err.to_string())?;
        let name = ServerName::try_from(format!("{SERVICE}.{NAMESPACE}.svc")).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|err| err.to_string())?;
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| der.to_vec())
            .ok_or_else(|| "no peer certificate".to_string())
    }

    /// Waits up to `wait` for a certificate other than `before` to be served.
    async fn served_other_than(&self, before: &[u8], what: &str, wait: Duration) {
        let changed = async {
            loop {
                match self.try_served_der().await {
                    Ok(der) if der != before => return,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        };
        tokio::time::timeout(wait, changed)
            .await
            .unwrap_or_else(|_| panic!("{what}: not served within {wait:?}"));
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts TLS connections on a loopback port, completing the handshake with the server's
/// real configuration over `store` and nothing more.
fn serve_handshakes(store: &Arc<CertificateStore>) -> std::net::SocketAddr {
    let config = server_config(&TlsSettings::default(), store.clone()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.accept(tcp).await });
        }
    });
    address
}

/// Takes whatever certificate is served (the tests compare it with the Secret's), while still
/// checking the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
        replica.served_der().await,
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
    assert_eq!(second.served_der().await, first.served_der().await);
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
        assert_eq!(replica.served_der().await, served);
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
    // Made 300 days ago: the CA has 3000 of its 3300 days left, the serving certificate 65 of
    // its 365 (under a third: due).
    let due = made_at(now - 300 * 86_400, 3300 * DAY, 365 * DAY);
    put_set(&api, &due);

    let replica = Replica::start(&api);
    replica.serving().await;
    let secret = secret(&api);
    assert_ne!(secret_pem(&secret, "tls.crt"), due.cert, "renewed");
    assert_eq!(secret_pem(&secret, "ca.crt"), due.ca_bundle, "same CA");
    assert_eq!(
        replica.served_der().await,
        first_der(&secret_pem(&secret, "tls.crt"))
    );
    assert_eq!(ca_bundles(&api), vec![Some(due.ca_bundle.clone())]);
}

#[tokio::test]
async fn a_running_replica_renews_before_expiry_without_a_gap() {
    let api = FakeApi::start().await;
    api.put(webhook_configuration(CONFIG, 1));
    let now = unix_now();
    // Made 18 s ago for 30 s (backdated 3 s): lifetime 33 s, 12 s left; good now, due for
    // renewal (under 1/3 left) in about 1 s.
    let short = made_at(now - 18, 3000 * DAY, Duration::from_secs(30));
    put_set(&api, &short);

    let replica = Replica::start(&api);
    replica.serving().await;
    let first = replica.served_der().await;
    assert_eq!(
        first,
        first_der(&short.cert),
        "the still-good certificate is served first"
    );
    replica
        .served_other_than(
            &first,
            "the renewed certificate to be served",
            Duration::from_secs(8),
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
    let good = made_at(unix_now(), 3000 * DAY, 300 * DAY);
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
        replica.served_der().await,
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
    let before = replica.served_der().await;
    replica
        .served_other_than(&before, "a replacement certificate to be served", WAIT)
        .await;
    let replaced = secret(api_ref);
    let ca = secret_pem(&replaced, "ca.crt");
    assert_ne!(ca, good.ca_bundle);
    assert_eq!(ca_bundles(api_ref), vec![Some(ca)]);
    assert_eq!(
        replica.served_der().await,
        first_der(&secret_pem(&replaced, "tls.crt"))
    );
}

#[tokio::test]
async fn readiness_waits_until_the_ca_bundle_is_published() {
    let api = FakeApi::start().await;
    let replica = Replica::start(&api);
    eventually_async("the Secret to be created", WAIT, || {
        api.get("secrets", NAMESPACE, SECRET).is_some()
    })
    .await;
    // A second look for the (absent) configuration: the first answer has been dealt with.
    eventually_async("a second look for the webhook configuration", WAIT, || {
        api.count(Verb::Get, "mutatingwebhookconfigurations") >= 2
    })
    .await;
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
    eventually_async("the caBundle to be restored", WAIT, move || {
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
        replica.served_der().await,
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
    eventually_async("the re-check to restore the caBundle", WAIT, move || {
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
