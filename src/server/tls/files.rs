//! The file source of the serving certificate: `--tls-cert` and `--tls-key`, loaded into the
//! [`CertificateStore`] at start and again whenever either changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::store::CertificateStore;
use crate::sources::file_watch::{self, FileState, FileWatch, WatchOptions};

/// Loads the pair from files now and again whenever either changes (including the kubelet's
/// `..data` symlink swap). Missing files are waited for (readiness stays false until a pair
/// loads); a pair that does not load is logged (and counted by the store), and the previous
/// one keeps serving. The watch stops when the returned value is dropped.
pub fn watch_files(
    cert_path: PathBuf,
    key_path: PathBuf,
    store: Arc<CertificateStore>,
    options: WatchOptions,
) -> FileWatch {
    let paths = vec![cert_path.clone(), key_path.clone()];
    file_watch::watch(paths, options, move |states| {
        load_files(&store, &cert_path, &key_path, &states[0], &states[1]);
    })
}

fn load_files(
    store: &CertificateStore,
    cert_path: &Path,
    key_path: &Path,
    cert: &FileState,
    key: &FileState,
) {
    let fallback = if store.is_loaded() {
        "the previous certificate keeps serving"
    } else {
        "no certificate is served until one loads"
    };
    let unusable = |path: &Path, state: &FileState| match state {
        FileState::Content(_) => None,
        FileState::Missing => Some(format!("{} is missing", path.display())),
        FileState::Unreadable(err) => Some(format!("cannot read {}: {err}", path.display())),
    };
    match (cert, key) {
        (FileState::Content(cert_pem), FileState::Content(key_pem)) => {
            if let Err(err) = store.set_pem(cert_pem, key_pem) {
                tracing::error!(
                    cert = %cert_path.display(),
                    key = %key_path.display(),
                    "serving certificate not loaded: {err}; {fallback}"
                );
            }
        }
        _ => {
            let problems: Vec<String> = [unusable(cert_path, cert), unusable(key_path, key)]
                .into_iter()
                .flatten()
                .collect();
            tracing::warn!(
                "waiting for the serving certificate: {}; {fallback}",
                problems.join(", ")
            );
        }
    }
}
