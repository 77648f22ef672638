//! The operator's SQL API under `/_spike/sql` (what `spike sql` calls),
//! behind the admin token as the rest of `/_spike/`:
//!
//! - `GET /_spike/sql`: every database a manifest grants or this node
//!   holds a file of, the plugins granted each, where its log stands.
//! - `POST /_spike/sql/{db}/execute` (`{"sql": "…"}`): the statements in
//!   order as one transaction, the results of each.
//! - `GET /_spike/sql/{db}/export`: the database as SQL text.
//! - `POST /_spike/sql/{db}/import` (SQL text): run as one transaction.
//! - `POST /_spike/sql/{db}/restore` (`{"to": "<bookmark or time>"}`).
//! - `GET|POST /_spike/sql/{db}/migrations`: those applied (wrangler's
//!   `d1_migrations` table); apply `{"migrations": [{"name", "sql"}]}`,
//!   each once, in order, each in one transaction with its record.
//!
//! Every call goes through the database's owner, on whichever node owns
//! it, as a plugin's does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use spike_sql::{Databases, Done, RestoreTo, SqlError, Work};

use super::AppState;
use super::errors::ApiError;
use super::gate::PeerAddr;
use super::json::JsonLine;

type Peer = Option<Extension<PeerAddr>>;

/// The largest SQL text an import takes (a database's dump is about its
/// size; the default database limit is 1 GiB).
const MAX_IMPORT: usize = 256 << 20;
/// The largest JSON body of the other calls (statements, migrations).
const MAX_JSON: usize = 16 << 20;

/// Where wrangler records applied migrations; the same table, so a
/// database moved from D1 keeps its record.
const MIGRATIONS_TABLE: &str = "d1_migrations";

fn databases(state: &AppState) -> Result<&Arc<Databases>, ApiError> {
    state.admin.sql.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sql_unavailable",
            "this server has no SQL databases",
        )
    })
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn check_name(db: &str) -> Result<(), ApiError> {
    match spike_sql::valid_name(db) {
        true => Ok(()),
        false => Err(bad_request(format!(
            "'{db}' cannot name a database: 1 to 64 letters, digits, '-', '_' or '.'"
        ))),
    }
}

/// A failed call as the operator is told: SQLite's refusal and the
/// limits are the request's fault (400), the rest the server's (503).
fn sql_error(e: SqlError) -> ApiError {
    let code = match &e {
        SqlError::Statement(_) => "sql_error",
        SqlError::Limit(_) => "sql_limit",
        SqlError::NotAllowed(_) => "sql_not_allowed",
        SqlError::Internal(_) => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sql_unavailable",
                e.to_string(),
            );
        }
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
}

async fn run(state: &AppState, db: &str, work: Work) -> Result<(Done, u64), ApiError> {
    check_name(db)?;
    let answer = databases(state)?.run(db, work).await;
    let done = answer.result.map_err(sql_error)?;
    Ok((done, answer.bookmark))
}

/// An operator's script on `db`: each statement's results, and where the
/// database stood after it.
async fn script(
    state: &AppState,
    db: &str,
    sql: String,
) -> Result<(Vec<spike_sql::Results>, u64), ApiError> {
    match run(state, db, Work::Script(sql)).await? {
        (Done::Script(all), bookmark) => Ok((all, bookmark)),
        _ => unreachable!("a script answers with its statements' results"),
    }
}

fn authorize(state: &AppState, headers: &HeaderMap, peer: Peer) -> Result<(), ApiError> {
    let client =
        super::gate::client_ip(peer.map(|Extension(p)| p), headers, &state.client_addresses);
    state.operator.check(headers, client)
}

/// The request's body, up to `max` bytes (read once the caller is let in).
async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over {} MiB", max >> 20),
        )
    })
}

async fn json_body<T: for<'a> Deserialize<'a>>(body: Body, shape: &str) -> Result<T, ApiError> {
    let body = read_body(body, MAX_JSON).await?;
    serde_json::from_slice(&body).map_err(|e| bad_request(format!("the body must be {shape}: {e}")))
}

/// `GET /_spike/sql`
pub async fn list(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer)?;
    let databases = databases(&state)?;
    let mut granted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in databases.on_disk() {
        granted.entry(name).or_default();
    }
    for slot in state.registry.slots() {
        for db in slot.manifest.grants.names(crate::caps::Kind::Sql) {
            granted
                .entry(db.to_string())
                .or_default()
                .push(slot.manifest.name.clone());
        }
    }
    let mut list = Vec::with_capacity(granted.len());
    for (name, plugins) in granted {
        let described = databases
            .describe(&name)
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage", e))?;
        list.push(json!({
            "name": name,
            "plugins": plugins,
            "bookmark": spike_sql::bookmark(described.bookmark),
            "changes": described.bookmark,
            "local_bytes": described.local_bytes,
        }));
    }
    Ok(JsonLine(json!({ "databases": list })))
}

