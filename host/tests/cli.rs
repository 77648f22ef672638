//! The `spike` binary: its logs (one JSON object per line with
//! `--log-format json`, no colour codes when stdout is not a terminal, a
//! line per request only with `--access-log`), and
//! secrets that never show in a log line, an error, an admin answer or a
//! `spike check` report.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn json_logs_are_one_object_per_line() {
    let mut spike = Spike::start(&["--log-format", "json", "--access-log"]);
    let addr = spike.serving_addr();
    let reply = get(&addr, "/healthz");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let id = reply
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a request id")
        .to_string();
    let line = spike.line_with("\"request\"");
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["message"], "request");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/healthz");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["request_id"].to_string(), id);
    assert!(entry["latency_us"].is_u64(), "{entry}");
}

#[test]
fn text_logs_have_no_colour_codes_off_a_terminal() {
    let mut spike = Spike::start(&["--access-log"]);
    let line = spike.line_with("spike is serving");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap()
        .to_string();
    get(&addr, "/healthz");
    let line = spike.line_with("request");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    assert!(line.contains("path=/healthz"), "{line}");
}

#[test]
fn no_line_per_request_without_access_log() {
    let mut spike = Spike::start(&["--log-format", "json"]);
    let addr = spike.serving_addr();
    for path in ["/healthz", "/nothing-here"] {
        let reply = get(&addr, path);
        assert!(reply.contains("x-request-id: "), "{reply}");
    }
    // Longer than the log sink waits to write what it buffered.
    std::thread::sleep(Duration::from_millis(500));
    let logs = spike.stop();
    assert!(logs.iter().all(|l| !l.contains("request_id")), "{logs:?}");
}

const PLANTED_FILE: &str = "PLANTED-file-secret-7c1d2e";
const PLANTED_ENV: &str = "PLANTED-env-secret-93ab04";

#[test]
fn secrets_never_show_outside_the_guest_that_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("fixture_whoami"), plugins.join("whoami.wasm")).unwrap();
    std::fs::write(
        plugins.join("whoami.toml"),
        "component = \"whoami.wasm\"\n[[routes]]\nprefix = \"/whoami\"\n\
         [grants]\nsecrets = [\"api-key\", \"token-two\", \"unset-one\"]\n",
    )
    .unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, format!("api-key = \"{PLANTED_FILE}\"\n")).unwrap();
    let secrets = secrets.to_str().unwrap().to_string();
    let env = [
        ("SPIKE_SECRET_TOKEN_TWO", PLANTED_ENV),
        ("RUST_LOG", "debug"),
    ];
    let mut spike = Spike::start_in(
        dir.path(),
        &[
            "--log-format",
            "json",
            "--admin-token",
            "op-token",
            "--secrets",
            &secrets,
        ],
        &env,
    );
    let addr = spike.serving_addr();
    wait_ready(&addr);

    // The guest that is granted them reads both.
    let reply = get(&addr, "/whoami/secret?name=api-key");
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with(PLANTED_FILE),
        "{reply}"
    );
    let reply = get(&addr, "/whoami/secret?name=token-two");
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with(PLANTED_ENV),
        "{reply}"
    );

    // Everything else: errors, the admin API, metrics, logs.
    let mut answers = vec![
        get(&addr, "/whoami/secret?name=not-granted"),
        get(&addr, "/whoami/secret?name=unset-one"),
        get(&addr, "/whoami/secret?name=API-KEY"),
        request(
            &addr,
            "GET",
            "/_spike/plugins",
            "authorization: Bearer op-token\r\n",
        ),
        request(
            &addr,
            "GET",
            "/_spike/metrics",
            "authorization: Bearer op-token\r\n",
        ),
        request(
            &addr,
            "GET",
            "/_spike/plugins",
            "authorization: Bearer wrong\r\n",
        ),
        request(
            &addr,
            "PUT",
            "/_spike/plugins/whoami",
            "authorization: Bearer op-token\r\n",
        ),
        get(&addr, "/readyz"),
        get(&addr, "/nothing-here"),
    ];
    assert!(answers[0].starts_with("HTTP/1.1 403"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 400"), "{}", answers[1]);
    assert!(answers[3].contains("\"whoami\""), "{}", answers[3]);
    assert!(answers[4].contains("secret_reads"), "{}", answers[4]);
    let logs = spike.stop();
    assert!(logs.len() > 5, "{logs:?}");

    // `spike check` with the same environment.
    let check = Command::new(env!("CARGO_BIN_EXE_spike"))
        .arg("check")
        .arg(guest("fixture_whoami"))
        .envs(env)
        .env("SPIKE_SECRETS", &secrets)
        .output()
        .unwrap();
    assert!(check.status.success());
    answers.push(String::from_utf8_lossy(&check.stdout).into_owned());
    answers.push(String::from_utf8_lossy(&check.stderr).into_owned());

    for text in answers.iter().chain(&logs) {
        for planted in [PLANTED_FILE, PLANTED_ENV, "PLANTED"] {
            assert!(!text.contains(planted), "{planted} leaked in: {text}");
        }
    }
}

#[test]
fn a_malformed_secrets_file_is_reported_by_line_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, format!("good = \"x\"\nbroken = {PLANTED_FILE}\n")).unwrap();
    let out = serve_command(dir.path())
        .arg("--secrets")
        .arg(&secrets)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("line 2"), "{text}");
    assert!(!text.contains("PLANTED"), "{text}");
}

