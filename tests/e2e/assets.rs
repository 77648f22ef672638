//! Static sites served by the host: cache headers, ETags and 304s,
//! precompressed siblings, ranges, the single-page-app fallback, the
//! service worker's files, bad paths, and a rebuild picked up while
//! requests run. Headers are checked with `curl`, sending what a browser
//! sends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use spike::assets::SiteConfig;
use spike_e2e::*;

const HASHED_JS: &str = "assets/app.3f9a2b1c07.js";

/// A built site: an index, a hashed script, a stylesheet with `.gz` and
/// `.br` siblings, and a picture.
fn write_site(dir: &Path) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>site</title>").unwrap();
    std::fs::write(dir.join(HASHED_JS), "console.log('hashed');\n".repeat(100)).unwrap();
    std::fs::write(
        dir.join("assets/style.css"),
        "body { color: red }\n".repeat(100),
    )
    .unwrap();
    std::fs::write(dir.join("assets/style.css.gz"), b"gzip bytes").unwrap();
    std::fs::write(dir.join("assets/style.css.br"), b"brotli bytes").unwrap();
    std::fs::write(dir.join("logo.png"), [0x89, b'P', b'N', b'G']).unwrap();
    // Past what is kept in memory: read from disk for each request.
    std::fs::write(dir.join("big.txt"), big_text()).unwrap();
}

fn big_text() -> String {
    (0..60_000).map(|i| format!("line {i:07}\n")).collect()
}

async fn start(site: &Path) -> TestServer {
    let site = site.to_path_buf();
    TestServer::start_with(&[HELLO], move |config| {
        config.sites = vec![SiteConfig {
            host: None,
            prefix: "/".into(),
            dir: site,
        }];
        config.watch = true;
    })
    .await
}

/// What `curl` got for `path` with `headers`: status, headers (lower-case
/// names) and body, the body not decoded.
struct Curl {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl(server: &TestServer, method: &str, path: &str, headers: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let head_file = dir.path().join("head");
    let mut cmd = Command::new("curl");
    // `-X HEAD` would wait for the body the headers announce.
    let method_args: &[&str] = if method == "HEAD" {
        &["--head"]
    } else {
        &["-X", method]
    };
    cmd.arg("-s")
        .args(method_args)
        .args(["--max-time", "20", "-D"])
        .arg(&head_file)
        .arg("--path-as-is");
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(server.at(path)).output().expect("curl runs");
    assert!(out.status.success(), "curl failed: {out:?}");
    let head = std::fs::read_to_string(head_file).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        status,
        headers,
        body: out.stdout,
    }
}

