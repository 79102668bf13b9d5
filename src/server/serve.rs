//! Accept loops: TCP, optionally TLS, then hyper-util's automatic HTTP/1.1 or HTTP/2 serving
//! of an axum router, with per-connection timeouts and a graceful drain at shutdown.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::Limits;

pub struct Listener {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub router: Router,
}

/// Serves every listener until `stop` completes, then stops accepting and waits up to
/// `drain_timeout` for open connections to finish their in-flight requests (HTTP/1 closes
/// after the current response, HTTP/2 sends GOAWAY).
pub async fn serve(
    listeners: Vec<Listener>,
    limits: &Limits,
    drain_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    let builder = connection_builder(limits);
    let graceful = GracefulShutdown::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let accepting = futures::future::join_all(listeners.into_iter().map(|listener| {
        accept_loop(
            listener,
            &builder,
            limits.tls_handshake_timeout,
            &graceful,
            stop_rx.clone(),
        )
    }));
    let trigger = async {
        stop.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(accepting, trigger);

    let open = graceful.count();
    tracing::info!(open_connections = open, timeout = ?drain_timeout, "stopped accepting; draining open connections");
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => {
            tracing::warn!(timeout = ?drain_timeout, "connections still open after the shutdown timeout; closing them")
        }
    }
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(limits.http2_max_concurrent_streams);
    builder
}

async fn accept_loop(
    listener: Listener,
    builder: &auto::Builder<TokioExecutor>,
    handshake_timeout: Duration,
    graceful: &GracefulShutdown,
    mut stop: watch::Receiver<bool>,
) {
    let Listener {
        listener,
        tls,
        router,
    } = listener;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Taken before the handshake, so a shutdown that starts meanwhile still drains it.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, &builder, router, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, &builder, router, watcher).await,
                        Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    router: Router,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!("connection ended with an error: {err}");
    }
}
