//! What the machine can do for the SQL benchmark: `bench/sql.sh`'s point
//! read and single-row insert, the same statements on the same SQLite
//! (WAL, `synchronous = FULL`: durable at commit, as spike's), served by
//! axum with one connection run on tokio's blocking pool; no wasm, no
//! limits, no change log.
//!
//!     native-sql 127.0.0.1:8798 /tmp/native.sqlite

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use rusqlite::{Connection, OptionalExtension};

const ROWS: i64 = 1000;
const TEXT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

type Db = Arc<Mutex<Connection>>;

async fn read(State(db): State<Db>, Path(id): Path<i64>) -> impl IntoResponse {
    let row = tokio::task::spawn_blocking(move || {
        let conn = db.lock().unwrap();
        let mut statement = conn
            .prepare_cached("SELECT id, text FROM items WHERE id = ?")
            .unwrap();
        statement
            .query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .optional()
            .unwrap()
    })
    .await
    .unwrap();
    match row {
        Some((id, text)) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json")],
            format!("{{\"id\":{id},\"text\":\"{text}\"}}"),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "application/json")],
            "{}".into(),
        ),
    }
}

async fn insert(State(db): State<Db>) -> impl IntoResponse {
    let id = tokio::task::spawn_blocking(move || {
        let conn = db.lock().unwrap();
        let mut statement = conn
            .prepare_cached("INSERT INTO items (text) VALUES (?)")
            .unwrap();
        statement.execute([TEXT]).unwrap();
        conn.last_insert_rowid()
    })
    .await
    .unwrap();
    (
        StatusCode::CREATED,
        [(CONTENT_TYPE, "application/json")],
        id.to_string(),
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8798".into());
    let path = args.next().unwrap_or_else(|| "native.sqlite".into());
    let conn = Connection::open(&path).expect("opening the database");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",
    )
    .unwrap();
    for n in 1..=ROWS {
        conn.execute(
            "INSERT OR REPLACE INTO items (id, text) VALUES (?, ?)",
            (n, TEXT),
        )
        .unwrap();
    }
    let db: Db = Arc::new(Mutex::new(conn));
    let app = Router::new()
        .route("/store/sql/{id}", get(read))
        .route("/store/sql", post(insert))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    axum::serve(listener, app).await.expect("serving");
}
