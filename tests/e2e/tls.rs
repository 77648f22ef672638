//! HTTPS from certificate files: HTTP/2 and HTTP/1.1 by ALPN (with a
//! rustls client and with curl), the files replaced under open
//! connections, HSTS, the admin API on its own listener, the redirecting
//! plain listener, and what a hostile client can hold: handshakes that
//! never finish, HTTP/2 streams reset as fast as they open.

use std::path::Path;
use std::time::Duration;

use spike::tls::TlsSettings;
use spike_e2e::tls::{Conn, TestCa, alpn, connect, peer_leaf, roots};
use spike_e2e::{ADMIN_TOKEN, HELLO, TestServer, client, send, send_json, within, within_for};

/// A server of HELLO over HTTPS with `cert` and `key`.
async fn https_server(
    cert: &Path,
    key: &Path,
    configure: impl FnOnce(&mut spike::ServerConfig),
) -> TestServer {
    let files = Some((cert.to_path_buf(), key.to_path_buf()));
    TestServer::start_with(&[HELLO], |config| {
        config.tls = Some(TlsSettings {
            files,
            ..TlsSettings::default()
        });
        configure(config);
    })
    .await
}

fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (scripts/setup.sh installs it)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_h2_and_http1_by_alpn_and_curl_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let (cert, key) = TestCa::write(&ca.issue(&["localhost"]), dir.path());
    let server = https_server(&cert, &key, |c| c.hsts_max_age = Some(600)).await;
    let addr = server.addr();
    let authority = format!("localhost:{}", addr.port());
    let roots = roots(&ca.root_pem);

    // HTTP/2 when offered, HTTP/1.1 when that is all the client speaks.
    for (offer, chosen) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice()),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let stream = within(connect(addr, "localhost", &roots, offer))
            .await
            .unwrap();
        assert_eq!(alpn(&stream).as_deref(), Some(chosen));
        let mut conn = Conn::over(stream).await;
        let (status, headers, body) = within(conn.get(&authority, "/hello")).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Hello"), "{body}");
        assert_eq!(headers["strict-transport-security"], "max-age=600");
        // A second request on the same connection.
        let (status, _, _) = within(conn.get(&authority, "/healthz")).await;
        assert_eq!(status, 200);
    }

    // curl, trusting the test CA (not told to ignore errors).
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &ca.root_pem).unwrap();
    let url = format!("https://{authority}/hello");
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (out, err) = curl(&[
            flag,
            "--cacert",
            root.to_str().unwrap(),
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &url,
        ]);
        assert_eq!(out, format!("{version} 200"), "{flag}: {err}");
    }
    // Plain HTTP on the TLS port gets nothing served.
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        client().get(format!("http://{addr}/hello")).send(),
    )
    .await
    .expect("answered or refused in time")
    .map(|r| (r.status().as_u16(), ()))
    .unwrap_or((0, ()));
    assert_ne!(status, 200);
    // A client that trusts another CA refuses the server.
    let other = spike_e2e::tls::roots(&TestCa::new("another CA").root_pem);
    assert!(
        within(connect(addr, "localhost", &other, &[b"h2"]))
            .await
            .is_err()
    );
    let metrics = https_metrics(&server, &roots).await;
    assert!(
        metrics.contains("spike_tls_handshakes_total{outcome=\"h2\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "spike_tls_certificate_expiry_timestamp_seconds{name=\"localhost\",source=\"file\"}"
    ));
}

