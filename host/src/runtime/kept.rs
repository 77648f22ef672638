//! Serving a kept version again: a rollback to the one before the active
//! one, or an operator's choice of any kept version (forward too). The
//! history only moves its active mark (`versions`); nothing is forgotten.

use std::sync::Arc;

use super::loader::{LoadError, LoadedPlugin};
use super::registry::PluginRegistry;
use super::slot::PluginSlot;
use super::versions;
use crate::storage::{VersionHistory, VersionRecord};

impl PluginRegistry {
    /// Goes back to the version before the active one; the newer ones
    /// stay kept, to `activate` again.
    pub async fn rollback(&self, name: &str) -> Result<Arc<LoadedPlugin>, LoadError> {
        let (slot, _swap) = self.locked_slot(name).await?;
        let mut history = self.versions.history(name).await?;
        let previous = versions::previous(&history)
            .cloned()
            .ok_or(LoadError::NoPreviousVersion)?;
        self.switch_to(&slot, &mut history, previous).await
    }

    /// Activates the kept version of `name` whose hash starts with
    /// `prefix`: back, or forward again after a rollback.
    pub async fn activate_kept(
        &self,
        name: &str,
        prefix: &str,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let (slot, _swap) = self.locked_slot(name).await?;
        let mut history = self.versions.history(name).await?;
        let kept = versions::find(&history, prefix)
            .cloned()
            .map_err(LoadError::NoSuchVersion)?;
        if let Some(active) = slot.active().filter(|a| a.sha256 == kept.sha256) {
            return Ok(active);
        }
        self.switch_to(&slot, &mut history, kept).await
    }

    /// Loads a kept version and marks it active in the history.
    async fn switch_to(
        &self,
        slot: &PluginSlot,
        history: &mut VersionHistory,
        kept: VersionRecord,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let bytes = self.versions.load(&kept.sha256).await?;
        let loaded = self
            .load(
                &slot.manifest,
                bytes.into(),
                kept.sha256.clone(),
                kept.source,
            )
            .await?;
        versions::mark_active(history, &kept.sha256);
        self.versions
            .save_history(&slot.manifest.name, history)
            .await?;
        Ok(self.activate(slot, loaded))
    }
}
