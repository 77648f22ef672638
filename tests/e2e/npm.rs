//! The npm plugin (`components/npm`, `plugins/npm.toml`): real packages
//! from a real registry (Verdaccio on loopback, holding react, react-dom,
//! date-fns, three, @emotion/react … as npm publishes them) built into ES
//! modules that Node imports as a browser would and that behave as the
//! same packages do from node_modules; ranges, options, the cache and the
//! registry going down; and a hostile registry's packages (a wrong
//! integrity, paths out of the package, links, native addons, tarballs
//! elsewhere, Node built-ins) refused with the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use spike_e2e::npm_registry::{Verdaccio, npm_manifest, use_registry};
use spike_e2e::*;

/// spike with the shipped npm plugin, `--npm-registry registry`.
async fn start_spike(registry: &str, extra_env: &str) -> TestServer {
    let manifest = npm_manifest(extra_env);
    let plugin = Plugin {
        name: "npm",
        guest: "npm",
        manifest: &manifest,
    };
    let registry = registry.to_string();
    TestServer::start_with(&[plugin], move |config| use_registry(config, &registry)).await
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn get(server: &TestServer, path: &str) -> (u16, HashMap<String, String>, String) {
    let resp = within_for(
        Duration::from_secs(90),
        no_redirects().get(server.at(path)).send(),
    )
    .await
    .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    (status, headers, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_packages_import_as_they_do_from_node_modules() {
    let registry = Verdaccio::start().await;
    let server = start_spike(&registry.url(), "").await;
    let lines = node::run_to_end(
        "npm-probe.mjs",
        &[server.url.as_ref()],
        Duration::from_secs(300),
    )
    .await;
    assert!(lines.len() >= 14, "{lines:?}");
    for line in &lines {
        assert_eq!(line["same"], true, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_redirect_to_exact_versions_whose_modules_are_immutable() {
    let registry = Verdaccio::start().await;
    let server = start_spike(&registry.url(), "").await;

    let (status, headers, _) = get(&server, "/npm/react@^19.1").await;
    assert_eq!(
        (status, headers["location"].as_str()),
        (302, "/npm/react@19.3.1")
    );
    let (status, headers, _) = get(&server, "/npm/react").await;
    assert_eq!(
        (status, headers["location"].as_str()),
        (302, "/npm/react@19.3.1")
    );
    let (status, headers, _) =
        get(&server, "/npm/%40emotion%2Freact@11/macro?external=react").await;
    assert_eq!(status, 302);
    assert_eq!(
        headers["location"],
        "/npm/@emotion/react@11.14.0/macro?external=react"
    );
    // The options have one spelling: another is sent to it.
    let (status, headers, _) = get(&server, "/npm/react-dom@19.3.1?external=react&dev=true").await;
    assert_eq!(
        (status, headers["location"].as_str()),
        (302, "/npm/react-dom@19.3.1?dev&external=react")
    );

    let (status, headers, body) = get(&server, "/npm/react@19.3.1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(
        body.contains("\"/npm/react@19.3.1/cjs/react.production.js\""),
        "{body}"
    );
    assert!(
        !body.contains("development"),
        "a production build imports no development code: {body}"
    );
    assert!(
        body.contains("__spike_e40 as useState") || body.contains("as useState"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn options_pick_the_build_and_dependencies_their_versions() {
    let registry = Verdaccio::start().await;
    let server = start_spike(&registry.url(), "").await;

    // ?dev: the development build.
    let (status, _, body) = get(&server, "/npm/react@19.3.1?dev").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"/npm/react@19.3.1/cjs/react.development.js?dev\""),
        "{body}"
    );

    // Dependencies at the versions their ranges pick, each its own URL;
    // ?external leaves one to the page's import map, ?deps pins one.
    let (_, _, body) = get(
        &server,
        "/npm/react-dom@19.3.1/cjs/react-dom-client.production.js",
    )
    .await;
    assert!(body.contains("\"/npm/scheduler@0.28.0\""), "{body}");
    assert!(body.contains("\"/npm/react@19.3.1\""), "{body}");
    let (_, _, body) = get(
        &server,
        "/npm/react-dom@19.3.1/cjs/react-dom-client.production.js?external=react",
    )
    .await;
    assert!(body.contains("from \"react\""), "{body}");
    assert!(
        body.contains("\"/npm/scheduler@0.28.0?external=react\""),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_not_there_is_a_json_404_and_a_bad_request_a_400() {
    let registry = Verdaccio::start().await;
    let server = start_spike(&registry.url(), "").await;

    // Not there: 404 with a JSON reason, never a page.
    let (status, headers, body) = get(&server, "/npm/no-such-package-here@1.0.0").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let (status, _, body) = get(&server, "/npm/react@19.3.1/no/such/file.js").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no/such/file.js"), "{body}");
    let (status, _, body) = get(&server, "/npm/react@^99").await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = get(&server, "/npm/React@1").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(&server, "/npm/react@19.3.1?target=es5").await;
    assert_eq!(status, 400, "{body}");
}

/// A registry the test writes: package documents and tarballs by path,
/// each request counted.
#[derive(Clone, Default)]
struct FakeRegistry {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
    /// Answers 503 to everything: the registry is down.
    down: Arc<AtomicBool>,
}

impl FakeRegistry {
    async fn start(&self) -> std::net::SocketAddr {
        let this = self.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let this = this.clone();
            async move {
                this.requests.fetch_add(1, Ordering::SeqCst);
                if this.down.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new());
                }
                match this.files.lock().unwrap().get(uri.path()) {
                    Some(bytes) => (axum::http::StatusCode::OK, bytes.clone()),
                    None => (axum::http::StatusCode::NOT_FOUND, b"{}".to_vec()),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Publishes `name@1.0.0` with `entries` (path in the tarball, kind,
    /// bytes), its integrity that of `integrity_of` (the tarball itself
    /// if `None`) and its tarball at `tarball_base`.
    fn publish(
        &self,
        base: &str,
        name: &str,
        entries: &[(&str, tar::EntryType, &[u8])],
        integrity_of: Option<&[u8]>,
    ) {
        let tarball = tgz(entries);
        let hashed = integrity_of.unwrap_or(&tarball);
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(hashed))
        );
        let document = json!({
            "name": name,
            "dist-tags": {"latest": "1.0.0"},
            "versions": {"1.0.0": {"name": name, "version": "1.0.0",
                "dist": {"tarball": format!("{base}/tarballs/{name}-1.0.0.tgz"), "integrity": integrity}}},
        });
        let mut files = self.files.lock().unwrap();
        files.insert(format!("/{name}"), document.to_string().into_bytes());
        files.insert(format!("/tarballs/{name}-1.0.0.tgz"), tarball);
    }
}

/// A gzipped tar of `entries`, names written as given (`..` included).
fn tgz(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind, body) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(*kind);
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        if kind.is_symlink() {
            header.set_link_name("../../../etc/passwd").unwrap();
        }
        header.set_cksum();
        builder.append(&header, *body).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn package_json(name: &str) -> Vec<u8> {
    json!({"name": name, "version": "1.0.0", "main": "index.js"})
        .to_string()
        .into_bytes()
}

const FILE: tar::EntryType = tar::EntryType::Regular;

fn reason(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Bytes gzip cannot shrink.
fn incompressible(len: usize) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Packages each wrong in one way (and one that is fine), at `base`.
fn publish_hostile(registry: &FakeRegistry, base: &str) {
    // A package.json naming it, then `files`.
    let publish = |name: &str, files: &[(&str, tar::EntryType, &[u8])], integrity_of| {
        let manifest = package_json(name);
        let mut entries = vec![("package/package.json", FILE, manifest.as_slice())];
        entries.extend_from_slice(files);
        registry.publish(base, name, &entries, integrity_of);
    };
    let index = |code: &'static [u8]| [("package/index.js", FILE, code)];
    publish(
        "good",
        &[
            ("package/index.js", FILE, b"exports.a = 1; exports.data = require('./data.json'); try { require('fs') } catch {}"),
            ("package/data.json", FILE, br#"{"answer": 42}"#),
        ],
        None,
    );
    publish("tampered", &index(b"exports.a = 1"), Some(b"other bytes"));
    publish(
        "climber",
        &[("package/../../../etc/evil.js", FILE, b"1")],
        None,
    );
    publish(
        "linker",
        &[("package/index.js", tar::EntryType::Symlink, b"")],
        None,
    );
    publish(
        "addon",
        &[
            ("package/binding.gyp", FILE, b"{}"),
            (
                "package/index.js",
                FILE,
                b"module.exports = require('./build/Release/addon.node')",
            ),
        ],
        None,
    );
    publish(
        "nodeonly",
        &index(b"const fs = require('fs'); exports.read = fs.readFileSync;"),
        None,
    );
    // A tarball over the 1 MiB the test sets.
    let big = incompressible(3 << 20);
    publish("huge", &[("package/index.js", FILE, &big)], None);
    // An ES module's import of a built-in (its package.json says "module").
    registry.publish(
        base,
        "esmnode",
        &[
            (
                "package/package.json",
                FILE,
                br#"{"name":"esmnode","version":"1.0.0","type":"module","main":"index.js"}"#,
            ),
            (
                "package/index.js",
                FILE,
                b"import { readFile } from 'node:fs/promises'; export { readFile };",
            ),
        ],
        None,
    );
    // A document whose tarball is on another host.
    publish("elsewhere", &[], None);
    let mut files = registry.files.lock().unwrap();
    let doc = String::from_utf8(files["/elsewhere"].clone()).unwrap();
    let moved = doc.replace(base, "http://127.0.0.2:9").into_bytes();
    files.insert("/elsewhere".into(), moved);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_packages_are_refused_with_the_reason() {
    let registry = FakeRegistry::default();
    let addr = registry.start().await;
    let base = format!("http://{addr}");
    publish_hostile(&registry, &base);
    let server = start_spike(&base, "MAX_TARBALL_MIB = \"1\"").await;

    let (status, _, body) = get(&server, "/npm/good@1.0.0").await;
    assert_eq!(
        status, 200,
        "a require of a built-in under a condition throws only if run: {body}"
    );
    assert!(body.contains("__spike_e0 as a"), "{body}");
    assert!(body.contains("\"/npm/good@1.0.0/data.json\""), "{body}");
    let (status, headers, body) = get(&server, "/npm/good@1.0.0/data.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert!(
        body.contains(r#"{"answer": 42}"#) && body.contains("json as default"),
        "{body}"
    );

    let cases = [
        (
            "tampered",
            "integrity_mismatch",
            "does not match the registry's integrity",
        ),
        ("climber", "bad_tarball", "outside the package"),
        ("linker", "bad_tarball", "is a link"),
        ("addon", "cannot_build", "native addon"),
        ("nodeonly", "cannot_build", "the Node built-in `fs`"),
        ("esmnode", "cannot_build", "the Node built-in `fs/promises`"),
        ("huge", "too_large", "MAX_TARBALL_MIB"),
        ("elsewhere", "foreign_tarball", "not on the registry"),
    ];
    for (name, code, says) in cases {
        let (status, headers, body) = get(&server, &format!("/npm/{name}@1.0.0")).await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(headers["content-type"], "application/json", "{name}");
        let (got_code, message) = reason(&body);
        assert_eq!(got_code, code, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
        assert!(
            message.contains(name),
            "the reason names the package: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_module_is_served_without_the_registry_and_new_ones_wait_for_it() {
    let registry = FakeRegistry::default();
    let addr = registry.start().await;
    let base = format!("http://{addr}");
    let entries: &[(&str, tar::EntryType, &[u8])] = &[
        ("package/package.json", FILE, &package_json("kept")),
        ("package/index.js", FILE, b"module.exports = { n: 1 };"),
    ];
    registry.publish(&base, "kept", entries, None);
    registry.publish(&base, "later", entries, None);
    let mut server = start_spike(&base, "PACKUMENT_TTL_S = \"0\"").await;

    let (status, _, first) = get(&server, "/npm/kept@1.0.0").await;
    assert_eq!(status, 200, "{first}");
    let asked = registry.requests.load(Ordering::SeqCst);
    assert_eq!(asked, 2, "the document and the tarball");
    // The second a blob read (the first immutable answer marked the
    // plugin's version), the third given by the host: the plugin not run.
    for _ in 0..2 {
        let (_, _, again) = get(&server, "/npm/kept@1.0.0").await;
        assert_eq!(again, first);
    }
    assert_eq!(registry.requests.load(Ordering::SeqCst), asked);
    let metrics = server.metrics_text().await;
    for series in [
        "spike_answer_cache_lookups_total{result=\"hit\"} 1",
        "spike_guest_npm_modules_total{plugin=\"npm\",result=\"built\"} 1",
        "spike_guest_npm_modules_total{plugin=\"npm\",result=\"kept\"} 1",
    ] {
        assert!(metrics.contains(series), "{series}: {metrics}");
    }

    // The registry down: kept modules still served (from blob storage
    // after a restart empties the host's memory); a range needs it.
    registry.down.store(true, Ordering::SeqCst);
    server.restart().await;
    let (status, _, body) = get(&server, "/npm/kept@1.0.0").await;
    assert_eq!((status, body.as_str()), (200, first.as_str()));
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("spike_guest_npm_modules_total{plugin=\"npm\",result=\"kept\"} 1"),
        "a blob read after the restart: {metrics}"
    );
    let (status, _, body) = get(&server, "/npm/kept@1.0.0/index.js").await;
    assert_eq!(status, 200, "the package's files are kept too: {body}");
    let (status, headers, body) = get(&server, "/npm/later@1.0.0").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(reason(&body).0, "registry_unavailable");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_that_builds_a_module_builds_the_package_files_it_imports() {
    let registry = FakeRegistry::default();
    let addr = registry.start().await;
    let base = format!("http://{addr}");
    let manifest =
        json!({"name": "graph", "version": "1.0.0", "type": "module", "main": "index.js"})
            .to_string()
            .into_bytes();
    let entries: &[(&str, tar::EntryType, &[u8])] = &[
        ("package/package.json", FILE, &manifest),
        (
            "package/index.js",
            FILE,
            b"import { a } from './a.js';\nexport const later = () => import('./lazy.js');\nexport { a };",
        ),
        (
            "package/a.js",
            FILE,
            b"import { b } from './b.js';\nimport './node-only.js';\nexport const a = 'a' + b;",
        ),
        ("package/b.js", FILE, b"export const b = 'b';"),
        ("package/lazy.js", FILE, b"export default 'lazy';"),
        (
            "package/node-only.js",
            FILE,
            b"import fs from 'fs';\nexport default fs;",
        ),
    ];
    registry.publish(&base, "graph", entries, None);
    let server = start_spike(&base, "").await;
    let count = |metrics: &str, result: &str| {
        let series =
            format!("spike_guest_npm_modules_total{{plugin=\"npm\",result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |n| {
                let value = n.split_whitespace().next().unwrap_or_default();
                value.parse::<f64>().unwrap_or_else(|_| panic!("{n}"))
            })
    };

    let (status, _, index) = get(&server, "/npm/graph@1.0.0").await;
    assert_eq!(status, 200, "{index}");
    assert!(index.contains("\"/npm/graph@1.0.0/a.js\""), "{index}");
    // What the entry imports whatever happens, and what that imports,
    // were built with it: the browser's next requests are blob reads.
    for (file, has) in [("a.js", "\"/npm/graph@1.0.0/b.js\""), ("b.js", "'b'")] {
        let (status, _, code) = get(&server, &format!("/npm/graph@1.0.0/{file}")).await;
        assert_eq!(status, 200, "{file}: {code}");
        assert!(code.contains(has), "{file}: {code}");
    }
    let metrics = server.metrics_text().await;
    assert_eq!(count(&metrics, "built"), 1.0, "{metrics}");
    assert_eq!(count(&metrics, "kept"), 2.0, "{metrics}");
    // An `import()` is built when asked for; a file that cannot be built
    // is left for its own request, which says why.
    let (status, _, lazy) = get(&server, "/npm/graph@1.0.0/lazy.js").await;
    assert_eq!(status, 200, "{lazy}");
    let (status, _, body) = get(&server, "/npm/graph@1.0.0/node-only.js").await;
    assert_eq!(status, 422, "{body}");
    assert!(reason(&body).1.contains("the Node built-in `fs`"), "{body}");
    let metrics = server.metrics_text().await;
    assert_eq!(count(&metrics, "built"), 2.0, "{metrics}");
    assert_eq!(count(&metrics, "kept"), 2.0, "{metrics}");
    assert_eq!(
        registry.requests.load(Ordering::SeqCst),
        2,
        "one document, one tarball"
    );
}
