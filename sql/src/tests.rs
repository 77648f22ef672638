//! SQL semantics, limits and refusals, on real SQLite files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// Logs and snapshots in a real redb store beside the files.
fn storage(dir: &std::path::Path) -> SqlStorage {
    let settings = spike_storage::StorageSettings {
        kv_sweep_interval: Duration::from_secs(60),
    };
    let backends = spike_storage::Backends::open_redb(dir, &settings).unwrap();
    SqlStorage {
        log: backends.rooms,
        blobs: backends.blob,
        cluster: None,
        retention: Duration::from_secs(7 * 86_400),
        snapshot_every: SNAPSHOT_EVERY,
    }
}

fn databases(limits: SqlLimits) -> (tempfile::TempDir, Arc<Databases>) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Databases::new(dir.path().join("sql"), limits, storage(dir.path())).unwrap();
    (dir, dbs)
}

fn statement(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.into(),
        params,
    }
}

async fn query(dbs: &Databases, sql: &str, params: Vec<Value>) -> Result<Results, SqlError> {
    match dbs
        .run("t", Work::Query(statement(sql, params)))
        .await
        .result?
    {
        Done::Query(results) => Ok(results),
        other => panic!("{other:?}"),
    }
}

async fn exec(dbs: &Databases, script: &str) -> Result<u32, SqlError> {
    match dbs.run("t", Work::Exec(script.into())).await.result? {
        Done::Exec(n) => Ok(n),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn values_round_trip_exactly() {
    let (_dir, dbs) = databases(SqlLimits::default());
    exec(
        &dbs,
        "CREATE TABLE v (i INTEGER, r REAL, t TEXT, b BLOB, n)",
    )
    .await
    .unwrap();
    let blob: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let row = vec![
        Value::Integer(i64::MIN),
        Value::Real(-0.1),
        Value::Text("zß水🦀\0end".into()),
        Value::Blob(blob.clone()),
        Value::Null,
    ];
    let insert = "INSERT INTO v VALUES (?, ?, ?, ?, ?)";
    let done = query(&dbs, insert, row.clone()).await.unwrap();
    assert_eq!((done.changes, done.last_insert_id), (1, 1));
    let read = query(&dbs, "SELECT i, r, t, b, n FROM v", vec![])
        .await
        .unwrap();
    assert_eq!(read.columns, ["i", "r", "t", "b", "n"]);
    assert_eq!(read.rows, vec![row]);
}

#[tokio::test]
async fn a_failed_batch_keeps_nothing_and_says_which_statement() {
    let (_dir, dbs) = databases(SqlLimits::default());
    exec(&dbs, "CREATE TABLE u (k TEXT PRIMARY KEY)")
        .await
        .unwrap();
    let insert = |k: &str| statement("INSERT INTO u VALUES (?)", vec![Value::Text(k.into())]);
    let batch = Work::Batch(vec![insert("a"), insert("b"), insert("a")]);
    let e = dbs.run("t", batch).await.result.unwrap_err();
    assert!(
        matches!(&e, SqlError::Statement(m) if m.starts_with("statement 3: UNIQUE constraint failed")),
        "{e:?}"
    );
    let count = query(&dbs, "SELECT count(*) FROM u", vec![]).await.unwrap();
    assert_eq!(count.rows, vec![vec![Value::Integer(0)]]);
    let batch = Work::Batch(vec![insert("a"), insert("b")]);
    let Done::Batch(all) = dbs.run("t", batch).await.result.unwrap() else {
        panic!()
    };
    assert_eq!(all.len(), 2);
    let count = query(&dbs, "SELECT count(*) FROM u", vec![]).await.unwrap();
    assert_eq!(count.rows, vec![vec![Value::Integer(2)]]);
}

#[tokio::test]
async fn errors_carry_sqlite_s_message() {
    let (_dir, dbs) = databases(SqlLimits::default());
    let e = query(&dbs, "SELEC 1", vec![]).await.unwrap_err();
    assert!(
        matches!(&e, SqlError::Statement(m) if m.contains("syntax error")),
        "{e:?}"
    );
    let e = query(&dbs, "SELECT * FROM missing", vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SqlError::Statement(m) if m.contains("no such table")),
        "{e:?}"
    );
    let e = query(&dbs, "SELECT ?", vec![]).await.unwrap_err();
    assert!(
        matches!(&e, SqlError::Statement(m) if m.contains("1 parameters, 0")),
        "{e:?}"
    );
    // The database still answers.
    let one = query(&dbs, "SELECT 1", vec![]).await.unwrap();
    assert_eq!(one.rows, vec![vec![Value::Integer(1)]]);
}

#[tokio::test]
async fn statements_that_reach_outside_are_refused_with_the_reason() {
    let (dir, dbs) = databases(SqlLimits::default());
    let outside = dir.path().join("stolen.db");
    let outside = outside.display();
    for (sql, needle) in [
        (format!("ATTACH '{outside}' AS x"), "ATTACH"),
        (
            "PRAGMA journal_mode = DELETE".to_string(),
            "PRAGMA journal_mode",
        ),
        ("PRAGMA synchronous = OFF".to_string(), "PRAGMA synchronous"),
        (
            "PRAGMA writable_schema = ON".to_string(),
            "PRAGMA writable_schema",
        ),
        ("SELECT load_extension('x')".to_string(), "load_extension"),
        (format!("VACUUM INTO '{outside}'"), "ATTACH"),
        ("BEGIN".to_string(), "transactions"),
        ("SAVEPOINT a".to_string(), "transactions"),
    ] {
        let e = query(&dbs, &sql, vec![]).await.unwrap_err();
        assert!(
            matches!(&e, SqlError::NotAllowed(m) if m.contains(needle)),
            "{sql}: {e:?}"
        );
    }
    assert!(!dir.path().join("stolen.db").exists());
    // Reading the schema is allowed.
    exec(&dbs, "CREATE TABLE a (x)").await.unwrap();
    let info = query(&dbs, "PRAGMA table_info(a)", vec![]).await.unwrap();
    assert_eq!(info.rows.len(), 1);
}

#[tokio::test]
async fn malicious_queries_fail_alone_and_quickly() {
    let limits = SqlLimits {
        statement_time: Duration::from_millis(300),
        ..SqlLimits::default()
    };
    let (_dir, dbs) = databases(limits);
    exec(&dbs, "CREATE TABLE big (x); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000) INSERT INTO big SELECT n FROM c").await.unwrap();
    for sql in [
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c",
        "SELECT count(*) FROM big a, big b, big c",
    ] {
        let started = Instant::now();
        let e = query(&dbs, sql, vec![]).await.unwrap_err();
        assert!(
            matches!(&e, SqlError::Limit(m) if m.contains("time limit of 300 ms")),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    let e = query(&dbs, "SELECT randomblob(2000000000)", vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SqlError::Limit(m) if m.contains("string or blob")),
        "{e:?}"
    );
    let e = query(&dbs, "SELECT zeroblob(2000000000)", vec![])
        .await
        .unwrap_err();
    assert!(matches!(&e, SqlError::Limit(_)), "{e:?}");
    let count = query(&dbs, "SELECT count(*) FROM big", vec![])
        .await
        .unwrap();
    assert_eq!(count.rows, vec![vec![Value::Integer(3000)]]);
}

#[tokio::test]
async fn results_statements_and_databases_are_bounded() {
    let limits = SqlLimits {
        max_rows: 100,
        max_result_bytes: 1 << 20,
        max_statement_bytes: 1000,
        max_params: 3,
        max_database_bytes: 1 << 20,
        ..SqlLimits::default()
    };
    let (_dir, dbs) = databases(limits);
    exec(&dbs, "CREATE TABLE r (x)").await.unwrap();
    exec(&dbs, "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 101) INSERT INTO r SELECT n FROM c").await.unwrap();
    let e = query(&dbs, "SELECT x FROM r", vec![]).await.unwrap_err();
    assert!(
        matches!(&e, SqlError::Limit(m) if m.contains("more than 100 rows")),
        "{e:?}"
    );
    let e = query(
        &dbs,
        "SELECT zeroblob(600000) UNION ALL SELECT zeroblob(600001)",
        vec![],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, SqlError::Limit(m) if m.contains("a result past 1 MiB")),
        "{e:?}"
    );
    let long = format!("SELECT '{}'", "x".repeat(1000));
    let e = query(&dbs, &long, vec![]).await.unwrap_err();
    assert!(
        matches!(&e, SqlError::Limit(m) if m.contains("at most 1000")),
        "{e:?}"
    );
    let e = query(&dbs, "SELECT ?, ?, ?, ?", vec![Value::Null; 4])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SqlError::Limit(m) if m.contains("at most 3")),
        "{e:?}"
    );
    let e = exec(&dbs, "CREATE TABLE f (b); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100) INSERT INTO f SELECT zeroblob(100000) FROM c").await.unwrap_err();
    assert!(
        matches!(&e, SqlError::Limit(m) if m.contains("size limit of 1 MiB")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_write_is_on_disk_when_it_returns_and_databases_are_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sql");
    let storage = storage(dir.path());
    {
        let dbs = Databases::new(path.clone(), SqlLimits::default(), storage.clone()).unwrap();
        exec(&dbs, "CREATE TABLE d (x); INSERT INTO d VALUES (42)")
            .await
            .unwrap();
        let other = dbs
            .run("other", Work::Query(statement("SELECT * FROM d", vec![])))
            .await;
        assert!(matches!(other.result, Err(SqlError::Statement(m)) if m.contains("no such table")));
        // Not closed: the file is read by another connection as a crash
        // would leave it.
        let conn = rusqlite::Connection::open(path.join("t.sqlite")).unwrap();
        let x: i64 = conn.query_row("SELECT x FROM d", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);
        dbs.stop(Duration::from_secs(5)).await;
    }
    let dbs = Databases::new(path, SqlLimits::default(), storage).unwrap();
    let read = query(&dbs, "SELECT x FROM d", vec![]).await.unwrap();
    assert_eq!(read.rows, vec![vec![Value::Integer(42)]]);
    let answer = dbs.run("../t", Work::Exec("SELECT 1".into())).await;
    assert!(matches!(answer.result, Err(SqlError::Internal(m)) if m.contains("cannot name")));
}

async fn numbers(dbs: &Databases) -> Vec<i64> {
    let read = query(dbs, "SELECT n FROM r ORDER BY n", vec![])
        .await
        .unwrap();
    let number = |row: &Vec<Value>| match row[0] {
        Value::Integer(n) => n,
        ref other => panic!("{other:?}"),
    };
    read.rows.iter().map(number).collect()
}

async fn restore(dbs: &Databases, to: RestoreTo) -> Answer {
    dbs.run("t", Work::Restore(to)).await
}

#[tokio::test]
async fn a_restore_to_a_bookmark_keeps_exactly_the_rows_before_it_and_can_be_undone() {
    let (_dir, dbs) = databases(SqlLimits::default());
    exec(&dbs, "CREATE TABLE r (n INTEGER PRIMARY KEY, v BLOB)")
        .await
        .unwrap();
    // Times are in milliseconds: one apart from the entries on each side.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before_rows = spike_storage::util::now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut bookmarks = Vec::new();
    for n in 1..=20 {
        let insert = statement(
            "INSERT INTO r VALUES (?, randomblob(3000))",
            vec![Value::Integer(n)],
        );
        let answer = dbs.run("t", Work::Query(insert)).await;
        answer.result.unwrap();
        bookmarks.push(answer.bookmark);
    }
    assert!(bookmarks.windows(2).all(|w| w[0] < w[1]), "{bookmarks:?}");
    // A read's bookmark is where the database stood.
    let read = dbs
        .run("t", Work::Query(statement("SELECT 1", vec![])))
        .await;
    assert_eq!(read.bookmark, bookmarks[19]);

    let restored = restore(&dbs, RestoreTo::Entry(bookmarks[9])).await;
    assert_eq!(
        restored.result.unwrap(),
        Done::Restored { from: bookmarks[9] }
    );
    assert!(
        restored.bookmark > bookmarks[19],
        "a restore is a new entry"
    );
    assert_eq!(numbers(&dbs).await, (1..=10).collect::<Vec<_>>());
    let write = statement("INSERT INTO r VALUES (100, NULL)", vec![]);
    let after_restore = dbs.run("t", Work::Query(write)).await.bookmark;

    // Undone: back to before the restore.
    restore(&dbs, RestoreTo::Entry(bookmarks[19]))
        .await
        .result
        .unwrap();
    assert_eq!(numbers(&dbs).await, (1..=20).collect::<Vec<_>>());
    // And forward again, through the restore's own entry.
    restore(&dbs, RestoreTo::Entry(after_restore))
        .await
        .result
        .unwrap();
    let mut expected: Vec<i64> = (1..=10).collect();
    expected.push(100);
    assert_eq!(numbers(&dbs).await, expected);

    // By time: before the first row, the table was there and empty.
    restore(&dbs, RestoreTo::Time(before_rows))
        .await
        .result
        .unwrap();
    assert_eq!(numbers(&dbs).await, Vec::<i64>::new());
    let past = restore(&dbs, RestoreTo::Entry(1_000_000)).await;
    assert!(matches!(past.result, Err(SqlError::Statement(m)) if m.contains("past")));
}

#[tokio::test]
async fn a_database_from_before_its_log_is_where_its_log_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sql");
    std::fs::create_dir_all(&path).unwrap();
    let conn = rusqlite::Connection::open(path.join("t.sqlite")).unwrap();
    conn.execute_batch("CREATE TABLE r (n INTEGER PRIMARY KEY); INSERT INTO r VALUES (1), (2)")
        .unwrap();
    drop(conn);
    let dbs = Databases::new(path, SqlLimits::default(), storage(dir.path())).unwrap();
    assert_eq!(numbers(&dbs).await, [1, 2]);
    exec(&dbs, "INSERT INTO r VALUES (3)").await.unwrap();
    restore(&dbs, RestoreTo::Entry(1)).await.result.unwrap();
    assert_eq!(numbers(&dbs).await, [1, 2]);
}

