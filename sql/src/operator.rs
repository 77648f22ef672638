//! An operator's work on a database (through the admin API): a script
//! run as one transaction with the results of each statement (`spike sql
//! execute`, `import`, a migration), and the database as SQL text
//! (`spike sql export`), which such a script makes again.
//!
//! A script runs under the guard as a guest's statements do (no ATTACH,
//! no pragma that changes the file, each statement timed and its results
//! bounded), but is not bounded in length: a dump is as long as its data.

use std::fmt::Write as _;

use rusqlite::fallible_iterator::FallibleIterator;

use crate::error::SqlError;
use crate::guard::Guarded;
use crate::run::{Counts, results_of};
use crate::value::{Results, Value};

impl Guarded {
    /// `script`'s statements in order, as one transaction: the results of
    /// each, or nothing kept if one fails.
    pub fn script(&mut self, script: &str, counts: &mut Counts) -> Result<Vec<Results>, SqlError> {
        self.atomically(|db| db.each_statement(script, counts))
    }

    fn each_statement(
        &mut self,
        script: &str,
        counts: &mut Counts,
    ) -> Result<Vec<Results>, SqlError> {
        let mut all = Vec::new();
        let mut statements = rusqlite::Batch::new(&self.conn, script);
        loop {
            self.start_clock();
            let ran = match statements.next() {
                Ok(None) => break,
                Ok(Some(mut statement)) => {
                    results_of(&self.conn, &mut statement, &self.limits, counts)
                }
                Err(e) => Err(e.into()),
            };
            self.stop_clock();
            let place = format!("statement {}", all.len() + 1);
            all.push(ran.map_err(|e| self.error(e).at(&place))?);
        }
        self.stop_clock();
        Ok(all)
    }

    /// The schema and rows as SQL: tables and their rows, then
    /// `sqlite_sequence`, then indexes, triggers and views. Foreign keys
    /// are checked at the end of the script that runs it, so rows may
    /// come in any order.
    pub fn export(&mut self) -> Result<String, SqlError> {
        let failed = |e: rusqlite::Error| SqlError::Internal(e.to_string());
        let mut out = String::from("PRAGMA defer_foreign_keys = ON;\n");
        let schema: Vec<(String, String, Option<String>)> = {
            let mut statement = (self.conn)
                .prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY rowid")
                .map_err(failed)?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
            rows.and_then(Iterator::collect).map_err(failed)?
        };
        let tables = schema
            .iter()
            .filter(|(kind, name, _)| kind == "table" && !name.starts_with("sqlite_"));
        for (_, name, sql) in tables {
            let Some(sql) = sql else { continue };
            let _ = writeln!(out, "{sql};");
            self.rows_of(name, &mut out).map_err(failed)?;
        }
        if schema.iter().any(|(_, name, _)| name == "sqlite_sequence") {
            out.push_str("DELETE FROM sqlite_sequence;\n");
            self.rows_of("sqlite_sequence", &mut out).map_err(failed)?;
        }
        let rest = schema
            .iter()
            .filter(|(kind, name, _)| kind != "table" && !name.starts_with("sqlite_"));
        for (_, _, sql) in rest {
            if let Some(sql) = sql {
                let _ = writeln!(out, "{sql};");
            }
        }
        Ok(out)
    }

    /// `INSERT`s of every row of `table`, its stored columns named.
    fn rows_of(&self, table: &str, out: &mut String) -> rusqlite::Result<()> {
        let mut info = self
            .conn
            .prepare("SELECT name, hidden FROM pragma_table_xinfo(?)")?;
        let columns: Vec<String> = info
            .query_map([table], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .filter_map(|c| match c {
                Ok((name, 0)) => Some(Ok(name)),
                Ok(_) => None, // generated: made again by the table
                Err(e) => Some(Err(e)),
            })
            .collect::<rusqlite::Result<_>>()?;
        let names: Vec<String> = columns.iter().map(|c| quote_name(c)).collect();
        let select = format!("SELECT {} FROM {}", names.join(", "), quote_name(table));
        let head = format!(
            "INSERT INTO {}({}) VALUES(",
            quote_name(table),
            names.join(",")
        );
        let mut rows = self.conn.prepare(&select)?;
        let mut raw = rows.raw_query();
        while let Some(row) = raw.next()? {
            out.push_str(&head);
            for i in 0..columns.len() {
                if i > 0 {
                    out.push(',');
                }
                literal(&Value::from(row.get_ref(i)?), out);
            }
            out.push_str(");\n");
        }
        Ok(())
    }
}

/// An identifier, quoted.
fn quote_name(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL literal that reads back as the same value.
fn literal(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Integer(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Real(x) if x.is_infinite() => {
            out.push_str(if *x > 0.0 { "9e999" } else { "-9e999" })
        }
        // Debug keeps the decimal point (1.0 stays a real) and every digit.
        Value::Real(x) => {
            let _ = write!(out, "{x:?}");
        }
        // A NUL cannot be in a quoted literal: the bytes, as text.
        Value::Text(text) if text.contains('\0') => {
            out.push_str("CAST(");
            hex(text.as_bytes(), out);
            out.push_str(" AS TEXT)");
        }
        Value::Text(text) => {
            out.push('\'');
            out.push_str(&text.replace('\'', "''"));
            out.push('\'');
        }
        Value::Blob(bytes) => hex(bytes, out),
    }
}

fn hex(bytes: &[u8], out: &mut String) {
    out.push_str("X'");
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out.push('\'');
}
