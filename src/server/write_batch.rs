//! A connection's writes gathered and sent once per turn of its task. h2 copies small frames
//! into its own buffer, but writes a DATA frame over 256 bytes (every review answer) straight
//! away and flushes after it: with several answers ready at once, each still became its own
//! TLS record and its own system call. Through [`BatchedWrites`], what hyper writes and
//! flushes during one poll of the connection is kept in a buffer, and [`WriteFlusher`]
//! sends it in one write when that poll ends (see `serve::drive`). HTTP/2 connections only:
//! see [`Unbatched`].
//!
//! Nothing waits on a write that has not been made: the connection is polled only through
//! `drive`, which flushes after every poll, so the task never sleeps with bytes held here.
//! At most [`HELD_BYTES`] are held: a write that finds the buffer full first sends it, and
//! waits for the socket like any other write would. So a client that does not read its
//! answers holds at most 16 KiB more than it would without this buffer.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held, and the buffer's largest capacity (it is kept between polls): one
/// full TLS record, about eight small answers.
const HELD_BYTES: usize = 16 * 1024;

struct Shared<I> {
    io: I,
    held: Vec<u8>,
    /// Written since the layer below was last flushed. The TLS layer can take bytes and
    /// still hold some of them, so an empty `held` alone does not mean all has been sent.
    unflushed: bool,
}

/// The connection's I/O as hyper sees it: reads pass through, writes are held.
pub struct BatchedWrites<I> {
    shared: Arc<Mutex<Shared<I>>>,
}

/// Sends what [`BatchedWrites`] holds; called by the task that polls the connection.
pub struct WriteFlusher<I> {
    shared: Arc<Mutex<Shared<I>>>,
}

pub fn batched_writes<I>(io: I) -> (BatchedWrites<I>, WriteFlusher<I>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        held: Vec::new(),
        unflushed: false,
    }));
    (
        BatchedWrites {
            shared: shared.clone(),
        },
        WriteFlusher { shared },
    )
}

/// The lock is never contended (one task uses both halves) and nothing in it can be left
/// half-done by a panic that matters more than the connection, so poisoning is ignored.
fn lock<I>(shared: &Mutex<Shared<I>>) -> MutexGuard<'_, Shared<I>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<I: AsyncWrite + Unpin> Shared<I> {
    /// Writes out everything held, then flushes the layer below.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.held.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.held[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(err)) => break Poll::Ready(Err(err)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.held.drain(..sent);
        ready!(result)?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    /// Takes as much of `buf` as fits; how much that was.
    fn hold(&mut self, buf: &[u8]) -> usize {
        let taken = buf.len().min(HELD_BYTES - self.held.len());
        let wanted = self.held.len() + taken;
        if wanted > self.held.capacity() {
            let capacity = (self.held.capacity() * 2).clamp(wanted, HELD_BYTES);
            self.held.reserve_exact(capacity - self.held.len());
        }
        self.held.extend_from_slice(&buf[..taken]);
        self.unflushed |= taken > 0;
        taken
    }

    /// Room for more: the buffer is not full, or what it held has been sent.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.held.len() == HELD_BYTES {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// What the connection's task sends after each poll of the connection.
pub trait HeldWrites {
    /// Sends what is held. Pending when the socket is full: its readiness wakes the task,
    /// whose next poll ends here again.
    fn poll_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl<I: AsyncWrite + Unpin> HeldWrites for WriteFlusher<I> {
    fn poll_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        if !shared.unflushed {
            return Poll::Ready(Ok(()));
        }
        shared.poll_send(cx)
    }
}

/// HTTP/1.1 answers one request at a time per connection, and hyper already writes each
/// answer in one call: nothing to gather, so its I/O is not wrapped.
pub struct Unbatched;

