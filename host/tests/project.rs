//! `spike new` and `spike build` in a clean folder, then the built plugin
//! pushed to a running server by `spike plugins push --manifest`, answering
//! requests that use a spike import (KV), in Rust, JavaScript and Python;
//! and `spike dev` serving an edit within seconds of its save.

mod common;

use std::process::{Command, Output};

use common::*;

fn spike(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn new_build_push_and_serve_a_rust_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let (_served, addr, _) = new_build_and_push(dir.path(), None, "demo");
    let reply = get(&addr, "/demo?name=tester");
    assert!(reply.ends_with("Hello, tester! This is demo.\n"), "{reply}");
    count_from_zero(&addr, "/demo/counter", |n| format!("{{\"count\":{n}}}"));
    notes_kept(&addr, "/demo/notes");

    // The same name again, and a name no plugin may have, are refused.
    let again = spike(dir.path(), &["new", "demo"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = spike(dir.path(), &["new", "Not_OK!"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot name a plugin"));
}

#[test]
fn new_build_push_and_serve_a_javascript_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let (_served, addr, _) = new_build_and_push(dir.path(), Some("js"), "jsdemo");
    // (Its bodies may come chunked: the raw replies hold the framing.)
    let reply = get(&addr, "/jsdemo");
    assert!(
        reply.contains("Hello from jsdemo, in JavaScript.\n"),
        "{reply}"
    );
    count_from_zero(&addr, "/jsdemo/counter", |n| format!("{{\"count\":{n}}}"));
    notes_kept(&addr, "/jsdemo/notes");
}

#[test]
fn new_build_push_and_serve_a_python_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let (_served, addr, exported) = new_build_and_push(dir.path(), Some("python"), "pydemo");
    let reply = get(&addr, "/pydemo");
    assert!(reply.contains("Hello from pydemo, in Python.\n"), "{reply}");
    count_from_zero(&addr, "/pydemo/counter", |n| format!("{{\"count\": {n}}}"));
    notes_kept(&addr, "/pydemo/notes");

    // The template's telemetry (wasi:otel through componentize-py's
    // bindings): a counter in /metrics, a span in the request's trace.
    let metrics = request(
        &addr,
        "GET",
        "/_spike/metrics",
        "authorization: Bearer t\r\n",
    );
    assert!(
        metrics.contains("spike_guest_notes_added_total{plugin=\"pydemo\"} 2"),
        "{metrics}"
    );
    let logged = request(
        &addr,
        "GET",
        "/_spike/plugins/pydemo/logs",
        "authorization: Bearer t\r\n",
    );
    assert!(logged.contains("INFO note 1 added"), "{logged}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let has = |bytes: &[u8], name: &[u8]| bytes.windows(name.len()).any(|w| w == name);
    while !has(&exported.lock().unwrap(), b"add note") {
        assert!(
            std::time::Instant::now() < deadline,
            "no 'add note' span exported"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// In `dir`: `spike new <name> [--lang <lang>]`, `spike build` (which
/// installs the language's componentizer the first time), then a server
/// with no plugins (its traces sent to a collector that keeps them), and
/// `spike plugins push --manifest` of the built plugin to it. The server,
/// serving the plugin, its address, and what it exported.
fn new_build_and_push(
    dir: &std::path::Path,
    lang: Option<&str>,
    name: &str,
) -> (Spike, String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let mut new = vec!["new", name];
    new.extend(lang.map(|l| ["--lang", l]).iter().flatten());
    let out = ok(&spike(dir, &new));
    assert!(out.contains(&format!("created ./{name}")), "{out}");
    // Rust builds with the target directory the tests share
    // (CARGO_TARGET_DIR, set by ./dev.sh), so wit-bindgen compiles once.
    let out = ok(&spike(dir, &["build", "--dir", name]));
    assert!(
        out.contains(&format!("built {name}/plugin/{name}.wasm")),
        "{out}"
    );

    let served = dir.join("served");
    std::fs::create_dir_all(served.join("plugins")).unwrap();
    let (collector, exported) = otlp_bodies();
    let mut server = Spike::start_in(
        &served,
        &["--log-format", "json", "--admin-token", "t"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let addr = server.serving_addr();
    wait_ready(&addr);
    let plugin = dir.join(name).join("plugin");
    let push = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["plugins", "--server", &format!("http://{addr}")])
        .args(["--token", "t", "push", name])
        .arg(plugin.join(format!("{name}.wasm")))
        .arg("--manifest")
        .arg(plugin.join(format!("{name}.toml")))
        .env_remove("SPIKE_CLI_CONFIG")
        .output()
        .unwrap();
    let out = ok(&push);
    assert!(out.starts_with(&format!("{name}: now serving ")), "{out}");
    (server, addr, exported)
}

/// The counter plugin of every template: 0, then one more per `POST`, as
/// spike's KV keeps it. `count` renders `{"count": n}` as the language's
/// JSON does.
fn count_from_zero(addr: &str, path: &str, count: fn(u32) -> String) {
    let reply = get(addr, path);
    assert!(reply.contains(&count(0)), "{reply}");
    for n in 1..=2 {
        let reply = request(addr, "POST", path, "");
        assert!(reply.contains(&count(n)), "{reply}");
    }
    let reply = get(addr, path);
    assert!(reply.contains(&count(2)), "{reply}");
}

/// The notes routes of every template, on spike's SQL: a note kept with
/// its id, SQLite's CHECK refusing an empty one (400, SQLite's words), the
/// list newest first.
fn notes_kept(addr: &str, path: &str) {
    for text in ["milk", "oat%20milk"] {
        let reply = request(addr, "POST", &format!("{path}?text={text}"), "");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    let refused = request(addr, "POST", path, "");
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains("CHECK constraint failed"), "{refused}");
    let list = get(addr, path);
    let oat = list.find("oat milk").unwrap_or_else(|| panic!("{list}"));
    let milk = list.rfind("\"milk\"").unwrap_or_else(|| panic!("{list}"));
    assert!(oat < milk, "newest first: {list}");
}

#[test]
fn dev_serves_an_edit_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    ok(&spike(dir.path(), &["new", "devdemo"]));
    let project = dir.path().join("devdemo");
    let mut dev = Command::new(env!("CARGO_BIN_EXE_spike"));
    dev.args(["dev", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&project)
        .env_remove("RUST_LOG");
    let mut dev = Spike::spawn(dev);
    let line = dev.line_with("== serving http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    wait_ready(&addr);
    let reply = get(&addr, "/devdemo");
    assert!(
        reply.ends_with("Hello, world! This is devdemo.\n"),
        "{reply}"
    );
    // Each request is printed.
    let logged = dev.line_with("path=/devdemo");
    assert!(logged.contains("status=200"), "{logged}");

    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("This is devdemo.", "Edited devdemo.")).unwrap();
    let saved = std::time::Instant::now();
    let deadline = saved + std::time::Duration::from_secs(120);
    loop {
        let reply = get(&addr, "/devdemo");
        if reply.ends_with("Hello, world! Edited devdemo.\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not swapped in: {reply}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("the edit served {:?} after its save", saved.elapsed());
    dev.line_with("built: the server swaps it in");
}