#[tokio::test]
async fn an_export_run_as_a_script_makes_the_same_database() {
    let (_dir, dbs) = databases(SqlLimits::default());
    let schema = "CREATE TABLE parent (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent(id), v, twice GENERATED ALWAYS AS (v * 2));
        CREATE INDEX child_parent ON child(parent);
        CREATE VIEW named AS SELECT name FROM parent;";
    exec(&dbs, schema).await.unwrap();
    let rows = [
        Value::Text("it's \"quoted\"".into()),
        Value::Text("nul\0inside".into()),
    ];
    for name in rows {
        query(&dbs, "INSERT INTO parent (name) VALUES (?)", vec![name])
            .await
            .unwrap();
    }
    let values = [
        Value::Real(0.1),
        Value::Real(1.0),
        Value::Real(-1e300),
        Value::Integer(i64::MIN),
        Value::Blob(vec![0, 255, 7]),
        Value::Null,
    ];
    for v in values {
        query(&dbs, "INSERT INTO child (parent, v) VALUES (2, ?)", vec![v])
            .await
            .unwrap();
    }
    let dump = match dbs.run("t", Work::Export).await.result.unwrap() {
        Done::Export(text) => text,
        other => panic!("{other:?}"),
    };
    let made = dbs.run("copy", Work::Script(dump.clone())).await;
    assert!(made.result.is_ok(), "{:?}\n{dump}", made.result);
    for table in ["parent", "child", "sqlite_sequence", "named"] {
        let select = Work::Query(statement(&format!("SELECT * FROM {table}"), vec![]));
        let rows = |done| match done {
            Done::Query(results) => (results.columns, results.rows),
            other => panic!("{other:?}"),
        };
        let original = rows(dbs.run("t", select.clone()).await.result.unwrap());
        let copy = rows(dbs.run("copy", select).await.result.unwrap());
        assert_eq!(original, copy, "{table}");
    }
    // A script that fails keeps none of its statements.
    let failing = "INSERT INTO parent (name) VALUES ('new'); INSERT INTO nowhere VALUES (1)";
    let failed = dbs.run("copy", Work::Script(failing.into())).await;
    assert!(matches!(failed.result, Err(SqlError::Statement(m)) if m.starts_with("statement 2")));
    let count = Work::Query(statement("SELECT count(*) FROM parent", vec![]));
    match dbs.run("copy", count).await.result.unwrap() {
        Done::Query(counted) => assert_eq!(counted.rows, [[Value::Integer(2)]]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn snapshots_bound_the_log_to_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot every 5 entries, and nothing kept to restore to before
    // the latest: each snapshot drops what came before it.
    let storage = SqlStorage {
        retention: Duration::ZERO,
        snapshot_every: 5,
        ..storage(dir.path())
    };
    let dbs = Databases::new(
        dir.path().join("sql"),
        SqlLimits::default(),
        storage.clone(),
    )
    .unwrap();
    exec(&dbs, "CREATE TABLE r (n INTEGER PRIMARY KEY, v BLOB)")
        .await
        .unwrap();
    let mut bookmarks = Vec::new();
    for n in 1..=23 {
        let insert = statement(
            "INSERT INTO r VALUES (?, zeroblob(5000))",
            vec![Value::Integer(n)],
        );
        let answer = dbs.run("t", Work::Query(insert)).await;
        answer.result.unwrap();
        bookmarks.push(answer.bookmark);
    }
    let log = log::ChangeLog::new(storage.clone(), "t".into());
    let head = log.head().await.unwrap();
    let snapshot = head.snapshot.clone().expect("snapshots were taken");
    assert_eq!(snapshot.seq, 20, "every 5 entries: {head:?}");
    assert_eq!(head.compacted_through, 20, "{head:?}");
    // One snapshot blob left, and the log's entries after it.
    assert_eq!(log.snapshots().await.unwrap().len(), 1);
    assert_eq!(log.entries(0, 100).await.unwrap().len(), 4, "21 to 24");
    let gone = restore(&dbs, RestoreTo::Entry(bookmarks[10])).await;
    assert!(
        matches!(&gone.result, Err(SqlError::Statement(m)) if m.contains("no longer reaches back")),
        "{:?}",
        gone.result
    );
    // From the snapshot and the entries after it.
    restore(&dbs, RestoreTo::Entry(bookmarks[20]))
        .await
        .result
        .unwrap();
    assert_eq!(numbers(&dbs).await, (1..=21).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_lost_file_is_rebuilt_from_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sql");
    let storage = storage(dir.path());
    {
        let dbs = Databases::new(path.clone(), SqlLimits::default(), storage.clone()).unwrap();
        exec(
            &dbs,
            "CREATE TABLE r (n INTEGER PRIMARY KEY); INSERT INTO r VALUES (1), (2)",
        )
        .await
        .unwrap();
        dbs.stop(Duration::from_secs(5)).await;
    }
    log::remove_database(&path.join("t.sqlite")).unwrap();
    let dbs = Databases::new(path, SqlLimits::default(), storage).unwrap();
    assert_eq!(numbers(&dbs).await, [1, 2]);
    exec(&dbs, "INSERT INTO r VALUES (3)").await.unwrap();
    assert_eq!(numbers(&dbs).await, [1, 2, 3]);
}

#[tokio::test]
async fn work_committed_together_keeps_each_piece_s_own_outcome() {
    let limits = SqlLimits {
        statement_time: Duration::from_millis(200),
        ..SqlLimits::default()
    };
    let (_dir, dbs) = databases(limits);
    exec(&dbs, "CREATE TABLE r (n INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    // Rounds of work arriving at once (one group each), among them a
    // write interrupted at its time limit (SQLite rolls the whole
    // transaction back), a batch that fails, and a script that fails at
    // its second statement.
    for round in 0..3i64 {
        let mut all = Vec::new();
        for k in 0..40i64 {
            let n = round * 100 + k;
            let work = match k {
                7 => Work::Query(statement(
                    "INSERT INTO r (v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
                    vec![],
                )),
                13 => Work::Batch(vec![
                    statement("INSERT INTO r VALUES (?, 'batch')", vec![Value::Integer(n)]),
                    statement("INSERT INTO nowhere VALUES (1)", vec![]),
                ]),
                21 => Work::Exec(format!(
                    "INSERT INTO r VALUES ({n}, 'exec'); INSERT INTO nowhere VALUES (1)"
                )),
                _ => Work::Query(statement(
                    "INSERT INTO r VALUES (?, 'one')",
                    vec![Value::Integer(n)],
                )),
            };
            let dbs = dbs.clone();
            all.push(tokio::spawn(async move { (k, dbs.run("t", work).await) }));
        }
        for task in all {
            let (k, answer) = task.await.unwrap();
            match k {
                7 => assert!(
                    matches!(&answer.result, Err(SqlError::Limit(m)) if m.contains("time limit")),
                    "{:?}",
                    answer.result
                ),
                13 | 21 => assert!(answer.result.is_err(), "{k}: {:?}", answer.result),
                _ => assert!(answer.result.is_ok(), "{k}: {:?}", answer.result),
            }
        }
    }
    let kept = numbers(&dbs).await;
    let mut expected: Vec<i64> = (0..3)
        .flat_map(|round| {
            (0..40)
                .filter(|k| ![7, 13].contains(k))
                .map(move |k| round * 100 + k)
        })
        .collect();
    expected.sort();
    // The script's first statement stays (each of its statements is its
    // own, as D1's exec); the batch and the interrupted write leave nothing.
    assert_eq!(kept, expected);
}

#[tokio::test]
async fn a_forwarded_call_past_a_message_goes_through_the_blob_store() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = storage(dir.path()).blobs;
    for size in [10, 3 << 20] {
        let bytes: bytes::Bytes = (0..size)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let message = forward::wrap(&*blobs, bytes.clone()).await.unwrap();
        assert!(message.len() <= 512 * 1024 + 1, "{}", message.len());
        assert_eq!(forward::unwrap(&*blobs, message).await.unwrap(), bytes);
    }
    // Read once, the parcel is gone.
    let left = blobs.list(log::BUCKET, "#calls/", None, 10).await.unwrap();
    assert!(left.items.is_empty());
}

#[tokio::test]
async fn a_transaction_of_many_mebibytes_is_logged_and_rebuilt() {
    let (_dir, dbs) = databases(SqlLimits::default());
    exec(&dbs, "CREATE TABLE r (n INTEGER PRIMARY KEY, v BLOB)")
        .await
        .unwrap();
    // 40 MiB of pages that do not deflate: the entry's pages go to a blob,
    // streamed through a file, never whole in memory.
    let big = "INSERT INTO r SELECT value, randomblob(1 << 20) FROM (WITH RECURSIVE c(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM c WHERE value < 40) SELECT value FROM c)";
    let wrote = dbs.run("t", Work::Query(statement(big, vec![]))).await;
    wrote.result.unwrap();
    exec(&dbs, "INSERT INTO r VALUES (41, x'00')")
        .await
        .unwrap();
    let sum = "SELECT count(*), sum(length(v)), hex(substr(max(v), 1, 8)) FROM r";
    let before = query(&dbs, sum, vec![]).await.unwrap();
    // Rebuilt from the log: the same rows and bytes.
    restore(&dbs, RestoreTo::Entry(wrote.bookmark + 1))
        .await
        .result
        .unwrap();
    assert_eq!(query(&dbs, sum, vec![]).await.unwrap().rows, before.rows);
    assert_eq!(numbers(&dbs).await.len(), 41);
}

#[tokio::test]
async fn a_restore_logged_but_not_swapped_in_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sql");
    let storage = storage(dir.path());
    let file = path.join("t.sqlite");
    let before = dir.path().join("before.sqlite");
    {
        let dbs = Databases::new(path.clone(), SqlLimits::default(), storage.clone()).unwrap();
        exec(
            &dbs,
            "CREATE TABLE r (n INTEGER PRIMARY KEY); INSERT INTO r VALUES (1)",
        )
        .await
        .unwrap();
        let one = dbs
            .run("t", Work::Query(statement("SELECT 1", vec![])))
            .await
            .bookmark;
        exec(&dbs, "INSERT INTO r VALUES (2)").await.unwrap();
        dbs.stop(Duration::from_secs(5)).await;
        // The file as a crash between the restore's entry and its swap
        // would leave it: the state before the restore.
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        drop(conn);
        std::fs::copy(&file, &before).unwrap();
        let dbs = Databases::new(path.clone(), SqlLimits::default(), storage.clone()).unwrap();
        restore(&dbs, RestoreTo::Entry(one)).await.result.unwrap();
        dbs.stop(Duration::from_secs(5)).await;
    }
    log::remove_database(&file).unwrap();
    std::fs::copy(&before, &file).unwrap();
    let dbs = Databases::new(path, SqlLimits::default(), storage).unwrap();
    assert_eq!(numbers(&dbs).await, [1]);
}
