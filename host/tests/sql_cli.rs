//! `spike sql list | execute | export | import | restore | migrations`
//! against a running `spike serve` with the `notes` plugin: tables and
//! `--json`, a restore to a bookmark in the middle of a burst of writes,
//! migrations applied once by two `apply`s at the same time, an export
//! made again by an import, and errors that carry SQLite's words.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

const TOKEN: &str = "sql-test-token";

/// `spike sql <args>` against `server`.
fn sql(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spike"));
    command
        .arg("sql")
        .args(["--server", server])
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .env("SPIKE_ADMIN_TOKEN", TOKEN)
        .env_remove("SPIKE_SERVER")
        .env_remove("SPIKE_CLI_CONFIG")
        .env_remove("RUST_LOG");
    command
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn failure(o: Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    String::from_utf8(o.stderr).unwrap()
}

fn json(server: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(sql(server, &all).output().unwrap())).unwrap()
}

/// The first column of a `--json` execute's last result.
fn column(answer: &Value) -> Vec<Value> {
    let results = answer["results"].as_array().unwrap();
    let rows = results.last().unwrap()["rows"].as_array().unwrap();
    rows.iter().map(|r| r[0].clone()).collect()
}

fn start() -> (Spike, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(guest("notes"), plugins.join("notes.wasm")).unwrap();
    std::fs::write(
        plugins.join("notes.toml"),
        "component = \"notes.wasm\"\n[[routes]]\nprefix = \"/notes\"\n[grants]\nsql = [\"notes\"]\n",
    )
    .unwrap();
    let args = ["--log-format", "json", "--admin-token", TOKEN];
    let mut spike = Spike::start_in(dir.path(), &args, &[]);
    let addr = spike.serving_addr();
    wait_ready(&addr);
    (spike, dir, format!("http://{addr}"))
}

#[test]
fn execute_restore_export_import() {
    let (_spike, _dir, server) = start();
    let list = ok(sql(&server, &["list"]).output().unwrap());
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("DATABASE"), "{list}");
    assert!(lines[1].starts_with("notes     notes"), "{list}");

    let made = ok(sql(&server, &["execute", "scratch", "--command",
        "CREATE TABLE t (n INTEGER PRIMARY KEY, v); INSERT INTO t VALUES (1, 'one'), (2, X'00ff'); SELECT n, v FROM t"])
        .output()
        .unwrap());
    assert!(
        made.contains("n | v\n1 | one\n2 | X'00ff'\n(2 rows)"),
        "{made}"
    );
    assert!(made.contains("bookmark 0000000000000001"), "{made}");

    restore_to_the_middle_of_a_burst(&server);
    an_export_imported_is_the_same_database(&server);
    errors_carry_sqlite_s_words(&server);
}

/// A burst of writes, each with its bookmark; restored to the middle
/// one, the rows before it and it are there, none after; undone.
fn restore_to_the_middle_of_a_burst(server: &str) {
    let server = server.to_string();
    let mut bookmarks = Vec::new();
    for n in 3..=12 {
        let insert = format!("INSERT INTO t VALUES ({n}, randomblob(100))");
        let answer = json(&server, &["execute", "scratch", "--command", &insert]);
        bookmarks.push(answer["bookmark"].as_str().unwrap().to_string());
    }
    let restored = ok(sql(&server, &["restore", "scratch", "--to", &bookmarks[4]])
        .output()
        .unwrap());
    assert!(
        restored.contains(&format!("restored to {}", bookmarks[4])),
        "{restored}"
    );
    let rows = json(
        &server,
        &[
            "execute",
            "scratch",
            "--command",
            "SELECT n FROM t ORDER BY n",
        ],
    );
    assert_eq!(column(&rows), (1..=7).map(Value::from).collect::<Vec<_>>());
    // Undone: to the last write before the restore.
    ok(sql(&server, &["restore", "scratch", "--to", &bookmarks[9]])
        .output()
        .unwrap());
    let rows = json(
        &server,
        &["execute", "scratch", "--command", "SELECT count(*) FROM t"],
    );
    assert_eq!(column(&rows), [Value::from(12)]);
}

