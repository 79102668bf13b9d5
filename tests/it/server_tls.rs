//! The real server over real TLS on loopback ephemeral ports: both HTTP versions, certificate
//! rotation the way a kubelet does it, slow clients, TLS settings, and draining at shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::eventually_async;
use crate::support::server::*;
use crate::support::tls::KubeletDir;
use bytes::Bytes;
use futures::StreamExt as _;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use pod_identity_webhook::server::tls::{self, server_config, TlsSettings, TlsVersion};
use pod_identity_webhook::server::Limits;
use pod_identity_webhook::sources::file_watch::WatchOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn assert_mutated(status: StatusCode, body: &[u8]) {
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
    let answer: Value = serde_json::from_slice(body).unwrap();
    let pod = apply_patch(&answer["response"], &pod("api"));
    assert_eq!(env(&pod, 0, "AWS_ROLE_ARN").as_deref(), Some(ROLE));
}

/// Both AdmissionReview versions the chart registers, over both HTTP versions: each answer
/// carries the request's apiVersion and uid, and its patch applies.
#[tokio::test]
async fn http2_and_http1_round_trip_v1_and_v1beta1_reviews_over_tls_on_kept_alive_connections() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), Limits::default(), &ca).await;
    let reviews = [
        (fixture("pod-create-v1.json"), V1),
        (fixture("pod-create-v1beta1.json"), V1BETA1),
    ];
    for protocol in [Protocol::Http2, Protocol::Http1] {
        let mut client = Client::connect(server.webhook, &ca, protocol)
            .await
            .unwrap();
        for _ in 0..3 {
            for (review, api_version) in &reviews {
                let (status, body) = client.mutate(review.to_string()).await.unwrap();
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                let answer: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(answer["apiVersion"], *api_version, "{protocol:?}");
                assert_eq!(answer["kind"], "AdmissionReview");
                assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
                assert_eq!(answer["response"]["allowed"], true);
                let pod = apply_patch(&answer["response"], &review["request"]["object"]);
                assert_eq!(env(&pod, 0, "AWS_ROLE_ARN").as_deref(), Some(ROLE));
            }
        }
    }
    let metrics = server.components.metrics.encode();
    assert!(
        metrics.contains("http_request_count{code=\"200\",path=\"/mutate\",verb=\"POST\"} 12"),
        "{metrics}"
    );
    server.stop().await;
}

/// Many reviews at once on one HTTP/2 connection, with answers from a few hundred bytes to
/// over 100 KB: the server sends the answers that are ready together in one write (see
/// `server::write_batch`), and each must still arrive whole, on its own stream.
#[tokio::test]
async fn concurrent_http2_reviews_of_every_size_each_get_their_own_whole_answer() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), Limits::default(), &ca).await;
    let mut client = Client::connect(server.webhook, &ca, Protocol::Http2)
        .await
        .unwrap();
    // One review first, so the client has the server's SETTINGS and queues the streams over
    // its concurrency limit instead of having them refused.
    let (status, body) = client.mutate(pod_review("api").to_string()).await.unwrap();
    assert_mutated(status, &body);
    let sizes = (0..60).map(|i| 1 + i % 12).chain([40, 250]);
    let requests = sizes.enumerate().map(|(i, containers)| {
        let mut client = client.try_clone().unwrap();
        async move {
            let mut review = pod_review("api");
            let uid = format!("00000000-0000-4000-8000-{i:012}");
            review["request"]["uid"] = uid.clone().into();
            let containers: Vec<Value> = (0..containers)
                .map(|c| serde_json::json!({"name": format!("c{c}"), "image": "app:1"}))
                .collect();
            review["request"]["object"]["spec"]["containers"] = containers.clone().into();
            let (status, body) = client.mutate(review.to_string()).await.unwrap();
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let answer: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["response"]["uid"], uid.as_str());
            let pod = apply_patch(&answer["response"], &review["request"]["object"]);
            for c in 0..containers.len() {
                assert_eq!(env(&pod, c, "AWS_ROLE_ARN").as_deref(), Some(ROLE), "{uid}");
            }
            body.len()
        }
    });
    let lengths = futures::future::join_all(requests).await;
    assert!(lengths.iter().any(|&n| n > 100_000), "{lengths:?}");
    assert!(lengths.iter().any(|&n| n < 2_000), "{lengths:?}");
    server.stop().await;
}

