//! The deadline of an HTTP/1.1 request head, counted from its first byte.
//!
//! hyper's own header-read timeout also counts the quiet time before a keep-alive
//! connection's next request, so it closed the API server's idle connections a few seconds
//! after their last answer. The API server may send a review on such a connection just as it
//! closes; it does not send a POST again, so the call fails and, under
//! `failurePolicy: Ignore`, the pod is admitted without credentials. Here the deadline starts
//! only when bytes arrive with no request in progress, and a quiet connection is left to the
//! idle deadline, which is longer than the API server's own idle keep-alive so that the API
//! server is the one that closes it.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::limits::{Activity, Rejection, RejectionLog};

/// The server side of an HTTP/1.1 connection, reading through the head deadline.
pub(crate) struct HeadDeadline<I> {
    inner: I,
    activity: Arc<Activity>,
    timeout: Duration,
    /// While a head is arriving: the connection's count of begun requests when it started.
    /// Once that count moves, the head has arrived whole.
    arriving: Option<u64>,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
    rejections: Arc<RejectionLog>,
    peer: IpAddr,
}

impl<I> HeadDeadline<I> {
    pub fn new(
        inner: I,
        activity: Arc<Activity>,
        timeout: Duration,
        rejections: Arc<RejectionLog>,
        peer: IpAddr,
    ) -> Self {
        Self {
            inner,
            activity,
            timeout,
            arriving: None,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
            rejections,
            peer,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeadDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired {
            return Poll::Ready(Err(slow_head_error()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let begun = this.activity.begun();
        if this.arriving.is_some_and(|at| at != begun) {
            this.arriving = None;
        }
        let read = matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        if read && this.arriving.is_none() && this.activity.is_quiet() {
            // The first bytes of a head.
            this.arriving = Some(begun);
            let at = Instant::now() + this.timeout;
            this.deadline.as_mut().reset(at);
        } else if result.is_pending()
            && this.arriving.is_some()
            && this.deadline.as_mut().poll(cx).is_ready()
        {
            this.expired = true;
            this.rejections.reject(
                Rejection::SlowHead,
                Some(this.peer),
                "request head not received whole within the header deadline from its first byte; connection closed",
            );
            return Poll::Ready(Err(slow_head_error()));
        }
        result
    }
}

fn slow_head_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "request head not received within the header deadline",
    )
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
