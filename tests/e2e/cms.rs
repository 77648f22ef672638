//! The CMS component behind the auth hook: documents with ETags, optimistic
//! concurrency, versions, blob storage for large bodies, per-user spaces,
//! folders, bad paths, and restarts.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spike_e2e::tokens::{AUTH_HS256, hs256_secret, hs256_tokens};
use spike_e2e::*;
use tokio::io::AsyncWriteExt;

const HS_KEY: &str = "cms-test-hs256-key";

/// The shipped manifest's routes, with 3 versions kept and a 1 KiB blob
/// threshold.
const CMS: &str = r#"
[[routes]]
prefix = "/my-cms"
auth = "required"
[[routes]]
prefix = "/live-cms"
auth = "optional"
[grants]
kv = ["cms"]
blob = ["cms"]
[env]
MAX_VERSIONS = "3"
BLOB_THRESHOLD_BYTES = "1024"
[limits]
max_body_mib = 4
"#;

async fn start() -> TestServer {
    TestServer::start_with(
        &[
            AUTH_HS256,
            Plugin {
                name: "cms",
                guest: "cms",
                manifest: CMS,
            },
        ],
        |config| config.secrets = hs256_secret(HS_KEY),
    )
    .await
}

/// HS256 tokens for these users, valid for ten minutes.
fn users<const N: usize>(names: [&str; N]) -> [String; N] {
    hs256_tokens(HS_KEY, &names).try_into().unwrap()
}

struct Got {
    status: u16,
    etag: Option<String>,
    content_type: Option<String>,
    version: Option<String>,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn call(req: reqwest::RequestBuilder) -> Got {
    let resp = within(req.send()).await.expect("request sent");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, etag, content_type, version) = (
        resp.status().as_u16(),
        header("etag"),
        header("content-type"),
        header("x-cms-version"),
    );
    let body = within(resp.bytes()).await.unwrap().to_vec();
    Got {
        status,
        etag,
        content_type,
        version,
        body,
    }
}

fn put(
    server: &TestServer,
    token: &str,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    client()
        .put(server.at(path))
        .bearer_auth(token)
        .header("content-type", "text/markdown; charset=utf-8")
        .body(body)
}

