//! `notes`: the SQL example, a small REST API over one SQLite table.
//!
//! | request                | what it does                                  |
//! |------------------------|-----------------------------------------------|
//! | `GET /notes`           | notes, newest first: `?limit=` (100 at most), |
//! |                        | `?before={id}` for the page after             |
//! | `POST /notes`          | adds `{"text": "..."}`: 201 with the note     |
//! | `GET /notes/{id}`      | one note, or 404                              |
//! | `PUT /notes/{id}`      | replaces its text                             |
//! | `DELETE /notes/{id}`   | removes it: 204                               |
//! | `POST /notes/import`   | adds a JSON list of texts in one transaction  |
//!
//! Anyone reads; writes need a signed-in caller (401 otherwise), whose
//! subject is kept as the note's author (`WRITE_ACCESS = "anyone"` in the
//! manifest's `[env]` lets anyone write, as `hello`'s does).
//!
//! Its manifest (`plugins/notes.toml`) grants the database `notes`; the
//! schema is made on first use (`SCHEMA`, which is idempotent).

use serde::{Deserialize, Serialize};
use spike_sdk::access;
use spike_sdk::exports::wasi::http::incoming_handler::Guest;
use spike_sdk::http::{Request, Response};
use spike_sdk::json::Json;
use spike_sdk::router::{HttpError, Params, Router};
use spike_sdk::sql::Database;
use spike_sdk::wasi::http::types::{IncomingRequest, ResponseOutparam};

const DATABASE: &str = "notes";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL CHECK (length(text) BETWEEN 1 AND 10000),
    author TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
)";

/// The longest body: a note, or an import of many.
const MAX_BODY: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Note {
    id: i64,
    text: String,
    author: Option<String>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Deserialize)]
struct NewText {
    text: String,
}

struct Notes;

impl Guest for Notes {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        Router::new()
            .get("/notes", |req, _| list(req))
            .post("/notes", |req, _| add(req, writer()?))
            .post("/notes/import", |req, _| import(req, writer()?))
            .get("/notes/:id", |_, p| get(id(p)?))
            .put("/notes/:id", |req, p| replace(req, id(p)?, writer()?))
            .delete("/notes/:id", |_, p| remove(id(p)?, writer()?))
            .serve(request, out);
    }
}

spike_sdk::export!(Notes);

/// The database, with its table.
fn db() -> Result<Database, HttpError> {
    let db = Database::open(DATABASE)?;
    db.exec(SCHEMA)?;
    Ok(db)
}

/// Who writes: the signed-in caller's subject, or `None` where the
/// manifest lets anyone write; else 401.
fn writer() -> Result<Option<String>, HttpError> {
    if std::env::var("WRITE_ACCESS").is_ok_and(|v| v == "anyone") {
        return Ok(access::signed_in().ok().map(|c| c.subject));
    }
    access::signed_in().map(|c| Some(c.subject))
}

fn id(p: &Params) -> Result<i64, HttpError> {
    let id = p.get("id").unwrap_or_default();
    id.parse()
        .map_err(|_| HttpError::bad_request(format!("'{id}' is not a note's id")))
}

fn now() -> i64 {
    spike_sdk::now_ms() as i64
}

fn list(req: &Request) -> Result<Json<Vec<Note>>, HttpError> {
    let limit = match req.query_param("limit") {
        None => 100,
        Some(n) => match n.parse::<u32>() {
            Ok(n @ 1..=100) => n,
            _ => return Err(HttpError::bad_request("limit is 1 to 100")),
        },
    };
    // A page by the key: the next one starts before its last id.
    let before = match req.query_param("before") {
        None => i64::MAX,
        Some(id) => id
            .parse()
            .map_err(|_| HttpError::bad_request(format!("before={id} is not a note's id")))?,
    };
    let notes = db()?
        .prepare(
            "SELECT id, text, author, created_at, updated_at FROM notes \
             WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before)
        .bind(limit)
        .all()?;
    Ok(Json(notes))
}

fn get(id: i64) -> Result<Json<Note>, HttpError> {
    let note = db()?
        .prepare("SELECT id, text, author, created_at, updated_at FROM notes WHERE id = ?")
        .bind(id)
        .first()?;
    note.map(Json)
        .ok_or_else(|| HttpError::not_found(format!("no note {id}")))
}

fn add(req: &Request, author: Option<String>) -> Result<Response, HttpError> {
    let new: NewText = req.json(MAX_BODY)?;
    let at = now();
    let db = db()?;
    let note: Option<Note> = db
        .prepare("INSERT INTO notes (text, author, created_at, updated_at) VALUES (?, ?, ?, ?) RETURNING id, text, author, created_at, updated_at")
        .bind(new.text)
        .bind(author)
        .bind(at)
        .bind(at)
        .first()?;
    let note = note.ok_or_else(|| HttpError::new(500, "internal", "the insert returned no row"))?;
    Ok(Response::json_of(201, &note))
}

fn replace(req: &Request, id: i64, author: Option<String>) -> Result<Json<Note>, HttpError> {
    let new: NewText = req.json(MAX_BODY)?;
    let note = db()?
        .prepare("UPDATE notes SET text = ?, author = ?, updated_at = ? WHERE id = ? RETURNING id, text, author, created_at, updated_at")
        .bind(new.text)
        .bind(author)
        .bind(now())
        .bind(id)
        .first()?;
    note.map(Json)
        .ok_or_else(|| HttpError::not_found(format!("no note {id}")))
}

fn remove(id: i64, _author: Option<String>) -> Result<Response, HttpError> {
    let done = db()?
        .prepare("DELETE FROM notes WHERE id = ?")
        .bind(id)
        .run()?;
    match done.changes {
        0 => Err(HttpError::not_found(format!("no note {id}"))),
        _ => Ok(Response::new(204)),
    }
}

/// Many notes in one transaction: all of them, or none (one that breaks
/// the table's check fails the import, naming its place).
fn import(req: &Request, author: Option<String>) -> Result<Response, HttpError> {
    let texts: Vec<String> = req.json(MAX_BODY)?;
    if texts.is_empty() || texts.len() > 1000 {
        return Err(HttpError::bad_request("import 1 to 1000 notes"));
    }
    let at = now();
    let db = db()?;
    let inserts: Vec<_> = (texts.into_iter())
        .map(|text| {
            db.prepare(
                "INSERT INTO notes (text, author, created_at, updated_at) VALUES (?, ?, ?, ?)",
            )
            .bind(text)
            .bind(author.clone())
            .bind(at)
            .bind(at)
        })
        .collect();
    let done = db.batch(&inserts)?;
    Ok(Response::json(
        201,
        format!("{{\"imported\":{}}}\n", done.len()),
    ))
}
