//! Listening sockets and accept loops: TCP (both IP families by default), optionally TLS, then
//! HTTP/1.1 or HTTP/2 (by ALPN) serving of a port's router, with connection and handshake
//! turns shared fairly between addresses ([`ConnectionGate`]), per-connection deadlines and a
//! graceful drain at shutdown.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::util::Oneshot;
use tower::ServiceExt;

use super::coalesce::CoalescedWrites;
use super::h2_guard::ControlFrames;
use super::head_deadline::HeadDeadline;
use super::limits::{Activity, ConnectionGate, ConnectionSlot, Rejection, RejectionLog, Turn};
use super::read_watch::Watched;
use super::router::PeerAddr;
use super::Limits;

/// A listener on `port`: at `ip` when given; otherwise on every address of both families, as
/// the reference's `:port` does, so IPv6-only and dual-stack clusters reach it too. That is
/// one IPv6 socket with `IPV6_V6ONLY` off (IPv4 clients arrive as `::ffff:a.b.c.d`), or every
/// IPv4 address where the machine has no IPv6.
pub fn listen(ip: Option<IpAddr>, port: u16) -> io::Result<TcpListener> {
    match ip {
        Some(ip) => bind_socket(SocketAddr::new(ip, port), false),
        None => listen_any(port, bind_socket),
    }
}

/// The dual-stack attempt and its IPv4 fallback, with the binding step passed in so tests can
/// stand in for a machine without IPv6. Errors that IPv4 would meet as well (the port is
/// taken, or privileged) are returned as they are.
fn listen_any(
    port: u16,
    bind: impl Fn(SocketAddr, bool) -> io::Result<TcpListener>,
) -> io::Result<TcpListener> {
    let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match bind(any6, true) {
        Ok(listener) => Ok(listener),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
            ) =>
        {
            Err(err)
        }
        Err(v6_error) => {
            let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            tracing::info!(port, "no IPv6 here ({v6_error}): listening on IPv4 only");
            bind(any4, false)
        }
    }
}

fn bind_socket(address: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    if address.port() < 1024 {
        super::low_port::allow_binding();
    }
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // As Go and tokio do, so a restarted webhook does not wait for old connections' TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

pub(crate) struct Listener {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub router: Router,
    /// Connections (overall, per peer) and handshakes this listener may hold.
    pub gate: Arc<ConnectionGate>,
}

/// Serves every listener until `stop` completes, then stops accepting and waits up to
/// `drain_timeout` for open connections to finish their in-flight requests (HTTP/1 closes
/// after the current response, HTTP/2 sends GOAWAY).
pub async fn serve(
    listeners: Vec<Listener>,
    limits: &Limits,
    rejections: Arc<RejectionLog>,
    drain_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let gates: Vec<Arc<ConnectionGate>> = listeners.iter().map(|l| l.gate.clone()).collect();
    let accepting = futures::future::join_all(
        listeners
            .into_iter()
            .map(|listener| accept_loop(listener, limits, rejections.clone(), stop_rx.clone())),
    );
    let trigger = async {
        stop.await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(accepting, trigger);

    let open: usize = gates.iter().map(|gate| gate.open()).sum();
    tracing::info!(open_connections = open, timeout = ?drain_timeout, "stopped accepting; draining open connections");
    let drained = futures::future::join_all(gates.iter().map(|gate| gate.closed()));
    match tokio::time::timeout(drain_timeout, drained).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => {
            tracing::warn!(timeout = ?drain_timeout, "connections still open after the shutdown timeout; closing them")
        }
    }
}

/// The HTTP/1.1 and HTTP/2 settings. Which of the two a connection speaks is decided by ALPN
/// (TLS) or is HTTP/1.1 (plain admin port), never by reading the first bytes, which would be a
/// read without a deadline.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's would also count the quiet time between requests: [`HeadDeadline`] instead.
        .header_read_timeout(None)
        .max_buf_size((limits.max_header_bytes as usize).max(8192))
        .max_headers(100)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .adaptive_window(false)
        .initial_stream_window_size(limits.http2_stream_window)
        .initial_connection_window_size(limits.http2_connection_window)
        .max_header_list_size(limits.max_header_bytes)
        .max_send_buf_size(64 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256);
    builder
}