#[derive(Deserialize)]
struct Execute {
    sql: String,
}

/// `POST /_spike/sql/{db}/execute`
pub async fn execute(
    State(state): State<Arc<AppState>>,
    Path(db): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer)?;
    let Execute { sql } = json_body(body, r#"{"sql": "…"}"#).await?;
    let (all, bookmark) = script(&state, &db, sql).await?;
    let results: Vec<Value> = all.into_iter().map(results_json).collect();
    Ok(JsonLine(json!({
        "results": results,
        "bookmark": spike_sql::bookmark(bookmark),
    })))
}

/// `GET /_spike/sql/{db}/export`
pub async fn export(
    State(state): State<Arc<AppState>>,
    Path(db): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    authorize(&state, &headers, peer)?;
    let (done, _) = run(&state, &db, Work::Export).await?;
    let Done::Export(text) = done else {
        unreachable!("an export answers with its text")
    };
    Ok(axum::response::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/sql; charset=utf-8")
        .body(axum::body::Body::from(text))
        .expect("a valid response"))
}

/// `POST /_spike/sql/{db}/import`
pub async fn import(
    State(state): State<Arc<AppState>>,
    Path(db): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer)?;
    let body = read_body(body, MAX_IMPORT).await?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| bad_request("the SQL is not UTF-8"))?;
    let (all, bookmark) = script(&state, &db, text).await?;
    let changes: u64 = all.iter().map(|r| r.changes).sum();
    Ok(JsonLine(json!({
        "statements": all.len(),
        "changes": changes,
        "bookmark": spike_sql::bookmark(bookmark),
    })))
}

#[derive(Deserialize)]
struct Restore {
    to: String,
}

/// `POST /_spike/sql/{db}/restore`
pub async fn restore(
    State(state): State<Arc<AppState>>,
    Path(db): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer)?;
    let Restore { to } = json_body(body, r#"{"to": "<bookmark or time>"}"#).await?;
    let to = restore_point(&to)?;
    let (done, bookmark) = run(&state, &db, Work::Restore(to)).await?;
    let Done::Restored { from } = done else {
        unreachable!("a restore answers with where it restored to")
    };
    Ok(JsonLine(json!({
        "restored_to": spike_sql::bookmark(from),
        "bookmark": spike_sql::bookmark(bookmark),
    })))
}

/// A bookmark (16 hex digits), an RFC 3339 time (`2026-12-07T09:30:00Z`)
/// or milliseconds since the Unix epoch.
fn restore_point(text: &str) -> Result<RestoreTo, ApiError> {
    if let Some(seq) = spike_sql::parse_bookmark(text) {
        return Ok(RestoreTo::Entry(seq));
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(RestoreTo::Time(ms));
    }
    match rfc3339_ms(text) {
        Some(ms) => Ok(RestoreTo::Time(ms)),
        None => Err(bad_request(format!(
            "'{text}' is neither a bookmark (16 hex digits, as writes return them) nor a time (2026-12-07T09:30:00Z, or milliseconds since the epoch)"
        ))),
    }
}

/// An RFC 3339 time (`2026-12-07T09:30:00Z`, `…:00.250+01:00`), in
/// milliseconds since the Unix epoch.
fn rfc3339_ms(text: &str) -> Option<u64> {
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut ymd = date.splitn(3, '-');
    let (y, m, d) = (
        number(ymd.next()?)?,
        number(ymd.next()?)?,
        number(ymd.next()?)?,
    );
    let (clock, offset_s) = match time.find(['Z', 'z', '+', '-']) {
        Some(at) => {
            let (clock, zone) = time.split_at(at);
            let offset = match zone {
                "Z" | "z" => 0,
                _ => {
                    let (h, min) = zone[1..].split_once(':')?;
                    let sign = if zone.starts_with('-') { -1 } else { 1 };
                    sign * (number(h)? * 3600 + number(min)? * 60)
                }
            };
            (clock, offset)
        }
        None => return None,
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':');
    let (h, min, s) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    let ms = match fraction {
        "" => 0,
        f => number(&format!("{:0<3}", &f[..f.len().min(3)]))?,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3600 + min * 60 + s - offset_s;
    u64::try_from(seconds * 1000 + ms).ok()
}

#[derive(Deserialize)]
struct Migrations {
    migrations: Vec<Migration>,
}

#[derive(Deserialize)]
struct Migration {
    name: String,
    sql: String,
}

/// `GET /_spike/sql/{db}/migrations`
pub async fn migrations(
    State(state): State<Arc<AppState>>,
    Path(db): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer)?;
    Ok(JsonLine(json!({ "applied": applied(&state, &db).await? })))
}

