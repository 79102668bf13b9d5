//! Certificates for the tests (an rcgen CA and serving certificates signed by it), files
//! written the way a kubelet projects Secret and ConfigMap volumes, and a TLS probe that says
//! which certificate a server presents.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

/// A CA that signs serving certificates.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl TestCa {
    pub fn new(common_name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    /// A serving certificate for `names` (IP addresses become IP SANs): (cert PEM, key PEM).
    pub fn server_cert(&self, names: &[&str]) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("serving params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("serving key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("serving certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// DER of the first certificate in `pem`.
pub fn first_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate in the PEM")
        .expect("valid PEM")
        .to_vec()
}

/// A directory laid out like a kubelet-projected volume: the files live in a timestamped
/// directory, `..data` points at it, and each visible name is a symlink through `..data`.
/// An update writes a new directory and swaps `..data` atomically (rename of a symlink).
pub struct CertDir {
    dir: PathBuf,
    generation: AtomicU32,
}

impl CertDir {
    pub fn create(dir: &Path, files: &[(&str, &[u8])]) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let this = Self {
            dir: dir.to_path_buf(),
            generation: AtomicU32::new(0),
        };
        this.update(files)?;
        for (name, _) in files {
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link)
                    .map_err(|e| format!("{}: {e}", link.display()))?;
            }
        }
        Ok(this)
    }

    /// The visible path of `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Replaces the whole content with one atomic symlink swap, then removes the old data.
    pub fn update(&self, files: &[(&str, &[u8])]) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.dir.display());
        let generation = self.generation.fetch_add(1, Ordering::SeqCst);
        let data_name = format!("..2025_01_01_00_00_00.{generation:09}");
        let data_dir = self.dir.join(&data_name);
        std::fs::create_dir_all(&data_dir).map_err(err)?;
        for (name, content) in files {
            let mut file = std::fs::File::create(data_dir.join(name)).map_err(err)?;
            file.write_all(content).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&data_name, &tmp).map_err(err)?;
        std::fs::rename(&tmp, self.dir.join("..data")).map_err(err)?;
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
        Ok(())
    }
}

/// DER of the certificate the TLS server at `addr` presents for `server_name`, verified
/// against `ca_pem`.
pub fn served_cert(addr: SocketAddr, server_name: &str, ca_pem: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    }
    let der = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .ok_or("no peer certificate")?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(der)
}
