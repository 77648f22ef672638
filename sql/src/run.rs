//! Running statements on a guarded connection (on a blocking thread: the
//! owner hands its connection over for each batch of work).

use rusqlite::ffi::ErrorCode;

use crate::error::SqlError;
use crate::guard::Guarded;
use crate::value::{Results, Statement, Value};

/// What a caller asks of a database.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Work {
    /// One statement.
    Query(Statement),
    /// Statements as one transaction.
    Batch(Vec<Statement>),
    /// A script of statements without parameters.
    Exec(String),
    /// Make the database what it was at a point of its log (the owner's
    /// work, not the connection's: see `owner`).
    Restore(RestoreTo),
    /// An operator's script: its statements in order as one transaction,
    /// the results of each (`spike sql execute`, `import`, migrations).
    Script(String),
    /// The database as SQL text that makes it again (`spike sql export`).
    Export,
}

/// A point of a database's log to restore it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RestoreTo {
    /// Just after this entry (a bookmark).
    Entry(u64),
    /// As it was at this time (milliseconds since the Unix epoch).
    Time(u64),
}

/// What the work did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Done {
    Query(Results),
    Batch(Vec<Results>),
    Exec(u32),
    /// Restored to the state at this entry.
    Restored {
        from: u64,
    },
    Script(Vec<Results>),
    Export(String),
}

/// Rows read and written by a piece of work, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub statements: u64,
    pub rows_read: u64,
    pub rows_written: u64,
}

impl Guarded {
    /// Does `work`, counting what it did into `counts`.
    pub fn run(&mut self, work: &Work, counts: &mut Counts) -> Result<Done, SqlError> {
        match work {
            Work::Query(statement) => {
                let results = self.statement(statement, counts)?;
                Ok(Done::Query(results))
            }
            Work::Batch(statements) => self.batch(statements, counts).map(Done::Batch),
            Work::Exec(script) => self.exec(script, counts).map(Done::Exec),
            Work::Restore(_) => Err(SqlError::Internal("a restore is the owner's to run".into())),
            Work::Script(script) => self.script(script, counts).map(Done::Script),
            Work::Export => self.export().map(Done::Export),
        }
    }

    /// Statements in one transaction: all kept, or none.
    fn batch(
        &mut self,
        statements: &[Statement],
        counts: &mut Counts,
    ) -> Result<Vec<Results>, SqlError> {
        self.atomically(|db| {
            let mut all = Vec::with_capacity(statements.len());
            for (i, statement) in statements.iter().enumerate() {
                let results = db.statement(statement, counts);
                all.push(results.map_err(|e| e.at(&format!("statement {}", i + 1)))?);
            }
            Ok(all)
        })
    }

