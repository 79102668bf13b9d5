//! Watching a few small files (certificate and key, the container-credentials file) and
//! calling back with their content whenever any of it changes.
//!
//! Kubernetes updates Secret and ConfigMap volumes by writing a new timestamped directory and
//! renaming a `..data` symlink over the old one; the watched path itself (`tls.crt ->
//! ..data/tls.crt`) never gets an event of its own. So this watches the *parent directories*
//! with inotify (any event there means "re-read"), compares content rather than trusting
//! events, and also re-reads on a slow timer in case an event is missed or a directory does
//! not exist yet.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How often files are re-read even without an event.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(15);
/// Pause after an event before reading, so a writer's burst (key then certificate, or the
/// kubelet's rename sequence) is read once, as a whole.
pub(crate) const DEFAULT_SETTLE: Duration = Duration::from_millis(100);

/// What a watched path held at the last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    Missing,
    /// The file exists but could not be read; the text names the error.
    Unreadable(String),
    Content(Vec<u8>),
}

impl FileState {
    /// Reads `path` (following symlinks).
    pub fn read(path: &Path) -> Self {
        match std::fs::read(path) {
            Ok(content) => FileState::Content(content),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => FileState::Missing,
            Err(err) => FileState::Unreadable(err.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    pub poll_interval: Duration,
    pub settle: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll_interval: DEFAULT_POLL_INTERVAL,
            settle: DEFAULT_SETTLE,
        }
    }
}

/// A running watch. Dropping it stops the watch, so the caller keeps it for as long as the
/// files matter.
#[derive(Debug)]
pub struct FileWatch {
    task: JoinHandle<()>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads `paths` now and calls `on_change` with their states (in the order given) before
/// returning, then again from a background task each time any of them changes. Must be called
/// inside a Tokio runtime. `on_change` runs on the runtime, so it must be quick (parsing a few
/// kilobytes is).
pub fn watch<F>(paths: Vec<PathBuf>, options: WatchOptions, mut on_change: F) -> FileWatch
where
    F: FnMut(&[FileState]) + Send + 'static,
{
    // Watch first, then read: a change between the two is then seen twice, never missed.
    let wake = Arc::new(Notify::new());
    let mut directories = DirectoryWatch::new(&paths, wake.clone());
    let mut last: Vec<FileState> = paths.iter().map(|path| FileState::read(path)).collect();
    on_change(&last);

    let task = tokio::spawn(async move {
        let mut poll = tokio::time::interval(options.poll_interval);
        poll.tick().await; // the first tick is immediate; the files were just read
        loop {
            tokio::select! {
                _ = wake.notified() => tokio::time::sleep(options.settle).await,
                _ = poll.tick() => directories.retry_missing(),
            }
            let paths_to_read = paths.clone();
            let Ok(current) = tokio::task::spawn_blocking(move || {
                paths_to_read
                    .iter()
                    .map(|path| FileState::read(path))
                    .collect::<Vec<_>>()
            })
            .await
            else {
                continue;
            };
            if current != last {
                on_change(&current);
                last = current;
            }
        }
    });
    FileWatch { task }
}

/// inotify watches on the parent directory of every path. A directory that does not exist yet
/// (a volume not mounted yet) is retried on each poll tick; until then polling covers it.
struct DirectoryWatch {
    watcher: Option<RecommendedWatcher>,
    pending: Vec<PathBuf>,
}

impl DirectoryWatch {
    fn new(paths: &[PathBuf], wake: Arc<Notify>) -> Self {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Any event, even an error, is only a hint to re-read and compare.
            let _ = event;
            wake.notify_one();
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start a file watcher; relying on polling alone");
                None
            }
        };
        let mut directories: Vec<PathBuf> = paths.iter().map(|path| parent_of(path)).collect();
        directories.sort();
        directories.dedup();
        let mut watch = Self {
            watcher,
            pending: directories,
        };
        watch.retry_missing();
        watch
    }

    fn retry_missing(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        self.pending.retain(|directory| {
            match watcher.watch(directory, RecursiveMode::NonRecursive) {
                Ok(()) => false,
                Err(err) => {
                    tracing::debug!(directory = %directory.display(), error = %err, "directory not watchable yet; polling it");
                    true
                }
            }
        });
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tokio::sync::mpsc;

    fn fast() -> WatchOptions {
        WatchOptions {
            poll_interval: Duration::from_secs(3600),
            settle: Duration::from_millis(20),
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Vec<FileState>>) -> Vec<FileState> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change is reported within 5 s")
            .expect("watch still running")
    }

    fn channel_watch(
        paths: Vec<PathBuf>,
        options: WatchOptions,
    ) -> (FileWatch, mpsc::UnboundedReceiver<Vec<FileState>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let watch = watch(paths, options, move |states| {
            let _ = tx.send(states.to_vec());
        });
        (watch, rx)
    }

    #[tokio::test]
    async fn reports_initial_content_and_plain_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, "one").unwrap();
        let (_watch, mut rx) = channel_watch(vec![file.clone(), dir.path().join("absent")], fast());
        assert_eq!(
            next(&mut rx).await,
            vec![FileState::Content(b"one".to_vec()), FileState::Missing]
        );
        std::fs::write(&file, "two").unwrap();
        assert_eq!(next(&mut rx).await[0], FileState::Content(b"two".to_vec()));
    }

    #[tokio::test]
    async fn catches_kubelet_data_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_01_01_00_00_00.1")).unwrap();
        std::fs::write(root.join("..2026_01_01_00_00_00.1/tls.crt"), "old").unwrap();
        symlink("..2026_01_01_00_00_00.1", root.join("..data")).unwrap();
        symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        let (_watch, mut rx) = channel_watch(vec![root.join("tls.crt")], fast());
        assert_eq!(
            next(&mut rx).await,
            vec![FileState::Content(b"old".to_vec())]
        );

        // What the kubelet's AtomicWriter does: new directory, temporary link, rename over.
        std::fs::create_dir(root.join("..2026_01_02_00_00_00.2")).unwrap();
        std::fs::write(root.join("..2026_01_02_00_00_00.2/tls.crt"), "new").unwrap();
        symlink("..2026_01_02_00_00_00.2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join("..2026_01_01_00_00_00.1")).unwrap();
        assert_eq!(
            next(&mut rx).await,
            vec![FileState::Content(b"new".to_vec())]
        );
    }

    #[tokio::test]
    async fn polling_finds_a_file_whose_directory_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("later/tls.key");
        let options = WatchOptions {
            poll_interval: Duration::from_millis(50),
            settle: Duration::from_millis(10),
        };
        let (_watch, mut rx) = channel_watch(vec![file.clone()], options);
        assert_eq!(next(&mut rx).await, vec![FileState::Missing]);
        std::fs::create_dir(dir.path().join("later")).unwrap();
        std::fs::write(&file, "key").unwrap();
        assert_eq!(
            next(&mut rx).await,
            vec![FileState::Content(b"key".to_vec())]
        );
    }

    #[tokio::test]
    async fn unchanged_content_is_not_reported_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "same").unwrap();
        let (_watch, mut rx) = channel_watch(vec![file.clone()], fast());
        next(&mut rx).await;
        std::fs::write(&file, "same").unwrap();
        std::fs::write(dir.path().join("unrelated"), "x").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "same content reported as a change");
    }
}