async fn accept_loop(
    listener: Listener,
    limits: &Limits,
    rejections: Arc<RejectionLog>,
    mut stop: watch::Receiver<bool>,
) {
    let Listener {
        listener,
        tls,
        router,
        gate,
    } = listener;
    let builder = connection_builder(limits);
    let http1 = builder.clone().http1_only();
    let http2 = builder.http2_only();
    let _keeper = AbortOnDrop(tokio::spawn(gate.clone().keep()));
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
        let accepted_at = tokio::time::Instant::now();
        let ip = canonical_ip(peer.ip());
        let turn = match gate.admit(ip) {
            Ok(turn) => turn,
            Err(reason) => {
                rejections.reject(
                    reason,
                    Some(ip),
                    "connection limit reached and as many waiting; closed",
                );
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let arrival = Arrival {
            turn,
            gate: gate.clone(),
            tls: tls.clone(),
            http1: http1.clone(),
            http2: http2.clone(),
        };
        let context = ConnectionContext {
            peer: ip,
            accepted_at,
            router: router.clone(),
            limits: limits.clone(),
            stop: stop.clone(),
            rejections: rejections.clone(),
        };
        tokio::spawn(connect(stream, arrival, context));
    }
}

/// Aborts the task when dropped: the gate's keeper lives as long as its accept loop.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What an accepted connection needs to get going: its turn at the gate, the TLS acceptor
/// (none on the plain admin port) and the HTTP settings.
struct Arrival {
    turn: Turn<ConnectionSlot>,
    gate: Arc<ConnectionGate>,
    tls: Option<TlsAcceptor>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

/// Takes the connection's turn at the gate and its TLS handshake, then serves it. A
/// connection over a cap waits for a slot, then for a handshake turn, until the handshake
/// deadline (`tls_handshake_timeout` after accept, the waits included); one the gate asks to
/// give way while it waits or handshakes is closed at once.
async fn connect(stream: TcpStream, arrival: Arrival, context: ConnectionContext) {
    let Arrival {
        turn,
        gate,
        tls,
        http1,
        http2,
    } = arrival;
    let (ip, rejections) = (context.peer, context.rejections.clone());
    let deadline = context.accepted_at + context.limits.tls_handshake_timeout;
    let slot = match turn.until(deadline).await {
        Ok(slot) => slot,
        Err(reason) => {
            rejections.reject(
                reason,
                Some(ip),
                "connection limit reached; no turn in time; closed",
            );
            return;
        }
    };
    let Some(acceptor) = tls else {
        let stream = head_deadline(stream, &slot, &context);
        serve_connection(stream, &http1, context, slot).await;
        return;
    };
    let handshake = async {
        let permit = gate.handshake(&slot).until(deadline).await?;
        let stream = tokio::time::timeout_at(deadline, acceptor.accept(stream))
            .await
            .map_err(|_| Rejection::HandshakeTimeout)?;
        drop(permit);
        Ok(stream)
    };
    let stream = tokio::select! {
        handshake = handshake => handshake,
        _ = slot.displaced() => Err(Rejection::Displaced),
    };
    match stream {
        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
            let per_second = context.limits.http2_max_control_frames_per_second;
            let guarded = Watched::new(stream, ControlFrames::new(per_second, rejections, ip));
            serve_connection(CoalescedWrites::new(guarded), &http2, context, slot).await;
        }
        Ok(Ok(stream)) => {
            let stream = head_deadline(stream, &slot, &context);
            serve_connection(stream, &http1, context, slot).await;
        }
        Ok(Err(err)) => tracing::debug!(peer = %ip, "TLS handshake failed: {err}"),
        Err(reason) => rejections.reject(reason, Some(ip), refusal_detail(reason)),
    }
}

/// An HTTP/1.1 connection's reads, under the deadline of each request head.
fn head_deadline<I>(
    io: I,
    slot: &ConnectionSlot,
    context: &ConnectionContext,
) -> Watched<I, HeadDeadline> {
    let timeout = context.limits.header_read_timeout;
    let rejections = context.rejections.clone();
    let deadline = HeadDeadline::new(slot.activity(), timeout, rejections, context.peer);
    Watched::new(io, deadline)
}

/// Why a connection was closed before its handshake completed.
fn refusal_detail(reason: Rejection) -> &'static str {
    match reason {
        Rejection::Handshakes => "too many TLS handshakes in progress; no turn in time; closed",
        Rejection::Displaced => {
            "TLS handshake running long closed to make room for another address's"
        }
        _ => "TLS handshake not completed in time; closed",
    }
}

