//! Helpers shared by the integration tests: a stand-in Kubernetes API, certificates and
//! kubelet-style certificate directories, the in-process server and its clients, the server
//! as a process of its own, external programs with a teardown that always happens, waiting
//! for a condition, the gate that keeps the heavy suites apart, and what the alerts and the
//! dashboard query.

pub mod engine;
pub mod fake_api;
pub mod process;
pub mod promql;
pub mod server;
pub mod skip;
pub mod suite_gate;
pub mod tls;
pub mod wait;
pub mod webhook_process;

use std::net::TcpListener;

pub use wait::{eventually, eventually_async};

/// Two distinct free TCP ports on 127.0.0.1, for a process that binds them itself. Both are
/// bound at once (so they differ) and released on return; the OS does not hand them out
/// again soon.
pub fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    (
        a.local_addr().expect("local address").port(),
        b.local_addr().expect("local address").port(),
    )
}
