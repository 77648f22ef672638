//! SQL databases (`spike:host/sql`), with an API shaped like D1's: a
//! statement is prepared, bound, then run for all its rows, the first, its
//! effect, or its raw results; statements that must commit together are a
//! batch.
//!
//! ```ignore
//! use serde::Deserialize;
//! use spike_sdk::sql::Database;
//!
//! #[derive(Deserialize)]
//! struct Note { id: i64, text: String }
//!
//! let db = Database::open("notes")?;
//! db.exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")?;
//! let added = db.prepare("INSERT INTO notes (text) VALUES (?)").bind("milk").run()?;
//! let note: Option<Note> = db.prepare("SELECT id, text FROM notes WHERE id = ?")
//!     .bind(added.last_insert_id)
//!     .first()?;
//! let all: Vec<Note> = db.prepare("SELECT id, text FROM notes").all()?;
//! db.batch(&[
//!     db.prepare("UPDATE notes SET text = ? WHERE id = ?").bind("oat milk").bind(1),
//!     db.prepare("DELETE FROM notes WHERE id = ?").bind(2),
//! ])?;
//! ```
//!
//! Rows decode into any `serde::Deserialize` type by column name (a blob
//! column as a list of bytes); `raw` gives the columns and values as they
//! are.

use serde::de::DeserializeOwned;

use crate::Error;
use crate::spike::host::sql as wit;
pub use wit::{Results, Value};

/// A database the plugin's manifest grants (`grants.sql`).
pub struct Database(wit::Database);

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Rows inserted, updated or deleted.
    pub changes: u64,
    /// The rowid of the last row inserted.
    pub last_insert_id: i64,
    /// Where the database stood after the statement (its write's place
    /// in the change log): `spike sql restore <db> --to <bookmark>`.
    pub bookmark: String,
}

impl Database {
    /// Opens the database `name` (made empty on first use).
    pub fn open(name: &str) -> Result<Self, Error> {
        wit::Database::open(name).map(Self)
    }

    /// A statement, to bind parameters to and run.
    pub fn prepare(&self, sql: &str) -> Prepared<'_> {
        Prepared {
            db: self,
            statement: wit::Statement {
                sql: sql.to_string(),
                params: Vec::new(),
            },
        }
    }

    /// Runs `statements` as one transaction: the results of each, or
    /// nothing kept if one fails.
    pub fn batch(&self, statements: &[Prepared<'_>]) -> Result<Vec<Results>, Error> {
        let all: Vec<wit::Statement> = statements.iter().map(|p| p.statement.clone()).collect();
        self.0.batch(&all)
    }

    /// Where the database stood after this handle's last call (empty
    /// before any): a point `spike sql restore` can return it to.
    pub fn bookmark(&self) -> String {
        self.0.bookmark()
    }

    /// Runs a script of statements without parameters (a schema, say); how
    /// many ran.
    pub fn exec(&self, script: &str) -> Result<u32, Error> {
        self.0.exec(script)
    }
}

/// A statement and the parameters bound to it so far.
pub struct Prepared<'a> {
    db: &'a Database,
    statement: wit::Statement,
}

impl Prepared<'_> {
    /// Binds the next positional parameter.
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.statement.params.push(value.into());
        self
    }

    /// Its columns and rows as SQLite returned them.
    pub fn raw(&self) -> Result<Results, Error> {
        self.db.0.query(&self.statement.sql, &self.statement.params)
    }

    /// What a write did.
    pub fn run(&self) -> Result<Meta, Error> {
        let results = self.raw()?;
        Ok(Meta {
            changes: results.changes,
            last_insert_id: results.last_insert_id,
            bookmark: self.db.0.bookmark(),
        })
    }

    /// Every row, decoded by column name.
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        let results = self.raw()?;
        (results.rows.iter())
            .map(|row| decode(&results.columns, row))
            .collect()
    }

    /// The first row, if any, decoded by column name.
    pub fn first<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        let results = self.raw()?;
        (results.rows.first())
            .map(|row| decode(&results.columns, row))
            .transpose()
    }
}

/// A row as a `T`, through a JSON object of its columns.
fn decode<T: DeserializeOwned>(columns: &[String], row: &[Value]) -> Result<T, Error> {
    let object: serde_json::Map<String, serde_json::Value> = (columns.iter().zip(row))
        .map(|(column, value)| (column.clone(), json(value)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| Error::InvalidInput(format!("a row does not decode: {e}")))
}

fn json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(n) => (*n).into(),
        Value::Real(x) => {
            serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Text(text) => text.clone().into(),
        Value::Blob(bytes) => bytes.clone().into(),
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Integer(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Integer(n.into())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Integer(n.into())
    }
}

/// SQLite has no booleans: 1 and 0.
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Integer(b.into())
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Real(x)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_string())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Blob(bytes)
    }
}

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Self {
        Value::Blob(bytes.to_vec())
    }
}

/// `None` is `NULL`.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}
