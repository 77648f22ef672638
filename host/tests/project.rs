//! `spike new` and `spike build` in a clean folder, then the built plugin
//! served by `spike serve` and pushed to a running server by `spike plugins
//! push`, answering a request that uses a spike import (KV), in Rust,
//! JavaScript and Python; and `spike dev` serving an edit within seconds of
//! its save.

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
fn new_build_serve_and_push_a_rust_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&spike(dir.path(), &["new", "demo"]));
    assert!(out.contains("created ./demo"), "{out}");

    // The same name again, and a name no plugin may have, are refused.
    let again = spike(dir.path(), &["new", "demo"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = spike(dir.path(), &["new", "Not_OK!"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot name a plugin"));

    // Built with the target directory the tests share (CARGO_TARGET_DIR,
    // set by ./dev.sh), so wit-bindgen compiles once.
    let out = ok(&spike(dir.path(), &["build", "--dir", "demo"]));
    assert!(out.contains("built demo/plugin/demo.wasm"), "{out}");
    let project = dir.path().join("demo");
    assert!(project.join("plugin/demo.wasm").is_file());

    // Served as the project's plugin folder has it (copied as a server's
    // plugins folder): the greeting, and the KV counter.
    let served = dir.path().join("served");
    std::fs::create_dir_all(served.join("plugins")).unwrap();
    for file in ["demo.toml", "demo.wasm"] {
        std::fs::copy(
            project.join("plugin").join(file),
            served.join("plugins").join(file),
        )
        .unwrap();
    }
    let mut server = Spike::start_in(
        &served,
        &["--log-format", "json", "--admin-token", "t"],
        &[],
    );
    let addr = server.serving_addr();
    wait_ready(&addr);
    let reply = get(&addr, "/demo?name=tester");
    assert!(reply.ends_with("Hello, tester! This is demo.\n"), "{reply}");
    for n in 1..=2 {
        let reply = request(&addr, "POST", "/demo/counter", "");
        assert!(reply.ends_with(&format!("{{\"count\":{n}}}")), "{reply}");
    }
    let reply = get(&addr, "/demo/counter");
    assert!(reply.ends_with("{\"count\":2}"), "{reply}");

    // Pushed to the running server as a new version.
    let push = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args([
            "plugins",
            "--server",
            &format!("http://{addr}"),
            "--token",
            "t",
        ])
        .arg("push")
        .arg("demo")
        .arg(project.join("plugin/demo.wasm"))
        .output()
        .unwrap();
    assert!(ok(&push).starts_with("demo: now serving "));
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

/// `spike new <name> --lang <lang>`, `spike build` (which installs the
/// language's componentizer the first time), then the plugin served: its
/// greeting and spike's KV import from that language. `count` renders
/// `{"count": n}` as the language's JSON does.
fn new_build_and_serve(lang: &str, name: &str, greeting: &str, count: fn(u32) -> String) {
    let dir = tempfile::tempdir().unwrap();
    ok(&spike(dir.path(), &["new", name, "--lang", lang]));
    let out = ok(&spike(dir.path(), &["build", "--dir", name]));
    assert!(
        out.contains(&format!("built {name}/plugin/{name}.wasm")),
        "{out}"
    );

    let served = dir.path().join("served");
    std::fs::create_dir_all(served.join("plugins")).unwrap();
    for ext in ["toml", "wasm"] {
        let file = format!("{name}.{ext}");
        let from = dir.path().join(name).join("plugin").join(&file);
        std::fs::copy(from, served.join("plugins").join(&file)).unwrap();
    }
    let mut server = Spike::start_in(&served, &["--log-format", "json"], &[]);
    let addr = server.serving_addr();
    wait_ready(&addr);
    // (Their bodies may come chunked: the raw replies hold the framing.)
    let reply = get(&addr, &format!("/{name}"));
    assert!(reply.contains(greeting), "{reply}");
    let counter = format!("/{name}/counter");
    let reply = get(&addr, &counter);
    assert!(reply.contains(&count(0)), "{reply}");
    for n in 1..=2 {
        let reply = request(&addr, "POST", &counter, "");
        assert!(reply.contains(&count(n)), "{reply}");
    }
}

#[test]
fn new_build_and_serve_a_javascript_plugin() {
    new_build_and_serve("js", "jsdemo", "Hello from jsdemo, in JavaScript.\n", |n| {
        format!("{{\"count\":{n}}}")
    });
}

#[test]
fn new_build_and_serve_a_python_plugin() {
    new_build_and_serve("python", "pydemo", "Hello from pydemo, in Python.\n", |n| {
        format!("{{\"count\": {n}}}")
    });
}
