//! The long-running server: the HTTPS admission endpoint and the plain-HTTP admin port, with
//! their limits and the shutdown sequence. Knows nothing of Kubernetes clients: the
//! ServiceAccount lookup and the cache dump come in as trait objects, so tests run it whole.

pub mod admission;
mod coalesce;
mod h2_guard;
mod head_deadline;
pub mod limits;
mod low_port;
mod read_watch;
pub mod review;
pub mod router;
mod serve;
pub mod tls;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::core::settings::MutationSettings;
use crate::ops::health::Readiness;
use crate::ops::metrics::Metrics;
use crate::sources::service_accounts::ServiceAccountLookup;
use crate::sources::WatchedConfig;
pub use admission::Admission;
pub use router::{admin_router, webhook_router, CacheDumper, PeerAddr};

/// Largest accepted AdmissionReview body: 4 MiB. The API server caps stored objects near
/// 3 MiB (etcd's 1.5 MiB request limit, plus the review envelope), so a real review always
/// fits; anything larger is answered 413 without being buffered.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Bounds on what one client can hold: slow or stalled clients are cut off, not waited for.
/// A connection over a connection or handshake cap waits for its turn until the handshake
/// deadline, and the turns are shared fairly between client addresses (`limits::ConnectionGate`);
/// a request over a memory or concurrency limit is refused at once. docs/hardening.md gives
/// the reasoning and measurements behind each default.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time from accepting a connection to the end of its TLS handshake, waiting for a
    /// connection slot and a handshake turn included.
    pub tls_handshake_timeout: Duration,
    /// Time from accepting a connection to its first complete request head.
    pub first_request_timeout: Duration,
    /// Time a connection with no request in progress stays open: longer than the API server's
    /// idle keep-alive, so that it is the one closing its idle connections.
    pub idle_timeout: Duration,
    /// Time to send a complete HTTP/1 request head, from its first byte ([`head_deadline`]).
    pub header_read_timeout: Duration,
    /// Time to read the body and answer, once the head is in. The API server gives a webhook
    /// at most 30 s, so nobody waits longer for an answer.
    pub request_timeout: Duration,
    /// Time to receive a whole request body.
    pub body_timeout: Duration,
    /// Slowest accepted body upload, in bytes per second, averaged from the head's arrival
    /// once `min_body_rate_grace` has passed.
    pub min_body_rate: u64,
    pub min_body_rate_grace: Duration,
    pub max_body_bytes: usize,
    /// Memory for request bodies in flight across all connections: bytes still arriving, and
    /// bodies being answered counted at their parsed size. Fits in the chart's 128Mi limit.
    pub max_inflight_body_bytes: usize,
    /// Of which one peer address may hold with bodies still arriving.
    pub max_inflight_body_bytes_per_peer: usize,
    /// `/mutate` requests answered at once, bodies already in memory; one more gets 503.
    pub max_concurrent_reviews: usize,
    /// Open connections to the webhook port, overall and from one peer address; a connection
    /// arriving beyond waits for its turn.
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// TLS handshakes in progress, overall and from one peer address; a connection arriving
    /// beyond waits for its turn.
    pub max_handshakes: usize,
    pub max_handshakes_per_peer: usize,
    /// HTTP/2 PING interval that detects dead peers on idle connections.
    pub http2_keep_alive_interval: Duration,
    /// Requests one HTTP/2 connection may have open at once. The API server opens more
    /// connections when it needs more.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control windows: what a peer may send before we read it.
    pub http2_stream_window: u32,
    pub http2_connection_window: u32,
    /// Largest request head: HTTP/2 header list, HTTP/1 read buffer.
    pub max_header_bytes: u32,
    /// HTTP/2 SETTINGS, PING, RST_STREAM and PRIORITY frames one connection may send per
    /// second (bursts of twice that); a connection over it is closed.
    pub http2_max_control_frames_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: Duration::from_secs(5),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            min_body_rate: 16 * 1024,
            min_body_rate_grace: Duration::from_secs(2),
            max_body_bytes: MAX_BODY_BYTES,
            max_inflight_body_bytes: 48 * 1024 * 1024,
            max_inflight_body_bytes_per_peer: 16 * 1024 * 1024,
            max_concurrent_reviews: 64,
            max_connections: 512,
            max_connections_per_peer: 64,
            max_handshakes: 256,
            max_handshakes_per_peer: 16,
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_max_concurrent_streams: 32,
            http2_stream_window: 64 * 1024,
            http2_connection_window: 256 * 1024,
            max_header_bytes: 32 * 1024,
            http2_max_control_frames_per_second: 100,
        }
    }
}

/// The parts the routers serve.
#[derive(Clone)]
pub struct Components {
    pub settings: Arc<MutationSettings>,
    pub service_accounts: Arc<dyn ServiceAccountLookup>,
    pub watched_config: Arc<WatchedConfig>,
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
            watched_config: self.watched_config.clone(),
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
        Self::listen(
            Some(webhook.ip()),
            webhook.port(),
            Some(admin.ip()),
            admin.port(),
        )
        .await
    }

    /// Binds both ports; an address of `None` means every IPv6 and IPv4 address (see
    /// [`serve::listen`]).
    pub async fn listen(
        webhook_ip: Option<IpAddr>,
        webhook_port: u16,
        admin_ip: Option<IpAddr>,
        admin_port: u16,
    ) -> std::io::Result<Self> {
        let bind = |ip: Option<IpAddr>, port: u16| {
            serve::listen(ip, port).map_err(|err| {
                let at = ip.map_or_else(
                    || format!("port {port}"),
                    |ip| SocketAddr::new(ip, port).to_string(),
                );
                std::io::Error::new(err.kind(), format!("cannot listen on {at}: {err}"))
            })
        };
        Ok(Self {
            webhook: bind(webhook_ip, webhook_port)?,
            admin: bind(admin_ip, admin_port)?,
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
        let rejections = Arc::new(limits::RejectionLog::new(components.metrics.clone()));
        let webhook_gate = Arc::new(limits::ConnectionGate::new(
            limits.max_connections,
            limits.max_connections_per_peer,
            limits.max_handshakes,
            limits.max_handshakes_per_peer,
        ));
        // The admin port serves probes and scrapes: a few connections are plenty.
        let admin_gate = Arc::new(limits::ConnectionGate::new(64, 16, 0, 0));
        serve::serve(
            vec![
                serve::Listener {
                    listener: self.webhook,
                    tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
                    router: webhook,
                    gate: webhook_gate,
                },
                serve::Listener {
                    listener: self.admin,
                    tls: None,
                    router: admin,
                    gate: admin_gate,
                },
            ],
            &limits,
            rejections,
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