    /// `f`, kept whole or not at all: a transaction of its own, or a
    /// savepoint within the one open (a batch within the owner's group).
    pub fn atomically<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let internal = |e: rusqlite::Error| SqlError::Internal(e.to_string());
        let nested = !self.conn.is_autocommit();
        let (begin, commit, rollback) = match nested {
            true => (
                "SAVEPOINT atom",
                "RELEASE atom",
                "ROLLBACK TO atom; RELEASE atom",
            ),
            // IMMEDIATE: the write lock is taken now, not at the first write.
            false => ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"),
        };
        self.host_statement(begin).map_err(internal)?;
        let done = f(self).and_then(|kept| match self.host_statement(commit) {
            Ok(()) => Ok(kept),
            Err(e) => Err(self.error(e)),
        });
        // SQLite may have rolled the whole transaction back already (an
        // interrupted write does): nothing is left to roll back then.
        if done.is_err() && !self.conn.is_autocommit() {
            let _ = self.host_statement(rollback);
        }
        done
    }

    /// A script, statement by statement; the number run.
    fn exec(&mut self, script: &str, counts: &mut Counts) -> Result<u32, SqlError> {
        use rusqlite::fallible_iterator::FallibleIterator;
        self.check_length(script)?;
        let mut ran = 0u32;
        let conn = &self.conn;
        let mut statements = rusqlite::Batch::new(conn, script);
        loop {
            self.start_clock();
            let stepped = match statements.next() {
                Ok(None) => break,
                Ok(Some(mut statement)) => {
                    let before = conn.total_changes();
                    step_all(&mut statement, &self.limits, counts, false)
                        .map(|_| counts.rows_written += conn.total_changes() - before)
                }
                Err(e) => Err(e.into()),
            };
            self.stop_clock();
            stepped.map_err(|e| self.error(e).at(&format!("statement {}", ran + 1)))?;
            ran += 1;
        }
        self.stop_clock();
        Ok(ran)
    }

    /// One statement.
    fn statement(
        &mut self,
        statement: &Statement,
        counts: &mut Counts,
    ) -> Result<Results, SqlError> {
        self.check_length(&statement.sql)?;
        if statement.params.len() > self.limits.max_params {
            return Err(SqlError::Limit(format!(
                "{} parameters: at most {} a statement",
                statement.params.len(),
                self.limits.max_params
            )));
        }
        self.start_clock();
        let ran = self.prepared(statement, counts);
        self.stop_clock();
        ran.map_err(|e| self.error(e))
    }

    fn prepared(
        &mut self,
        statement: &Statement,
        counts: &mut Counts,
    ) -> Result<Results, RunError> {
        let mut prepared = self.conn.prepare_cached(&statement.sql)?;
        if prepared.parameter_count() != statement.params.len() {
            return Err(RunError::Refused(SqlError::Statement(format!(
                "the statement takes {} parameters, {} were given",
                prepared.parameter_count(),
                statement.params.len()
            ))));
        }
        for (i, value) in statement.params.iter().enumerate() {
            prepared.raw_bind_parameter(i + 1, value)?;
        }
        results_of(&self.conn, &mut prepared, &self.limits, counts)
    }

    fn check_length(&self, sql: &str) -> Result<(), SqlError> {
        let max = self.limits.max_statement_bytes;
        if sql.len() > max {
            return Err(SqlError::Limit(format!(
                "a statement of {} bytes: at most {max}",
                sql.len()
            )));
        }
        Ok(())
    }

    /// What the guest is told of a failure.
    pub(crate) fn error(&self, e: impl Into<RunError>) -> SqlError {
        let e = match e.into() {
            RunError::Refused(refused) => return refused,
            RunError::Sqlite(e) => e,
        };
        // The authorizer's refusal, whatever code SQLite reports it with
        // (a denied function is a plain error).
        if let Some(why) = self.refused() {
            return SqlError::NotAllowed(why);
        }
        let limits = &self.limits;
        let code = e.sqlite_error_code();
        match code {
            Some(ErrorCode::OperationInterrupted) => SqlError::Limit(format!(
                "the statement ran past its time limit of {} ms",
                limits.statement_time.as_millis()
            )),
            Some(ErrorCode::AuthorizationForStatementDenied) => SqlError::NotAllowed(e.to_string()),
            Some(ErrorCode::DiskFull) => SqlError::Limit(format!(
                "the database is at its size limit of {} MiB",
                limits.max_database_bytes >> 20
            )),
            Some(ErrorCode::TooBig) => SqlError::Limit(format!(
                "a string or blob past {} bytes, or a statement past {} bytes",
                limits.max_value_bytes, limits.max_statement_bytes
            )),
            Some(ErrorCode::OutOfMemory) => SqlError::Limit(e.to_string()),
            Some(
                ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::ReadOnly,
            ) => SqlError::Internal(e.to_string()),
            _ => SqlError::Statement(message(&e)),
        }
    }
}

/// SQLite's message for `e`, without rusqlite's wrapping.
fn message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

/// A failure while running: SQLite's, or the host's own refusal.
pub enum RunError {
    Sqlite(rusqlite::Error),
    Refused(SqlError),
}

impl From<rusqlite::Error> for RunError {
    fn from(e: rusqlite::Error) -> Self {
        RunError::Sqlite(e)
    }
}

/// Runs a prepared and bound `statement` to its end: its rows (under the
/// limits) and what it changed.
pub fn results_of(
    conn: &rusqlite::Connection,
    statement: &mut rusqlite::Statement<'_>,
    limits: &crate::SqlLimits,
    counts: &mut Counts,
) -> Result<Results, RunError> {
    let columns: Vec<String> = (statement.column_names()).map(str::to_string).collect();
    let before = conn.total_changes();
    let rows = step_all(statement, limits, counts, true)?;
    // `changes()` is the last INSERT, UPDATE or DELETE's, whatever ran
    // since: a statement that changed nothing changed nothing.
    let written = conn.total_changes() - before;
    let changes = if written == 0 { 0 } else { conn.changes() };
    counts.rows_written += written;
    Ok(Results {
        columns,
        rows,
        changes,
        last_insert_id: conn.last_insert_rowid(),
    })
}

/// Steps `statement` to its end, keeping its rows if `keep` (under the
/// limits on rows and bytes).
fn step_all(
    statement: &mut rusqlite::Statement<'_>,
    limits: &crate::SqlLimits,
    counts: &mut Counts,
    keep: bool,
) -> Result<Vec<Vec<Value>>, RunError> {
    counts.statements += 1;
    let width = statement.column_count();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut raw = statement.raw_query();
    while let Some(row) = raw.next()? {
        counts.rows_read += 1;
        if !keep {
            continue;
        }
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            let value = Value::from(row.get_ref(i)?);
            bytes += value.weight();
            values.push(value);
        }
        rows.push(values);
        if rows.len() > limits.max_rows {
            return Err(RunError::Refused(SqlError::Limit(format!(
                "more than {} rows: add a LIMIT, or page with a WHERE on the key",
                limits.max_rows
            ))));
        }
        if bytes > limits.max_result_bytes {
            return Err(RunError::Refused(SqlError::Limit(format!(
                "a result past {} MiB: select fewer columns or rows",
                limits.max_result_bytes >> 20
            ))));
        }
    }
    Ok(rows)
}
