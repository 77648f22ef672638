//! The files of a new project: the templates, and the SDK and WIT package
//! this binary was built with.

/// The SDK's sources and the WIT package, as the repository has them.
/// (`every_sdk_and_wit_file_is_embedded` checks that none is missing.)
const EMBEDDED: &[(&str, &str)] = &[
    (
        "spike-sdk/wit/authenticator.wit",
        include_str!("../../../wit/authenticator.wit"),
    ),
    (
        "spike-sdk/wit/blob.wit",
        include_str!("../../../wit/blob.wit"),
    ),
    (
        "spike-sdk/wit/deps/blobstore-0.2.0-draft.wit",
        include_str!("../../../wit/deps/blobstore-0.2.0-draft.wit"),
    ),
    (
        "spike-sdk/wit/deps/config-0.2.0-draft-2024-09-27.wit",
        include_str!("../../../wit/deps/config-0.2.0-draft-2024-09-27.wit"),
    ),
    (
        "spike-sdk/wit/deps/config-0.2.0-draft.wit",
        include_str!("../../../wit/deps/config-0.2.0-draft.wit"),
    ),
    (
        "spike-sdk/wit/deps/config-0.2.0-rc.1.wit",
        include_str!("../../../wit/deps/config-0.2.0-rc.1.wit"),
    ),
    (
        "spike-sdk/wit/deps/keyvalue-0.2.0-draft.wit",
        include_str!("../../../wit/deps/keyvalue-0.2.0-draft.wit"),
    ),
    (
        "spike-sdk/wit/deps/keyvalue-0.2.0-draft2.wit",
        include_str!("../../../wit/deps/keyvalue-0.2.0-draft2.wit"),
    ),
    (
        "spike-sdk/wit/deps/logging-0.1.0-draft.wit",
        include_str!("../../../wit/deps/logging-0.1.0-draft.wit"),
    ),
    (
        "spike-sdk/wit/deps/cli.wit",
        include_str!("../../../wit/deps/cli.wit"),
    ),
    (
        "spike-sdk/wit/deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "spike-sdk/wit/deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    (
        "spike-sdk/wit/deps/http.wit",
        include_str!("../../../wit/deps/http.wit"),
    ),
    (
        "spike-sdk/wit/deps/io.wit",
        include_str!("../../../wit/deps/io.wit"),
    ),
    (
        "spike-sdk/wit/deps/otel.wit",
        include_str!("../../../wit/deps/otel.wit"),
    ),
    (
        "spike-sdk/wit/deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "spike-sdk/wit/deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
    (
        "spike-sdk/wit/identity.wit",
        include_str!("../../../wit/identity.wit"),
    ),
    ("spike-sdk/wit/kv.wit", include_str!("../../../wit/kv.wit")),
    (
        "spike-sdk/wit/rate-limit.wit",
        include_str!("../../../wit/rate-limit.wit"),
    ),
    (
        "spike-sdk/wit/render.wit",
        include_str!("../../../wit/render.wit"),
    ),
    (
        "spike-sdk/wit/room-handler.wit",
        include_str!("../../../wit/room-handler.wit"),
    ),
    (
        "spike-sdk/wit/rooms.wit",
        include_str!("../../../wit/rooms.wit"),
    ),
    (
        "spike-sdk/wit/secrets.wit",
        include_str!("../../../wit/secrets.wit"),
    ),
    (
        "spike-sdk/wit/sql.wit",
        include_str!("../../../wit/sql.wit"),
    ),
    (
        "spike-sdk/wit/standards.wit",
        include_str!("../../../wit/standards.wit"),
    ),
    (
        "spike-sdk/wit/types.wit",
        include_str!("../../../wit/types.wit"),
    ),
    (
        "spike-sdk/wit/worlds.wit",
        include_str!("../../../wit/worlds.wit"),
    ),
    (
        "spike-sdk/src/access.rs",
        include_str!("../../../components/sdk/src/access.rs"),
    ),
    (
        "spike-sdk/src/blob_io.rs",
        include_str!("../../../components/sdk/src/blob_io.rs"),
    ),
    (
        "spike-sdk/src/cache.rs",
        include_str!("../../../components/sdk/src/cache.rs"),
    ),
    (
        "spike-sdk/src/client.rs",
        include_str!("../../../components/sdk/src/client.rs"),
    ),
    (
        "spike-sdk/src/http.rs",
        include_str!("../../../components/sdk/src/http.rs"),
    ),
    (
        "spike-sdk/src/json.rs",
        include_str!("../../../components/sdk/src/json.rs"),
    ),
    (
        "spike-sdk/src/lib.rs",
        include_str!("../../../components/sdk/src/lib.rs"),
    ),
    (
        "spike-sdk/src/router.rs",
        include_str!("../../../components/sdk/src/router.rs"),
    ),
    (
        "spike-sdk/src/sql.rs",
        include_str!("../../../components/sdk/src/sql.rs"),
    ),
    (
        "spike-sdk/src/telemetry.rs",
        include_str!("../../../components/sdk/src/telemetry.rs"),
    ),
];

/// The SDK's `Cargo.toml` in a project: no workspace to inherit from.
const SDK_CARGO: &str = r#"[package]
name = "spike-sdk"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
serde = "1"
serde_json = "1"
sha2 = "0.10"
hex = "0.4"
"#;

const CARGO: &str = r#"[package]
name = "__NAME__"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
spike-sdk = { path = "spike-sdk" }
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true

# A project of its own, even inside another workspace.
[workspace]
"#;

const LIB: &str = r##"//! __NAME__: a spike plugin.
//!
//! | request               | what it does                          |
//! |-----------------------|---------------------------------------|
//! | `GET /__NAME__`           | a greeting (`?name=` for someone else) |
//! | `POST /__NAME__/counter`  | adds one to a KV counter, returns it  |
//! | `GET /__NAME__/counter`   | reads the counter                     |
//! | `POST /__NAME__/notes?text=…` | keeps a note in a SQL table       |
//! | `GET /__NAME__/notes`     | the notes, newest first               |
//!
//! `spike build` builds it into `plugin/__NAME__.wasm`; `spike serve
//! --plugins plugin` serves it. Its manifest, `plugin/__NAME__.toml`, grants
//! the KV namespace and the SQL database `__NAME__`: anything else it tried
//! would be refused.

use serde::{Deserialize, Serialize};
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{Request, Response};
use spike_sdk::json::Json;
use spike_sdk::kv::Namespace;
use spike_sdk::router::{HttpError, Router};
use spike_sdk::sql::Database;
use spike_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};

const KV_NAMESPACE: &str = "__NAME__";
const SQL_DATABASE: &str = "__NAME__";

struct Plugin;

impl Guest for Plugin {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        Router::new()
            .get("/__NAME__", |req, _| greet(req))
            .get("/__NAME__/counter", |_, _| read_count())
            .post("/__NAME__/counter", |_, _| count())
            .get("/__NAME__/notes", |_, _| notes())
            .post("/__NAME__/notes", |req, _| add_note(req))
            .serve(request, out);
    }
}

