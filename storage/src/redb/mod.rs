//! The embedded backend: one redb database and the files beside it. The
//! only code that names redb or the layout of the data directory.
//!
//! ```text
//! data/
//!   spike.redb          KV entries and expiry index, blob metadata and
//!                       reference counts, plugin version history, room
//!                       logs, snapshots and state
//!   blobs/ab/abcdef…    blob bodies, content-addressed by SHA-256
//!   blobs/tmp/          uploads in progress (cleared at start)
//!   plugin-versions/    every component version ever activated, by SHA-256
//! ```
//!
//! redb commits are durable (fsync) by default, which is what lets a write
//! return only once it is on disk. Commits, file I/O, and every read whose
//! size has no small bound (a KV value of up to 25 MiB, a listing that may
//! pass over many expired keys) run on tokio's blocking pool (`blocking`).
//! Reads of one small record run in place on the async worker: a blob's or
//! a room log's head, a room's state value (64 KiB at most), a usage
//! ledger entry, a plugin's version history (a few KB: 50 versions).

mod blob;
mod group_commit;
mod kv;
mod rooms;
mod usage;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, TableDefinition};

use super::{Liveness, Page, Result, StorageError, StorageSettings, Usage};

/// KV entries: (namespace, key) -> encoded entry (see `kv::codec`).
const KV_ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv_entries");
/// KV expiry index: (expires_at_ms, namespace, key) -> ().
const KV_EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("kv_expiry");
/// Blob objects: (bucket, key) -> JSON `blob::Record`.
const BLOB_OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("blob_objects");
/// How many objects point at each content-addressed body: sha256 hex -> count.
const BLOB_REFS: TableDefinition<&str, u64> = TableDefinition::new("blob_refs");
/// Plugin version history: plugin name -> JSON `VersionHistory`.
const PLUGIN_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugin_versions");

/// The embedded backend; implements every storage trait.
pub struct RedbBackend {
    inner: Arc<Inner>,
    /// The room log's writer thread (see `rooms`).
    appender: rooms::Appender,
    /// The KV's writer thread (see `kv`).
    kv_writer: kv::KvWriter,
    /// The expiry sweeper, stopped when the backend drops.
    sweeper: tokio::task::AbortHandle,
}

struct Inner {
    db: ClosingDb,
    root: PathBuf,
    /// Serialises "rename into place + commit refcount" against "commit
    /// refcount + unlink", so a body is never unlinked while an upload of the
    /// same bytes is being committed (see `blob`).
    blob_fs: Mutex<()>,
}

impl Drop for RedbBackend {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// The database, and a flag raised once it has closed. An `Arc`'s count
/// reaches zero before its value is dropped, and closing the database
/// (which releases its file lock) takes a moment: whoever waits to open the
/// same folder again must wait for the flag, not for the count.
struct ClosingDb {
    db: Option<Database>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl std::ops::Deref for ClosingDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.db
            .as_ref()
            .expect("the database is open until dropped")
    }
}

impl Drop for ClosingDb {
    fn drop(&mut self) {
        drop(self.db.take());
        self.closed.send_replace(true);
    }
}

fn backend_error(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Backend(e.into().to_string())
}