/// How long a test waits for what the server is expected to do.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn bad_input_over_tls_gets_the_documented_status_codes() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), Limits::default(), &ca).await;
    let mut client = Client::connect(server.webhook, &ca, Protocol::Http2)
        .await
        .unwrap();
    let request = |method: &str, path: &str, content_type: &str, body: Vec<u8>| {
        http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("content-type", content_type)
            .body(full(body))
            .unwrap()
    };
    let review = pod_review("api").to_string().into_bytes();
    let oversized = vec![b' '; 5 * 1024 * 1024];
    let mut not_a_pod = pod_review("api");
    not_a_pod["request"]["object"]["spec"]["containers"] = serde_json::json!("app");
    for (request, expected) in [
        (
            request("POST", "/mutate", "text/plain", review.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            request("POST", "/mutate", "application/json", oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            request("POST", "/mutate", "application/json", b"{".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            request("GET", "/mutate", "application/json", Vec::new()),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            request("POST", "/validate", "application/json", review),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, body) = client.send(request).await.unwrap();
        assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
    }
    let (status, body) = client.mutate(not_a_pod.to_string()).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert!(answer["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("spec.containers"));
    server.stop().await;
}

#[tokio::test]
async fn admin_port_serves_readiness_and_metrics_in_plain_http() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), Limits::default(), &ca).await;
    let (status, body) = plain_get(server.admin, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, body) = plain_get(server.admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("pod_identity_webhook_certificate_expiry_timestamp_seconds"),
        "{text}"
    );
    assert!(text.contains("pod_identity_webhook_certificate_reloads_total{result=\"success\"} 1"));
    server.stop().await;
}

async fn plain_get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(full(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_by_symlink_swap_loses_no_request_and_bad_pair_keeps_old() {
    let ca = TestCa::new();
    let (cert1, key1) = ca.leaf("first");
    let dir = KubeletDir::new(&[("tls.crt", cert1.as_bytes()), ("tls.key", key1.as_bytes())]);
    let components = components(service_accounts());
    let store = new_store(&components);
    let options = WatchOptions {
        poll_interval: Duration::from_secs(2),
        settle: Duration::from_millis(50),
    };
    let _watch = tls::watch_files(
        dir.path("tls.crt"),
        dir.path("tls.key"),
        store.clone(),
        options,
    );
    assert!(store.is_loaded(), "loaded at start");
    let config = server_config(&TlsSettings::default(), store.clone()).unwrap();
    let server = TestServer::start_with(components, Limits::default(), config).await;
    let mut established = Client::connect(server.webhook, &ca, Protocol::Http2)
        .await
        .unwrap();
    assert_eq!(common_name(&established.peer_certificate), "first");

    // A stream of requests: each worker opens a fresh connection every 5 requests, so new
    // handshakes happen throughout the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let saw_second = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (stop, saw_second, completed, failures) = (
            stop.clone(),
            saw_second.clone(),
            completed.clone(),
            failures.clone(),
        );
        let ca_config = [ca.client_config(b"h2"), ca.client_config(b"http/1.1")];
        let addr = server.webhook;
        let body = pod_review("api").to_string();
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut round = 0;
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                round += 1;
                let protocol = if (worker + round) % 2 == 0 {
                    Protocol::Http2
                } else {
                    Protocol::Http1
                };
                let config = ca_config[(protocol == Protocol::Http1) as usize].clone();
                let mut client = match Client::connect_with(addr, config, protocol).await {
                    Ok(client) => client,
                    Err(err) => {
                        failures.lock().unwrap().push(format!("connect: {err}"));
                        continue;
                    }
                };
                if common_name(&client.peer_certificate) == "second" {
                    saw_second.store(true, Ordering::Release);
                }
                for _ in 0..5 {
                    match client.mutate(body.clone()).await {
                        Ok((StatusCode::OK, _)) => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok((status, _)) => {
                            failures.lock().unwrap().push(format!("status {status}"))
                        }
                        Err(err) => failures.lock().unwrap().push(format!("request: {err}")),
                    }
                }
            }
        }));
    }

    // The workers are under way before the first swap.
    eventually_async("requests under the first certificate", WAIT, || {
        completed.load(Ordering::Relaxed) >= 20
    })
    .await;
    let (cert2, key2) = ca.leaf("second");
    dir.update(&[("tls.crt", cert2.as_bytes()), ("tls.key", key2.as_bytes())])
        .unwrap();
    eventually_async(
        "a new handshake to present the new certificate",
        WAIT,
        || saw_second.load(Ordering::Acquire),
    )
    .await;

    // A pair whose key does not match: logged and counted, the second pair keeps serving.
    let (cert3, _) = ca.leaf("third");
    dir.update(&[("tls.crt", cert3.as_bytes()), ("tls.key", key2.as_bytes())])
        .unwrap();
    let metrics = server.components.metrics.clone();
    eventually_async("the bad pair to be counted", WAIT, || {
        metrics
            .certificate_reloads
            .with_label_values(&["failure"])
            .get()
            == 1
    })
    .await;
    // Requests keep succeeding after the bad pair was rejected.
    let after_bad_pair = completed.load(Ordering::Relaxed);
    eventually_async("requests after the bad pair", WAIT, || {
        completed.load(Ordering::Relaxed) >= after_bad_pair + 20
    })
    .await;
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed requests during rotation: {failures:?}"
    );
    assert!(
        completed.load(Ordering::Relaxed) >= 40,
        "too few requests ran"
    );

    let fresh = Client::connect(server.webhook, &ca, Protocol::Http1)
        .await
        .unwrap();
    assert_eq!(
        common_name(&fresh.peer_certificate),
        "second",
        "bad pair not served"
    );
    let (status, body) = established
        .mutate(pod_review("api").to_string())
        .await
        .unwrap();
    assert_mutated(status, &body);
    assert_eq!(
        metrics
            .certificate_reloads
            .with_label_values(&["success"])
            .get(),
        2
    );
    server.stop().await;
}

