//! A limit on HTTP/2 control frames per connection. SETTINGS, PING, RST_STREAM and PRIORITY
//! frames cost the server work but carry no request, and the h2 library answers them as fast
//! as they arrive; a client sending them in a loop takes CPU from everyone else's reviews.
//! Likewise a header block continued over and over (a CONTINUATION flood) is decoded and
//! discarded by h2 for as long as it lasts.
//! The connection's bytes are watched by [`ControlFrames`], which follows the frame
//! boundaries (it never buffers or changes anything) and ends the connection when the rate
//! of control frames stays over the limit.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::limits::{Rejection, RejectionLog};
use super::read_watch::{Ended, ReadWatch};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const RST_STREAM: u8 = 0x3;
const PRIORITY: u8 = 0x2;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
/// CONTINUATION frames allowed after one HEADERS frame. A header list within
/// `max_header_bytes` (32 KiB) fits in HEADERS plus two; a long run is a flood whose headers
/// h2 would decode and discard one frame at a time.
const MAX_CONTINUATIONS: u32 = 8;

/// Control frames allowed: `per_second` on average, in bursts of up to twice that.
struct Bucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            per_second,
            capacity: per_second * 2.0,
            tokens: per_second * 2.0,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The frame counter of the server side of an HTTP/2 connection.
pub(crate) struct ControlFrames {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    bucket: Bucket,
    continuations: u32,
    rejections: Arc<RejectionLog>,
    peer: std::net::IpAddr,
}

impl ControlFrames {
    pub fn new(per_second: u32, rejections: Arc<RejectionLog>, peer: std::net::IpAddr) -> Self {
        Self {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            bucket: Bucket::new(per_second),
            continuations: 0,
            rejections,
            peer,
        }
    }

    /// Follows the frames in bytes just read; false once the control-frame rate is exceeded.
    fn observe(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(data.len());
                self.preface_left -= n;
                data = &data[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
            } else {
                let n = (FRAME_HEADER_LEN - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                data = &data[n..];
                if self.header_len == FRAME_HEADER_LEN {
                    self.header_len = 0;
                    let [a, b, c, kind, ..] = self.header;
                    self.payload_left = u32::from_be_bytes([0, a, b, c]) as usize;
                    match kind {
                        SETTINGS | PING | RST_STREAM | PRIORITY if !self.bucket.take() => {
                            return false
                        }
                        HEADERS => self.continuations = 0,
                        CONTINUATION => {
                            self.continuations += 1;
                            if self.continuations > MAX_CONTINUATIONS {
                                return false;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        true
    }
}

impl ReadWatch for ControlFrames {
    fn watch(
        &mut self,
        _: &mut Context<'_>,
        read: &Poll<io::Result<()>>,
        bytes: &[u8],
    ) -> Result<(), Ended> {
        if !matches!(read, Poll::Ready(Ok(()))) || self.observe(bytes) {
            return Ok(());
        }
        self.rejections.reject(
            Rejection::Http2ControlFlood,
            Some(self.peer),
            "HTTP/2 control frames (SETTINGS, PING, RST_STREAM, PRIORITY) over the rate limit, or a header block in too many CONTINUATION frames; connection closed",
        );
        Err(Ended {
            kind: io::ErrorKind::ConnectionAborted,
            message: "HTTP/2 control frame flood",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::Metrics;

    fn frame(kind: u8, payload_len: usize) -> Vec<u8> {
        let mut bytes = (payload_len as u32).to_be_bytes()[1..].to_vec();
        bytes.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
        bytes.extend(std::iter::repeat_n(0u8, payload_len));
        bytes
    }

    fn guard(per_second: u32) -> ControlFrames {
        let rejections = Arc::new(RejectionLog::new(Arc::new(Metrics::new())));
        ControlFrames::new(per_second, rejections, [127, 0, 0, 1].into())
    }

    #[test]
    fn counts_control_frames_across_split_reads_and_skips_payloads() {
        let mut guard = guard(10);
        let mut stream = vec![0u8; PREFACE_LEN];
        for _ in 0..20 {
            stream.extend(frame(PING, 8));
            // A DATA frame whose payload looks like PING headers is not counted.
            stream.extend(frame(0x0, 9));
        }
        for chunk in stream.chunks(7) {
            assert!(guard.observe(chunk), "20 within the burst of 20");
        }
        assert!(
            !guard.observe(&frame(SETTINGS, 0)),
            "the 21st is over the limit"
        );
    }

    #[test]
    fn a_long_run_of_continuation_frames_is_a_flood() {
        let mut guard = guard(10);
        let mut stream = vec![0u8; PREFACE_LEN];
        for _ in 0..3 {
            stream.extend(frame(HEADERS, 100));
            for _ in 0..MAX_CONTINUATIONS {
                stream.extend(frame(CONTINUATION, 100));
            }
        }
        assert!(guard.observe(&stream));
        assert!(!guard.observe(&frame(CONTINUATION, 10)));
    }

    #[test]
    fn data_and_headers_frames_are_not_limited() {
        let mut guard = guard(1);
        let mut stream = vec![0u8; PREFACE_LEN];
        for _ in 0..1000 {
            stream.extend(frame(0x1, 20));
            stream.extend(frame(0x0, 100));
        }
        assert!(guard.observe(&stream));
    }
}
