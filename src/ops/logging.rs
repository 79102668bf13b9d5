//! Log output: `tracing` to standard error, as text or JSON lines, with klog's `-v` levels
//! mapped onto tracing levels. `RUST_LOG`, when set, overrides the mapping.
//!
//! Lines are gathered in memory and written by a background thread, in one write per batch,
//! so a request never waits on a slow or blocked stderr (a full pipe, a stalled log
//! collector) and costs only a copy of its line: no system call, wakeup or allocation. If
//! the thread falls behind by more than [`MAX_PENDING_BYTES`], lines are dropped rather than
//! requests delayed, and the next batch says how many.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, fields flattened, for log collectors.
    Json,
}

/// The filter for a klog verbosity: 0-1 info, 2-3 adds this crate's debug lines, 4 debug of
/// every library, 5+ trace. Below 4, kube's client does not log each failed request itself:
/// the caller logs the failure once, with what it was doing (one line per attempt).
pub(crate) fn filter_for_verbosity(verbosity: u8) -> &'static str {
    match verbosity {
        0 | 1 => "info,kube_client::client::builder=off",
        2 | 3 => "info,pod_identity_webhook=debug,kube_client::client::builder=off",
        4 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber. Call once, first thing; keep the guard until exit; dropping
/// it writes out the lines still waiting.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat, verbosity: u8) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(filter_for_verbosity(verbosity)));
    let (writer, guard) = BatchedWriter::start(std::io::stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour only for a person at a terminal, never into log files or collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if let Err(err) = result {
        eprintln!("warning: logging already initialised: {err}");
    }
    guard
}

/// Bytes of lines waiting to be written before new lines are dropped.
pub(crate) const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;
/// Waiting lines are written at least this often...
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// ...and as soon as this many bytes wait.
const WRITE_AT_BYTES: usize = 64 * 1024;

/// The lines not yet written, shared by everything that logs and the writer thread.
#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: u64,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer thread early: enough is waiting, or the guard was dropped.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the subscriber writes each formatted line (one `write` per line).
#[derive(Clone)]
pub(crate) struct BatchedWriter(Arc<Shared>);

impl BatchedWriter {
    /// The writer, and the guard of the thread that writes its lines to `output()`.
    pub(crate) fn start<W: Write>(output: impl Fn() -> W + Send + 'static) -> (Self, LogGuard) {
        let shared = Arc::new(Shared::default());
        let writing = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_batches(&writing, output))
            .map_err(|err| eprintln!("warning: cannot start the log writer ({err}); logs are lost"))
            .ok();
        let guard = LogGuard {
            shared: shared.clone(),
            thread,
        };
        (Self(shared), guard)
    }
}

impl Write for &BatchedWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.0.lock();
        if pending.lines.len() + line.len() > MAX_PENDING_BYTES {
            pending.dropped += 1;
            return Ok(line.len());
        }
        let was_below = pending.lines.len() < WRITE_AT_BYTES;
        pending.lines.extend_from_slice(line);
        if was_below && pending.lines.len() >= WRITE_AT_BYTES {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = &'a BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The writer thread: every [`WRITE_EVERY`], or sooner when [`WRITE_AT_BYTES`] wait, takes
/// what is waiting and writes it; after the guard is dropped, writes the rest and ends.
fn write_batches<W: Write>(shared: &Shared, output: impl Fn() -> W) {
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let pending = shared.lock();
            let (mut pending, _) = shared
                .wake
                .wait_timeout_while(pending, WRITE_EVERY, |pending| {
                    pending.lines.len() < WRITE_AT_BYTES && !pending.closed
                })
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut batch, &mut pending.lines);
            (std::mem::take(&mut pending.dropped), pending.closed)
        };
        let mut out = output();
        if dropped > 0 {
            let _ = writeln!(
                out,
                "{dropped} log lines dropped: the log output did not keep up"
            );
        }
        if !batch.is_empty() {
            // A failed write (stderr closed) loses these lines; nothing else can be done.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            batch.clear();
            // A buffer grown by a stall or a burst is not kept: the two that take turns
            // would otherwise hold up to MAX_PENDING_BYTES each for good.
            if batch.capacity() > 4 * WRITE_AT_BYTES {
                batch = Vec::new();
            }
        }
        if closed {
            return;
        }
    }
}

/// Keeps the log writer running; dropped, it writes out the lines still waiting and stops.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read, and hold shut to stall the writer thread.
    #[derive(Clone, Default)]
    struct Output(Arc<Mutex<Vec<u8>>>);

    impl Write for Output {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(n: usize, width: usize) -> String {
        format!("{n:0width$}\n", width = width - 1)
    }

    #[test]
    fn lines_come_out_whole_and_in_order_and_the_guard_writes_the_rest() {
        let output = Output::default();
        let sink = output.clone();
        let (writer, guard) = BatchedWriter::start(move || sink.clone());
        let count = 20_000; // 1.2 MB: several early writes at WRITE_AT_BYTES, then the rest
        for n in 0..count {
            (&writer).write_all(line(n, 60).as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..count).map(|n| line(n, 60)).collect();
        assert!(
            text == expected,
            "{} of {} bytes",
            text.len(),
            expected.len()
        );
    }

    #[test]
    fn a_stalled_output_drops_lines_over_the_bound_and_says_how_many() {
        let output = Output::default();
        let sink = output.clone();
        let stall = output.0.lock().unwrap();
        let (writer, guard) = BatchedWriter::start(move || sink.clone());
        // The thread can take at most one batch (at most the bound) before it blocks on the
        // stalled output; the next bound's worth waits; the rest must be dropped.
        let count = 3 * MAX_PENDING_BYTES / 1024;
        for n in 0..count {
            (&writer).write_all(line(n, 1024).as_bytes()).unwrap();
        }
        drop(stall);
        drop(guard);
        let text = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
        let (notes, lines): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|line| line.contains("dropped"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        let dropped: usize = notes[0].split(' ').next().unwrap().parse().unwrap();
        assert!(dropped >= count / 3, "{dropped} of {count}");
        assert_eq!(lines.len() + dropped, count);
        let numbers: Vec<usize> = lines.iter().map(|line| line.parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    }

    #[test]
    fn klog_levels_map_to_tracing_filters() {
        assert!(filter_for_verbosity(0).starts_with("info,"));
        assert_eq!(filter_for_verbosity(1), filter_for_verbosity(0));
        assert!(filter_for_verbosity(0).contains("kube_client::client::builder=off"));
        assert!(filter_for_verbosity(2).contains("pod_identity_webhook=debug"));
        assert_eq!(filter_for_verbosity(4), "debug");
        assert_eq!(filter_for_verbosity(9), "trace");
        for level in 0..=9 {
            EnvFilter::new(filter_for_verbosity(level));
        }
    }
}