/// An HS256 token for `sub`, minted by PyJWT (`tests/tools/mint.py`, in the
/// venv `scripts/setup.sh` makes).
fn hs256_token(key: &str, sub: &str) -> String {
    let tools = std::env::var_os("SPIKE_TOOLS_DIR").map_or_else(
        || std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/spike-tools"),
        Into::into,
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let job = format!(
        r#"[{{"op":"sign","alg":"HS256","key":"{key}","claims":{{"sub":"{sub}","exp":{exp}}}}}]"#
    );
    let mut child = Command::new(tools.join("venv/bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/tools/mint.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test tools' Python: run scripts/setup.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let minted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    minted[0]["token"].as_str().unwrap().to_string()
}

/// `method path` with a bearer token and `body`; the whole reply.
fn send_doc(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    extra: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {token}\r\n\
         content-length: {}\r\n{extra}\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    reply
}

/// The body of a raw reply.
fn body_of(reply: &[u8]) -> &[u8] {
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &reply[end + 4..]
}

#[test]
fn a_kill_in_the_middle_of_a_put_leaves_the_previous_version_whole() {
    const KEY: &str = "crash-test-hs256-key";
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("auth"), plugins.join("auth.wasm")).unwrap();
    std::fs::write(
        plugins.join("auth.toml"),
        "component = \"auth.wasm\"\n[[routes]]\nprefix = \"/api/logged_in\"\nauth = \"required\"\n\
         [grants]\nkv = [\"auth\"]\nsecrets = [\"hs-key\"]\n[env]\nHS256_SECRET = \"hs-key\"\n",
    )
    .unwrap();
    std::fs::copy(guest("cms"), plugins.join("cms.wasm")).unwrap();
    let cms = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/cms.toml"))
        .unwrap();
    std::fs::write(plugins.join("cms.toml"), cms).unwrap();
    let env = [("SPIKE_SECRET_HS_KEY", KEY)];
    let token = hs256_token(KEY, "user_1");
    let doc = "/my-cms/report.bin";

    let mut spike = Spike::start_in(dir.path(), &["--log-format", "json"], &env);
    let addr = spike.serving_addr();
    wait_ready(&addr);
    let small = b"version one".to_vec();
    let large: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    for body in [&small, &large] {
        let reply = send_doc(&addr, "PUT", doc, &token, "", body);
        assert!(
            reply.starts_with(b"HTTP/1.1 20"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    // A third version, large, killed halfway through its upload.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "PUT {doc} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
        3 << 20
    )
    .unwrap();
    stream.write_all(&vec![b'z'; 1 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    spike.child.kill().unwrap();
    spike.child.wait().unwrap();
    drop(stream);

    let mut spike = Spike::start_in(dir.path(), &["--log-format", "json"], &env);
    let addr = spike.serving_addr();
    wait_ready(&addr);
    let reply = send_doc(&addr, "GET", doc, &token, "", b"");
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply[..200])
    );
    assert!(
        body_of(&reply) == large.as_slice(),
        "the second version, whole"
    );
    let reply = send_doc(&addr, "GET", &format!("{doc}?version=1"), &token, "", b"");
    assert_eq!(body_of(&reply), small.as_slice());
    // The document takes a new version at once: no turn was left held.
    let etag = String::from_utf8_lossy(&reply)
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").map(str::to_string));
    let current = send_doc(&addr, "GET", doc, &token, "", b"");
    let current_etag = String::from_utf8_lossy(&current[..current.len().min(2000)])
        .lines()
        .find_map(|l| l.strip_prefix("etag: ").map(str::to_string))
        .unwrap();
    assert!(etag.is_none(), "an earlier version has no ETag");
    let reply = send_doc(
        &addr,
        "PUT",
        doc,
        &token,
        &format!("if-match: {current_etag}\r\n"),
        b"version three",
    );
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let _ = spike.stop();
}

/// The shipped development set warns of what makes it unfit for real
/// users, the development token issuer first; the data folder and the
/// database are the operator's alone, even where they were created open.
#[test]
fn demo_settings_are_warned_of_and_the_data_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    for name in ["dev-tokens", "yjs", "livestore", "rooms", "chat", "hello"] {
        let manifest = format!("{name}.toml");
        std::fs::copy(shipped.join(&manifest), plugins.join(&manifest)).unwrap();
    }
    // A data folder made by hand, open to everyone.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut spike = Spike::start_in(dir.path(), &["--log-format", "json"], &[]);
    spike.serving_addr();
    let warnings: Vec<serde_json::Value> = spike
        .stop()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == "WARN")
        .collect();
    let texts: Vec<&str> = (warnings.iter())
        .filter_map(|w| w["message"].as_str())
        .collect();
    let demo: Vec<&&str> = (texts.iter())
        .filter(|t| t.contains("development only") || t.contains("anyone may join"))
        .collect();
    assert!(
        demo[0].starts_with("plugin 'dev-tokens' is for development only")
            && demo[0].contains("anyone can sign in as anyone"),
        "{texts:#?}"
    );
    for room in ["/yjs/…", "/livestore/…", "/room/…"] {
        assert!(demo.iter().any(|t| t.contains(room)), "{room}: {texts:#?}");
    }
    // Chat's rooms have a handler; hello's writes need sign-in.
    assert_eq!(demo.len(), 4, "{texts:#?}");
    assert!(
        texts.iter().any(|t| t.contains("readable by other users")),
        "{texts:#?}"
    );

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("spike.redb")), 0o600);
    // What the server made under it is its user's alone too (the umask).
    assert_eq!(mode(&data.join("blobs")), 0o700);
}
