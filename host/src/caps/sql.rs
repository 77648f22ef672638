//! The `spike:host/sql` capability: SQL databases (SQLite) granted by name.
//!
//! `SqlView` implements the generated `Host` traits: it checks the grant
//! when a database is opened (a `Database` handle exists only for a granted
//! name) and hands each call to the database's owner (`spike_sql`), which
//! runs it under the host's limits. SQLite's failures reach the guest as
//! the shared `error`: a refused statement `invalid-input` with SQLite's
//! message, a limit `too-large`, a statement that reaches outside its
//! database `access-denied`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use spike_sql::{Databases, Done, SqlError, Work};
use wasmtime::component::{HasData, Linker, Resource};

use super::{CapError, Kind, Named, View, call_span};
use crate::bindings::spike::host::sql::{self as wit, Results, Statement, Value};
use crate::telemetry;
use tracing::Instrument;

/// The host's SQL databases, if this host serves them.
pub struct SqlCtx {
    /// `None` where databases are not served (`spike check`).
    pub databases: Option<Arc<Databases>>,
}

/// A `database` handle: the guest opened a granted database.
pub struct Database {
    name: Arc<str>,
    /// Where the database stood after the handle's last call (0: none).
    bookmark: u64,
}

impl Named for Database {
    const KIND: Kind = Kind::Sql;

    fn new(name: Arc<str>) -> Self {
        Self { name, bookmark: 0 }
    }

    fn name(&self) -> &Arc<str> {
        &self.name
    }
}

impl From<SqlError> for CapError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Statement(m) => CapError::InvalidInput(m),
            SqlError::Limit(m) => CapError::TooLarge(m),
            SqlError::NotAllowed(m) => CapError::AccessDenied(m),
            SqlError::Internal(m) => CapError::Internal(m),
        }
    }
}

/// The view of a store's data that implements the SQL `Host` traits.
pub type SqlView<'a> = View<'a, SqlCtx>;

impl SqlView<'_> {
    /// Runs `work` on the database behind `db`, counting it.
    async fn run(&mut self, db: &Resource<Database>, work: Work) -> Result<Done, CapError> {
        let name = self.name_of(db)?;
        let Some(databases) = &self.ctx.databases else {
            return Err(CapError::Internal(
                "SQL databases are not served here".into(),
            ));
        };
        let operation = match &work {
            Work::Query(_) => "query",
            Work::Batch(_) => "batch",
            _ => "exec",
        };
        let span = call_span("sql", operation, &name);
        let answer = databases.run(&name, work).instrument(span.clone()).await;
        let metrics = &self.counts.metrics.sql;
        let outcome = answer.result.as_ref().map_or_else(SqlError::kind, |_| "ok");
        let labels = |kind| SqlLabels {
            plugin: self.counts.plugin.clone(),
            database: name.clone(),
            kind,
        };
        metrics.calls.get_or_create(&labels(outcome)).inc();
        let counts = answer.counts;
        match &answer.result {
            Ok(_) => telemetry::record(&span, "spike.rows", counts.rows_read + counts.rows_written),
            Err(e) => telemetry::failed(&span, e.kind()),
        }
        metrics
            .statements
            .get_or_create(&labels("run"))
            .inc_by(counts.statements);
        metrics
            .rows
            .get_or_create(&labels("read"))
            .inc_by(counts.rows_read);
        metrics
            .rows
            .get_or_create(&labels("written"))
            .inc_by(counts.rows_written);
        (metrics.seconds.get_or_create(&labels("run"))).observe(answer.time.as_secs_f64());
        if answer.bytes > 0 {
            let labels = DatabaseLabels {
                database: name.clone(),
            };
            (metrics.bytes.get_or_create(&labels)).set(answer.bytes as i64);
        }
        if answer.bookmark > 0 {
            self.table.get_mut(db)?.bookmark = answer.bookmark;
        }
        Ok(answer.result?)
    }
}

impl wit::Host for SqlView<'_> {}