async fn tls_stream(
    addr: std::net::SocketAddr,
    ca: &TestCa,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(ca.client_config(b"http/1.1"))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection within 10 s");
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

fn short_limits() -> Limits {
    Limits {
        tls_handshake_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

#[tokio::test]
async fn client_sending_half_the_headers_is_disconnected_within_the_header_timeout() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), short_limits(), &ca).await;
    let mut stream = tls_stream(server.webhook, &ca).await;
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        .await
        .unwrap();
    let (_, elapsed) = read_until_closed(&mut stream).await;
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
    server.stop().await;
}

/// An HTTP/1.1 keep-alive connection left quiet past the header timeout still takes the
/// next review: the API server keeps idle connections for 90 s and sends a review on one
/// without warning, and a close from our side that crossed it failed the call (hyper's own
/// header timeout also counted the quiet time). The head itself is still timed, from its
/// first byte.
#[tokio::test]
async fn a_quiet_keep_alive_connection_outlives_the_header_timeout_and_a_head_is_timed_from_its_first_byte(
) {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), short_limits(), &ca).await;
    let mut client = Client::connect(server.webhook, &ca, Protocol::Http1)
        .await
        .unwrap();
    for _ in 0..2 {
        let (status, body) = client.mutate(pod_review("api").to_string()).await.unwrap();
        assert_mutated(status, &body);
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let (status, body) = client.mutate(pod_review("api").to_string()).await.unwrap();
    assert_mutated(status, &body);

    let mut stream = tls_stream(server.webhook, &ca).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        .await
        .unwrap();
    let (_, elapsed) = read_until_closed(&mut stream).await;
    assert!(
        elapsed > Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "the head started 2.5 s after connecting was closed {elapsed:?} after its first byte"
    );
    let metrics = server.components.metrics.encode();
    assert!(
        metrics.contains(r#"pod_identity_webhook_rejected_total{reason="slow_head"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_stalling_the_tls_handshake_is_disconnected() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), short_limits(), &ca).await;
    let mut tcp = TcpStream::connect(server.webhook).await.unwrap();
    let (_, elapsed) = read_until_closed(&mut tcp).await;
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
    server.stop().await;
}

/// 64 HTTP/1.1 connections opened together from one address, as an API server (or a proxy
/// in front of several) opens them in a burst: past the 16 handshakes one address may run at
/// once, the others wait for their turn, and every review is answered (48 were reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_64_http1_connections_from_one_address_is_all_answered() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), Limits::default(), &ca).await;
    let config = ca.client_config(b"http/1.1");
    let source = std::net::IpAddr::from([127, 0, 0, 40]);
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let reviews = (0..64).map(|_| {
        let (config, start) = (config.clone(), start.clone());
        let addr = server.webhook;
        tokio::spawn(async move {
            start.wait().await;
            let mut client = Client::connect_from(source, addr, config, Protocol::Http1).await?;
            client.mutate(pod_review("api").to_string()).await
        })
    });
    let answers = futures::future::join_all(reviews).await;
    for answer in answers {
        let (status, body) = answer.unwrap().expect("connected and answered");
        assert_mutated(status, &body);
    }
    let metrics = server.components.metrics.encode();
    assert!(
        metrics.contains(r#"pod_identity_webhook_rejected_total{reason="handshakes"} 0"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_stalling_the_body_gets_408_within_the_request_timeout() {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), short_limits(), &ca).await;
    let mut stream = tls_stream(server.webhook, &ca).await;
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\":")
        .await
        .unwrap();
    let (response, elapsed) = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    server.stop().await;
}

fn settings(min_version: TlsVersion, cipher_suites: Vec<String>) -> TlsSettings {
    TlsSettings {
        min_version,
        cipher_suites,
    }
}

#[tokio::test]
async fn minimum_tls_1_3_refuses_tls_1_2_clients() {
    let ca = TestCa::new();
    let components = components(service_accounts());
    let store = new_store(&components);
    let (cert, key) = ca.leaf("first");
    store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let config = server_config(&settings(TlsVersion::Tls13, Vec::new()), store.clone()).unwrap();
    let server = TestServer::start_with(components, Limits::default(), config).await;
    let tls12_only = client_config_with(&ca, &[&rustls::version::TLS12], None);
    assert!(
        Client::connect_with(server.webhook, tls12_only, Protocol::Http2)
            .await
            .is_err()
    );
    assert!(Client::connect(server.webhook, &ca, Protocol::Http2)
        .await
        .is_ok());
    server.stop().await;
}

#[tokio::test]
async fn cipher_suite_list_limits_tls_1_2_negotiation() {
    let ca = TestCa::new();
    let components = components(service_accounts());
    let store = new_store(&components);
    let (cert, key) = ca.leaf("first"); // rcgen's default key: ECDSA P-256
    store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let allowed = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string()];
    let config = server_config(&settings(TlsVersion::Tls12, allowed), store.clone()).unwrap();
    let server = TestServer::start_with(components, Limits::default(), config).await;
    let other = client_config_with(
        &ca,
        &[&rustls::version::TLS12],
        Some(rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    );
    assert!(Client::connect_with(server.webhook, other, Protocol::Http2)
        .await
        .is_err());
    let listed = client_config_with(
        &ca,
        &[&rustls::version::TLS12],
        Some(rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    );
    let mut client = Client::connect_with(server.webhook, listed, Protocol::Http2)
        .await
        .unwrap();
    let (status, body) = client.mutate(pod_review("api").to_string()).await.unwrap();
    assert_mutated(status, &body);
    server.stop().await;
}

/// The reference's lenient settings start: minimum 1.0 serves 1.2 and 1.3, and a suite list
/// with CBC and RSA-key-exchange names keeps only what rustls implements.
#[tokio::test]
async fn tls_1_0_minimum_and_cbc_suites_start_and_serve_tls_1_2_and_up() {
    let ca = TestCa::new();
    let components = components(service_accounts());
    let store = new_store(&components);
    let (cert, key) = ca.leaf("first");
    store.set_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let suites: Vec<String> = [
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ]
    .map(String::from)
    .to_vec();
    let config = server_config(&settings(TlsVersion::Tls10, suites), store.clone()).unwrap();
    let server = TestServer::start_with(components, Limits::default(), config).await;
    for versions in [&[&rustls::version::TLS12][..], &[&rustls::version::TLS13]] {
        let client = client_config_with(&ca, versions, None);
        let mut client = Client::connect_with(server.webhook, client, Protocol::Http2)
            .await
            .unwrap();
        let (status, body) = client.mutate(pod_review("api").to_string()).await.unwrap();
        assert_mutated(status, &body);
    }
    let unlisted = client_config_with(
        &ca,
        &[&rustls::version::TLS12],
        Some(rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    );
    assert!(
        Client::connect_with(server.webhook, unlisted, Protocol::Http2)
            .await
            .is_err()
    );
    server.stop().await;
}

fn client_config_with(
    ca: &TestCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suite: Option<rustls::SupportedCipherSuite>,
) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite];
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

#[rstest::rstest]
#[case::http2(Protocol::Http2)]
#[case::http1(Protocol::Http1)]
#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish(#[case] protocol: Protocol) {
    let ca = TestCa::new();
    let server = TestServer::start(components(service_accounts()), Limits::default(), &ca).await;
    let mut client = Client::connect(server.webhook, &ca, protocol)
        .await
        .unwrap();
    let body = pod_review("api").to_string().into_bytes();
    let (half, rest) = body.split_at(body.len() / 2);
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
    tx.unbounded_send(Ok(Frame::data(Bytes::copy_from_slice(half))))
        .unwrap();
    // The client has taken the first half to send: the request is under way.
    let sent_half = Arc::new(AtomicBool::new(false));
    let streaming = {
        let sent_half = sent_half.clone();
        StreamBody::new(rx.inspect(move |_| sent_half.store(true, Ordering::Release)))
            .boxed_unsync()
    };
    let request = tokio::spawn(async move { client.send(mutate_request(streaming)).await });
    eventually_async("the first half of the body to be sent", WAIT, || {
        sent_half.load(Ordering::Acquire)
    })
    .await;

    let readiness = server.components.readiness.clone();
    let webhook = server.webhook;
    let stopping = tokio::spawn(server.stop());
    // Past the 200 ms shutdown delay the listener closes and draining begins.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(webhook).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still open 10 s after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(readiness.is_shutting_down());
    assert!(
        !request.is_finished(),
        "answered before the body was complete"
    );
    tx.unbounded_send(Ok(Frame::data(Bytes::copy_from_slice(rest))))
        .unwrap();
    drop(tx);
    let (status, answer) = request.await.unwrap().unwrap();
    assert_mutated(status, &answer);
    stopping.await.unwrap();
}
