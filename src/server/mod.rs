//! The long-running server: the HTTPS admission endpoint and the plain-HTTP admin port, with
//! their limits and the shutdown sequence. Knows nothing of Kubernetes clients: the
//! ServiceAccount lookup and the cache dump come in as trait objects, so tests run it whole.

pub mod admission;
pub mod router;
mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cache::ServiceAccountLookup;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::settings::MutationSettings;
use crate::sources::LiveSources;
pub use admission::Admission;
pub use router::{admin_router, webhook_router, CacheDumper};

/// Largest accepted AdmissionReview body: 4 MiB. The API server caps stored objects near
/// 3 MiB (etcd's 1.5 MiB request limit, plus the review envelope), so a real review always
/// fits; anything larger is answered 413 without being buffered.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Bounds on what one client can hold: slow or stalled clients are cut off, not waited for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time to send a complete HTTP/1 request head; also how long an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// Time to read the body and answer, once the head is in. The API server gives a webhook
    /// at most 30 s, so nobody waits longer for an answer.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// `/mutate` requests read or answered at once, across all connections; more wait their
    /// turn (within `request_timeout`) with their bodies unread. With `max_body_bytes` this
    /// bounds the buffered bodies (by default 64 × 4 MiB = 256 MiB) however many clients connect.
    pub max_concurrent_reviews: usize,
    /// HTTP/2 PING interval that detects dead peers on idle connections.
    pub http2_keep_alive_interval: Duration,
    /// Requests one HTTP/2 connection may have open at once. The API server opens more
    /// connections when it needs more; this only stops a single one from holding many
    /// request heads and queued bodies.
    pub http2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: MAX_BODY_BYTES,
            max_concurrent_reviews: 64,
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_max_concurrent_streams: 64,
        }
    }
}

/// The parts the routers serve.
#[derive(Clone)]
pub struct Components {
    pub settings: Arc<MutationSettings>,
    pub service_accounts: Arc<dyn ServiceAccountLookup>,
    pub sources: Arc<LiveSources>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Serves `/debug/alpha/cache` when set (`--enable-debugging-handlers`).
    pub cache_dumper: Option<CacheDumper>,
}

impl Components {
    pub fn admission(&self) -> Arc<Admission> {
        Arc::new(Admission {
            settings: self.settings.clone(),
            service_accounts: self.service_accounts.clone(),
            sources: self.sources.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// After SIGTERM: how long to keep accepting (so endpoints drop this pod first), and how long
/// in-flight requests may then take.
#[derive(Clone, Copy, Debug)]
pub struct ShutdownTiming {
    pub delay: Duration,
    pub timeout: Duration,
}

/// Both listeners, bound. Port 0 picks a free port; the addresses tell which.
pub struct Server {
    webhook: TcpListener,
    admin: TcpListener,
}

impl Server {
    pub async fn bind(webhook: SocketAddr, admin: SocketAddr) -> std::io::Result<Self> {
        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address).await.map_err(|err| {
                std::io::Error::new(err.kind(), format!("cannot listen on {address}: {err}"))
            })
        };
        Ok(Self {
            webhook: bind(webhook).await?,
            admin: bind(admin).await?,
        })
    }

    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then: readiness false, keep accepting for
    /// `timing.delay`, stop accepting, let open connections finish their requests for at most
    /// `timing.timeout`, return.
    pub async fn run(
        self,
        tls: Arc<rustls::ServerConfig>,
        components: Components,
        limits: Limits,
        timing: ShutdownTiming,
        shutdown: impl Future<Output = ()>,
    ) {
        let readiness = components.readiness.clone();
        tracing::info!(
            webhook = %self.webhook_addr(),
            metrics = %self.admin_addr(),
            "serving"
        );
        let webhook = webhook_router(&components, &limits);
        let admin = admin_router(&components);
        let sequence = async {
            shutdown.await;
            readiness.set_shutting_down();
            tracing::info!(delay = ?timing.delay, "shutting down: not ready; still accepting connections for the shutdown delay");
            tokio::time::sleep(timing.delay).await;
        };
        serve::serve(
            vec![
                serve::Listener {
                    listener: self.webhook,
                    tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
                    router: webhook,
                },
                serve::Listener {
                    listener: self.admin,
                    tls: None,
                    router: admin,
                },
            ],
            &limits,
            timing.timeout,
            sequence,
        )
        .await;
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!("cannot listen for SIGTERM: {err}; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