/// The one conversion of redb's error types.
macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                backend_error(e)
            }
        }
    )*};
}
redb_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl RedbBackend {
    /// Opens (creating if needed) the data directory at `root`: drops
    /// uploads that were in progress when the host stopped (never
    /// acknowledged), removes blob bodies no object points at (a crash
    /// between an upload's rename and its commit), and starts the expiry
    /// sweeper. Call it inside a tokio runtime.
    pub fn open(root: &Path, settings: &StorageSettings) -> Result<Arc<Self>> {
        let blobs = root.join("blobs");
        let tmp = blobs.join("tmp");
        for dir in [root, &blobs, &root.join("plugin-versions")] {
            std::fs::create_dir_all(dir).map_err(StorageError::io(dir.display().to_string()))?;
        }
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(StorageError::io(tmp.display().to_string()))?;
        }
        std::fs::create_dir_all(&tmp).map_err(StorageError::io(tmp.display().to_string()))?;
        versions::remove_partial_writes(root)?;

        let db_path = root.join("spike.redb");
        let db = Database::create(&db_path)
            .map_err(|e| StorageError::Backend(format!("{}: {e}", db_path.display())))?;
        crate::util::private_file(&db_path)
            .map_err(StorageError::io(db_path.display().to_string()))?;
        // Create every table once so that read transactions can open them.
        let txn = db.begin_write()?;
        txn.open_table(KV_ENTRIES)?;
        txn.open_table(KV_EXPIRY)?;
        txn.open_table(BLOB_OBJECTS)?;
        txn.open_table(BLOB_REFS)?;
        txn.open_table(PLUGIN_VERSIONS)?;
        txn.open_table(rooms::ROOM_EVENTS)?;
        txn.open_table(rooms::ROOM_HEADS)?;
        txn.open_table(rooms::ROOM_SNAPSHOTS)?;
        txn.open_table(rooms::ROOM_STATE)?;
        txn.open_table(usage::USAGE)?;
        txn.commit()?;
        usage::rebuild(&db)?;
        let inner = Arc::new(Inner {
            db: ClosingDb {
                db: Some(db),
                closed: Liveness::flag(),
            },
            root: root.to_path_buf(),
            blob_fs: Mutex::new(()),
        });
        match blob::sweep_orphans(&inner) {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} unreferenced blob bodies"),
            Err(e) => tracing::warn!("sweeping blob bodies: {e}"),
        }
        let sweeper = tokio::spawn(kv::run_expiry_sweeper(
            Arc::downgrade(&inner),
            settings.kv_sweep_interval,
        ))
        .abort_handle();
        let appender = rooms::start_appender(Arc::downgrade(&inner))
            .map_err(StorageError::io("starting the room log writer"))?;
        let kv_writer = kv::start_writer(Arc::downgrade(&inner))
            .map_err(StorageError::io("starting the KV writer"))?;
        Ok(Arc::new(Self {
            inner,
            appender,
            kv_writer,
            sweeper,
        }))
    }

    pub(super) fn liveness(&self) -> Liveness {
        Liveness(self.inner.db.closed.subscribe())
    }
}

impl Inner {
    /// What the ledger says `name` holds.
    fn usage(&self, kind: usage::Kind, name: &str) -> Result<Usage> {
        let txn = redb::ReadableDatabase::begin_read(&*self.db)?;
        usage::get(&txn.open_table(usage::USAGE)?, kind, name)
    }
}

/// One page of a table keyed by (scope, key), the listing KV namespaces
/// and blob buckets share: the keys of `scope` that start with `prefix`,
/// after `cursor`, each made an item by `item` (or skipped, if it says
/// `None`).
fn list_scope<T>(
    table: &impl redb::ReadableTable<(&'static str, &'static str), &'static [u8]>,
    scope: &str,
    prefix: &str,
    cursor: Option<&str>,
    limit: usize,
    mut item: impl FnMut(&str, &[u8]) -> Result<Option<T>>,
) -> Result<Page<T>> {
    use std::ops::Bound;
    let start = match cursor {
        // A cursor before the prefix would only list keys outside it.
        Some(c) if c >= prefix => Bound::Excluded((scope, c)),
        _ => Bound::Included((scope, prefix)),
    };
    let items = table
        .range::<(&str, &str)>((start, Bound::Unbounded))?
        .map(|entry| {
            let (k, v) = entry?;
            let (k_scope, key) = k.value();
            if k_scope != scope {
                return Ok(None); // the next scope: the end
            }
            Ok(Some((key.to_string(), item(key, v.value())?)))
        })
        .take_while(|entry| !matches!(entry, Ok(None)))
        .filter_map(|entry| match entry {
            Ok(Some((key, Some(item)))) => Some(Ok((key, item))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        });
    Page::collect(items, prefix, limit)
}

/// Runs blocking storage work (redb commits fsync, file I/O) on tokio's
/// blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Backend(format!("storage task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backends;

    fn settings() -> StorageSettings {
        StorageSettings {
            kv_sweep_interval: std::time::Duration::from_millis(50),
        }
    }

    fn open(dir: &Path) -> Backends {
        Backends::open_redb(dir, &settings()).unwrap()
    }

    crate::conformance::suite!(open);
}
