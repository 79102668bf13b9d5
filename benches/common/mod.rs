//! What the benchmarks that run the webhook as a process share: the binary they run, a
//! loopback port, a serving certificate, a guard that stops the process however the benchmark
//! ends, and reading its admin port.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

/// The webhook binary a benchmark runs: `PIW_WEBHOOK_BINARY` (another build: an older commit,
/// the image's static binary), else the release build of this checkout.
pub fn webhook_binary(root: &Path) -> Result<PathBuf, String> {
    let binary = std::env::var_os("PIW_WEBHOOK_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/pod-identity-webhook"));
    if !binary.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release` first, or set PIW_WEBHOOK_BINARY",
            binary.display()
        ));
    }
    Ok(binary)
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// Kills the child when the benchmark ends, however it ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed serving certificate for 127.0.0.1 (the load generators do not verify it),
/// written to `dir` as tls.crt and tls.key.
pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("certificate params");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).expect("the certificate written");
    std::fs::write(&key_path, key.serialize_pem()).expect("the key written");
    (cert_path, key_path)
}

/// The value of the Prometheus sample `name` (with its labels, as printed) in `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// A plain HTTP/1.1 GET on the admin port: the status line and headers, then the body (its
/// chunks joined: Go's servers send a long body in chunks, which may split a line); `None`
/// when it does not answer within 5 s.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let chunked = head.lines().any(|line| {
        line.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    if !chunked {
        return Some(response);
    }
    let (mut rest, mut joined) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(format!("{head}\r\n\r\n{joined}"));
        }
        joined.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}
