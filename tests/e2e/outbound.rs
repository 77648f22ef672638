//! Outgoing HTTP is denied by default: a plugin reaches only the hosts its
//! manifest grants, and a granted name that resolves to a loopback address
//! is refused unless the grant names the address (and port) itself. The
//! name is resolved once, and the connection goes to the address that was
//! checked.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use spike::caps::outbound::Resolver;
use spike_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 upstream on 127.0.0.1 that counts the requests it got.
async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, serve_upstream(listener))
}

/// Answers every request on `listener` with `upstream`, counting them.
fn serve_upstream(listener: tokio::net::TcpListener) -> Arc<AtomicUsize> {
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
    hits
}

/// Answers every name with the next of its answers (the last one again
/// once they run out), and counts the lookups.
#[derive(Debug)]
struct ScriptedResolver {
    answers: Vec<IpAddr>,
    lookups: AtomicUsize,
}

impl ScriptedResolver {
    fn new(answers: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            answers: answers.iter().map(|a| a.parse().unwrap()).collect(),
            lookups: AtomicUsize::new(0),
        })
    }
}

impl Resolver for ScriptedResolver {
    fn lookup<'a>(&'a self, _: &'a str, _: u16) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers[n.min(self.answers.len() - 1)];
        Box::pin(async move { Ok(vec![answer]) })
    }
}

/// A plugin running the fetch fixture at `/{name}` with these outbound grants.
fn fetcher<'a>(name: &'a str, manifest: &'a str) -> Plugin<'a> {
    Plugin {
        name,
        guest: "fixture_fetch",
        manifest,
    }
}

#[tokio::test]
async fn a_granted_address_admits_its_port_only() {
    // An upstream on the granted port, and one on the next port that must
    // never be reached.
    let (port, hits) = upstream().await;
    let next = tokio::net::TcpListener::bind(("127.0.0.1", port + 1)).await;
    let Ok(next) = next else {
        eprintln!("port {} is taken; skipping", port + 1);
        return;
    };
    let next_hits = serve_upstream(next);
    // `api.test` resolves to loopback; the grant names 127.0.0.1 on one port.
    let resolver = ScriptedResolver::new(&["127.0.0.1"]);
    let manifest = format!(
        "[[routes]]\nprefix = \"/api\"\n[grants]\noutbound = [\"127.0.0.1:{port}\", \"api.test\"]\n"
    );
    let server = TestServer::start_with(&[fetcher("api", &manifest)], |c| {
        c.resolver = resolver.clone();
    })
    .await;
    let c = client();

    let (status, body) = send(c.get(server.at(&format!("/api?authority=api.test:{port}")))).await;
    assert_eq!((status, body.as_str()), (200, "upstream 200: upstream"));

    let path = format!("/api?authority=api.test:{}", port + 1);
    let (status, body) = send_json(c.get(server.at(&path))).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("DestinationIpProhibited"), "{message}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        next_hits.load(Ordering::SeqCst),
        0,
        "reached a port outside the grant"
    );
}

#[tokio::test]
async fn the_connection_goes_to_the_address_that_was_checked() {
    // The first answer is granted; a second lookup would get 127.0.0.2,
    // where another upstream listens on the same port.
    let (port, checked_hits) = upstream().await;
    let other = tokio::net::TcpListener::bind(("127.0.0.2", port)).await;
    let Ok(other) = other else {
        eprintln!("127.0.0.2:{port} is unavailable; skipping");
        return;
    };
    let other_hits = serve_upstream(other);
    let resolver = ScriptedResolver::new(&["127.0.0.1", "127.0.0.2"]);
    let manifest = format!(
        "[[routes]]\nprefix = \"/rebind\"\n[grants]\noutbound = [\"rebind.test:{port}\", \"127.0.0.1:{port}\"]\n"
    );
    let server = TestServer::start_with(&[fetcher("rebind", &manifest)], |c| {
        c.resolver = resolver.clone();
    })
    .await;

    let path = format!("/rebind?authority=rebind.test:{port}");
    let (status, body) = send(client().get(server.at(&path))).await;
    assert_eq!((status, body.as_str()), (200, "upstream 200: upstream"));
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1, "resolved once");
    assert_eq!(checked_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "connected to an unchecked address"
    );
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

