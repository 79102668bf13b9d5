//! Test helpers shared by several test crates (and the request-path benchmark): certificates
//! and kubelet-style certificate directories, free loopback ports for child processes, and
//! running external programs with a teardown that always happens.
//! Each crate includes this module once; not every crate uses every item.

pub mod process;
pub mod tls;

use std::net::TcpListener;

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
