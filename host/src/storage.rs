//! The one redb database every capability shares, and the folders beside it.
//!
//! Layout of the data directory:
//!
//! ```text
//! data/
//!   spike.redb          KV entries and expiry index, blob metadata and
//!                       reference counts, plugin version history
//!   blobs/ab/abcdef…    blob bodies, content-addressed by SHA-256
//!   blobs/tmp/          uploads in progress (cleared at start)
//!   plugin-versions/    every component version ever activated, by SHA-256
//!                       (and `*.tmp`: admin uploads in progress)
//!   compile-cache/      precompiled components (see runtime::compile_cache)
//! ```
//!
//! redb commits are durable (fsync) by default, which is what lets the host
//! acknowledge a write only after it is on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, TableDefinition};

/// KV entries: (namespace, key) -> encoded entry (see `caps::kv::codec`).
pub const KV_ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv_entries");
/// KV expiry index: (expires_at_ms, namespace, key) -> ().
pub const KV_EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("kv_expiry");
/// Blob objects: (bucket, key) -> JSON `caps::blob::ObjectRecord`.
pub const BLOB_OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("blob_objects");
/// How many objects point at each content-addressed body: sha256 hex -> count.
pub const BLOB_REFS: TableDefinition<&str, u64> = TableDefinition::new("blob_refs");
/// Plugin version history: plugin name -> JSON `runtime::registry::VersionHistory`.
pub const PLUGIN_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugin_versions");

/// Errors opening or using the data directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Database { path: PathBuf, source: redb::Error },
    #[error("database: {0}")]
    Redb(#[from] redb::Error),
}

impl From<redb::TransactionError> for StorageError {
    fn from(e: redb::TransactionError) -> Self {
        Self::Redb(e.into())
    }
}
impl From<redb::TableError> for StorageError {
    fn from(e: redb::TableError) -> Self {
        Self::Redb(e.into())
    }
}
impl From<redb::StorageError> for StorageError {
    fn from(e: redb::StorageError) -> Self {
        Self::Redb(e.into())
    }
}
impl From<redb::CommitError> for StorageError {
    fn from(e: redb::CommitError) -> Self {
        Self::Redb(e.into())
    }
}

/// The opened data directory: the database and the paths of the file stores.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<StorageInner>,
}

struct StorageInner {
    db: Database,
    root: PathBuf,
}

impl Storage {
    /// Opens (creating if needed) the data directory at `root`.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { path, source }
        };
        for dir in [
            root.to_path_buf(),
            root.join("blobs"),
            root.join("plugin-versions"),
            root.join("compile-cache"),
        ] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        // Uploads that were in progress when the host stopped were never
        // acknowledged: drop them.
        let tmp = root.join("blobs").join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        // Likewise uploads of plugin versions and cache entries that were
        // being written (always to `*.tmp`, then renamed).
        for dir in [root.join("plugin-versions"), root.join("compile-cache")] {
            for entry in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }

        let db_path = root.join("spike.redb");
        let db = Database::create(&db_path).map_err(|e| StorageError::Database {
            path: db_path.clone(),
            source: e.into(),
        })?;
        // Create every table once so that read transactions can open them.
        let txn = db.begin_write()?;
        txn.open_table(KV_ENTRIES)?;
        txn.open_table(KV_EXPIRY)?;
        txn.open_table(BLOB_OBJECTS)?;
        txn.open_table(BLOB_REFS)?;
        txn.open_table(PLUGIN_VERSIONS)?;
        txn.commit()?;
        Ok(Self {
            inner: Arc::new(StorageInner {
                db,
                root: root.to_path_buf(),
            }),
        })
    }

    /// Tells whether this storage is still open anywhere (the database
    /// file is locked until the last clone drops).
    pub fn liveness(&self) -> StorageLiveness {
        StorageLiveness(Arc::downgrade(&self.inner))
    }

    /// The redb database.
    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where blob bodies live.
    pub fn blob_dir(&self) -> PathBuf {
        self.inner.root.join("blobs")
    }

    /// Where uploads in progress are staged (same file system as `blob_dir`,
    /// so that finishing an upload is a rename).
    pub fn blob_tmp_dir(&self) -> PathBuf {
        self.inner.root.join("blobs").join("tmp")
    }

    /// Where activated component versions are kept.
    pub fn plugin_versions_dir(&self) -> PathBuf {
        self.inner.root.join("plugin-versions")
    }

    /// Where precompiled components are cached.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.inner.root.join("compile-cache")
    }
}

/// See `Storage::liveness`.
#[derive(Clone)]
pub struct StorageLiveness(std::sync::Weak<StorageInner>);

impl StorageLiveness {
    pub fn is_open(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A suffix for a temporary file that no other writer in any spike process
/// uses: write to `name.<suffix>`, then rename into place.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
