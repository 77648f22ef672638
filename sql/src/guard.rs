//! A database's connection, opened under the host's guard: durable at
//! commit, bounded (SQLite's own limits, the file's size), timed (a
//! progress handler that interrupts a statement past its deadline, on the
//! thread running it: nothing is left running), and kept inside its file
//! (an authorizer that refuses what reaches outside, and says why).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};

use crate::SqlLimits;
use spike_storage::util::unpoisoned;

/// Pragmas a statement may run: those that read the schema or set what is
/// the connection's own. Everything else (journal and sync modes,
/// `writable_schema`, file and memory settings) is refused.
const ALLOWED_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "foreign_keys",
    "defer_foreign_keys",
    "integrity_check",
    "quick_check",
    "user_version",
    "data_version",
    "collation_list",
    "function_list",
    "pragma_list",
    "page_count",
    "page_size",
    "freelist_count",
    "optimize",
];

/// Functions a statement may not call: they reach outside the database.
const REFUSED_FUNCTIONS: &[&str] = &["load_extension", "readfile", "writefile", "edit"];

/// How many virtual machine steps between two looks at the clock: about
/// a millisecond of work, so a statement ends within a few milliseconds of
/// its deadline.
const STEPS_PER_CHECK: i32 = 10_000;

/// A connection with its guard's state.
pub struct Guarded {
    pub conn: Connection,
    /// When the running statement must end, in milliseconds since `epoch`
    /// (`u64::MAX`: no statement is running).
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    /// What the authorizer refused last, to say why a statement failed.
    refused: Arc<Mutex<Option<String>>>,
    /// Set while the host runs its own transaction statements (a batch's
    /// `BEGIN` and `COMMIT`), which a guest's may not.
    hosting: Arc<AtomicBool>,
    pub limits: SqlLimits,
}

impl Guarded {
    /// Opens (or makes) the database at `path`, guarded.
    pub fn open(path: &Path, limits: &SqlLimits) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        // Durable at commit: the write-ahead log is synced before a commit
        // returns (FULL), so an acknowledged write survives `kill -9` and
        // a power cut.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The owner checkpoints, and only frames its change log holds
        // (`wal`): never SQLite on its own, nor at close.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        bound(&conn, limits)?;
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let epoch = Instant::now();
        let watched = deadline.clone();
        conn.progress_handler(
            STEPS_PER_CHECK,
            Some(move || epoch.elapsed().as_millis() as u64 > watched.load(Ordering::Relaxed)),
        )?;
        let refused = Arc::new(Mutex::new(None));
        let hosting = Arc::new(AtomicBool::new(false));
        authorize(&mut conn, refused.clone(), hosting.clone())?;
        Ok(Self {
            conn,
            deadline,
            epoch,
            refused,
            hosting,
            limits: limits.clone(),
        })
    }

    /// Runs the host's own transaction statements (`BEGIN IMMEDIATE`,
    /// `COMMIT`, `ROLLBACK`, savepoints) or pragma (a checkpoint).
    pub fn host_statement(&self, sql: &str) -> rusqlite::Result<()> {
        self.hosting.store(true, Ordering::Relaxed);
        let done = self.conn.execute_batch(sql);
        self.hosting.store(false, Ordering::Relaxed);
        done
    }

    /// Moves every frame of the WAL into the database file and empties
    /// the WAL: the file alone is then the database (a snapshot's copy).
    /// Only once the change log holds every frame.
    pub fn checkpoint(&self) -> rusqlite::Result<()> {
        self.hosting.store(true, Ordering::Relaxed);
        let done = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            });
        self.hosting.store(false, Ordering::Relaxed);
        match done? {
            0 => Ok(()),
            _ => Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some("the checkpoint could not finish".into()),
            )),
        }
    }

    /// Starts a statement's clock.
    pub fn start_clock(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let limit = self.limits.statement_time.as_millis() as u64;
        self.deadline.store(now + limit, Ordering::Relaxed);
        *unpoisoned(self.refused.lock()) = None;
    }

    /// Stops it.
    pub fn stop_clock(&self) {
        self.deadline.store(u64::MAX, Ordering::Relaxed);
    }

    /// What the authorizer refused since the clock started, if anything.
    pub fn refused(&self) -> Option<String> {
        unpoisoned(self.refused.lock()).take()
    }
}

/// SQLite's own limits, as the host's are: the file's size, a value's
/// and a statement's length, parameters, no attached databases.
fn bound(conn: &Connection, limits: &SqlLimits) -> rusqlite::Result<()> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let pages = limits.max_database_bytes / page_size.max(512) as u64;
    conn.pragma_update(
        None,
        "max_page_count",
        i64::try_from(pages.max(1)).unwrap_or(i64::MAX),
    )?;
    let cap = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, cap(limits.max_value_bytes))?;
    conn.set_limit(
        Limit::SQLITE_LIMIT_SQL_LENGTH,
        cap(limits.max_statement_bytes),
    )?;
    conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, cap(limits.max_params))?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    Ok(())
}

/// The authorizer: what `refusal` names is denied (and noted in
/// `refused`, to say why the statement failed), except the host's own
/// transaction statements and pragmas while `hosting` is raised.
fn authorize(
    conn: &mut Connection,
    refused: Arc<Mutex<Option<String>>>,
    hosting: Arc<AtomicBool>,
) -> rusqlite::Result<()> {
    conn.authorizer(Some(move |context: AuthContext<'_>| {
        let ours = matches!(
            context.action,
            AuthAction::Transaction { .. }
                | AuthAction::Savepoint { .. }
                | AuthAction::Pragma { .. }
        ) && hosting.load(Ordering::Relaxed);
        match refusal(&context.action).filter(|_| !ours) {
            None => Authorization::Allow,
            Some(why) => {
                *unpoisoned(refused.lock()) = Some(why);
                Authorization::Deny
            }
        }
    }))
}

/// Why `action` is refused, if it is.
fn refusal(action: &AuthAction<'_>) -> Option<String> {
    match action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Some(
            "ATTACH and DETACH are not allowed: a statement reaches only its own database".into(),
        ),
        AuthAction::Pragma { pragma_name, .. } => {
            let name = pragma_name.to_ascii_lowercase();
            (!ALLOWED_PRAGMAS.contains(&name.as_str()))
                .then(|| format!("PRAGMA {name} is not allowed: the host sets it"))
        }
        AuthAction::Function { function_name } => {
            let name = function_name.to_ascii_lowercase();
            (REFUSED_FUNCTIONS.contains(&name.as_str()))
                .then(|| format!("{name}() is not allowed: it reaches outside the database"))
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Some(
            "transactions are the host's: run statements that must commit together as a batch"
                .into(),
        ),
        AuthAction::CreateVtable { module_name, .. } => {
            Some(format!("virtual tables ({module_name}) are not allowed"))
        }
        _ => None,
    }
}
