//! A second mutating webhook, in-process: it adds a sidecar container to every pod it sees
//! (once). Registered after ours, it makes the API server re-invoke ours
//! (`reinvocationPolicy: IfNeeded`), which must then give the sidecar credentials too.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

pub const SIDECAR_NAME: &str = "injected-sidecar";

/// The running injector: its port and how many reviews it answered.
pub struct SidecarInjector {
    pub port: u16,
    pub calls: Arc<AtomicUsize>,
}

/// Starts the injector on 127.0.0.1 (ephemeral port) on `runtime`, serving `cert_pem`.
pub fn start(runtime: &tokio::runtime::Runtime, cert_pem: &str, key_pem: &str) -> SidecarInjector {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("serving certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("serving key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("certificate and key match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the sidecar injector");
    let port = listener.local_addr().expect("addr").port();
    let counter = calls.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let counter = counter.clone();
                    async move { Ok::<_, Infallible>(handle(request, &counter).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    SidecarInjector { port, calls }
}

async fn handle(
    request: hyper::Request<Incoming>,
    calls: &AtomicUsize,
) -> hyper::Response<Full<Bytes>> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return respond(400, json!("cannot read the body")),
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return respond(400, json!("not JSON"));
    };
    calls.fetch_add(1, Ordering::SeqCst);
    let request = &review["request"];
    let has_sidecar = request["object"]["spec"]["containers"]
        .as_array()
        .is_some_and(|containers| containers.iter().any(|c| c["name"] == SIDECAR_NAME));
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if !has_sidecar {
        let patch = json!([{
            "op": "add",
            "path": "/spec/containers/-",
            "value": {"name": SIDECAR_NAME, "image": "busybox:1.36", "command": ["sleep", "3600"]},
        }]);
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    respond(
        200,
        json!({"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response}),
    )
}

fn respond(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}
