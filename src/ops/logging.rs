//! Log output: `tracing` to standard error, as text or JSON lines, with klog's `-v` levels
//! mapped onto tracing levels. `RUST_LOG`, when set, overrides the mapping.
//!
//! Lines are handed to a background thread that writes them, so a request never waits on a
//! slow or blocked stderr (a full pipe, a stalled log collector); if that thread falls
//! behind by more than its queue, lines are dropped rather than requests delayed.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
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

/// Lines queued for the writer thread before new ones are dropped.
const QUEUED_LINES: usize = 16 * 1024;

/// Installs the global subscriber. Call once, first thing; keep the guard until exit; dropping
/// it writes out the lines still queued.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat, verbosity: u8) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(filter_for_verbosity(verbosity)));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        // The writer thread flushes whenever it has emptied its queue, so under load many
        // lines go out in one write.
        .finish(std::io::BufWriter::new(std::io::stderr()));
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

#[cfg(test)]
mod tests {
    use super::*;

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