impl HeldWrites for Unbatched {
    fn poll_send(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for BatchedWrites<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.shared).io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_room(cx))?;
        Poll::Ready(Ok(shared.hold(buf)))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_room(cx))?;
        let mut taken = 0;
        for buf in bufs {
            let n = shared.hold(buf);
            taken += n;
            if n < buf.len() {
                break;
            }
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Held until the poll ends; `drive` sends it then.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_send(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// The layer below: records each write it is given, and can be made to refuse writes
    /// (a full socket) or flushes (TLS bytes still waiting) until told otherwise.
    #[derive(Default)]
    struct Wire {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        writes_blocked: bool,
        flushes_blocked: bool,
        shut_down: bool,
    }

    struct WireIo(Arc<Mutex<Wire>>);

    impl AsyncWrite for WireIo {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut wire = self.0.lock().unwrap();
            if wire.writes_blocked {
                return Poll::Pending;
            }
            wire.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let mut wire = self.0.lock().unwrap();
            if wire.flushes_blocked {
                return Poll::Pending;
            }
            wire.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.0.lock().unwrap().shut_down = true;
            Poll::Ready(Ok(()))
        }
    }

    fn wire() -> (
        Arc<Mutex<Wire>>,
        BatchedWrites<WireIo>,
        WriteFlusher<WireIo>,
    ) {
        let wire = Arc::new(Mutex::new(Wire::default()));
        let (io, flusher) = batched_writes(WireIo(wire.clone()));
        (wire, io, flusher)
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn write(io: &mut BatchedWrites<WireIo>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(&mut cx(), bytes)
    }

    #[test]
    fn what_one_poll_writes_and_flushes_leaves_in_one_write_after_it() {
        let (wire, mut io, flusher) = wire();
        assert!(matches!(write(&mut io, b"headers "), Poll::Ready(Ok(8))));
        let slices = [IoSlice::new(b"frame "), IoSlice::new(b"body")];
        let vectored = Pin::new(&mut io).poll_write_vectored(&mut cx(), &slices);
        assert!(matches!(vectored, Poll::Ready(Ok(10))));
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx()),
            Poll::Ready(Ok(()))
        ));
        assert!(
            wire.lock().unwrap().writes.is_empty(),
            "held until the poll ends"
        );
        assert!(matches!(flusher.poll_send(&mut cx()), Poll::Ready(Ok(()))));
        let sent = std::mem::take(&mut *wire.lock().unwrap());
        assert_eq!(sent.writes, vec![b"headers frame body".to_vec()]);
        assert_eq!(sent.flushes, 1);
        // Nothing new: no write, no flush.
        assert!(matches!(flusher.poll_send(&mut cx()), Poll::Ready(Ok(()))));
        assert_eq!(wire.lock().unwrap().flushes, 0);
    }

    #[test]
    fn a_flush_the_layer_below_could_not_finish_is_retried_with_nothing_held() {
        let (wire, mut io, flusher) = wire();
        wire.lock().unwrap().flushes_blocked = true;
        assert!(write(&mut io, b"answer").is_ready());
        assert!(flusher.poll_send(&mut cx()).is_pending());
        assert_eq!(wire.lock().unwrap().writes, vec![b"answer".to_vec()]);
        wire.lock().unwrap().flushes_blocked = false;
        assert!(matches!(flusher.poll_send(&mut cx()), Poll::Ready(Ok(()))));
        assert_eq!(wire.lock().unwrap().flushes, 1);
    }

    #[test]
    fn a_full_buffer_is_sent_before_more_is_taken_and_waits_for_the_socket() {
        let (wire, mut io, flusher) = wire();
        wire.lock().unwrap().writes_blocked = true;
        let chunk = vec![7u8; 10 * 1024];
        assert!(matches!(write(&mut io, &chunk), Poll::Ready(Ok(n)) if n == chunk.len()));
        let rest = HELD_BYTES - chunk.len();
        assert!(matches!(write(&mut io, &chunk), Poll::Ready(Ok(n)) if n == rest));
        assert!(
            write(&mut io, &chunk).is_pending(),
            "full, and the socket takes nothing"
        );
        assert!(flusher.poll_send(&mut cx()).is_pending());
        assert_eq!(lock(&flusher.shared).held.capacity(), HELD_BYTES);
        wire.lock().unwrap().writes_blocked = false;
        assert!(matches!(write(&mut io, b"next"), Poll::Ready(Ok(4))));
        assert_eq!(wire.lock().unwrap().writes.concat().len(), HELD_BYTES);
        assert!(flusher.poll_send(&mut cx()).is_ready());
        assert_eq!(wire.lock().unwrap().writes.last().unwrap(), b"next");
    }

    #[test]
    fn a_vectored_write_takes_what_fits_in_order() {
        let (wire, mut io, flusher) = wire();
        let big = vec![1u8; HELD_BYTES - 2];
        let slices = [
            IoSlice::new(&big),
            IoSlice::new(b"abcd"),
            IoSlice::new(b"ef"),
        ];
        let taken = Pin::new(&mut io).poll_write_vectored(&mut cx(), &slices);
        assert!(matches!(taken, Poll::Ready(Ok(n)) if n == HELD_BYTES));
        assert!(flusher.poll_send(&mut cx()).is_ready());
        assert!(wire.lock().unwrap().writes[0].ends_with(&[1, b'a', b'b']));
    }

    #[test]
    fn shutdown_sends_what_is_held_first() {
        let (wire, mut io, _flusher) = wire();
        assert!(write(&mut io, b"goaway").is_ready());
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx()).is_ready());
        let wire = wire.lock().unwrap();
        assert_eq!(wire.writes, vec![b"goaway".to_vec()]);
        assert!(wire.shut_down);
    }
}