/// The admin metrics, over HTTPS.
async fn https_metrics(server: &TestServer, roots: &rustls::RootCertStore) -> String {
    let stream = within(connect(server.addr(), "localhost", roots, &[b"http/1.1"]))
        .await
        .unwrap();
    let mut conn = Conn::over(stream).await;
    let authority = format!("localhost:{}", server.addr().port());
    let answer = conn.get_as(&authority, "/_spike/metrics", Some(ADMIN_TOKEN));
    let (status, _, text) = within(answer).await;
    assert_eq!(status, 200, "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_serve_new_handshakes_and_open_connections_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let first = ca.issue(&["localhost"]);
    let (cert, key) = TestCa::write(&first, dir.path());
    let server = https_server(&cert, &key, |_| {}).await;
    let addr = server.addr();
    let authority = format!("localhost:{}", addr.port());
    let roots = roots(&ca.root_pem);
    let old = within(connect(addr, "localhost", &roots, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(peer_leaf(&old), first.der);
    let mut old = Conn::over(old).await;
    assert_eq!(within(old.get(&authority, "/healthz")).await.0, 200);

    // A renewal: new files, renamed in.
    let second = ca.issue(&["localhost"]);
    TestCa::write(&second, dir.path());
    within_for(Duration::from_secs(10), async {
        loop {
            let stream = connect(addr, "localhost", &roots, &[b"h2"]).await.unwrap();
            if peer_leaf(&stream) == second.der {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // The connection opened before goes on, on the old certificate.
    assert_eq!(within(old.get(&authority, "/hello")).await.0, 200);

    // A broken pair (a key that is not the certificate's) keeps the
    // current one served.
    let third = ca.issue(&["localhost"]);
    let broken = spike_e2e::tls::Leaf {
        key_pem: ca.issue(&["localhost"]).key_pem,
        ..third
    };
    TestCa::write(&broken, dir.path());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stream = within(connect(addr, "localhost", &roots, &[b"h2"]))
        .await
        .unwrap();
    assert_eq!(peer_leaf(&stream), second.der, "the good pair stays served");
    assert!(spike_e2e::captured_logs().contains("TLS certificate not reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let leaf = ca.issue(&["localhost"]);
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &leaf.key_pem).unwrap(); // a key where the chain goes
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let plugins = dir.path().join("plugins");
    spike_e2e::write_plugins(&plugins, &[HELLO]);
    let mut config = spike_e2e::test_config(&plugins, &dir.path().join("data"));
    config.tls = Some(TlsSettings {
        files: Some((cert.clone(), key)),
        ..TlsSettings::default()
    });
    let err = match within(spike::start(config)).await {
        Ok(_) => panic!("a server started with a key for a certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(cert.to_str().unwrap()), "{err}");
    assert!(err.contains("no certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_hold_nothing_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let (cert, key) = TestCa::write(&ca.issue(&["localhost"]), dir.path());
    let server = https_server(&cert, &key, |config| {
        let tls = config.tls.as_mut().unwrap();
        tls.max_handshakes = 16;
        tls.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = server.addr();
    let roots = roots(&ca.root_pem);
    // 200 connections: half send nothing, half the first bytes of a
    // ClientHello and then nothing (a TLS slowloris).
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut tcp = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
        if i % 2 == 1 {
            tokio::io::AsyncWriteExt::write_all(&mut tcp, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        stalled.push(tcp);
    }
    // Real clients still get through, each within a second.
    let authority = format!("localhost:{}", addr.port());
    for _ in 0..5 {
        let stream = within_for(
            Duration::from_secs(2),
            connect(addr, "localhost", &roots, &[b"h2"]),
        )
        .await
        .unwrap();
        let mut conn = Conn::over(stream).await;
        assert_eq!(within(conn.get(&authority, "/hello")).await.0, 200);
    }
    let metrics = https_metrics(&server, &roots).await;
    let pushed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spike_tls_handshakes_total{outcome=\"pushed_out\"} "))
        .expect("pushed-out handshakes are counted")
        .parse()
        .unwrap();
    assert!(pushed >= 150.0, "{metrics}");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_resets_and_stream_floods_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let (cert, key) = TestCa::write(&ca.issue(&["localhost"]), dir.path());
    let server = https_server(&cert, &key, |_| {}).await;
    let addr = server.addr();
    let roots = roots(&ca.root_pem);
    let authority = format!("localhost:{}", addr.port());
    let uri = format!("https://{authority}/hello");

    // Rapid reset: streams opened and reset at once, over and over. The
    // server ends the connection (GOAWAY) instead of working on each.
    let stream = within(connect(addr, "localhost", &roots, &[b"h2"]))
        .await
        .unwrap();
    let (mut h2, conn) = within(h2::client::handshake(stream)).await.unwrap();
    let driving = tokio::spawn(conn);
    let mut opened = 0;
    for _ in 0..5_000 {
        let Ok(ready) = within(h2.clone().ready()).await else {
            break;
        };
        h2 = ready;
        let request = http::Request::get(&uri).body(()).unwrap();
        let Ok((_, mut send)) = h2.send_request(request, true) else {
            break;
        };
        send.send_reset(h2::Reason::CANCEL);
        opened += 1;
    }
    let ended = within_for(Duration::from_secs(10), driving).await.unwrap();
    assert!(ended.is_err(), "the server ended the connection");
    assert!(
        opened < 5_000,
        "the server stopped it before 5,000 resets: {opened}"
    );

    // A stream flood: 1,000 requests at once on one connection. The
    // server takes 128 at a time (the client queues the rest, as its
    // SETTINGS say); all are answered.
    let stream = within(connect(addr, "localhost", &roots, &[b"h2"]))
        .await
        .unwrap();
    let (h2, conn) = within(h2::client::handshake(stream)).await.unwrap();
    tokio::spawn(conn);
    // One answer first: the server's SETTINGS (its stream limit) came
    // before it, as a browser waits for them. A client that opens streams
    // past the limit gets them refused, and the connection closed once it
    // keeps at it (hyper's bound on streams it had to reset).
    let mut first = within(h2.clone().ready()).await.unwrap();
    let (response, _) = first
        .send_request(http::Request::get(&uri).body(()).unwrap(), true)
        .unwrap();
    assert_eq!(within(response).await.unwrap().status(), 200);
    let requests = (0..1_000).map(|_| {
        let h2 = h2.clone();
        let uri = uri.clone();
        async move {
            let mut h2 = h2.ready().await?;
            let (response, _) =
                h2.send_request(http::Request::get(&uri).body(()).unwrap(), true)?;
            let response = response.await?;
            let status = response.status();
            let mut body = response.into_body();
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Ok::<_, h2::Error>(status)
        }
    });
    let statuses = within_for(Duration::from_secs(60), futures::future::join_all(requests)).await;
    let ok = statuses
        .iter()
        .filter(|s| matches!(s, Ok(s) if *s == 200))
        .count();
    assert_eq!(ok, 1_000, "{:?}", statuses.iter().find(|s| s.is_err()));

    // Meanwhile others are served.
    let stream = within(connect(addr, "localhost", &roots, &[b"http/1.1"]))
        .await
        .unwrap();
    let mut conn = Conn::over(stream).await;
    assert_eq!(within(conn.get(&authority, "/hello")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_on_its_own_listener_and_plain_http_redirected() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let (cert, key) = TestCa::write(&ca.issue(&["localhost"]), dir.path());
    let (admin, plain) = (free(), free());
    let server = https_server(&cert, &key, |config| {
        config.admin_listen = Some(admin);
        config.listen_http = Some(plain);
    })
    .await;
    let roots = roots(&ca.root_pem);
    let authority = format!("localhost:{}", server.addr().port());

    // Not on the public address.
    let stream = within(connect(server.addr(), "localhost", &roots, &[b"h2"]))
        .await
        .unwrap();
    let mut conn = Conn::over(stream).await;
    let (status, _, body) = within(conn.get(&authority, "/_spike/plugins")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--admin-listen"), "{body}");
    // On its own, with the token; and nothing else there.
    let (status, certs) = send_json(
        client()
            .get(format!("http://{admin}/_spike/certs"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{certs}");
    assert_eq!(certs["certificates"][0]["names"][0], "localhost");
    assert_eq!(certs["certificates"][0]["source"], "file");
    let (status, _) = send(client().get(format!("http://{admin}/hello"))).await;
    assert_eq!(status, 404);
    let (status, _) = send(client().get(format!("http://{admin}/readyz"))).await;
    assert_eq!(status, 200);

    // `spike certs list` reads it.
    let out = std::process::Command::new(spike_e2e::target_dir().join("debug/spike"))
        .args([
            "certs",
            "list",
            "--server",
            &format!("http://{admin}"),
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("localhost") && text.contains("file") && text.contains("in "),
        "{text}"
    );

    // Plain HTTP: a 308 to the same URL over HTTPS, method kept.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = within(
        no_redirects
            .post(format!("http://{plain}/hello/x?y=1"))
            .header("host", "example.test")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 308);
    let location = response.headers()["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!("https://example.test:{}/hello/x?y=1", server.addr().port())
    );
    // An ACME token that is not being validated: a JSON 404.
    let (status, body) =
        send(client().get(format!("http://{plain}/.well-known/acme-challenge/nope"))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"code\""), "{body}");
}

/// A free loopback address.
fn free() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], spike_e2e::process::free_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_a_page_over_https_and_its_room_socket_works() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let (cert, key) = TestCa::write(&ca.issue(&["localhost"]), dir.path());
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("index.html"),
        "<!doctype html><p>served over HTTPS</p>",
    )
    .unwrap();
    let files = Some((cert, key));
    let server = TestServer::start_with(&[HELLO, spike_e2e::rooms::ROOMS], |config| {
        config.tls = Some(TlsSettings {
            files,
            ..TlsSettings::default()
        });
        config.sites = vec![format!("/={}", site.display()).parse().unwrap()];
    })
    .await;
    // Chromium trusts what the NSS database in its HOME trusts.
    let home = dir.path().join("home");
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, &ca.root_pem).unwrap();
    let db = format!("sql:{}", nssdb.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "spike test CA",
            "-i",
            root.to_str().unwrap(),
        ],
    ] {
        let status = std::process::Command::new("certutil").args(&args).status();
        assert!(
            status
                .expect("certutil runs (scripts/setup.sh installs libnss3-tools)")
                .success(),
            "certutil {args:?}"
        );
    }
    let url = format!("https://localhost:{}/", server.addr().port());
    let lines = spike_e2e::node::run_to_end(
        "https-room.mjs",
        &[url.as_ref(), home.as_os_str()],
        Duration::from_secs(90),
    )
    .await;
    let result = &lines[0];
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["protocol"], "h2", "{result}");
    assert!(
        result["text"]
            .as_str()
            .unwrap()
            .contains("served over HTTPS"),
        "{result}"
    );
    assert_eq!(result["room"]["data"], "hello-from-chromium", "{result}");
    assert_eq!(result["errors"], serde_json::json!([]), "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sends_goaway_and_lets_http2_streams_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("spike test CA");
    let (cert, key) = TestCa::write(&ca.issue(&["localhost"]), dir.path());
    let mut server = https_server(&cert, &key, |_| {}).await;
    let addr = server.addr();
    let roots = roots(&ca.root_pem);
    let uri = format!("https://localhost:{}/hello/files/draining", addr.port());
    let stream = within(connect(addr, "localhost", &roots, &[b"h2"]))
        .await
        .unwrap();
    let (h2, conn) = within(h2::client::handshake(stream)).await.unwrap();
    let driving = tokio::spawn(conn);
    let mut h2 = within(h2.ready()).await.unwrap();
    // An upload in flight: half its body sent.
    let put = http::Request::put(&uri)
        .header("content-length", "10")
        .body(())
        .unwrap();
    let (response, mut body) = h2.send_request(put, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"01234"), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let finishing = async {
        // The stop has begun: the rest of the body, then the answer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        body.send_data(bytes::Bytes::from_static(b"56789"), true)
            .unwrap();
        let response = within(response).await.unwrap();
        // GOAWAY came: no new stream is taken on this connection.
        let refused = match within(h2.ready()).await {
            Ok(mut h2) => match h2.send_request(http::Request::get(&uri).body(()).unwrap(), true) {
                Ok((again, _)) => within(again).await.is_err(),
                Err(_) => true,
            },
            Err(_) => true,
        };
        (response.status(), refused)
    };
    let (_, (status, refused)) = tokio::join!(server.stop(), finishing);
    assert!(status.is_success(), "{status}");
    assert!(refused, "a stream opened after GOAWAY is refused");
    within(driving).await.unwrap().ok();
    // What was uploaded during the stop is there after a restart.
    server.restart().await;
    let stream = within(connect(server.addr(), "localhost", &roots, &[b"h2"]))
        .await
        .unwrap();
    let mut conn = Conn::over(stream).await;
    let authority = format!("localhost:{}", server.addr().port());
    let (status, _, body) = within(conn.get(&authority, "/hello/files/draining")).await;
    assert_eq!((status, body.as_str()), (200, "0123456789"));
}
