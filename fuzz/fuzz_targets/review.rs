//! The whole review path: bytes in as a `POST /mutate` body, through the webhook router (body
//! limits, decoding, the ServiceAccount lookup in memory, the engine, encoding), response bytes
//! out. Any body gets an HTTP answer; a 200 is always an AdmissionReview in JSON.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use pod_identity_webhook::core::identity::ServiceAccountAnnotations;
use pod_identity_webhook::core::settings::MutationSettings;
use pod_identity_webhook::ops::health::Readiness;
use pod_identity_webhook::ops::metrics::Metrics;
use pod_identity_webhook::server::{webhook_router, Components, Limits};
use pod_identity_webhook::sources::service_accounts::FixedServiceAccounts;
use pod_identity_webhook::sources::WatchedConfig;
use tower::ServiceExt;

struct Setup {
    runtime: tokio::runtime::Runtime,
    router: Router,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut accounts = FixedServiceAccounts::default();
        accounts.insert(
            "payments",
            "api",
            ServiceAccountAnnotations {
                role_arn: Some("arn:aws:iam::111122223333:role/payments-api".into()),
                ..Default::default()
            },
        );
        let components = Components {
            settings: Arc::new(MutationSettings::default()),
            service_accounts: Arc::new(accounts),
            watched_config: Arc::new(WatchedConfig::default()),
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::default()),
            cache_dumper: None,
        };
        Setup {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap(),
            router: webhook_router(&components, &Limits::default()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let request = axum::http::Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
        .unwrap();
    let (status, body) = setup.runtime.block_on(async {
        let response = setup.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    });
    match status.as_u16() {
        200 => {
            let review: serde_json::Value =
                serde_json::from_slice(&body).expect("a 200 answer is JSON");
            assert_eq!(review["kind"], "AdmissionReview", "{review}");
            assert!(review["response"]["uid"].is_string(), "{review}");
        }
        400 | 413 => {}
        other => panic!(
            "unexpected status {other}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
});
