//! Running the external programs of the real-cluster and real-node suites: their shared
//! fixture, commands whose failure is an error carrying everything they printed, and a
//! teardown per suite that runs `SCRIPT down --dir DIR` however the test process ends.
//!
//! Rust tests have no global teardown hook, so the teardown is armed twice: an `atexit`
//! handler covers every normal exit (all passed, or a failure: libtest exits through
//! `exit(101)`), and a reaper process in its own session, blocked reading a pipe only this
//! process holds, runs `down` when the process vanishes without `atexit` (SIGKILL, Ctrl-C).

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use super::skip::skip;

/// Why a suite's shared fixture is not there.
pub enum StartError {
    /// What this machine lacks: every test prints SKIPPED and passes, unless
    /// `PIW_REQUIRE_TOOLS=1`, where every test fails naming it.
    Missing(Vec<String>),
    /// It was tried and failed: every test fails with the reason.
    Failed(String),
}

/// A suite's shared fixture (a cluster, a node), built by `start` on the first test's call
/// and reused by every later one; `None` after a SKIPPED line (`support::skip`) when tools
/// are missing.
/// `suite` names it in messages, `hint` says how to install what is missing.
pub fn shared_fixture<T>(
    cell: &'static OnceLock<Result<T, StartError>>,
    suite: &str,
    test: &str,
    hint: &str,
    start: impl FnOnce() -> Result<T, StartError>,
) -> Option<&'static T> {
    let fixture = cell.get_or_init(|| {
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(start)).unwrap_or_else(|panic| {
            Err(StartError::Failed(format!("the start panicked: {panic:?}")))
        });
        if result.is_ok() {
            // Straight to stderr: libtest's capture would hide it for a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "{suite}: ready in {:.1?}",
                started.elapsed()
            );
        }
        result
    });
    match fixture {
        Ok(fixture) => Some(fixture),
        Err(StartError::Missing(missing)) => {
            skip(suite, test, &missing.join(", "), hint);
            None
        }
        Err(StartError::Failed(reason)) => panic!("the {suite} fixture did not start: {reason}"),
    }
}

/// Runs `command`, returning its output; Err names the command and carries stderr.
pub fn run(command: &mut Command) -> Result<Output, String> {
    let shown = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    succeeded(&shown, out)
}

/// `out` when the command succeeded, else an error with everything it printed.
fn succeeded(shown: &str, out: Output) -> Result<Output, String> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `command` with `input` on standard input.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> Result<Output, String> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let _ = writer.join();
    succeeded(&shown, out)
}

/// What to undo when the test process ends.
pub struct Teardown {
    /// A hack/ script with a `down --dir DIR` command.
    pub script: PathBuf,
    pub dir: PathBuf,
    /// Where the files named in `keep` (relative to `dir`) are copied before `down`.
    pub artifacts: PathBuf,
    pub keep: Vec<PathBuf>,
    /// Runs first, in the exit handler (kill the suite's own children, say).
    pub before: fn(),
}

/// Every armed teardown (each suite with a fixture arms one), run last-armed first.
static TEARDOWNS: Mutex<Vec<Teardown>> = Mutex::new(Vec::new());
/// The write ends of the reapers' pipes: held until the process dies, never written.
static REAPER_PIPES: Mutex<Vec<ChildStdin>> = Mutex::new(Vec::new());

extern "C" fn teardown_at_exit() {
    let teardowns = std::mem::take(&mut *TEARDOWNS.lock().unwrap_or_else(PoisonError::into_inner));
    for t in teardowns.iter().rev() {
        (t.before)();
        for file in &t.keep {
            let name = file.file_name().unwrap_or(file.as_os_str());
            let _ = std::fs::copy(t.dir.join(file), t.artifacts.join(name));
        }
        let _ = Command::new(&t.script)
            .args(["down", "--dir"])
            .arg(&t.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Arranges for `teardown.script down --dir teardown.dir` to run however this process ends.
/// Each suite's fixture arms its own (they share the process); the exit handler runs them all.
pub fn arm_teardown(teardown: Teardown) -> Result<(), String> {
    let reaper_log =
        std::fs::File::create(teardown.artifacts.join("reaper.log")).map_err(|e| e.to_string())?;
    let mut reaper = Command::new("bash");
    reaper
        .arg("-c")
        .arg(r#"trap '' INT TERM HUP; read -r _ || true; exec "$0" down --dir "$1""#)
        .arg(&teardown.script)
        .arg(&teardown.dir)
        .stdin(Stdio::piped())
        .stdout(reaper_log.try_clone().map_err(|e| e.to_string())?)
        .stderr(reaper_log);
    static AT_EXIT: OnceLock<bool> = OnceLock::new();
    // SAFETY: registering a plain extern "C" function.
    if !*AT_EXIT.get_or_init(|| unsafe { libc::atexit(teardown_at_exit) } == 0) {
        return Err("atexit failed".into());
    }
    TEARDOWNS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(teardown);
    // SAFETY: setsid is async-signal-safe; a new session keeps Ctrl-C away from the reaper.
    unsafe {
        reaper.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = reaper
        .spawn()
        .map_err(|e| format!("cannot start the reaper: {e}"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    REAPER_PIPES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(stdin);
    // The reaper outlives us on purpose; nothing waits for it.
    std::mem::forget(child);
    Ok(())
}