impl wit::HostDatabase for SqlView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<Database>, CapError> {
        self.open_granted(name)
    }

    async fn query(
        &mut self,
        db: Resource<Database>,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Results, CapError> {
        let statement = spike_sql::Statement {
            sql,
            params: params.into_iter().map(from_wit).collect(),
        };
        match self.run(&db, Work::Query(statement)).await? {
            Done::Query(results) => Ok(to_wit(results)),
            _ => unreachable!("a query answers with its results"),
        }
    }

    async fn batch(
        &mut self,
        db: Resource<Database>,
        statements: Vec<Statement>,
    ) -> Result<Vec<Results>, CapError> {
        let statements = (statements.into_iter())
            .map(|s| spike_sql::Statement {
                sql: s.sql,
                params: s.params.into_iter().map(from_wit).collect(),
            })
            .collect();
        match self.run(&db, Work::Batch(statements)).await? {
            Done::Batch(all) => Ok(all.into_iter().map(to_wit).collect()),
            _ => unreachable!("a batch answers with each statement's results"),
        }
    }

    async fn exec(&mut self, db: Resource<Database>, script: String) -> Result<u32, CapError> {
        match self.run(&db, Work::Exec(script)).await? {
            Done::Exec(ran) => Ok(ran),
            _ => unreachable!("a script answers with how many statements ran"),
        }
    }

    async fn bookmark(&mut self, db: Resource<Database>) -> wasmtime::Result<String> {
        Ok(match self.table.get(&db)?.bookmark {
            0 => String::new(),
            seq => spike_sql::bookmark(seq),
        })
    }

    async fn drop(&mut self, db: Resource<Database>) -> wasmtime::Result<()> {
        self.table.delete(db)?;
        Ok(())
    }
}

fn from_wit(value: Value) -> spike_sql::Value {
    match value {
        Value::Null => spike_sql::Value::Null,
        Value::Integer(n) => spike_sql::Value::Integer(n),
        Value::Real(x) => spike_sql::Value::Real(x),
        Value::Text(text) => spike_sql::Value::Text(text),
        Value::Blob(bytes) => spike_sql::Value::Blob(bytes),
    }
}

fn to_wit(results: spike_sql::Results) -> Results {
    let value = |value| match value {
        spike_sql::Value::Null => Value::Null,
        spike_sql::Value::Integer(n) => Value::Integer(n),
        spike_sql::Value::Real(x) => Value::Real(x),
        spike_sql::Value::Text(text) => Value::Text(text),
        spike_sql::Value::Blob(bytes) => Value::Blob(bytes),
    };
    Results {
        columns: results.columns,
        rows: (results.rows.into_iter())
            .map(|row| row.into_iter().map(value).collect())
            .collect(),
        changes: results.changes,
        last_insert_id: results.last_insert_id,
    }
}

/// 50 µs to 13 s: a point read to a statement at its time limit.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 4.0, 10))
}

struct HasSql;

impl HasData for HasSql {
    type Data<'a> = SqlView<'a>;
}

/// Adds `spike:host/sql` to the linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SqlView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSql>(linker, view)
}

/// A series of one database of one plugin.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SqlLabels {
    pub plugin: Arc<str>,
    pub database: Arc<str>,
    pub kind: &'static str,
}

crate::metrics::series! {
    /// The SQL import's series, by plugin and database.
    pub struct SqlMetrics {
        /// Calls (a query, a batch, a script) by outcome: `ok`,
        /// `statement` (SQLite refused it), `limit`, `not_allowed`,
        /// `internal`.
        calls: Family<SqlLabels, Counter> = Family::default(),
            "sql_calls", "SQL calls, by outcome";
        statements: Family<SqlLabels, Counter> = Family::default(),
            "sql_statements", "SQL statements run";
        /// Rows `read` (returned or stepped through) and `written`.
        rows: Family<SqlLabels, Counter> = Family::default(),
            "sql_rows", "SQL rows read and written";
        seconds: Family<SqlLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(call_histogram),
            "sql_call_seconds", "How long SQL calls ran";
        /// What each database's file and WAL take on this node, as its
        /// last call left them.
        bytes: Family<DatabaseLabels, Gauge> = Family::default(),
            "sql_database_bytes", "SQL database size on disk";
    }
}

/// A database's series of its own (its size).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub database: Arc<str>,
}
