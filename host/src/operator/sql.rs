//! `spike sql ...`: a running server's SQL databases, through its admin
//! API (`/_spike/sql`): list them, run statements, export and import,
//! restore to a point in time, and migrations from a folder, recorded in
//! the database as wrangler records them (`d1_migrations`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use super::{CommandError, Target, read, table};

/// One command (`spike sql <command>`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SqlCommand {
    /// Every database: the plugins granted it, its last change (a
    /// bookmark), its size on the node that answers.
    List,
    /// Run statements, in one transaction, and print what they return.
    Execute {
        db: String,
        /// The statements.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        command: Option<String>,
        /// A file of statements.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// The database as SQL that makes it again (to stdout, or --output).
    Export {
        db: String,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Run a file of SQL (an export, say) as one transaction.
    Import { db: String, file: PathBuf },
    /// Make the database what it was at a bookmark (as writes return
    /// them) or a time (2026-12-07T09:30:00Z); the restore is a change
    /// itself, undone by restoring to the bookmark before it.
    Restore {
        db: String,
        #[arg(long)]
        to: String,
    },
    /// Migrations: `.sql` files in a folder, applied once each, in the
    /// order of their names.
    Migrations {
        #[command(subcommand)]
        command: MigrationsCommand,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MigrationsCommand {
    /// Make the next migration's file, `<dir>/NNNN_<name>.sql`.
    Create {
        db: String,
        name: String,
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
    /// The folder's migrations, and which the database has applied.
    List {
        db: String,
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
    /// Apply those the database has not, in order, each in a transaction.
    Apply {
        db: String,
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
}

/// Runs `command`; what to print.
pub async fn run(
    target: &Target,
    command: &SqlCommand,
    json: bool,
) -> Result<String, CommandError> {
    let (answer, text) = match command {
        SqlCommand::List => {
            let answer = target.call(Method::GET, "/_spike/sql", None).await?;
            let text = list_table(&answer);
            (answer, text)
        }
        SqlCommand::Execute { db, command, file } => {
            let sql = match (command, file) {
                (Some(sql), _) => sql.clone(),
                (None, Some(file)) => text(file).await?,
                (None, None) => unreachable!("clap requires one"),
            };
            let answer = post_json(
                target,
                &format!("/_spike/sql/{db}/execute"),
                json!({ "sql": sql }),
            )
            .await?;
            let text = results_text(&answer);
            (answer, text)
        }
        SqlCommand::Import { db, file } => import(target, db, file).await?,
        SqlCommand::Restore { db, to } => {
            let answer = post_json(
                target,
                &format!("/_spike/sql/{db}/restore"),
                json!({ "to": to }),
            )
            .await?;
            let text = format!(
                "{db}: restored to {}; this restore is bookmark {} (restore to the bookmark before it to undo it)\n",
                field(&answer["restored_to"]),
                field(&answer["bookmark"])
            );
            (answer, text)
        }
        SqlCommand::Export { db, output } => return export(target, db, output.as_deref()).await,
        SqlCommand::Migrations { command } => return migrations(target, command, json).await,
    };
    Ok(match json {
        true => pretty(&answer),
        false => text,
    })
}

/// `POST path` with a JSON body; the JSON answer.
async fn post_json(target: &Target, path: &str, body: Value) -> Result<Value, CommandError> {
    let body = (Bytes::from(body.to_string()), "application/json");
    Ok(target.call(Method::POST, path, Some(body)).await?)
}

fn pretty(answer: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(answer).unwrap_or_default()
    )
}

/// The dump, printed or written to `output`.
async fn export(target: &Target, db: &str, output: Option<&Path>) -> Result<String, CommandError> {
    let path = format!("/_spike/sql/{db}/export");
    let dump = target.bytes(Method::GET, &path, None).await?;
    let Some(file) = output else {
        return Ok(String::from_utf8_lossy(&dump).into_owned());
    };
    let failed = |source| CommandError::Read {
        path: file.display().to_string(),
        source,
    };
    tokio::fs::write(file, &dump).await.map_err(failed)?;
    Ok(format!(
        "{db}: exported to {} ({} bytes)\n",
        file.display(),
        dump.len()
    ))
}

async fn import(target: &Target, db: &str, file: &Path) -> Result<(Value, String), CommandError> {
    let sql = read(file).await?;
    let path = format!("/_spike/sql/{db}/import");
    let answer = target
        .call(Method::POST, &path, Some((sql, "application/sql")))
        .await?;
    let text = format!(
        "{db}: {} statements run, {} rows changed (bookmark {})\n",
        answer["statements"],
        answer["changes"],
        field(&answer["bookmark"])
    );
    Ok((answer, text))
}

async fn migrations(
    target: &Target,
    command: &MigrationsCommand,
    json: bool,
) -> Result<String, CommandError> {
    let (answer, text) = match command {
        MigrationsCommand::Create { name, dir, .. } => {
            return Ok(format!("{}\n", create(dir, name)?.display()));
        }
        MigrationsCommand::List { db, dir } => {
            let local = folder(dir)?;
            let path = format!("/_spike/sql/{db}/migrations");
            let answer = target.call(Method::GET, &path, None).await?;
            let text = migrations_table(&answer, &local, dir);
            (answer, text)
        }
        MigrationsCommand::Apply { db, dir } => {
            let mut migrations = Vec::new();
            for (name, path) in folder(dir)? {
                migrations.push(json!({ "name": name, "sql": text(&path).await? }));
            }
            let path = format!("/_spike/sql/{db}/migrations");
            let answer = post_json(target, &path, json!({ "migrations": migrations })).await?;
            let text = applied_text(&answer, db);
            (answer, text)
        }
    };
    Ok(match json {
        true => pretty(&answer),
        false => text,
    })
}

/// The folder's migrations and when each was applied; then those the
/// database applied that the folder does not have.
fn migrations_table(answer: &Value, local: &[(String, PathBuf)], dir: &Path) -> String {
    let applied = answer["applied"].as_array().map_or(&[][..], Vec::as_slice);
    let at =
        |name: &str| (applied.iter().find(|m| m["name"] == name)).map(|m| field(&m["applied_at"]));
    let mut rows = vec![["MIGRATION".to_string(), "APPLIED".into()]];
    for (name, _) in local {
        rows.push([name.clone(), at(name).unwrap_or_else(|| "no".into())]);
    }
    for m in applied {
        let name = field(&m["name"]);
        if !local.iter().any(|(n, _)| *n == name) {
            let when = format!("{} (not in {})", field(&m["applied_at"]), dir.display());
            rows.push([name, when]);
        }
    }
    table(&rows)
}

fn applied_text(answer: &Value, db: &str) -> String {
    let names = |key: &str| -> Vec<String> {
        (answer[key].as_array().into_iter().flatten())
            .map(field)
            .collect()
    };
    let (applied, already) = (names("applied"), names("already_applied"));
    let mut out = String::new();
    for name in &applied {
        let _ = writeln!(out, "applied {name}");
    }
    let _ = writeln!(
        out,
        "{db}: {} applied, {} applied before",
        applied.len(),
        already.len()
    );
    out
}

/// The folder's migrations, `(file name, path)`, in order of name.
fn folder(dir: &Path) -> Result<Vec<(String, PathBuf)>, CommandError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CommandError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut all: Vec<(String, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            name.ends_with(".sql").then_some((name, path))
        })
        .collect();
    all.sort();
    Ok(all)
}

/// `<dir>/NNNN_<name>.sql`, numbered after the folder's last.
fn create(dir: &Path, name: &str) -> Result<PathBuf, CommandError> {
    let failed = |source| CommandError::Read {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let next = folder(dir)?
        .iter()
        .filter_map(|(n, _)| n.split('_').next()?.parse::<u32>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{next:04}_{slug}.sql"));
    let body = format!("-- Migration number: {next:04}\n-- {name}\n");
    std::fs::write(&path, body).map_err(failed)?;
    Ok(path)
}

async fn text(path: &Path) -> Result<String, CommandError> {
    let bytes: Bytes = read(path).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| CommandError::Read {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
    })
}

fn field(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        Value::Object(o) if o.contains_key("blob") => {
            let hex = o["blob"].as_str().unwrap_or("");
            match hex.len() > 32 {
                true => format!("X'{}…' ({} bytes)", &hex[..32], hex.len() / 2),
                false => format!("X'{hex}'"),
            }
        }
        v => v.to_string(),
    }
}

fn list_table(answer: &Value) -> String {
    let mut rows = vec![[
        "DATABASE".to_string(),
        "PLUGINS".into(),
        "CHANGES".into(),
        "BOOKMARK".into(),
        "SIZE HERE".into(),
    ]];
    for db in answer["databases"].as_array().into_iter().flatten() {
        let plugins: Vec<String> = (db["plugins"].as_array().into_iter().flatten())
            .map(field)
            .collect();
        rows.push([
            field(&db["name"]),
            if plugins.is_empty() {
                "-".into()
            } else {
                plugins.join(",")
            },
            field(&db["changes"]),
            field(&db["bookmark"]),
            format!("{} KiB", db["local_bytes"].as_u64().unwrap_or(0) / 1024),
        ]);
    }
    if rows.len() == 1 {
        return "no SQL databases: a plugin's manifest grants one (grants.sql = [\"name\"])\n"
            .into();
    }
    table(&rows)
}

/// Each statement's rows as a table, or what it changed.
fn results_text(answer: &Value) -> String {
    let mut out = String::new();
    for result in answer["results"].as_array().into_iter().flatten() {
        let columns: Vec<String> = (result["columns"].as_array().into_iter().flatten())
            .map(field)
            .collect();
        if columns.is_empty() {
            let _ = writeln!(out, "{} rows changed", result["changes"]);
            continue;
        }
        let rows = result["rows"].as_array().map_or(&[][..], Vec::as_slice);
        let mut lines = vec![columns.join(" | ")];
        for row in rows {
            let cells: Vec<String> = (row.as_array().into_iter().flatten()).map(field).collect();
            lines.push(cells.join(" | "));
        }
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "({} rows)", rows.len());
    }
    let _ = writeln!(out, "bookmark {}", field(&answer["bookmark"]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let first = create(dir.path(), "Create notes").unwrap();
        assert!(first.ends_with("0001_create_notes.sql"), "{first:?}");
        std::fs::write(dir.path().join("0007_x.sql"), "").unwrap();
        let next = create(dir.path(), "add index").unwrap();
        assert!(next.ends_with("0008_add_index.sql"), "{next:?}");
        let names: Vec<String> = folder(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(
            names,
            ["0001_create_notes.sql", "0007_x.sql", "0008_add_index.sql"]
        );
    }
}
