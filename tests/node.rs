//! Clients from npm, driven from Rust tests: a Node process per client,
//! commands as JSON lines on its stdin, answers as JSON lines on its
//! stdout, every read under a timeout. `scripts/setup.sh` installs the
//! packages (`tests/node/package.json`, pinned).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long a test waits for one answer of a client.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// `tests/node`, with its packages installed.
pub fn node_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/y-websocket").exists(),
        "{} has no packages: run scripts/setup.sh (./dev.sh test does)",
        dir.display()
    );
    dir
}

/// Runs `script` of `tests/node` with `args` to its end (within `limit`)
/// and returns the JSON lines it printed; fails the test, with what it
/// printed, if it fails.
pub async fn run_to_end(script: &str, args: &[&std::ffi::OsStr], limit: Duration) -> Vec<Value> {
    let output = crate::within_for(
        limit,
        Command::new("node")
            .arg(node_dir().join(script))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A Node script of `tests/node`, driven by JSON lines.
struct NodeScript {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeScript {
    fn start(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new("node")
            .arg(node_dir().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (scripts/setup.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        crate::within(self.stdin.write_all(line.as_bytes()))
            .await
            .expect("the client reads its commands");
    }

    /// The next line the client writes.
    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(ANSWER_TIMEOUT, self.lines.next_line())
            .await
            .expect("an answer within the timeout")
            .expect("reading the client")
            .expect("the client is running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Asks the client to quit, and waits for it to end.
    async fn quit(mut self) {
        self.command(json!({"op": "quit"})).await;
        let _ = tokio::time::timeout(ANSWER_TIMEOUT, self.child.wait()).await;
    }
}

/// Yjs rooms at `/yjs`, for a plugin without a component.
pub const YJS: crate::Plugin = crate::Plugin {
    name: "yjs",
    guest: "",
    manifest: "[[rooms]]\nprefix = \"/yjs\"\nprotocol = \"yjs\"\n",
};

/// An unmodified y-websocket client (`tests/node/yjs-peer.mjs`) editing
/// the text "text" of one document.
pub struct YjsPeer {
    script: NodeScript,
}

impl YjsPeer {
    /// Connects to `server` (`ws://host:port/prefix`) for document `doc`.
    pub async fn start(server: &str, doc: &str) -> Self {
        Self {
            script: NodeScript::start("yjs-peer.mjs", &[server, doc]),
        }
    }

    pub async fn command(&mut self, command: Value) {
        self.script.command(command).await;
    }

    async fn next_line(&mut self) -> Value {
        self.script.next_line().await
    }

    /// Waits for the client's first sync with the server.
    pub async fn synced(&mut self) {
        loop {
            if self.next_line().await["event"] == "synced" {
                return;
            }
        }
    }

    /// The client's text, whether it is synced, and the others' awareness.
    pub async fn dump(&mut self) -> Value {
        self.command(json!({"op": "dump"})).await;
        loop {
            let line = self.next_line().await;
            if line.get("text").is_some() {
                return line;
            }
        }
    }

    /// Waits until `check` holds of the client's dump; the dump.
    pub async fn until(&mut self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let dump = self.dump().await;
            if check(&dump) {
                return dump;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {what}: {dump}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the client's text is `text`.
    pub async fn text_is(&mut self, text: &str) {
        self.until(&format!("the text {text:?}"), |d| d["text"] == text)
            .await;
    }

    pub async fn insert(&mut self, at: usize, text: &str) {
        self.command(json!({"op": "insert", "at": at, "text": text}))
            .await;
    }

    /// Disconnects and ends the client.
    pub async fn quit(self) {
        self.script.quit().await;
    }

    /// `self` and `other`, both synced to an empty document, edit it: one
    /// types, the other sees it, then both type at the same place at
    /// once. Both converge to the text returned, which holds both edits.
    pub async fn edit_together(&mut self, other: &mut YjsPeer) -> String {
        self.insert(0, "hello").await;
        other.text_is("hello").await;
        self.insert(5, " ann").await;
        other.insert(5, " bob").await;
        let settled = self
            .until("both edits", |d| d["text"].as_str().unwrap().len() == 13)
            .await;
        let text = settled["text"].as_str().unwrap().to_string();
        other.text_is(&text).await;
        assert!(text.contains(" ann") && text.contains(" bob"), "{text}");
        text
    }
}

/// An unmodified LiveStore client (`tests/node/livestore-peer.mjs`:
/// `@livestore/adapter-node` in memory, syncing with `makeWsSync` of
/// `@livestore/sync-cf` 0.4) with a todo table.
pub struct LiveStorePeer {
    script: NodeScript,
}

impl LiveStorePeer {
    /// Boots a store `store_id` syncing with `url` (`ws://host:port/prefix`),
    /// its sync payload `{authToken}` if `token` is given; waits until it
    /// is up.
    pub async fn start(url: &str, store_id: &str, token: Option<&str>) -> Self {
        let mut args = vec![url, store_id];
        args.extend(token);
        let mut script = NodeScript::start("livestore-peer.mjs", &args);
        let first = script.next_line().await;
        assert_eq!(first["event"], "ready", "the store did not boot: {first}");
        Self { script }
    }

    /// Commits a `v1.TodoCreated` event.
    pub async fn add(&mut self, id: &str, text: &str) {
        let add = json!({"op": "add", "id": id, "text": text});
        self.script.command(add).await;
    }

    /// The todos (`[{id, text}]`, by id) once there are at least `count`.
    pub async fn todos_when(&mut self, count: usize) -> Value {
        self.script
            .command(json!({"op": "wait", "count": count}))
            .await;
        loop {
            let line = self.script.next_line().await;
            if let Some(todos) = line.get("todos") {
                return todos.clone();
            }
        }
    }

    pub async fn quit(self) {
        self.script.quit().await;
    }
}
