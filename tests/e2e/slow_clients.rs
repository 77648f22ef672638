//! Slow and idle clients cannot take the server: request heads that trickle
//! (slowloris), connections beyond the cap, request bodies that trickle or
//! stall, responses nobody reads, and responses that never end.

use std::time::Duration;

use spike_e2e::*;
use tokio::io::AsyncWriteExt;

/// The loop fixture, whose `/loop/drip` streams a byte every 50 ms forever.
fn dripper(manifest: &str) -> Plugin<'_> {
    Plugin {
        name: "loop",
        guest: "fixture_loop",
        manifest,
    }
}

const PLAIN: Plugin = Plugin {
    name: "plain",
    guest: "fixture_plain_hello",
    manifest: "[[routes]]\nprefix = \"/plain\"\n",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plugins_trickling_uploads_leave_the_others_served() {
    // A pool of 16 instances; hello gets the default share (half).
    let server = TestServer::start_with(&[HELLO, PLAIN], |c| c.pool.max_instances = 16).await;
    let hello = server.plugin_status("hello").await;
    assert_eq!(hello["max_concurrent"], 8, "{hello}");

    // Twenty uploads to hello that send a byte every 200 ms: more than the
    // whole pool.
    let mut trickles = Vec::new();
    for i in 0..20 {
        let mut conn = raw_connect(server.addr()).await;
        let head = format!(
            "PUT /hello/files/slow{i} HTTP/1.1\r\nhost: spike\r\ncontent-length: 1000\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        trickles.push(conn);
    }
    let trickling = tokio::spawn(async move {
        for _ in 0..15 {
            for conn in &mut trickles {
                let _ = conn.write_all(b"x").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trickles
    });
    server.wait_in_flight("hello", 8).await;

    // Hello is at its limit: a quick 503 with a reason, not a hang.
    let c = client();
    let (status, body) = send_json(c.get(server.at("/hello"))).await;
    assert_eq!((status, error_code(&body)), (503, "busy"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("8 concurrent"),
        "{body}"
    );
    // The other plugin is served as usual.
    for _ in 0..20 {
        let (status, text) = send(c.get(server.at("/plain"))).await;
        assert_eq!((status, text.as_str()), (200, "Hello, world!\n"));
    }
    within(trickling).await.unwrap();
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_frees_the_instance() {
    let server = TestServer::start_with(&[HELLO], |c| {
        c.clients.body_timeout = Duration::from_millis(500);
    })
    .await;
    let mut conn = raw_connect(server.addr()).await;
    let head = "PUT /hello/files/stalled HTTP/1.1\r\nhost: spike\r\ncontent-length: 100\r\n\r\n";
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[b'x'; 10]).await.unwrap();
    // Then nothing.
    let start = std::time::Instant::now();
    let resp = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(
        (resp.status, error_code(&resp.json())),
        (408, "body_timeout")
    );
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
    server.wait_in_flight("hello", 0).await;
    // Nothing half-written was stored.
    let (status, _) = send(client().get(server.at("/hello/files/stalled"))).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_nobody_reads_frees_its_instance() {
    let manifest = "[[routes]]\nprefix = \"/hello\"\n[grants]\nblob = [\"hello-files\"]\n[limits]\nmax_concurrent = 2\nmax_body_mib = 64\n[env]\nWRITE_ACCESS = \"anyone\"\n";
    let server = TestServer::start_with(
        &[Plugin {
            name: "hello",
            guest: "hello",
            manifest,
        }],
        |c| c.clients.send_timeout = Duration::from_secs(1),
    )
    .await;
    let c = client();
    // Bigger than what socket buffers and the server's queues hold.
    let big = vec![7u8; 48 << 20];
    let (status, _) = send(c.put(server.at("/hello/files/big")).body(big)).await;
    assert_eq!(status, 201);

    // Two downloads that never read a byte take both of hello's permits...
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut conn = raw_connect(server.addr()).await;
        conn.write_all(b"GET /hello/files/big HTTP/1.1\r\nhost: spike\r\n\r\n")
            .await
            .unwrap();
        idle.push(conn);
    }
    server.wait_in_flight("hello", 2).await;
    let (status, body) = send_json(c.get(server.at("/hello"))).await;
    assert_eq!((status, error_code(&body)), (503, "busy"));

    // ...until the send timeout gives them back.
    server.wait_in_flight("hello", 0).await;
    let (status, _) = send(c.get(server.at("/hello"))).await;
    assert_eq!(status, 200);
    // The stalled connections were closed.
    for mut conn in idle {
        assert!(
            closed_within(&mut conn, Duration::from_secs(10))
                .await
                .is_some(),
            "an unread download's connection stayed open"
        );
    }
}

#[tokio::test]
async fn a_response_that_never_ends_is_cut_at_max_duration() {
    let manifest =
        "[[routes]]\nprefix = \"/loop\"\n[limits]\ntimeout_ms = 500\nmax_duration_ms = 1000\n";
    let server = TestServer::start(&[dripper(manifest)]).await;
    let mut conn = raw_connect(server.addr()).await;
    conn.write_all(b"GET /loop/drip HTTP/1.1\r\nhost: spike\r\n\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let took = closed_within(&mut conn, Duration::from_secs(10))
        .await
        .expect("the connection is closed at max_duration");
    eprintln!("cut after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    server.wait_in_flight("loop", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_connections_are_closed() {
    let server = TestServer::start_with(&[PLAIN], |c| {
        c.clients.header_timeout = Duration::from_secs(1);
    })
    .await;
    // Fifty clients sending their request head a byte every 100 ms.
    let head = b"GET /plain HTTP/1.1\r\nhost: spike\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let slow = (0..50).map(|_| {
        let addr = server.addr();
        tokio::spawn(async move {
            let mut conn = raw_connect(addr).await;
            let start = std::time::Instant::now();
            for &b in head.iter() {
                if conn.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Written out (or cut off): the server must have hung up.
            closed_within(&mut conn, Duration::from_secs(10))
                .await
                .map(|_| start.elapsed())
        })
    });
    let closed: Vec<Option<Duration>> = within(futures::future::join_all(slow))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for took in &closed {
        let took = took.expect("a slow head's connection stayed open");
        assert!(took < Duration::from_secs(4), "closed after {took:?}");
    }

    // A kept-alive connection that goes quiet is closed too.
    let mut conn = raw_connect(server.addr()).await;
    conn.write_all(b"GET /plain HTTP/1.1\r\nhost: spike\r\n\r\n")
        .await
        .unwrap();
    let resp = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(resp.status, 200);
    let idle = closed_within(&mut conn, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection stayed open");
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503() {
    let server = TestServer::start_with(&[PLAIN], |c| c.clients.max_connections = 8).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(raw_connect(server.addr()).await);
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = raw_connect(server.addr()).await;
    let resp = read_response(&mut extra, Duration::from_secs(5)).await;
    assert_eq!(resp.status, 503);
    assert_eq!(error_code(&resp.json()), "too_many_connections");
    assert_eq!(resp.header("retry-after"), Some("1"));

    // Room again once they go.
    drop(open);
    within_for(Duration::from_secs(5), async {
        loop {
            let mut conn = raw_connect(server.addr()).await;
            conn.write_all(b"GET /plain HTTP/1.1\r\nhost: spike\r\n\r\n")
                .await
                .unwrap();
            if read_response(&mut conn, Duration::from_secs(5))
                .await
                .status
                == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
