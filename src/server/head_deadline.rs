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

use tokio::time::{Instant, Sleep};

use super::limits::{Activity, Rejection, RejectionLog};
use super::read_watch::{Ended, ReadWatch};

/// The head deadline of the server side of an HTTP/1.1 connection.
pub(crate) struct HeadDeadline {
    activity: Arc<Activity>,
    timeout: Duration,
    /// While a head is arriving: the connection's count of begun requests when it started.
    /// Once that count moves, the head has arrived whole.
    arriving: Option<u64>,
    deadline: Pin<Box<Sleep>>,
    rejections: Arc<RejectionLog>,
    peer: IpAddr,
}

impl HeadDeadline {
    pub fn new(
        activity: Arc<Activity>,
        timeout: Duration,
        rejections: Arc<RejectionLog>,
        peer: IpAddr,
    ) -> Self {
        Self {
            activity,
            timeout,
            arriving: None,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            rejections,
            peer,
        }
    }
}

impl ReadWatch for HeadDeadline {
    fn watch(
        &mut self,
        cx: &mut Context<'_>,
        read: &Poll<io::Result<()>>,
        bytes: &[u8],
    ) -> Result<(), Ended> {
        let begun = self.activity.begun();
        if self.arriving.is_some_and(|at| at != begun) {
            self.arriving = None;
        }
        if !bytes.is_empty() && self.arriving.is_none() && self.activity.is_quiet() {
            // The first bytes of a head.
            self.arriving = Some(begun);
            let at = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
        } else if read.is_pending()
            && self.arriving.is_some()
            && self.deadline.as_mut().poll(cx).is_ready()
        {
            self.rejections.reject(
                Rejection::SlowHead,
                Some(self.peer),
                "request head not received whole within the header deadline from its first byte; connection closed",
            );
            return Err(Ended {
                kind: io::ErrorKind::TimedOut,
                message: "request head not received within the header deadline",
            });
        }
        Ok(())
    }
}
