//! An HTTP/2 connection's answers written together: writes are held until a flush, and a flush
//! waits one turn of the runtime's queue before it sends them.
//!
//! hyper answers each HTTP/2 request in a task of its own. A finished request wakes its
//! connection's task, which Tokio runs next (its LIFO slot), before the connection's other
//! finished requests; and h2 flushes after every answer with a body of any size. Each answer
//! then costs a TLS record and a system call of its own. Held here, and the flush sent to the
//! back of the queue (a task that wakes itself is requeued behind the ready ones), the
//! answers finished meanwhile go out in one write. Tokio's own switch for this
//! (`disable_lifo_slot`) is not stable, and hyper has no such setting.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before a write goes through without waiting for the flush: room for several
/// small answers, and little beside what TLS already buffers for a client that reads slowly.
/// A held buffer whose capacity grew past it is freed once sent, so idle connections keep
/// little.
const HOLD_LIMIT: usize = 16 * 1024;

/// The writing side of a connection, coalesced as the module describes; reads pass through.
pub(crate) struct CoalescedWrites<IO> {
    io: IO,
    held: Vec<u8>,
    /// The current flush has already waited its turn.
    waited: bool,
}

impl<IO> CoalescedWrites<IO> {
    pub(crate) fn new(io: IO) -> Self {
        Self {
            io,
            held: Vec::new(),
            waited: false,
        }
    }
}

impl<IO: AsyncWrite + Unpin> CoalescedWrites<IO> {
    /// Writes out everything held.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        while sent < self.held.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.held[sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    self.held.drain(..sent);
                    return Poll::Pending;
                }
            }
        }
        if self.held.capacity() > HOLD_LIMIT {
            self.held = Vec::new();
        } else {
            self.held.clear();
        }
        Poll::Ready(Ok(()))
    }

    /// Holds a write, or once what is held would pass the limit, sends what is held and then
    /// passes a large write on as it is (a large answer is not copied to be held).
    fn poll_hold(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|buf| buf.len()).sum();
        if self.held.len() + len > HOLD_LIMIT {
            std::task::ready!(self.poll_send(cx))?;
            if len >= HOLD_LIMIT {
                return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
            }
        }
        for buf in bufs {
            self.held.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CoalescedWrites<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_hold(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_hold(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.held.is_empty() && !self.waited {
            self.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(self.poll_send(cx))?;
        self.waited = false;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    /// Records each write it is given.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn writes(recorder: &Recorder) -> Vec<Vec<u8>> {
        recorder.0.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn writes_are_held_until_a_flush_and_sent_in_one() {
        let recorder = Recorder::default();
        let mut io = CoalescedWrites::new(recorder.clone());
        io.write_all(b"first ").await.unwrap();
        let taken = io
            .write_vectored(&[IoSlice::new(b"second "), IoSlice::new(b"third")])
            .await
            .unwrap();
        assert_eq!(taken, 12, "every slice taken at once");
        assert!(writes(&recorder).is_empty());
        io.flush().await.unwrap();
        assert_eq!(writes(&recorder), vec![b"first second third".to_vec()]);
        io.flush().await.unwrap();
        assert_eq!(writes(&recorder).len(), 1, "nothing held, nothing sent");
    }

    #[tokio::test]
    async fn a_flush_waits_one_turn_and_wakes_itself() {
        let recorder = Recorder::default();
        let mut io = CoalescedWrites::new(recorder.clone());
        io.write_all(b"answer").await.unwrap();
        let woken = Arc::new(AtomicUsize::new(0));
        let waker = waker_counting(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
        assert_eq!(woken.load(Ordering::SeqCst), 1, "asks to be polled again");
        assert!(writes(&recorder).is_empty());
        assert!(matches!(
            Pin::new(&mut io).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(writes(&recorder), vec![b"answer".to_vec()]);
    }

    #[tokio::test]
    async fn past_the_hold_limit_what_is_held_goes_first_and_a_large_write_goes_through() {
        let recorder = Recorder::default();
        let mut io = CoalescedWrites::new(recorder.clone());
        let large = vec![7u8; HOLD_LIMIT];
        io.write_all(b"small").await.unwrap();
        assert!(writes(&recorder).is_empty());
        io.write_all(&large).await.unwrap();
        assert_eq!(writes(&recorder), vec![b"small".to_vec(), large.clone()]);
        io.write_all(&large[..HOLD_LIMIT - 1]).await.unwrap();
        io.write_all(b"more").await.unwrap();
        assert_eq!(
            writes(&recorder).len(),
            3,
            "the held part sent to make room"
        );
        assert!(!io.held.is_empty());
        io.shutdown().await.unwrap();
        assert_eq!(writes(&recorder)[3], b"more", "shutdown sends what is held");
    }

    /// The runtime behaviour the adapter is for: in a connection task woken by each of its
    /// requests' tasks as they finish, the answers of all the requests ready together go out
    /// in one write.
    #[test]
    fn answers_finished_together_go_out_in_one_write() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let recorder = Recorder::default();
        let answers = 8;
        let io = CoalescedWrites::new(recorder.clone());
        runtime.block_on(async move {
            tokio::spawn(connection(io, answers)).await.unwrap();
        });
        let sent = writes(&recorder);
        assert_eq!(sent.concat().len(), answers, "every answer sent: {sent:?}");
        assert_eq!(sent.len(), 1, "in one write: {sent:?}");
    }

    /// Like an HTTP/2 connection: spawns `answers` request tasks, then on each poll writes a
    /// byte for every request finished since the last and flushes; ends when all are sent.
    async fn connection(mut io: CoalescedWrites<Recorder>, answers: usize) {
        let finished = Arc::new(AtomicUsize::new(0));
        let (mut written, mut spawned) = (0, false);
        std::future::poll_fn(move |cx| {
            if !spawned {
                spawned = true;
                for _ in 0..answers {
                    let (finished, waker) = (finished.clone(), cx.waker().clone());
                    tokio::spawn(async move {
                        finished.fetch_add(1, Ordering::SeqCst);
                        waker.wake();
                    });
                }
            }
            let now = finished.load(Ordering::SeqCst);
            while written < now {
                let _ = Pin::new(&mut io).poll_write(cx, b"a");
                written += 1;
            }
            match Pin::new(&mut io).poll_flush(cx) {
                Poll::Ready(Ok(())) if written == answers => Poll::Ready(()),
                _ => Poll::Pending,
            }
        })
        .await
    }

    fn waker_counting(count: Arc<AtomicUsize>) -> std::task::Waker {
        struct Counting(Arc<AtomicUsize>);
        impl std::task::Wake for Counting {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        std::task::Waker::from(Arc::new(Counting(count)))
    }
}