spike_sdk::export!(Plugin);

fn greet(req: &Request) -> Response {
    let name = req.query_param("name").unwrap_or_else(|| "world".into());
    Response::text(200, format!("Hello, {name}! This is __NAME__.\n"))
}

/// The answer of both counter routes, as JSON: `{"count": 3}`.
#[derive(Serialize)]
struct Count {
    count: i64,
}

/// Atomic: concurrent requests never lose a count. A capability's error
/// becomes its status (403 for a namespace the manifest does not grant).
fn count() -> Result<Json<Count>, HttpError> {
    let count = Namespace::open(KV_NAMESPACE)?.increment("counter", 1)?;
    Ok(Json(Count { count }))
}

/// `increment` keeps the count as decimal text.
fn read_count() -> Result<Json<Count>, HttpError> {
    let value = Namespace::open(KV_NAMESPACE)?.get("counter")?;
    let count = value
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    Ok(Json(Count { count }))
}

/// A row of the notes table, as JSON: `{"id": 1, "text": "milk"}`.
#[derive(Serialize, Deserialize)]
struct Note {
    id: i64,
    text: String,
}

/// The database, its table made on first use. SQLite's refusal (the
/// CHECK on an empty text) is a 400 with SQLite's message.
fn notes_db() -> Result<Database, HttpError> {
    let db = Database::open(SQL_DATABASE)?;
    db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL CHECK (text <> ''))")?;
    Ok(db)
}

fn add_note(req: &Request) -> Result<Json<Note>, HttpError> {
    let text = req.query_param("text").unwrap_or_default();
    let db = notes_db()?;
    let insert = db.prepare("INSERT INTO notes (text) VALUES (?)");
    let added = insert.bind(text.as_str()).run()?;
    Ok(Json(Note {
        id: added.last_insert_id,
        text,
    }))
}

fn notes() -> Result<Json<Vec<Note>>, HttpError> {
    let newest = "SELECT id, text FROM notes ORDER BY id DESC LIMIT 100";
    Ok(Json(notes_db()?.prepare(newest).all()?))
}
"##;

const MANIFEST: &str = r#"# The plugin's manifest: its routes, what it may touch, its limits.
# See the README of spike, "Plugins and manifests".
component = "__NAME__.wasm"

