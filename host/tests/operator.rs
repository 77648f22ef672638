//! `spike plugins list | status | push | rollback | logs` against a running
//! `spike serve`: tables and `--json`, a push and a rollback that serve,
//! and errors that say what to do (a wrong token, a server that is down, a
//! component that does not fit, a manifest with a typo, an unknown plugin).

mod common;

use std::process::{Command, Output};

use common::*;

const TOKEN: &str = "operator-test-token";

/// `spike plugins <args>` against `server` with `token`.
fn plugins(server: &str, token: &str, args: &[&str]) -> Output {
    let mut command = bare_plugins(std::path::Path::new("/nonexistent"));
    command.args(["--server", server]).args(args);
    match token {
        "" => command.env_remove("SPIKE_ADMIN_TOKEN"),
        t => command.env("SPIKE_ADMIN_TOKEN", t),
    };
    command.output().unwrap()
}

/// `spike plugins` with no server, token or config from this process's
/// environment, and `config_home` as `XDG_CONFIG_HOME`.
fn bare_plugins(config_home: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spike"));
    command
        .arg("plugins")
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("SPIKE_SERVER")
        .env_remove("SPIKE_ADMIN_TOKEN")
        .env_remove("SPIKE_CLI_CONFIG")
        .env_remove("RUST_LOG");
    command
}