fn an_export_imported_is_the_same_database(server: &str) {
    let server = server.to_string();
    let dump = ok(sql(&server, &["export", "scratch"]).output().unwrap());
    assert!(
        dump.contains("CREATE TABLE t (n INTEGER PRIMARY KEY, v);"),
        "{dump}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &dump).unwrap();
    let imported = ok(
        sql(&server, &["import", "copy", file.path().to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(
        imported.contains("copy: 14 statements run, 12 rows changed"),
        "{imported}"
    );
    let again = ok(sql(&server, &["export", "copy"]).output().unwrap());
    assert_eq!(again, dump);
}

fn errors_carry_sqlite_s_words(server: &str) {
    let server = server.to_string();
    let bad = failure(
        sql(
            &server,
            &["execute", "scratch", "--command", "SELECT * FROM nowhere"],
        )
        .output()
        .unwrap(),
    );
    assert!(
        bad.contains("400 sql_error") && bad.contains("no such table: nowhere"),
        "{bad}"
    );
    let bad = failure(
        sql(&server, &["restore", "scratch", "--to", "yesterday"])
            .output()
            .unwrap(),
    );
    assert!(bad.contains("neither a bookmark"), "{bad}");
    let bad = failure(
        sql(
            &server,
            &["execute", "scratch", "--command", "ATTACH 'x' AS y"],
        )
        .output()
        .unwrap(),
    );
    assert!(bad.contains("sql_not_allowed"), "{bad}");
}

#[test]
fn migrations_are_applied_once_in_order_by_concurrent_applies() {
    let (_spike, dir, server) = start();
    let folder = dir.path().join("migrations");
    let folder_arg = folder.to_str().unwrap();
    for name in ["create tallies", "first tally", "second tally"] {
        ok(sql(
            &server,
            &["migrations", "create", "notes", name, "--dir", folder_arg],
        )
        .output()
        .unwrap());
    }
    let file = |n: &str| folder.join(n);
    std::fs::write(
        file("0001_create_tallies.sql"),
        "CREATE TABLE tallies (n INTEGER);\n",
    )
    .unwrap();
    std::fs::write(
        file("0002_first_tally.sql"),
        "INSERT INTO tallies VALUES (1);\n",
    )
    .unwrap();
    std::fs::write(
        file("0003_second_tally.sql"),
        "INSERT INTO tallies VALUES (2);\n",
    )
    .unwrap();

    let listed = ok(sql(
        &server,
        &["migrations", "list", "notes", "--dir", folder_arg],
    )
    .output()
    .unwrap());
    let second = listed
        .lines()
        .find(|l| l.starts_with("0002_first_tally.sql"));
    assert!(second.is_some_and(|l| l.ends_with(" no")), "{listed}");

    let applies: Vec<_> = (0..2)
        .map(|_| {
            sql(
                &server,
                &[
                    "--json",
                    "migrations",
                    "apply",
                    "notes",
                    "--dir",
                    folder_arg,
                ],
            )
            .spawn_and_output()
        })
        .collect();
    let mut applied = Vec::new();
    for answer in applies {
        let answer: Value = serde_json::from_str(&ok(answer.join().unwrap())).unwrap();
        applied.extend(answer["applied"].as_array().unwrap().iter().cloned());
    }
    applied.sort_by_key(|v| v.as_str().unwrap().to_string());
    assert_eq!(
        applied,
        [
            "0001_create_tallies.sql",
            "0002_first_tally.sql",
            "0003_second_tally.sql"
        ]
    );
    let tallies = json(
        &server,
        &[
            "execute",
            "notes",
            "--command",
            "SELECT n FROM tallies ORDER BY n",
        ],
    );
    assert_eq!(column(&tallies), [Value::from(1), Value::from(2)]);
    // A third apply has nothing to do.
    let again = ok(sql(
        &server,
        &["migrations", "apply", "notes", "--dir", folder_arg],
    )
    .output()
    .unwrap());
    assert!(
        again.contains("notes: 0 applied, 3 applied before"),
        "{again}"
    );

    a_broken_migration_keeps_nothing(&server, &folder);
    the_notes_example_s_migrations_apply(&server);
}

/// A migration that fails keeps nothing of itself, and says which.
fn a_broken_migration_keeps_nothing(server: &str, folder: &std::path::Path) {
    let server = server.to_string();
    let folder_arg = folder.to_str().unwrap();
    let file = |n: &str| folder.join(n);
    std::fs::write(
        file("0004_broken.sql"),
        "INSERT INTO tallies VALUES (3);\nINSERT INTO nowhere VALUES (1);\n",
    )
    .unwrap();
    let broken = failure(
        sql(
            &server,
            &["migrations", "apply", "notes", "--dir", folder_arg],
        )
        .output()
        .unwrap(),
    );
    assert!(
        broken.contains("migration 0004_broken.sql") && broken.contains("no such table: nowhere"),
        "{broken}"
    );
    let tallies = json(
        &server,
        &[
            "execute",
            "notes",
            "--command",
            "SELECT count(*) FROM tallies",
        ],
    );
    assert_eq!(column(&tallies), [Value::from(2)]);
}

/// The notes example's own, into the database its plugin uses.
fn the_notes_example_s_migrations_apply(server: &str) {
    let server = server.to_string();
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../components/notes/migrations"
    );
    let applied = ok(
        sql(&server, &["migrations", "apply", "notes", "--dir", shipped])
            .output()
            .unwrap(),
    );
    assert!(
        applied.contains("notes: 2 applied, 0 applied before"),
        "{applied}"
    );
    let index = "SELECT name FROM sqlite_schema WHERE name = 'notes_by_author'";
    let found = json(&server, &["execute", "notes", "--command", index]);
    assert_eq!(column(&found), [Value::from("notes_by_author")]);
}

/// Runs a command on a thread: several at once.
trait SpawnAndOutput {
    fn spawn_and_output(self) -> std::thread::JoinHandle<Output>;
}

impl SpawnAndOutput for Command {
    fn spawn_and_output(mut self) -> std::thread::JoinHandle<Output> {
        std::thread::spawn(move || self.output().unwrap())
    }
}
