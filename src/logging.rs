//! Log output: `tracing` to standard error, as text or JSON lines, with klog's `-v` levels
//! mapped onto tracing levels. `RUST_LOG`, when set, overrides the mapping.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The filter for a klog verbosity: 0-1 info, 2-3 debug for this crate, 4 debug, 5+ trace.
pub fn filter_for_verbosity(verbosity: u8) -> &'static str {
    match verbosity {
        0 | 1 => "info",
        2 | 3 => "info,pod_identity_webhook=debug",
        4 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber. Call once, first thing.
pub fn init(format: LogFormat, verbosity: u8) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(filter_for_verbosity(verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_levels_map_to_tracing_filters() {
        assert_eq!(filter_for_verbosity(0), "info");
        assert_eq!(filter_for_verbosity(1), "info");
        assert!(filter_for_verbosity(2).contains("pod_identity_webhook=debug"));
        assert_eq!(filter_for_verbosity(4), "debug");
        assert_eq!(filter_for_verbosity(9), "trace");
        for level in 0..=9 {
            EnvFilter::new(filter_for_verbosity(level));
        }
    }
}
