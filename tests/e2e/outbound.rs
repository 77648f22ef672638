//! Outgoing HTTP is denied by default: a plugin reaches only the hosts its
//! manifest grants, and a granted name that resolves to a loopback address
//! is refused unless the grant names the address itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use spike_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 upstream on 127.0.0.1 that counts the requests it got.
async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let reply =
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream";
                let _ = socket.write_all(reply).await;
            });
        }
    });
    (port, hits)
}

#[tokio::test]
async fn only_granted_hosts_are_reached() {
    let (port, hits) = upstream().await;
    let granted =
        format!("[[routes]]\nprefix = \"/granted\"\n[grants]\noutbound = [\"127.0.0.1:{port}\"]\n");
    let by_name =
        format!("[[routes]]\nprefix = \"/byname\"\n[grants]\noutbound = [\"localhost:{port}\"]\n");
    let server = TestServer::start(&[
        Plugin {
            name: "granted",
            guest: "fixture_fetch",
            manifest: &granted,
        },
        Plugin {
            name: "none",
            guest: "fixture_fetch",
            manifest: "[[routes]]\nprefix = \"/none\"\n",
        },
        Plugin {
            name: "byname",
            guest: "fixture_fetch",
            manifest: &by_name,
        },
    ])
    .await;
    let c = client();

    let (status, body) =
        send(c.get(server.at(&format!("/granted?authority=127.0.0.1:{port}&path=/x")))).await;
    assert_eq!((status, body.as_str()), (200, "upstream 200: upstream"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let refusals = [
        // No outbound grant at all.
        (
            format!("/none?authority=127.0.0.1:{port}"),
            "HttpRequestDenied",
        ),
        // Granted host, other port.
        (
            format!("/granted?authority=127.0.0.1:{}", port.wrapping_add(1)),
            "HttpRequestDenied",
        ),
        // A granted name that resolves to loopback.
        (
            format!("/byname?authority=localhost:{port}"),
            "DestinationIpProhibited",
        ),
    ];
    for (path, reason) in refusals {
        let (status, body) = send_json(c.get(server.at(&path))).await;
        assert_eq!(status, 502, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{path}: {message}");
    }
    // None of the refused requests reached the upstream.
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