#[tokio::test]
async fn tls_goes_to_the_checked_address_and_names_the_requested_host() {
    // A listener that reads the TLS ClientHello and keeps the server name
    // it asks for (SNI), then hangs up: no certificate is needed to see
    // where the connection went and what name it carried.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = vec![0u8; 16 * 1024];
        let n = socket.read(&mut hello).await.unwrap();
        let _ = tx.send(server_name(&hello[..n]));
    });
    let resolver = ScriptedResolver::new(&["127.0.0.1"]);
    let manifest = format!(
        "[[routes]]\nprefix = \"/tls\"\n[grants]\noutbound = [\"secure.test:{port}\", \"127.0.0.1:{port}\"]\n"
    );
    let server = TestServer::start_with(&[fetcher("tls", &manifest)], |c| {
        c.resolver = resolver.clone();
    })
    .await;
    let path = format!("/tls?scheme=https&authority=secure.test:{port}");
    let (status, body) = send_json(client().get(server.at(&path))).await;
    // The handshake cannot complete, so the guest sees an error...
    assert_eq!(status, 502, "{body}");
    // ...but it reached the checked address, asking for the name the
    // guest used, and the certificate would have been checked against it.
    let sni = within(rx).await.expect("a TLS connection came in");
    assert_eq!(sni.as_deref(), Some("secure.test"));
}

/// The server name (SNI) of a TLS ClientHello record, if it has one.
fn server_name(record: &[u8]) -> Option<String> {
    // Record header (5), handshake header (4), version (2), random (32).
    let mut at = 5 + 4 + 2 + 32;
    let u8_at = |i: usize| record.get(i).copied().map(usize::from);
    let u16_at = |i: usize| Some((u8_at(i)? << 8) | u8_at(i + 1)?);
    at += 1 + u8_at(at)?; // session id
    at += 2 + u16_at(at)?; // cipher suites
    at += 1 + u8_at(at)?; // compression methods
    let end = at + 2 + u16_at(at)?;
    at += 2;
    while at + 4 <= end {
        let (kind, len) = (u16_at(at)?, u16_at(at + 2)?);
        if kind == 0 {
            // server_name: list length (2), name type (1), name length (2).
            let name_len = u16_at(at + 4 + 3)?;
            let start = at + 4 + 5;
            return String::from_utf8(record.get(start..start + name_len)?.to_vec()).ok();
        }
        at += 4 + len;
    }
    None
}

/// A keep-alive HTTP/1.1 upstream: counts the connections it accepted and
/// the requests it answered, and keeps each connection open.
fn keep_alive_upstream(listener: tokio::net::TcpListener) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        r.fetch_add(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nupstream";
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (connections, requests)
}

#[tokio::test]
async fn connections_are_kept_alive_per_plugin() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, requests) = keep_alive_upstream(listener);
    let grant =
        format!("[[routes]]\nprefix = \"/{{}}\"\n[grants]\noutbound = [\"127.0.0.1:{port}\"]\n");
    let (a, b) = (grant.replace("{}", "a"), grant.replace("{}", "b"));
    let server = TestServer::start(&[fetcher("a", &a), fetcher("b", &b)]).await;
    let c = client();
    for i in 0..3 {
        let (status, body) =
            send(c.get(server.at(&format!("/a?authority=127.0.0.1:{port}&path=/{i}")))).await;
        assert_eq!((status, body.as_str()), (200, "upstream 200: upstream"));
    }
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one plugin's requests share a connection"
    );
    // Another plugin with the same grant gets a connection of its own.
    let (status, _) =
        send(c.get(server.at(&format!("/b?authority=127.0.0.1:{port}&path=/")))).await;
    assert_eq!(status, 200);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    let metrics = server.metrics_text().await;
    for (plugin, kind, n) in [
        ("a", "reused", 2),
        ("a", "connected", 1),
        ("b", "connected", 1),
    ] {
        let line =
            format!("spike_outbound_requests_total{{plugin=\"{plugin}\",kind=\"{kind}\"}} {n}");
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}