/// The migrations the database records, in the order they were applied.
async fn applied(state: &AppState, db: &str) -> Result<Vec<Value>, ApiError> {
    let exists = format!("SELECT 1 FROM sqlite_schema WHERE name = '{MIGRATIONS_TABLE}'");
    let (found, _) = script(state, db, exists).await?;
    if found.first().is_none_or(|r| r.rows.is_empty()) {
        return Ok(Vec::new());
    }
    let query = format!("SELECT name, applied_at FROM {MIGRATIONS_TABLE} ORDER BY id");
    let (all, _) = script(state, db, query).await?;
    let rows = all.into_iter().next().map(|r| r.rows).unwrap_or_default();
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut row = row.into_iter().map(value_json);
            json!({ "name": row.next(), "applied_at": row.next() })
        })
        .collect())
}

/// `POST /_spike/sql/{db}/migrations`: each migration not yet recorded is
/// run with its record in one transaction; one that another apply
/// recorded first (the record's name is unique) is skipped. Stops at the
/// first that fails.
pub async fn apply_migrations(
    State(state): State<Arc<AppState>>,
    Path(db): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<JsonLine<Value>, ApiError> {
    authorize(&state, &headers, peer)?;
    let Migrations { migrations } =
        json_body(body, r#"{"migrations": [{"name": "…", "sql": "…"}]}"#).await?;
    migrations
        .iter()
        .try_for_each(|m| check_migration_name(&m.name))?;
    let table = format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)"
    );
    script(&state, &db, table).await?;
    let already: Vec<String> = (applied(&state, &db).await?.into_iter())
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    let mut bookmark = None;
    for m in migrations {
        if already.contains(&m.name) {
            skipped.push(m.name);
            continue;
        }
        // The record first: an apply that lost the race fails on it,
        // before any of the migration's statements runs.
        let record_and_migration = format!(
            "INSERT INTO {MIGRATIONS_TABLE} (name) VALUES ('{}');\n{}",
            m.name, m.sql
        );
        match script(&state, &db, record_and_migration).await {
            Ok((_, at)) => {
                bookmark = Some(at);
                done.push(m.name);
            }
            Err(_) if recorded(&state, &db, &m.name).await? => skipped.push(m.name),
            Err(e) => {
                let before = match done.is_empty() {
                    true => String::new(),
                    false => format!(" (applied before it: {})", done.join(", ")),
                };
                let message = format!("migration {}: {}{before}", m.name, e.message);
                return Err(ApiError::new(e.status, e.code, message));
            }
        }
    }
    Ok(JsonLine(json!({
        "applied": done,
        "already_applied": skipped,
        "bookmark": bookmark.map(spike_sql::bookmark),
    })))
}

/// A migration's name goes into its record's statement as a literal:
/// a file name's letters only.
fn check_migration_name(name: &str) -> Result<(), ApiError> {
    let fine = !name.is_empty()
        && name.len() <= 200
        && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    match fine {
        true => Ok(()),
        false => Err(bad_request(format!(
            "migration name '{name}' must be letters, digits, '-', '_' or '.'"
        ))),
    }
}

/// Whether migration `name` is recorded as applied.
async fn recorded(state: &AppState, db: &str, name: &str) -> Result<bool, ApiError> {
    Ok((applied(state, db).await?.iter()).any(|m| m["name"] == name))
}

fn results_json(results: spike_sql::Results) -> Value {
    let rows: Vec<Vec<Value>> = (results.rows.into_iter())
        .map(|row| row.into_iter().map(value_json).collect())
        .collect();
    json!({
        "columns": results.columns,
        "rows": rows,
        "changes": results.changes,
        "last_insert_id": results.last_insert_id,
    })
}

/// A value as JSON: numbers and text as they are, a blob as its hex
/// (`{"blob": "00ff"}`), a real JSON cannot hold (infinity) as text.
fn value_json(value: spike_sql::Value) -> Value {
    use spike_sql::Value as V;
    match value {
        V::Null => Value::Null,
        V::Integer(n) => json!(n),
        V::Real(x) if x.is_finite() => json!(x),
        V::Real(x) => json!(x.to_string()),
        V::Text(text) => json!(text),
        V::Blob(bytes) => json!({ "blob": hex::encode(bytes) }),
    }
}
