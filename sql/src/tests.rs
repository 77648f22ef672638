//! SQL semantics, limits and refusals, on real SQLite files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

fn databases(limits: SqlLimits) -> (tempfile::TempDir, Arc<Databases>) {
    let dir = tempfile::tempdir().unwrap();
    let dbs = Databases::new(dir.path().join("sql"), limits).unwrap();
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
    {
        let dbs = Databases::new(path.clone(), SqlLimits::default()).unwrap();
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
    let dbs = Databases::new(path, SqlLimits::default()).unwrap();
    let read = query(&dbs, "SELECT x FROM d", vec![]).await.unwrap();
    assert_eq!(read.rows, vec![vec![Value::Integer(42)]]);
    let answer = dbs.run("../t", Work::Exec("SELECT 1".into())).await;
    assert!(matches!(answer.result, Err(SqlError::Internal(m)) if m.contains("cannot name")));
}