fn get(server: &TestServer, token: &str, path: &str) -> reqwest::RequestBuilder {
    client().get(server.at(path)).bearer_auth(token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_keep_etags_preconditions_and_versions() {
    let server = start().await;
    let [alice] = users(["alice"]);
    let doc = "/my-cms/notes/a.md";

    let created = call(put(&server, &alice, doc, "# one")).await;
    assert_eq!(created.status, 201, "{}", created.json());
    assert_eq!(created.json()["version"], 1);
    let etag1 = created.etag.clone().unwrap();
    assert_eq!(created.json()["etag"], etag1);

    let read = call(get(&server, &alice, doc)).await;
    assert_eq!(
        (read.status, read.body.as_slice()),
        (200, b"# one".as_slice())
    );
    assert_eq!(
        read.content_type.as_deref(),
        Some("text/markdown; charset=utf-8")
    );
    assert_eq!(read.etag.as_deref(), Some(etag1.as_str()));
    assert_eq!(read.version.as_deref(), Some("1"));
    // Conditional GET.
    let cached = call(get(&server, &alice, doc).header("if-none-match", &etag1)).await;
    assert_eq!((cached.status, cached.body.len()), (304, 0));

    // If-Match: a stale tag is refused, the current one wins.
    let stale = call(put(&server, &alice, doc, "# two").header("if-match", "\"nope\"")).await;
    assert_eq!(stale.status, 412);
    assert_eq!(error_code(&stale.json()), "precondition_failed");
    let second = call(put(&server, &alice, doc, "# two").header("if-match", &etag1)).await;
    assert_eq!(second.status, 200, "{}", second.json());
    assert_eq!(second.json()["version"], 2);
    // If-None-Match: * creates only.
    let exists = call(put(&server, &alice, doc, "x").header("if-none-match", "*")).await;
    assert_eq!(exists.status, 412);
    let fresh =
        call(put(&server, &alice, "/my-cms/notes/b.md", "b").header("if-none-match", "*")).await;
    assert_eq!(fresh.status, 201);

    // Versions: the last 3 are kept and readable.
    for body in ["# three", "# four"] {
        assert_eq!(call(put(&server, &alice, doc, body)).await.status, 200);
    }
    for (v, body) in [(2, "# two"), (3, "# three"), (4, "# four")] {
        let old = call(get(&server, &alice, &format!("{doc}?version={v}"))).await;
        assert_eq!(
            (old.status, old.body.as_slice()),
            (200, body.as_bytes()),
            "v{v}"
        );
        assert_eq!(old.version.as_deref(), Some(v.to_string().as_str()));
    }
    let gone = call(get(&server, &alice, &format!("{doc}?version=1"))).await;
    assert_eq!(
        (gone.status, error_code(&gone.json())),
        (404, "no_such_version")
    );
    let junk = call(get(&server, &alice, &format!("{doc}?version=x"))).await;
    assert_eq!(junk.status, 400);

    // JSON documents must parse.
    let bad = call(
        client()
            .put(server.at("/my-cms/data.json"))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body("{\"a\":"),
    )
    .await;
    assert_eq!((bad.status, error_code(&bad.json())), (400, "invalid_json"));
    let missing = call(get(&server, &alice, "/my-cms/data.json")).await;
    assert_eq!(missing.status, 404, "nothing was half-written");

    // DELETE honours If-Match too.
    let current = call(get(&server, &alice, doc)).await.etag.unwrap();
    let refused = call(
        client()
            .delete(server.at(doc))
            .bearer_auth(&alice)
            .header("if-match", &etag1),
    )
    .await;
    assert_eq!(refused.status, 412);
    let deleted = call(
        client()
            .delete(server.at(doc))
            .bearer_auth(&alice)
            .header("if-match", &current),
    )
    .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(call(get(&server, &alice, doc)).await.status, 404);
    assert_eq!(
        call(client().delete(server.at(doc)).bearer_auth(&alice))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_writers_with_the_same_if_match_exactly_one_wins() {
    let server = start().await;
    let [alice] = users(["alice"]);
    let doc = "/my-cms/race.txt";
    let mut etag = call(put(&server, &alice, doc, "start")).await.etag.unwrap();
    for round in 0..5 {
        let writers = (0..4).map(|w| {
            let req = put(&server, &alice, doc, format!("round {round} writer {w}"))
                .header("if-match", &etag);
            tokio::spawn(async move { call(req).await })
        });
        let results: Vec<Got> = futures::future::join_all(writers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let statuses: Vec<u16> = results.iter().map(|g| g.status).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 412).count(),
            3,
            "{statuses:?}"
        );
        // What is stored is the winner's body, under the winner's tag.
        let winner = results.iter().find(|g| g.status == 200).unwrap();
        let now = call(get(&server, &alice, doc)).await;
        assert_eq!(now.etag, winner.etag);
        assert_eq!(now.version.unwrap(), (round + 2).to_string());
        etag = now.etag.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_documents_go_to_blob_storage_and_read_back_identical() {
    let server = start().await;
    let [alice] = users(["alice"]);
    let doc = "/my-cms/big.bin";
    let big: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let stored = call(put(&server, &alice, doc, big.clone())).await;
    assert_eq!(stored.status, 201, "{}", stored.json());
    // Blob storage's tag is the body's SHA-256, as for small documents.
    assert_eq!(
        stored.json()["etag"],
        format!("\"{}\"", hex::encode(Sha256::digest(&big)))
    );
    let read = call(get(&server, &alice, doc)).await;
    assert_eq!(read.status, 200);
    assert!(read.body == big, "{} bytes back", read.body.len());
    // Replaced by a small one: the large version stays readable.
    assert_eq!(
        call(put(&server, &alice, doc, "small now")).await.status,
        200
    );
    let old = call(get(&server, &alice, &format!("{doc}?version=1"))).await;
    assert!(old.status == 200 && old.body == big);
    assert_eq!(call(get(&server, &alice, doc)).await.body, b"small now");
    // Over the route's body limit: 413 (answered from Content-Length,
    // before the body, so read off a raw connection), and the document is
    // as it was.
    let mut stream = raw_connect(server.addr()).await;
    let head = format!(
        "PUT {doc} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\ncontent-length: {}\r\n\r\n",
        5 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let refused = read_response(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(refused.status, 413);
    assert_eq!(call(get(&server, &alice, doc)).await.body, b"small now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_read_list_change_or_delete_anothers() {
    let server = start().await;
    let [alice, bob] = users(["alice", "bob"]);
    assert_eq!(
        call(put(&server, &alice, "/my-cms/private/plan.md", "alice's"))
            .await
            .status,
        201
    );
    assert_eq!(
        call(get(&server, &bob, "/my-cms/private/plan.md"))
            .await
            .status,
        404
    );
    let listing = call(get(&server, &bob, "/my-cms/")).await;
    assert_eq!(listing.json()["entries"], json!([]));
    let listing = call(get(&server, &bob, "/my-cms/private/")).await;
    assert_eq!(listing.json()["entries"], json!([]));
    assert_eq!(
        call(
            client()
                .delete(server.at("/my-cms/private/plan.md"))
                .bearer_auth(&bob)
        )
        .await
        .status,
        404
    );
    // Bob writing the same path writes his own document.
    assert_eq!(
        call(put(&server, &bob, "/my-cms/private/plan.md", "bob's"))
            .await
            .status,
        201
    );
    assert_eq!(
        call(get(&server, &alice, "/my-cms/private/plan.md"))
            .await
            .body,
        b"alice's"
    );
    assert_eq!(
        call(get(&server, &bob, "/my-cms/private/plan.md"))
            .await
            .body,
        b"bob's"
    );
    // No token, no /my-cms at all.
    let anonymous = call(client().get(server.at("/my-cms/private/plan.md"))).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_documents_are_public_to_read_and_signed_in_to_write() {
    let server = start().await;
    let [alice] = users(["alice"]);
    let anonymous = client();
    let refused = call(anonymous.put(server.at("/live-cms/home.md")).body("x")).await;
    assert_eq!(
        (refused.status, error_code(&refused.json())),
        (401, "missing_token")
    );
    assert_eq!(
        call(put(&server, &alice, "/live-cms/home.md", "welcome"))
            .await
            .status,
        201
    );
    let read = call(anonymous.get(server.at("/live-cms/home.md"))).await;
    assert_eq!(
        (read.status, read.body.as_slice()),
        (200, b"welcome".as_slice())
    );
    let deleting = call(anonymous.delete(server.at("/live-cms/home.md"))).await;
    assert_eq!(deleting.status, 401);
}

/// A signed-in writer's HTML or SVG is served inert to its readers: the
/// hostile probe's stored XSS ran on the editor's origin and read the
/// reader's private documents. In KV (small) and in blob storage (large)
/// alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_served_inert_whatever_their_type() {
    let server = start().await;
    let [alice] = users(["alice"]);
    let script = "<script>fetch('/my-cms/').then(r => r.text()).then(alert)</script>";
    for (path, content_type, body, attachment) in [
        ("/live-cms/evil.html", "text/html", script.to_string(), true),
        (
            "/live-cms/big.svg",
            "image/svg+xml",
            format!("<svg>{}</svg>", script.repeat(40)),
            true,
        ),
        (
            "/live-cms/notes.md",
            "text/markdown",
            "# fine".to_string(),
            false,
        ),
    ] {
        let stored = call(
            client()
                .put(server.at(path))
                .bearer_auth(&alice)
                .header("content-type", content_type)
                .body(body.clone()),
        )
        .await;
        assert_eq!(stored.status, 201, "{path}");
        let resp = within(client().get(server.at(path)).send()).await.unwrap();
        let headers = resp.headers().clone();
        assert_eq!(within(resp.text()).await.unwrap(), body, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["content-security-policy"], "sandbox", "{path}");
        assert_eq!(
            headers
                .get("content-disposition")
                .map(|v| v.to_str().unwrap()),
            attachment.then_some("attachment"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_list_their_documents_and_subfolders_with_a_cursor() {
    let server = start().await;
    let [alice] = users(["alice"]);
    for name in [
        "a.md", "b.md", "c.md", "d.md", "sub/x.md", "sub/y.md", "z.md",
    ] {
        let status = call(put(&server, &alice, &format!("/my-cms/f/{name}"), name))
            .await
            .status;
        assert_eq!(status, 201);
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = "/my-cms/f/?limit=2".to_string();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", url_encode(c)));
        }
        let page = call(get(&server, &alice, &url)).await.json();
        pages += 1;
        for entry in page["entries"].as_array().unwrap() {
            names.push(format!(
                "{} {}",
                entry["type"].as_str().unwrap(),
                entry["name"].as_str().unwrap()
            ));
            if entry["type"] == "document" {
                assert_eq!(entry["version"], 1);
                assert!(entry["etag"].as_str().unwrap().starts_with('"'));
            }
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "{names:?}");
    }
    assert!(pages >= 3, "{pages} pages");
    names.dedup();
    assert_eq!(
        names,
        [
            "document a.md",
            "document b.md",
            "document c.md",
            "document d.md",
            "folder sub/",
            "document z.md"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_paths_are_400_with_a_reason() {
    let server = start().await;
    let [alice] = users(["alice"]);
    let long = format!("/my-cms/{}", "a".repeat(500));
    for path in [
        "/my-cms/../etc/passwd",
        "/my-cms/a/%2e%2e/b",
        "/my-cms/a/%2E%2E",
        "/my-cms/a%00b",
        "/my-cms/a%5cb",
        "/my-cms/a\\b",
        "/my-cms/a//b",
        "/my-cms/%ff",
        long.as_str(),
    ] {
        for method in ["GET", "PUT"] {
            let mut stream = raw_connect(server.addr()).await;
            let request = format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\n\
                 content-length: 1\r\nconnection: close\r\n\r\nx"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let resp = read_response(&mut stream, Duration::from_secs(10)).await;
            assert_eq!(resp.status, 400, "{method} {path}: {resp:?}");
            assert!(resp.json()["error"]["message"].is_string(), "{resp:?}");
        }
    }
    // Nothing was written by any of them.
    let listing = call(get(&server, &alice, "/my-cms/")).await.json();
    assert_eq!(listing["entries"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_acknowledged_document() {
    let mut server = start().await;
    let [alice] = users(["alice"]);
    let big = vec![7u8; 300_000];
    let mut written = Vec::new();
    for i in 0..10 {
        let body = if i % 3 == 0 {
            big.clone()
        } else {
            format!("doc {i}").into_bytes()
        };
        let path = format!("/my-cms/keep/{i}");
        let got = call(put(&server, &alice, &path, body.clone())).await;
        assert_eq!(got.status, 201);
        written.push((path, body, got.etag.unwrap()));
    }
    server.restart().await;
    for (path, body, etag) in written {
        let got = call(get(&server, &alice, &path)).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(got.body == body, "{path}");
        assert_eq!(got.etag.unwrap(), etag);
    }
}
