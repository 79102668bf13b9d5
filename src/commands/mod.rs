//! The commands other than `serve`: `mutate` (the engine offline, on manifests) and the IRSA
//! commands (`oidc`, `trust-policy`, `doctor`, and its cluster audit). Each reads files or the cluster, hands the facts
//! to the pure core or `crate::irsa`, prints, and chooses the exit code (0 all good, 1 a check
//! failed, 2 bad input with one line naming it).

mod audit;
pub mod cluster;
pub mod doctor;
pub mod manifests;
pub mod mutate;
pub mod oidc;
pub mod trust_policy;

use std::process::ExitCode;

/// Bad input: one line on standard error, exit code 2.
fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// A runtime for the cluster calls; these commands run a few requests and exit.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        })
}

/// `NAMESPACE<sep>NAME` with both parts non-empty.
fn split_service_account<'a>(
    value: &'a str,
    flag: &str,
    sep: char,
) -> Result<(&'a str, &'a str), String> {
    match value.split_once(sep) {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains(sep) =>
        {
            Ok((namespace, name))
        }
        _ => Err(format!(
            "{flag} {value:?} is not NAMESPACE{sep}SERVICEACCOUNT (e.g. team-a{sep}app)"
        )),
    }
}

fn now() -> i64 {
    crate::ops::clock::unix_now()
}
