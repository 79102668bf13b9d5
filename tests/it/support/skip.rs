//! Saying loudly that tests did not run because this machine lacks their tools (etcd,
//! kube-apiserver, helm, containerd...). libtest can only report such a test as passed, and
//! it hides what a passing test prints with `print!`/`eprint!` (it swaps the macros' output
//! for a buffer), so the lines here are written to the process's standard error through
//! `std::io::stderr()`, which the capture does not touch: one line per skipped test as it
//! happens, and a summary per suite after libtest's own, when the process exits.
//! With `PIW_REQUIRE_TOOLS=1` a missing tool fails the test instead.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Mutex, Once, PoisonError};

/// Per suite: what it needs that is missing, and how many of its tests were skipped.
static SKIPPED: Mutex<BTreeMap<String, (String, usize)>> = Mutex::new(BTreeMap::new());

/// Whether a missing tool must fail the test (`PIW_REQUIRE_TOOLS=1`, as `make test` sets).
pub fn tools_required() -> bool {
    std::env::var("PIW_REQUIRE_TOOLS").as_deref() == Ok("1")
}

/// `test` of `suite` cannot run: `missing` is what it needs and is not here, `hint` how to
/// get it. Fails the test under `PIW_REQUIRE_TOOLS=1`; otherwise says so on stderr.
pub fn skip(suite: &str, test: &str, missing: &str, hint: &str) {
    if tools_required() {
        panic!("{suite} needs {missing} ({hint}), and PIW_REQUIRE_TOOLS=1");
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED: {suite} needs {missing} ({hint}; see README) [{test}]"
    );
    SKIPPED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(suite.to_owned())
        .or_insert_with(|| (format!("{missing} ({hint})"), 0))
        .1 += 1;
    static SUMMARY: Once = Once::new();
    SUMMARY.call_once(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(summary_at_exit) };
    });
}

extern "C" fn summary_at_exit() {
    let skipped = SKIPPED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut stderr = std::io::stderr().lock();
    for (suite, (needs, count)) in skipped.iter() {
        let _ = writeln!(
            stderr,
            "\n*** SKIPPED: {count} {suite} test(s) reported ok WITHOUT RUNNING: {suite} needs \
             {needs}; see README. PIW_REQUIRE_TOOLS=1 makes this a failure. ***"
        );
    }
}