/// What a browser sends with every request.
const BROWSER: &[&str] = &[
    "Accept-Encoding: br, gzip",
    "Accept: */*",
    "User-Agent: Mozilla/5.0",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_carry_cache_headers_etags_encodings_and_ranges() {
    let site = tempfile::tempdir().unwrap();
    write_site(site.path());
    let server = start(site.path()).await;

    // The index: revalidated every time, by ETag.
    let index = curl(&server, "GET", "/", BROWSER);
    assert_eq!(index.status, 200);
    assert_eq!(index.body, b"<!doctype html><title>site</title>");
    assert_eq!(index.header("content-type"), Some("text/html"));
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let etag = index.header("etag").unwrap().to_string();
    let mut with_tag = BROWSER.to_vec();
    let if_none_match = format!("If-None-Match: {etag}");
    with_tag.push(&if_none_match);
    let revalidated = curl(&server, "GET", "/index.html", &with_tag);
    assert_eq!((revalidated.status, revalidated.body.len()), (304, 0));
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));

    // A hashed name: cached for a year, never revalidated.
    let js = curl(&server, "GET", &format!("/{HASHED_JS}"), BROWSER);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(
        js.header("content-type").unwrap().contains("javascript"),
        "{:?}",
        js.headers
    );
    // Public: a module script of another origin may load it.
    assert_eq!(js.header("access-control-allow-origin"), Some("*"));
    // Text without a sibling is compressed as it goes, and decodes to the
    // file.
    assert_eq!(js.header("content-encoding"), Some("br"));
    assert!(js.body.len() < 500, "{} bytes", js.body.len());
    assert!(
        js.header("vary")
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let decoded = curl(&server, "GET", &format!("/{HASHED_JS}"), &["--compressed"]);
    assert_eq!(
        decoded.body,
        "console.log('hashed');\n".repeat(100).as_bytes()
    );
    let gzipped = curl(
        &server,
        "GET",
        &format!("/{HASHED_JS}"),
        &["Accept-Encoding: gzip"],
    );
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    // A picture is sent as it is.
    let png = curl(&server, "GET", "/logo.png", BROWSER);
    assert_eq!(png.header("content-encoding"), None);

    // Precompressed siblings by Accept-Encoding, with Vary; each encoding
    // has its own tag, and any of them revalidates.
    let br = curl(&server, "GET", "/assets/style.css", BROWSER);
    assert_eq!(br.header("content-encoding"), Some("br"));
    let br_tag = br.header("etag").unwrap().to_string();
    assert!(br_tag.ends_with("-br\""), "{br_tag}");
    let revalidate = format!("If-None-Match: {br_tag}");
    let same = curl(
        &server,
        "GET",
        "/assets/style.css",
        &["Accept-Encoding: br", &revalidate],
    );
    assert_eq!(same.status, 304);
    assert_eq!(br.body, b"brotli bytes");
    assert_eq!(br.header("content-type"), Some("text/css"));
    assert!(
        br.header("vary")
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let gz = curl(
        &server,
        "GET",
        "/assets/style.css",
        &["Accept-Encoding: gzip"],
    );
    assert_eq!(
        (gz.header("content-encoding"), gz.body.as_slice()),
        (Some("gzip"), b"gzip bytes".as_slice())
    );
    let plain = curl(&server, "GET", "/assets/style.css", &[]);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body.len(), "body { color: red }\n".len() * 100);

    // Ranges.
    let part = curl(
        &server,
        "GET",
        &format!("/{HASHED_JS}"),
        &["Range: bytes=0-6"],
    );
    assert_eq!(
        (part.status, part.body.as_slice()),
        (206, b"console".as_slice())
    );
    assert!(
        part.header("content-range")
            .unwrap()
            .starts_with("bytes 0-6/")
    );
    let png = curl(&server, "HEAD", "/logo.png", BROWSER);
    assert_eq!(
        (png.status, png.header("content-type")),
        (200, Some("image/png"))
    );

    // A file read from disk each time: compressed as it is sent, ranges
    // of the plain bytes.
    let big = curl(&server, "GET", "/big.txt", &["Accept-Encoding: gzip"]);
    assert_eq!(big.header("content-encoding"), Some("gzip"));
    assert!(big.body.len() < big_text().len() / 4);
    let decoded = curl(&server, "GET", "/big.txt", &["--compressed"]);
    assert_eq!(decoded.body, big_text().as_bytes());
    let tail = curl(&server, "GET", "/big.txt", &["Range: bytes=-13"]);
    assert_eq!(
        (tail.status, tail.body.as_slice()),
        (206, b"line 0059999\n".as_slice())
    );

    // Plugin routes come before the site.
    let hello = curl(&server, "GET", "/hello", BROWSER);
    assert!(String::from_utf8_lossy(&hello.body).starts_with("Hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_routes_fall_back_to_the_index_and_bad_paths_are_400() {
    let site = tempfile::tempdir().unwrap();
    write_site(site.path());
    let server = start(site.path()).await;
    // A page load, as browsers say it (or, without Sec-Fetch-Mode, by
    // asking for HTML).
    let navigate = [BROWSER, &["Sec-Fetch-Mode: navigate"]].concat();
    let html = ["Accept: text/html,application/xhtml+xml,*/*;q=0.8"];
    for (route, headers) in [
        ("/settings", &navigate[..]),
        ("/rooms/42/edit", &navigate[..]),
        ("/assets/nothing-here", &html[..]),
    ] {
        let got = curl(&server, "GET", route, headers);
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, b"<!doctype html><title>site</title>".as_slice()),
            "{route}"
        );
    }
    // Not a page load (a fetch, a module import), or under the API and
    // the modules (vendored, or npm's when no plugin serves /npm): 404,
    // never the app's HTML.
    let fetch = [BROWSER, &["Sec-Fetch-Mode: cors"]].concat();
    for (route, headers) in [
        ("/settings", BROWSER),
        ("/settings", &fetch[..]),
        ("/api/loged_in", &navigate[..]),
        ("/vendor/not-served/canvas-confetti", &navigate[..]),
        ("/npm/canvas-confetti", &navigate[..]),
        ("/npm/canvas-confetti@1/dist/confetti.module.mjs", BROWSER),
        ("/_spike/nothing", &html[..]),
    ] {
        let got = curl(&server, "GET", route, headers);
        assert_eq!(got.status, 404, "{route} {headers:?}");
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(error_code(&body), "not_found", "{route}");
    }
    let missing = curl(&server, "GET", "/missing.png", BROWSER);
    assert_eq!(missing.status, 404);
    let body: Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(error_code(&body), "not_found");
    for bad in [
        "/../etc/passwd",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/a%00b",
        "/a%5c..%5cb",
        "/a//b",
    ] {
        let got = curl(&server, "GET", bad, BROWSER);
        assert_eq!(got.status, 400, "{bad}");
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(error_code(&body), "bad_path", "{bad}");
    }
    let long = format!("/{}", "a".repeat(2000));
    assert_eq!(curl(&server, "GET", &long, BROWSER).status, 400);
    let post = curl(&server, "POST", "/index.html", BROWSER);
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, HEAD"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_worker_files_come_from_the_manifest() {
    let site = tempfile::tempdir().unwrap();
    write_site(site.path());
    let server = start(site.path()).await;
    let manifest = curl(&server, "GET", "/ASSET_MANIFEST", BROWSER);
    assert_eq!(manifest.header("content-type"), Some("application/json"));
    let manifest: Value = serde_json::from_slice(&manifest.body).unwrap();
    let files: Vec<&String> = manifest.as_object().unwrap().keys().collect();
    assert_eq!(
        files,
        [
            HASHED_JS,
            "assets/style.css",
            "big.txt",
            "index.html",
            "logo.png"
        ]
    );
    let index = std::fs::read(site.path().join("index.html")).unwrap();
    assert_eq!(manifest["index.html"], hex::encode(Sha256::digest(index)));

    let config: Value =
        serde_json::from_slice(&curl(&server, "GET", "/sw-config.json", BROWSER).body).unwrap();
    let version = config["version"].as_str().unwrap().to_string();
    assert_eq!(config["killSwitch"], false);
    assert_eq!(config["valid"], true);
    assert_eq!(config["swVersion"], version);
    let mjs = curl(&server, "GET", "/swVersion.mjs", BROWSER);
    assert!(
        mjs.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(
        String::from_utf8(mjs.body).unwrap(),
        format!("export const swVersion = \"{version}\";\n")
    );
    let js = String::from_utf8(curl(&server, "GET", "/swVersion.js", BROWSER).body).unwrap();
    assert!(
        js.starts_with(&format!("self.swVersion = \"{version}\";")),
        "{js}"
    );
    assert!(js.contains(HASHED_JS), "{js}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_is_picked_up_while_requests_run() {
    let site = tempfile::tempdir().unwrap();
    write_site(site.path());
    let server = start(site.path()).await;
    let version = |s: &TestServer| -> String {
        let config: Value =
            serde_json::from_slice(&curl(s, "GET", "/sw-config.json", &[]).body).unwrap();
        config["version"].as_str().unwrap().to_string()
    };
    let before = version(&server);

    // Readers: every file the manifest names is served, all the time.
    let url = server.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers_stop = stop.clone();
    let readers = tokio::spawn(async move {
        let c = client();
        let mut rounds = 0;
        while !readers_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let manifest: Value = c
                .get(format!("{url}/ASSET_MANIFEST"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for path in manifest.as_object().unwrap().keys() {
                let status = c
                    .get(format!("{url}/{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200, "{path} is in the manifest");
            }
            rounds += 1;
        }
        rounds
    });

    // A rebuild as a bundler does it: new hashed assets, then the index.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        site.path().join("assets/app.9e8d7c6b5a.js"),
        "console.log('new');",
    )
    .unwrap();
    std::fs::write(
        site.path().join("index.html"),
        "<!doctype html><script src=/assets/app.9e8d7c6b5a.js></script>",
    )
    .unwrap();
    within_for(Duration::from_secs(10), async {
        while version(&server) == before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let index = curl(&server, "GET", "/", BROWSER);
    assert!(String::from_utf8_lossy(&index.body).contains("app.9e8d7c6b5a.js"));
    assert_eq!(
        curl(&server, "GET", "/assets/app.9e8d7c6b5a.js", BROWSER).status,
        200
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = within(readers).await.unwrap();
    assert!(rounds > 3, "{rounds} rounds of reads");

    // The folder deleted and built anew is still watched.
    std::fs::remove_dir_all(site.path()).unwrap();
    std::fs::create_dir_all(site.path()).unwrap();
    std::fs::write(site.path().join("index.html"), "<p>rebuilt from nothing").unwrap();
    within_for(Duration::from_secs(10), async {
        loop {
            let got = curl(&server, "GET", "/", &[]);
            if got.body == b"<p>rebuilt from nothing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