#[test]
fn a_config_file_names_the_server_and_the_token() {
    let (_spike, dir, server) = start();
    // The default file: no flag at all.
    let home = dir.path().join("config-home");
    std::fs::create_dir_all(home.join("spike")).unwrap();
    let text = format!("server = \"{server}\"\ntoken = \"{TOKEN}\"\n");
    std::fs::write(home.join("spike/cli.toml"), &text).unwrap();
    let table = stdout(&bare_plugins(&home).arg("list").output().unwrap());
    assert!(table.contains("hello"), "{table}");
    // A flag wins over the file.
    let wrong = bare_plugins(&home)
        .args(["--token", "not-the-token", "list"])
        .output()
        .unwrap();
    assert!(failure(&wrong).contains("refused the token"));
    // --config names another file; a typo in it names its line.
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        format!("server = \"{server}\"\ntokn = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let out = bare_plugins(&home)
        .args(["--config", typo.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    let out = failure(&out);
    assert!(out.contains("line 2") && out.contains("tokn"), "{out}");
    assert!(!out.contains(TOKEN), "the token is never printed: {out}");
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn failure(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A server with the hello plugin (the plain hello component) and the
/// panic fixture (which prints its panic to stderr), and its URL.
fn start() -> (Spike, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (name, guest_name) in [("hello", "fixture_plain_hello"), ("panic", "fixture_panic")] {
        std::fs::copy(guest(guest_name), plugins.join(format!("{name}.wasm"))).unwrap();
        std::fs::write(
            plugins.join(format!("{name}.toml")),
            format!("component = \"{name}.wasm\"\n[[routes]]\nprefix = \"/{name}\"\n"),
        )
        .unwrap();
    }
    let mut spike = Spike::start_in(
        dir.path(),
        &["--log-format", "json", "--admin-token", TOKEN],
        &[],
    );
    let addr = spike.serving_addr();
    wait_ready(&addr);
    (spike, dir, format!("http://{addr}"))
}

#[test]
fn list_push_status_rollback() {
    let (_spike, dir, server) = start();
    let table = stdout(&plugins(&server, TOKEN, &["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("hello  ready"), "{table}");
    assert!(lines[1].ends_with("/hello"), "{table}");
    assert!(lines[2].starts_with("panic  ready"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&plugins(&server, TOKEN, &["--json", "list"]))).unwrap();
    let first = json["plugins"][0]["version"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();

    // A different component: the probe fixture.
    let probe = guest("fixture_probe");
    let out = stdout(&plugins(
        &server,
        TOKEN,
        &["push", "hello", probe.to_str().unwrap()],
    ));
    assert!(out.starts_with("hello: now serving "), "{out}");
    assert!(out.contains("(upload)"), "{out}");
    let reply = get(server.trim_start_matches("http://"), "/hello/probe/count");
    assert!(reply.ends_with("\r\n\r\n1"), "{reply}");

    let status = stdout(&plugins(&server, TOKEN, &["status", "hello"]));
    assert!(status.contains("state      ready"), "{status}");
    assert!(
        status.contains("versions, newest first (* serving):"),
        "{status}"
    );
    assert!(status.contains(&format!("  {}", &first[..12])), "{status}");
    assert!(status.contains("component  an upload"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&plugins(
        &server,
        TOKEN,
        &["--json", "status", "hello"],
    )))
    .unwrap();
    let pushed = json["version"]["sha256"].as_str().unwrap().to_string();

    let out = stdout(&plugins(&server, TOKEN, &["rollback", "hello"]));
    assert!(
        out.starts_with(&format!("hello: back to {}", &first[..12])),
        "{out}"
    );
    let reply = get(server.trim_start_matches("http://"), "/hello");
    assert!(reply.ends_with("Hello, world!\n"), "{reply}");
    // The newer version is kept: forward again by the start of its hash.
    let status = stdout(&plugins(&server, TOKEN, &["status", "hello"]));
    assert!(status.contains(&format!("  {}", &pushed[..12])), "{status}");
    assert!(status.contains(&format!("* {}", &first[..12])), "{status}");
    let out = stdout(&plugins(
        &server,
        TOKEN,
        &["activate", "hello", &pushed[..6]],
    ));
    assert!(
        out.starts_with(&format!("hello: now serving {}", &pushed[..12])),
        "{out}"
    );
    let reply = get(server.trim_start_matches("http://"), "/hello/probe/count");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let out = failure(&plugins(&server, TOKEN, &["activate", "hello", "0000000"]));
    assert!(
        out.contains("no kept version starts with '0000000'"),
        "{out}"
    );

    // Removed: not served, not listed, its manifest gone.
    let out = stdout(&plugins(&server, TOKEN, &["remove", "panic"]));
    assert_eq!(out, "panic: removed\n");
    let reply = get(server.trim_start_matches("http://"), "/panic");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    let table = stdout(&plugins(&server, TOKEN, &["list"]));
    assert!(!table.contains("panic"), "{table}");
    assert!(!dir.path().join("plugins/panic.toml").exists());
    let out = failure(&plugins(&server, TOKEN, &["remove", "panic"]));
    assert!(out.contains("no plugin 'panic'"), "{out}");
}

#[test]
fn errors_say_what_to_do() {
    let (_spike, dir, server) = start();

    let wrong = failure(&plugins(&server, "not-the-token", &["list"]));
    assert!(wrong.contains("refused the token"), "{wrong}");
    assert!(wrong.contains("SPIKE_ADMIN_TOKEN"), "{wrong}");

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = failure(&plugins(&down, TOKEN, &["list"]));
    assert!(out.contains("no spike server answers at"), "{out}");
    assert!(out.contains("is it running?"), "{out}");

    let out = failure(&plugins("ftp://x", TOKEN, &["list"]));
    assert!(out.contains("is not a server URL"), "{out}");

    let not_a_plugin = guest("fixture_not_a_plugin");
    let out = failure(&plugins(
        &server,
        TOKEN,
        &["push", "hello", not_a_plugin.to_str().unwrap()],
    ));
    assert!(out.contains("422 component_refused"), "{out}");

    let out = failure(&plugins(
        &server,
        TOKEN,
        &["push", "nobody", guest("fixture_probe").to_str().unwrap()],
    ));
    assert!(out.contains("no plugin 'nobody'"), "{out}");
    assert!(out.contains("--manifest nobody.toml"), "{out}");

    let manifest = dir.path().join("typo.toml");
    std::fs::write(
        &manifest,
        "component = \"hello.wasm\"\n[[routes]]\nprefx = \"/hello\"\n",
    )
    .unwrap();
    let out = failure(&plugins(
        &server,
        TOKEN,
        &[
            "push",
            "hello",
            guest("fixture_probe").to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ],
    ));
    // The file pushed and its line, not the server's copy.
    let pushed = format!("{}: line 3: ", manifest.display());
    assert!(out.contains(&pushed), "{out}");
    assert!(out.contains("prefx"), "{out}");
    assert!(!out.contains("plugins/hello.toml"), "{out}");

    let out = failure(&plugins(&server, TOKEN, &["status", "nobody"]));
    assert!(out.contains("no plugin 'nobody'"), "{out}");
}

#[test]
fn group_flags_go_after_the_command_too_and_no_token_is_named() {
    let (_spike, _dir, server) = start();
    // After the command, as people type them.
    let table = stdout(
        &bare_plugins(std::path::Path::new("/nonexistent"))
            .args(["list", "--server", &server, "--token", TOKEN, "--json"])
            .output()
            .unwrap(),
    );
    let json: serde_json::Value = serde_json::from_str(&table).unwrap();
    assert!(json["plugins"].is_array(), "{table}");
    // Each command's help lists them; `new` does not list serve's logging.
    let help = stdout(
        &bare_plugins(std::path::Path::new("/nonexistent"))
            .args(["push", "--help"])
            .output()
            .unwrap(),
    );
    for flag in ["--server", "--token", "--config", "--json"] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
    for command in ["new", "build", "check"] {
        let out = Command::new(env!("CARGO_BIN_EXE_spike"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = stdout(&out);
        assert!(!help.contains("--access-log"), "{command}: {help}");
        assert!(!help.contains("--log-format"), "{command}: {help}");
    }
    // No token at all is not a wrong one.
    let out = failure(&plugins(&server, "", &["list"]));
    assert!(out.contains("no admin token was given"), "{out}");
    assert!(out.contains("--token"), "{out}");
}

#[test]
fn a_server_without_an_admin_token_says_how_to_enable_it() {
    let mut spike = Spike::start(&["--log-format", "json"]);
    let server = format!("http://{}", spike.serving_addr());
    let out = failure(&plugins(&server, TOKEN, &["list"]));
    assert!(out.contains("the admin API is disabled"), "{out}");
    assert!(out.contains("--admin-token"), "{out}");
}

#[test]
fn logs_show_what_guests_printed_and_follow_new_lines() {
    let (_spike, _dir, server) = start();
    let addr = server.trim_start_matches("http://").to_string();
    assert!(get(&addr, "/panic").starts_with("HTTP/1.1 500"));
    // The line reaches the feed as the guest's stderr is written; the
    // request's end does not wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = stdout(&plugins(&server, TOKEN, &["logs", "panic"]));
        if out.contains("this fixture always panics") || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let line = out
        .lines()
        .find(|l| l.contains("this fixture always panics"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" stderr "), "{line}");
    let none = stdout(&plugins(&server, TOKEN, &["logs", "hello"]));
    assert!(none.starts_with("no log lines from hello yet"), "{none}");
    let none = stdout(&plugins(&server, TOKEN, &["--json", "logs", "hello"]));
    assert!(none.is_empty(), "JSON stays machine-readable: {none}");

    // --follow: a new panic shows up in a reader that was already reading.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["plugins", "--server", &server, "--token", TOKEN, "--json"])
        .args(["logs", "panic", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The kept lines first (a panic prints two), then the new ones.
    let next_panic = || loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        if line.contains("always panics") {
            break line;
        }
    };
    next_panic();
    assert!(get(&addr, "/panic").starts_with("HTTP/1.1 500"));
    let second = next_panic();
    let entry: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(entry["stream"], "stderr");
    assert!(entry["at_ms"].as_u64().unwrap() > 0);
    follower.kill().unwrap();
    follower.wait().unwrap();

    let out = failure(&plugins(&server, TOKEN, &["logs", "nobody"]));
    assert!(out.contains("no plugin 'nobody'"), "{out}");
}
