//! An upload spooled to a temporary file and hashed as it is written, for
//! the backends that learn an object's name only at commit. Dropped
//! before `finish`, the file goes with it: abandoned bytes were never
//! acknowledged.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Result, StorageError};
use crate::util::unique_suffix;

pub struct Spool {
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    finished: bool,
}

/// A spool's bytes, on disk and synced.
pub struct Spooled {
    pub path: PathBuf,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: u64,
}

impl Spool {
    /// A new empty file in `dir`.
    pub async fn create(dir: &Path) -> Result<Self> {
        let path = dir.join(unique_suffix());
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(StorageError::io("starting an upload"))?;
        Ok(Self {
            file,
            path,
            hasher: Sha256::new(),
            size: 0,
            finished: false,
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .await
            .map_err(StorageError::io("writing an upload"))
    }

    /// Flushes and syncs the file, which from now on is the caller's to
    /// move or remove.
    pub async fn finish(mut self) -> Result<Spooled> {
        self.file
            .flush()
            .await
            .map_err(StorageError::io("flushing an upload"))?;
        self.file
            .sync_all()
            .await
            .map_err(StorageError::io("syncing an upload"))?;
        self.finished = true;
        Ok(Spooled {
            path: self.path.clone(),
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
            size: self.size,
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
