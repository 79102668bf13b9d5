//! A local etcd + kube-apiserver for the benchmarks that measure against a real API server:
//! started with `hack/control-plane.sh up` and stopped when dropped, or one already up named by
//! `PIW_CONTROL_PLANE_DIR` (then left up).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The benchmark's own control plane, or one named by `PIW_CONTROL_PLANE_DIR`.
pub struct ControlPlane {
    pub script: PathBuf,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    owned: bool,
}

impl ControlPlane {
    /// `hack/control-plane.sh up` in a temporary directory named after `bench`.
    pub fn start(root: &Path, bench: &str) -> Result<Self, String> {
        let script = root.join("hack/control-plane.sh");
        let (dir, owned) = match std::env::var_os("PIW_CONTROL_PLANE_DIR") {
            Some(dir) => (PathBuf::from(dir), false),
            None => {
                let dir = std::env::temp_dir().join(format!("piw-{bench}-{}", std::process::id()));
                let status = Command::new(&script)
                    .arg("up")
                    .arg("--dir")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .status()
                    .map_err(|err| format!("cannot run {}: {err}", script.display()))?;
                if !status.success() {
                    return Err(format!(
                        "{} up failed ({status}); install the tools with hack/install-control-plane.sh",
                        script.display()
                    ));
                }
                (dir, true)
            }
        };
        let kubeconfig = dir.join("kubeconfig");
        if !kubeconfig.exists() {
            return Err(format!(
                "{} not found: is {} a control-plane.sh directory?",
                kubeconfig.display(),
                dir.display()
            ));
        }
        Ok(Self {
            script,
            dir,
            kubeconfig,
            owned,
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(&self.script)
                .arg("down")
                .arg("--dir")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .status();
        }
    }
}