[[routes]]
prefix = "/__NAME__"

[grants]
kv = ["__NAME__"]
sql = ["__NAME__"]
"#;

const GITIGNORE: &str = "/target\n/plugin/*.wasm\n/.spike-data\n";

const PACKAGE_JSON: &str = r#"{
  "name": "__NAME__",
  "private": true,
  "description": "A spike plugin in JavaScript, built by componentize-js",
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

const PLUGIN_JS: &str = r#"// __NAME__: a spike plugin in JavaScript.
//
//   GET  /__NAME__           a greeting
//   POST /__NAME__/counter   adds one to a KV counter and returns it
//   GET  /__NAME__/counter   reads it
//   POST /__NAME__/notes?text=…  keeps a note in a SQL table
//   GET  /__NAME__/notes     the notes, newest first
//
// `spike build` makes plugin/__NAME__.wasm with componentize-js; spike's
// imports are modules named as in wit/ (`spike:host/kv@0.1.0`, ...), and a
// WIT `result` error is thrown. Written against wasi:http itself: it serves
// any number of requests in one instance, so `instance_reuse` may be set.
import { Fields, OutgoingBody, OutgoingResponse, ResponseOutparam } from 'wasi:http/types@0.2.10';
import { Namespace } from 'spike:host/kv@0.1.0';
import { Database } from 'spike:host/sql@0.1.0';

const encoder = new TextEncoder();

function send(out, status, contentType, text) {
  const response = new OutgoingResponse(Fields.fromList([['content-type', encoder.encode(contentType)]]));
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(out, { tag: 'ok', val: response });
  const stream = body.write();
  stream.blockingWriteAndFlush(encoder.encode(text));
  stream[Symbol.dispose]();
  OutgoingBody.finish(body, undefined);
}

function counter(change) {
  const ns = Namespace.open('__NAME__');
  if (change) return ns.increment('counter', 1n);
  const value = ns.get('counter');
  return value === undefined ? 0n : BigInt(new TextDecoder().decode(value));
}

// The database, its table made on first use. Values are WIT variants:
// { tag: 'text', val: 'milk' }, { tag: 'integer', val: 1n }, { tag: 'null' }.
function notesDb() {
  const db = Database.open('__NAME__');
  db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL CHECK (text <> ''))");
  return db;
}

function addNote(text) {
  const done = notesDb().query('INSERT INTO notes (text) VALUES (?)', [{ tag: 'text', val: text }]);
  return { id: Number(done.lastInsertId), text };
}

function notes() {
  const { rows } = notesDb().query('SELECT id, text FROM notes ORDER BY id DESC LIMIT 100', []);
  return rows.map(([id, text]) => ({ id: Number(id.val), text: text.val }));
}

export const incomingHandler = {
  handle(request, out) {
    const [path, query] = (request.pathWithQuery() ?? '/').split('?');
    const method = request.method().tag;
    try {
      if (path === '/__NAME__' && method === 'get') {
        send(out, 200, 'text/plain', 'Hello from __NAME__, in JavaScript.\n');
      } else if (path === '/__NAME__/counter' && (method === 'get' || method === 'post')) {
        const count = counter(method === 'post');
        send(out, 200, 'application/json', JSON.stringify({ count: Number(count) }));
      } else if (path === '/__NAME__/notes' && method === 'post') {
        const text = new URLSearchParams(query ?? '').get('text') ?? '';
        send(out, 200, 'application/json', JSON.stringify(addNote(text)));
      } else if (path === '/__NAME__/notes' && method === 'get') {
        send(out, 200, 'application/json', JSON.stringify(notes()));
      } else {
        send(out, 404, 'application/json', JSON.stringify({ error: { code: 'not_found', message: `nothing at ${path}` } }));
      }
    } catch (e) {
      // A capability's error is thrown with the WIT error as its payload.
      const status = e?.payload?.tag === 'invalid-input' ? 400 : 500;
      send(out, status, 'application/json', JSON.stringify({ error: { code: e?.payload?.tag ?? 'internal', message: String(e?.payload?.val ?? e) } }));
    }
  },
};
"#;

const GITIGNORE_JS: &str = "/node_modules\n/plugin/*.wasm\n/.spike-data\n";

/// Every file of a new JavaScript project `name`: the WIT package with its
/// WASI packages at 0.2.10, the version componentize-js 0.23's runtime
/// (StarlingMonkey) exports; the host links any 0.2.x.
pub fn js_project(name: &str) -> Vec<(String, String)> {
    let mut files = wit_files(wasi_0_2_10);
    let named = |t: &str| t.replace("__NAME__", name);
    files.push(("package.json".into(), named(PACKAGE_JSON)));
    files.push(("src/plugin.js".into(), named(PLUGIN_JS)));
    files.push((format!("plugin/{name}.toml"), named(MANIFEST)));
    files.push((".gitignore".into(), GITIGNORE_JS.into()));
    files
}

