//! Certificates for the tests (an rcgen CA and serving certificates signed by it) and files
//! written the way a kubelet projects Secret and ConfigMap volumes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;

/// A CA that signs serving certificates.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pod-identity-webhook test CA");
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

    /// A serving certificate for `localhost` and `127.0.0.1`: (cert PEM, key PEM).
    /// `common_name` tells certificates apart.
    pub fn leaf(&self, common_name: &str) -> (String, String) {
        self.issue(common_name, &["localhost", "127.0.0.1"])
    }

    /// A serving certificate for `names` (IP addresses become IP SANs), named after the first:
    /// (cert PEM, key PEM).
    pub fn server_cert(&self, names: &[&str]) -> (String, String) {
        self.issue(names[0], names)
    }

    fn issue(&self, common_name: &str, names: &[&str]) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("serving params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("serving key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("serving certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A root store trusting only this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA certificate is a valid trust anchor");
        roots
    }

    /// A client trusting this CA and offering `alpn`.
    pub fn client_config(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        // Every connection does a full handshake, so it sees the certificate served now
        // rather than resuming a session made under an earlier one.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
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
/// `..<timestamp>` directory, `..data` points at it, and each visible name is a symlink
/// through `..data`. An update writes a new directory and swaps `..data` atomically (rename
/// of a symlink), as the kubelet's AtomicWriter does — a naive file watcher misses it.
pub struct KubeletDir {
    dir: PathBuf,
    generation: AtomicU32,
    /// Set when the directory is a temporary one, removed with this value.
    _temporary: Option<tempfile::TempDir>,
}

impl KubeletDir {
    /// In a fresh temporary directory, removed when this value is dropped.
    pub fn new(files: &[(&str, &[u8])]) -> Self {
        let temporary = tempfile::tempdir().expect("a temporary directory");
        let mut dir = Self::create(temporary.path(), files).unwrap_or_else(|e| panic!("{e}"));
        dir._temporary = Some(temporary);
        dir
    }

    /// In `dir` (created if missing), kept after this value is dropped.
    pub fn create(dir: &Path, files: &[(&str, &[u8])]) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let this = Self {
            dir: dir.to_path_buf(),
            generation: AtomicU32::new(0),
            _temporary: None,
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
    pub fn path(&self, name: &str) -> PathBuf {
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
