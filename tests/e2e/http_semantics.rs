//! HTTP as clients expect it: HEAD wherever GET is, `Expect`, a bad `Host`,
//! ranges as RFC 9110 reads them, and errors that say what went wrong (and
//! nothing of the host's internals).

use std::time::Duration;

use spike_e2e::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn head_is_answered_like_get_without_a_body() {
    let server = TestServer::start(&[HELLO]).await;
    let c = client();
    let data = vec![9u8; 5000];
    let (status, _) = send(c.put(server.at("/hello/files/h.bin")).body(data)).await;
    assert_eq!(status, 201);

    for path in ["/hello/files/h.bin", "/hello?name=head", "/healthz"] {
        let get = within(c.get(server.at(path)).send()).await.unwrap();
        let (get_status, get_headers) = (get.status(), get.headers().clone());
        let get_body = within(get.bytes()).await.unwrap();
        // Raw, to see exactly what comes after the head.
        let mut conn = raw_connect(server.addr()).await;
        let request = format!("HEAD {path} HTTP/1.1\r\nhost: spike\r\nconnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let head = read_response(&mut conn, Duration::from_secs(5)).await;
        assert_eq!(head.status, get_status.as_u16(), "{path}");
        assert!(head.body.is_empty(), "{path}: HEAD sent a body");
        for name in ["content-length", "content-type", "etag"] {
            assert_eq!(
                head.header(name),
                get_headers.get(name).map(|v| v.to_str().unwrap()),
                "{path}: {name}"
            );
        }
        assert_eq!(
            head.header("content-length"),
            Some(get_body.len().to_string().as_str()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn expectations_other_than_100_continue_get_417() {
    let server = TestServer::start(&[HELLO]).await;
    let (status, body) =
        send_json(client().get(server.at("/hello")).header("expect", "teapot")).await;
    assert_eq!((status, error_code(&body)), (417, "expectation_failed"));

    // 100-continue: the server asks for the body, then answers.
    let mut conn = raw_connect(server.addr()).await;
    conn.write_all(
        b"PUT /hello/files/c.txt HTTP/1.1\r\nhost: spike\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
    )
    .await
    .unwrap();
    let cont = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(cont.status, 100);
    conn.write_all(b"hello").await.unwrap();
    let done = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
}

#[tokio::test]
async fn a_host_header_that_is_not_a_host_gets_400() {
    let server = TestServer::start(&[HELLO]).await;
    for host in [&b"\xff\xfe"[..], b"a b", b"x:notaport"] {
        let mut conn = raw_connect(server.addr()).await;
        let mut request = b"GET /hello HTTP/1.1\r\nhost: ".to_vec();
        request.extend_from_slice(host);
        request.extend_from_slice(b"\r\n\r\n");
        conn.write_all(&request).await.unwrap();
        let resp = read_response(&mut conn, Duration::from_secs(5)).await;
        assert_eq!(resp.status, 400, "{host:?}");
        assert_eq!(error_code(&resp.json()), "bad_host", "{host:?}");
    }
}

#[tokio::test]
async fn an_object_over_the_limit_gets_413_with_the_reason() {
    let server = TestServer::start_with(&[HELLO], |c| c.max_object_bytes = 1 << 20).await;
    let big = vec![1u8; (1 << 20) + 1];
    let (status, body) = send_json(client().put(server.at("/hello/files/big")).body(big)).await;
    assert_eq!((status, error_code(&body)), (413, "too_large"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit of 1048576 bytes"), "{message}");
    for internal in ["StreamError", "LastOperationFailed", "Error {", "/"] {
        assert!(!message.contains(internal), "{message}");
    }
    let (status, _) = send(client().get(server.at("/hello/files/big"))).await;
    assert_eq!(status, 404, "nothing was stored");
}

#[tokio::test]
async fn ranges_are_served_as_rfc_9110_says() {
    let server = TestServer::start(&[HELLO]).await;
    let c = client();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    send(c.put(server.at("/hello/files/r.bin")).body(data.clone())).await;
    send(c.put(server.at("/hello/files/empty")).body(Vec::new())).await;

    let get = |file: &str, range: &str| {
        let req = c
            .get(server.at(&format!("/hello/files/{file}")))
            .header("range", range);
        async move {
            let resp = within(req.send()).await.unwrap();
            let status = resp.status().as_u16();
            let content_range = resp
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_string());
            let body = within(resp.bytes()).await.unwrap().to_vec();
            (status, content_range, body)
        }
    };
    let partial = |first: usize, last: usize| {
        (
            206,
            Some(format!("bytes {first}-{last}/1000")),
            data[first..=last].to_vec(),
        )
    };

    // An end past the object, or past what a u64 holds: to the end.
    assert_eq!(
        get("r.bin", "bytes=0-18446744073709551615").await,
        partial(0, 999)
    );
    assert_eq!(get("r.bin", "bytes=990-5000").await, partial(990, 999));
    assert_eq!(get("r.bin", "bytes=-10").await, partial(990, 999));
    assert_eq!(get("r.bin", "bytes=5-5").await, partial(5, 5));

    // Nothing of the object in range: 416 with its size.
    for (file, range, size) in [
        ("r.bin", "bytes=1000-", 1000),
        ("r.bin", "bytes=18446744073709551615-", 1000),
        ("r.bin", "bytes=-0", 1000),
        ("empty", "bytes=0-", 0),
        ("empty", "bytes=0-0", 0),
        ("empty", "bytes=-5", 0),
    ] {
        let (status, content_range, _) = get(file, range).await;
        assert_eq!(status, 416, "{file} {range}");
        assert_eq!(
            content_range,
            Some(format!("bytes */{size}")),
            "{file} {range}"
        );
    }

    // Ranges it does not serve are ignored: the whole object.
    for range in ["bytes=0-1,5-6", "bytes=9-3", "lines=1-2"] {
        assert_eq!(
            get("r.bin", range).await,
            (200, None, data.clone()),
            "{range}"
        );
    }
}