/// IPv4 clients of a dual-stack socket arrive as `::ffff:a.b.c.d`; counted as the IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

struct ConnectionContext {
    peer: IpAddr,
    accepted_at: tokio::time::Instant,
    router: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
    rejections: Arc<RejectionLog>,
}

/// Serves one connection until it ends, the server stops, the gate asks it to make room for
/// another address's, or it goes without a request for too long: `first_request_timeout` from
/// accept, then `idle_timeout` after each response. Each of these starts a graceful close
/// (HTTP/1.1 after the request in progress, HTTP/2 GOAWAY), cut off after one second (the
/// request timeout at shutdown). The connection's place in the gate, `slot`, is given back
/// when it ends.
async fn serve_connection<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    context: ConnectionContext,
    slot: ConnectionSlot,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnectionContext {
        peer,
        accepted_at,
        router,
        limits,
        mut stop,
        rejections,
    } = context;
    let activity = slot.activity();
    let service = Tracked {
        router,
        peer,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut deadline = accepted_at + limits.first_request_timeout;
    let closing = loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, "connection ended with an error: {err}");
                }
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = tokio::time::Instant::now();
                match activity.quiet_until(now, limits.idle_timeout) {
                    Some(later) if later > now => deadline = later,
                    _ => {
                        rejections.reject(Rejection::Idle, Some(peer), "no request within the connection deadline; closed");
                        break "idle";
                    }
                }
            }
            _ = slot.displaced() => {
                rejections.reject(Rejection::Displaced, Some(peer), "quiet connection closed to make room for another address's");
                break "displaced";
            }
            _ = stop.wait_for(|stopped| *stopped) => break "shutdown",
        }
    };
    tracing::debug!(%peer, reason = closing, "closing connection");
    connection.as_mut().graceful_shutdown();
    let grace = if closing == "shutdown" {
        // At shutdown, in-flight requests get the drain timeout, which `serve` bounds.
        limits.request_timeout
    } else {
        Duration::from_secs(1)
    };
    let _ = tokio::time::timeout(grace, connection.as_mut()).await;
}

/// A connection's service: each request answered by the port's router, marked with the
/// connection's peer address ([`PeerAddr`]), and the connection's [`Activity`] kept up to date
/// for its idle deadline.
struct Tracked {
    router: Router,
    peer: IpAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<http::Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = InFlight;

    fn call(&self, mut request: http::Request<Incoming>) -> InFlight {
        self.activity.started();
        request.extensions_mut().insert(PeerAddr(self.peer));
        InFlight {
            answer: self.router.clone().oneshot(request),
            activity: self.activity.clone(),
        }
    }
}

/// A request's answer in progress; its end is marked in the connection's [`Activity`] when
/// dropped, however it ends.
struct InFlight {
    answer: Oneshot<Router, http::Request<Incoming>>,
    activity: Arc<Activity>,
}

impl Future for InFlight {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer).poll(cx)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_ipv6_the_default_falls_back_to_ipv4() {
        let no_ipv6 = |address: SocketAddr, dual: bool| {
            if address.is_ipv6() {
                assert!(dual, "the IPv6 attempt is dual-stack");
                Err(io::Error::from_raw_os_error(97)) // EAFNOSUPPORT
            } else {
                bind_socket(address, dual)
            }
        };
        let listener = listen_any(0, no_ipv6).unwrap();
        let address = listener.local_addr().unwrap();
        assert_eq!(address.ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, address.port()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_port_in_use_is_reported_not_retried_on_ipv4() {
        let taken = |_: SocketAddr, _: bool| Err(io::Error::from(io::ErrorKind::AddrInUse));
        let err = listen_any(0, taken).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
