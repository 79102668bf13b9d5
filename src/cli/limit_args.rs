//! Flags for the server's limits (see `server::Limits` and docs/hardening.md). Not in the
//! reference, whose Go server has no such limits; the defaults suit the chart's 128Mi pod.

use std::time::Duration;

use clap::Args;

use crate::core::go_syntax;
use crate::server::limits::{PARSED_BODY_FACTOR, SMALL_BODY_RESERVE_DIVISOR};
use crate::server::Limits;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits (docs/hardening.md)")]
pub struct LimitArgs {
    /// Time a client has from connecting to the end of its TLS handshake (waiting for its turn included).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub tls_handshake_timeout: Duration,
    /// Time from accepting a connection to its first complete request head.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub first_request_timeout: Duration,
    /// Time a connection with no request in progress stays open. Longer than the API server's
    /// own idle keep-alive (90 s), so that it closes its idle connections first: a close from
    /// this side can cross a review just sent, which the API server does not send again.
    #[arg(long, default_value = "120s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Time to send a complete HTTP/1.1 request head, from its first byte.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// Time to read a request and answer it.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Time to receive a whole request body.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub body_timeout: Duration,
    /// Slowest accepted body upload, bytes per second (averaged, after 2 s).
    #[arg(long, default_value_t = 16 * 1024)]
    pub min_body_rate: u64,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_body_bytes: u64,
    /// Memory for request bodies in flight, bytes (bodies being answered count ten times their size).
    #[arg(long, default_value_t = 48 * 1024 * 1024)]
    pub max_inflight_body_bytes: u64,
    /// Of which bodies still arriving from one client address may hold, bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_inflight_body_bytes_per_peer: u64,
    /// Reviews answered at once; one more is answered 503 at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_reviews: u64,
    /// Open connections to the webhook port.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Open connections from one client address.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_peer: u64,
    /// TLS handshakes in progress.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_handshakes: u64,
    /// TLS handshakes in progress from one client address.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_handshakes_per_peer: u64,
    /// Requests one HTTP/2 connection may have open at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each request, bytes.
    #[arg(long, default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(65535..=2147483647))]
    pub http2_stream_window: u32,
    /// HTTP/2 flow-control window of each connection, bytes.
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).range(65535..=2147483647))]
    pub http2_connection_window: u32,
    /// Largest request head (HTTP/2 header list, HTTP/1.1 head), bytes.
    #[arg(long, default_value_t = 32 * 1024, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,
    /// HTTP/2 SETTINGS, PING, RST_STREAM and PRIORITY frames per second per connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_control_frames_per_second: u32,
}

fn duration(value: &str) -> Result<Duration, String> {
    go_syntax::parse_duration(value)
}

fn size(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl LimitArgs {
    /// One line naming the flags that contradict each other.
    pub fn validate(&self) -> Result<(), String> {
        let parsed = self
            .max_body_bytes
            .saturating_mul(PARSED_BODY_FACTOR as u64);
        // An eighth of the budget is kept for small bodies; a large one gets the rest.
        let divisor = SMALL_BODY_RESERVE_DIVISOR as u64;
        let for_large = self.max_inflight_body_bytes - self.max_inflight_body_bytes / divisor;
        if parsed > for_large {
            return Err(format!(
                "--max-inflight-body-bytes={} cannot hold one body of --max-body-bytes={} once parsed ({} bytes, {PARSED_BODY_FACTOR} times its size, in the seven eighths of the budget large bodies may use); raise it or lower --max-body-bytes",
                self.max_inflight_body_bytes, self.max_body_bytes, parsed
            ));
        }
        Ok(())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            tls_handshake_timeout: self.tls_handshake_timeout,
            first_request_timeout: self.first_request_timeout,
            idle_timeout: self.idle_timeout,
            header_read_timeout: self.header_read_timeout,
            request_timeout: self.request_timeout,
            body_timeout: self.body_timeout,
            min_body_rate: self.min_body_rate,
            max_body_bytes: size(self.max_body_bytes),
            max_inflight_body_bytes: size(self.max_inflight_body_bytes),
            max_inflight_body_bytes_per_peer: size(self.max_inflight_body_bytes_per_peer),
            max_concurrent_reviews: size(self.max_concurrent_reviews),
            max_connections: size(self.max_connections),
            max_connections_per_peer: size(self.max_connections_per_peer),
            max_handshakes: size(self.max_handshakes),
            max_handshakes_per_peer: size(self.max_handshakes_per_peer),
            http2_max_concurrent_streams: self.http2_max_concurrent_streams,
            http2_stream_window: self.http2_stream_window,
            http2_connection_window: self.http2_connection_window,
            max_header_bytes: self.max_header_bytes,
            http2_max_control_frames_per_second: self.http2_max_control_frames_per_second,
            ..Limits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{try_parse, Command};

    fn limits_of(args: &[&str]) -> Result<crate::server::Limits, String> {
        let cli = try_parse(std::iter::once("pod-identity-webhook").chain(args.iter().copied()))
            .map_err(|err| err.to_string())?;
        let Command::Serve(serve) = cli.into_command() else {
            panic!("serve expected");
        };
        serve.limits.validate()?;
        Ok(serve.limits.limits())
    }

    #[test]
    fn flag_defaults_are_the_server_defaults() {
        let from_flags = format!("{:?}", limits_of(&[]).unwrap());
        let defaults = format!("{:?}", crate::server::Limits::default());
        assert_eq!(from_flags, defaults);
    }

    #[test]
    fn limits_are_set_by_flags_in_go_syntax() {
        let limits = limits_of(&[
            "--body-timeout=2.5s",
            "-max-connections-per-peer=8",
            "--max-body-bytes=1048576",
        ])
        .unwrap();
        assert_eq!(limits.body_timeout, std::time::Duration::from_millis(2500));
        assert_eq!(limits.max_connections_per_peer, 8);
        assert_eq!(limits.max_body_bytes, 1 << 20);
    }

    #[test]
    fn a_budget_too_small_for_one_parsed_body_is_refused() {
        let err = limits_of(&["--max-inflight-body-bytes=1000000"]).unwrap_err();
        assert!(err.contains("--max-inflight-body-bytes=1000000"), "{err}");
        assert!(err.contains("--max-body-bytes"), "{err}");
        assert!(limits_of(&["--max-connections=0"]).is_err());
    }
}
