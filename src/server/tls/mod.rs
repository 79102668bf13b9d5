//! The TLS side of the admission endpoint: which certificate each handshake gets, where it
//! comes from, and the rustls configuration built from plain settings.
//!
//! - [`store`]: the [`CertificateStore`], the rustls certificate resolver. Each handshake reads
//!   the current pair from an `ArcSwap`, so a rotated certificate applies to the next handshake
//!   without touching the listener. It owns the readiness condition "a serving certificate is
//!   loaded" and the certificate metrics; both certificate sources only feed it.
//! - [`files`]: the file source (`--tls-cert`/`--tls-key`), reloaded on change through
//!   `sources::file_watch`. The other source is the built-in certificate mode (`crate::certs`).
//! - [`settings`]: [`TlsSettings`] (minimum version, cipher-suite names) and
//!   [`server_config`], which maps them onto rustls.
//! - [`cipher_suites`]: the names the reference accepts, mapped onto rustls' suites.

mod cipher_suites;
mod files;
mod settings;
mod store;

pub use cipher_suites::{cipher_suites, CipherSuiteError, CipherSuites};
pub use files::watch_files;
pub use settings::{server_config, TlsConfigError, TlsSettings, TlsVersion};
pub use store::{CertificateError, CertificateStore};
