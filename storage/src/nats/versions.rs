//! Plugin versions: every component ever activated in the Object Store
//! `P_components` by SHA-256, each plugin's history in the KV bucket
//! `P_plugins` (which every node watches to follow pushes: `cluster`).

use async_nats::jetstream::object_store::{InfoErrorKind, ObjectMetadata};
use tokio::io::AsyncReadExt;

use super::names::token;
use super::stream::{last, publish, subject};
use super::{NatsBackend, OrFailed};
use crate::{Result, StorageError, VersionHistory, VersionStore};

#[async_trait::async_trait]
impl VersionStore for NatsBackend {
    async fn history(&self, plugin: &str) -> Result<VersionHistory> {
        match last(&self.inner.plugins, &token(plugin)).await?.0 {
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| StorageError::Corrupt(format!("version history of {plugin}: {e}"))),
            None => Ok(VersionHistory::default()),
        }
    }

    async fn save_history(&self, plugin: &str, history: &VersionHistory) -> Result<()> {
        let raw = serde_json::to_vec(history).expect("a version history encodes");
        let subject = subject(&self.inner.plugins, &token(plugin));
        publish(&self.inner.js, subject, raw.into(), None, None).await?;
        Ok(())
    }

    async fn keep(&self, sha256: &str, bytes: &[u8]) -> Result<()> {
        match self.inner.components.info(sha256).await {
            Ok(info) if !info.deleted => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == InfoErrorKind::NotFound => {}
            Err(e) => return Err(e).or_failed(format!("looking up version {sha256}")),
        }
        let meta = ObjectMetadata {
            name: sha256.to_string(),
            ..Default::default()
        };
        self.inner
            .components
            .put(meta, &mut &bytes[..])
            .await
            .or_failed(format!("storing version {sha256}"))?;
        Ok(())
    }

    async fn load(&self, sha256: &str) -> Result<Vec<u8>> {
        let mut object = match self.inner.components.get(sha256).await {
            Ok(object) => object,
            Err(e) if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound => {
                return Err(StorageError::NoSuchVersion {
                    sha256: sha256.to_string(),
                });
            }
            Err(e) => return Err(e).or_failed(format!("loading version {sha256}")),
        };
        let mut bytes = Vec::with_capacity(object.info.size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(StorageError::io(format!("reading version {sha256}")))?;
        Ok(bytes)
    }
}
