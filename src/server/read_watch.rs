//! A connection whose reads a watcher sees, its writes passing through: the HTTP/2
//! control-frame limit ([`super::h2_guard`]) and the HTTP/1.1 head deadline
//! ([`super::head_deadline`]) each watch a connection this way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a watcher ended its connection: every read from then on fails with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ended {
    pub kind: io::ErrorKind,
    pub message: &'static str,
}

impl Ended {
    fn error(self) -> io::Error {
        io::Error::new(self.kind, self.message)
    }
}

pub(crate) trait ReadWatch {
    /// Sees the outcome of one read of the connection and the bytes it added. `Err` ends the
    /// connection; a watcher may also wait for a deadline through `cx` when the read is
    /// pending.
    fn watch(
        &mut self,
        cx: &mut Context<'_>,
        read: &Poll<io::Result<()>>,
        bytes: &[u8],
    ) -> Result<(), Ended>;
}

/// `inner`, its reads seen by `watch`.
pub(crate) struct Watched<I, W> {
    inner: I,
    watch: W,
    ended: Option<Ended>,
}

impl<I, W> Watched<I, W> {
    pub fn new(inner: I, watch: W) -> Self {
        Self {
            inner,
            watch,
            ended: None,
        }
    }
}

impl<I: AsyncRead + Unpin, W: ReadWatch + Unpin> AsyncRead for Watched<I, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(ended) = self.ended {
            return Poll::Ready(Err(ended.error()));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match this.watch.watch(cx, &read, &buf.filled()[before..]) {
            Ok(()) => read,
            Err(ended) => {
                this.ended = Some(ended);
                Poll::Ready(Err(ended.error()))
            }
        }
    }
}

impl<I: AsyncWrite + Unpin, W: Unpin> AsyncWrite for Watched<I, W> {
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
