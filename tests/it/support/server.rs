//! Shared by the server tests and the request-path benchmark: certificates (`support::tls`), a TLS client
//! speaking HTTP/1.1 or HTTP/2 over one kept-alive connection, AdmissionReview bodies, patch
//! application, and an in-process server on ephemeral loopback ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pod_identity_webhook::core::identity::ServiceAccountAnnotations;
use pod_identity_webhook::core::settings::MutationSettings;
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::server::tls::{CertificateStore, TlsSettings};
use pod_identity_webhook::server::{Components, Limits, Server, ShutdownTiming};
use pod_identity_webhook::sources::service_accounts::{FixedServiceAccounts, ServiceAccountLookup};
use pod_identity_webhook::sources::WatchedConfig;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::net::TcpStream;

pub use crate::support::tls::TestCa;

pub const ROLE: &str = "arn:aws:iam::111122223333:role/payments-api";
pub const V1: &str = "admission.k8s.io/v1";
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/admission/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `payments/api` carries a role.
pub fn service_accounts() -> FixedServiceAccounts {
    let mut accounts = FixedServiceAccounts::default();
    accounts.insert(
        "payments",
        "api",
        ServiceAccountAnnotations {
            role_arn: Some(ROLE.into()),
            ..Default::default()
        },
    );
    accounts
}

pub fn components(lookup: impl ServiceAccountLookup) -> Components {
    Components {
        settings: Arc::new(MutationSettings::default()),
        service_accounts: Arc::new(lookup),
        watched_config: Arc::new(WatchedConfig::default()),
        metrics: Arc::new(Metrics::new()),
        readiness: Arc::new(Readiness::default()),
        cache_dumper: None,
    }
}

/// An AdmissionReview around `object` with the given details.
pub fn review(
    api_version: &str,
    operation: &str,
    kind: (&str, &str, &str),
    resource: &str,
    object: Value,
) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
            "resource": {"group": kind.0, "version": kind.1, "resource": resource},
            "namespace": "payments",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
        }
    })
}

/// A pod of `payments` running as `service_account`, with one container.
pub fn pod(service_account: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "payments"},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "app", "image": "app:1"}],
        }
    })
}

pub fn pod_review(service_account: &str) -> Value {
    review(
        V1,
        "CREATE",
        ("", "v1", "Pod"),
        "pods",
        pod(service_account),
    )
}

/// The response's patch (base64 JSON Patch), applied to `object`.
pub fn apply_patch(response: &Value, object: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let encoded = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    patched
}

/// The value of `name` in the env of container `index`.
pub fn env(pod: &Value, index: usize, name: &str) -> Option<String> {
    pod["spec"]["containers"][index]["env"]
        .as_array()?
        .iter()
        .find(|entry| entry["name"] == name)
        .and_then(|entry| entry["value"].as_str().map(str::to_owned))
}

/// The common name of a DER certificate.
pub fn common_name(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let name = cert.subject().iter_common_name().next().unwrap();
    name.as_str().unwrap().to_string()
}

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Body>),
    Http2(hyper::client::conn::http2::SendRequest<Body>),
}

/// One TLS connection, kept alive across requests.
pub struct Client {
    sender: Sender,
    pub peer_certificate: CertificateDer<'static>,
}

pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        ca: &TestCa,
        protocol: Protocol,
    ) -> Result<Self, ClientError> {
        let alpn: &[u8] = match protocol {
            Protocol::Http1 => b"http/1.1",
            Protocol::Http2 => b"h2",
        };
        Self::connect_with(addr, ca.client_config(alpn), protocol).await
    }

    pub async fn connect_with(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        protocol: Protocol,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr).await?;
        Self::over(tcp, config, protocol).await
    }

    /// From `source`, a loopback address of 127.0.0.0/8 other than the server's, as a client
    /// on another machine would be.
    pub async fn connect_from(
        source: std::net::IpAddr,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        protocol: Protocol,
    ) -> Result<Self, ClientError> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let tcp = socket.connect(addr).await?;
        Self::over(tcp, config, protocol).await
    }

    async fn over(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        protocol: Protocol,
    ) -> Result<Self, ClientError> {
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let peer_certificate = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = match protocol {
            Protocol::Http1 => {
                assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(connection);
                Sender::Http1(sender)
            }
            Protocol::Http2 => {
                assert_eq!(negotiated.as_deref(), Some(&b"h2"[..]));
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(connection);
                Sender::Http2(sender)
            }
        };
        Ok(Self {
            sender,
            peer_certificate,
        })
    }

    pub async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Another handle on the same HTTP/2 connection (a new stream per request); `None` for
    /// HTTP/1.1, which has one request at a time per connection. For benches/request_path.rs.
    #[allow(dead_code)]
    pub fn try_clone(&self) -> Option<Self> {
        match &self.sender {
            Sender::Http1(_) => None,
            Sender::Http2(sender) => Some(Self {
                sender: Sender::Http2(sender.clone()),
                peer_certificate: self.peer_certificate.clone(),
            }),
        }
    }

    /// POSTs a JSON body to `/mutate`.
    pub async fn mutate(
        &mut self,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.send(mutate_request(full(body))).await
    }
}

pub fn mutate_request(body: Body) -> Request<Body> {
    Request::post("https://localhost/mutate")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap()
}

/// The server running in-process on loopback ephemeral ports, with a certificate loaded.
pub struct TestServer {
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub components: Components,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// With a certificate for `localhost` (common name "first") loaded.
    pub async fn start(components: Components, limits: Limits, ca: &TestCa) -> Self {
        let store = new_store(&components);
        let (cert, key) = ca.leaf("first");
        store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let tls = pod_identity_webhook::server::tls::server_config(
            &TlsSettings::default(),
            store.clone(),
        )
        .unwrap();
        Self::start_with(components, limits, tls).await
    }

    pub async fn start_with(
        components: Components,
        limits: Limits,
        tls: rustls::ServerConfig,
    ) -> Self {
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::bind(localhost, localhost).await.unwrap();
        let (webhook, admin) = (server.webhook_addr(), server.admin_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let timing = ShutdownTiming {
            delay: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
        };
        let task =
            tokio::spawn(
                server.run(Arc::new(tls), components.clone(), limits, timing, async {
                    let _ = stopped.await;
                }),
            );
        Self {
            webhook,
            admin,
            components,
            stop: Some(stop),
            task,
        }
    }

    /// Triggers the shutdown sequence and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops within 10 s")
            .unwrap();
    }
}

pub fn new_store(components: &Components) -> Arc<CertificateStore> {
    Arc::new(CertificateStore::new(
        components.metrics.clone(),
        &components.readiness,
    ))
}