/// The Python template's plugin (`__NAME__` is the project's name).
const APP_PY: &str = include_str!("template_app.py");

const GITIGNORE_PY: &str = "/.venv\n/__pycache__\n/plugin/*.wasm\n/.spike-data\n";

/// Every file of a new Python project `name`: the WIT package as it is
/// (componentize-py reads WASI 0.2.12).
pub fn python_project(name: &str) -> Vec<(String, String)> {
    let mut files = wit_files(|text| text.to_owned());
    let named = |t: &str| t.replace("__NAME__", name);
    files.push(("app.py".into(), named(APP_PY)));
    files.push((format!("plugin/{name}.toml"), named(MANIFEST)));
    files.push((".gitignore".into(), GITIGNORE_PY.into()));
    files
}

/// The WIT package's files under `wit/`, each through `edit`.
fn wit_files(edit: impl Fn(&str) -> String) -> Vec<(String, String)> {
    EMBEDDED
        .iter()
        .filter_map(|(path, text)| {
            let wit = path.strip_prefix("spike-sdk/")?.strip_prefix("wit/")?;
            Some((format!("wit/{wit}"), edit(text)))
        })
        .collect()
}

/// `text` with every WASI 0.2.11 and 0.2.12 version (and feature gate) at
/// 0.2.10.
fn wasi_0_2_10(text: &str) -> String {
    ["@0.2.11", "@0.2.12", "version = 0.2.11", "version = 0.2.12"]
        .iter()
        .fold(text.to_owned(), |t, from| {
            let to = if from.starts_with('@') {
                "@0.2.10"
            } else {
                "version = 0.2.10"
            };
            t.replace(from, to)
        })
}

/// Every file of a new Rust project `name`, by path in the project.
pub fn rust_project(name: &str) -> Vec<(String, String)> {
    // The SDK finds the WIT package in its own folder (`wit`, a link to the
    // repository's in `components/sdk`), as in the project.
    let mut files: Vec<(String, String)> = EMBEDDED
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    let named = |t: &str| t.replace("__NAME__", name);
    files.push(("spike-sdk/Cargo.toml".into(), SDK_CARGO.into()));
    files.push(("Cargo.toml".into(), named(CARGO)));
    files.push(("src/lib.rs".into(), named(LIB)));
    files.push((format!("plugin/{name}.toml"), named(MANIFEST)));
    files.push((".gitignore".into(), GITIGNORE.into()));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_and_wit_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk = Vec::new();
        for (dir, prefix) in [
            ("wit", "spike-sdk/wit"),
            ("wit/deps", "spike-sdk/wit/deps"),
            ("components/sdk/src", "spike-sdk/src"),
        ] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    on_disk.push(format!(
                        "{prefix}/{}",
                        path.file_name().unwrap().to_str().unwrap()
                    ));
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = EMBEDDED.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn the_embedded_sdk_has_the_sdks_dependencies() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sdk = std::fs::read_to_string(root.join("components/sdk/Cargo.toml")).unwrap();
        let dependencies = sdk.split("[dependencies]").nth(1).unwrap();
        let dependencies = dependencies.split("\n[").next().unwrap();
        for line in dependencies.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            assert!(SDK_CARGO.contains(line), "the embedded SDK lacks {line}");
        }
    }

    #[test]
    fn a_js_project_has_the_wit_at_wasi_0_2_10() {
        let files = js_project("demo");
        let worlds = &files.iter().find(|(p, _)| p == "wit/worlds.wit").unwrap().1;
        assert!(worlds.contains("wasi:http/proxy@0.2.10"), "{worlds}");
        assert!(files.iter().all(|(_, t)| !t.contains("0.2.12")));
        assert!(files.iter().any(|(p, _)| p == "wit/deps/http.wit"));
    }

    #[test]
    fn the_sdk_finds_its_wit_in_a_project() {
        let files = rust_project("demo");
        let lib = &files
            .iter()
            .find(|(p, _)| p == "spike-sdk/src/lib.rs")
            .unwrap()
            .1;
        assert!(lib.contains(r#"path: "wit""#), "{lib}");
        let manifest = &files
            .iter()
            .find(|(p, _)| p == "plugin/demo.toml")
            .unwrap()
            .1;
        assert!(manifest.contains("prefix = \"/demo\""), "{manifest}");
    }
}
