//! A TCP proxy in front of the API server that delays everything the server sends, so that a
//! webhook behind it sees each watch event late: a pod created right after its ServiceAccount
//! then reaches the webhook before the ServiceAccount does — the cache race, made certain.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Starts the proxy on 127.0.0.1 (ephemeral port), forwarding to `upstream` and delaying each
/// chunk from it by `delay`. Returns the port.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    upstream: std::net::SocketAddr,
    delay: Duration,
) -> u16 {
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind the lag proxy");
    let port = listener.local_addr().expect("addr").port();
    runtime.spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                // Chunks keep their order: each is held for `delay`, then written.
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                let reader = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx
                                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                                    .is_err()
                                {
                                    break;
                                }
                            }
                        }
                    }
                });
                while let Some((due, chunk)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if client_write.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = client_write.shutdown().await;
                reader.abort();
                up.abort();
            });
        }
    });
    port
}
