//! Plugin versions on redb and files: the bytes of every version ever
//! activated in `plugin-versions/<sha256>.wasm`, each plugin's history in
//! the `plugin_versions` table.

use std::path::{Path, PathBuf};

use super::{Inner, PLUGIN_VERSIONS, RedbBackend, blocking};
use crate::util::unique_suffix;
use crate::{Result, StorageError, VersionHistory, VersionStore};

impl Inner {
    fn version_path(&self, sha256: &str) -> PathBuf {
        self.root
            .join("plugin-versions")
            .join(format!("{sha256}.wasm"))
    }
}

/// Removes version files that were being written when the host stopped
/// (always written to `*.tmp`, then renamed).
pub(super) fn remove_partial_writes(root: &Path) -> Result<()> {
    let dir = root.join("plugin-versions");
    let entries = std::fs::read_dir(&dir).map_err(StorageError::io(dir.display().to_string()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl VersionStore for RedbBackend {
    async fn history(&self, plugin: &str) -> Result<VersionHistory> {
        let txn = redb::ReadableDatabase::begin_read(&*self.inner.db)?;
        let table = txn.open_table(PLUGIN_VERSIONS)?;
        match table.get(plugin)? {
            Some(raw) => serde_json::from_slice(raw.value())
                .map_err(|e| StorageError::Corrupt(format!("version history of {plugin}: {e}"))),
            None => Ok(VersionHistory::default()),
        }
    }

    async fn save_history(&self, plugin: &str, history: &VersionHistory) -> Result<()> {
        let raw = serde_json::to_vec(history)
            .map_err(|e| StorageError::Corrupt(format!("encoding a version history: {e}")))?;
        let (inner, plugin) = (self.inner.clone(), plugin.to_string());
        blocking(move || {
            let txn = inner.db.begin_write()?;
            txn.open_table(PLUGIN_VERSIONS)?
                .insert(plugin.as_str(), raw.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn keep(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        let path = self.inner.version_path(sha256);
        if path.exists() {
            return Ok(());
        }
        let bytes = bytes.to_vec();
        blocking(move || {
            // Unique per call: two plugins may keep the same bytes at once.
            let tmp = path.with_extension(unique_suffix());
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(StorageError::io(format!("keeping {}", path.display())))
        })
        .await
    }

    async fn load(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.inner.version_path(sha256);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NoSuchVersion {
                    sha256: sha256.to_string(),
                })
            }
            Err(e) => Err(StorageError::io(format!("reading {}", path.display()))(e)),
        }
    }
}
