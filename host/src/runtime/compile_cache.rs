//! Precompiled components on disk, so a restart or a rollback does not
//! compile again.
//!
//! An entry is named by the component's SHA-256 and a key of the engine,
//! `Engine::precompile_compatibility_hash`: the wasmtime version, target,
//! Cranelift settings and enabled features. Anything that would make an
//! artifact unusable changes the name, and a stale or damaged file fails to
//! deserialize and is simply compiled again.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Whether a load came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

/// The on-disk cache of compiled components.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// A `Hasher` over SHA-256: stable across Rust versions, unlike `DefaultHasher`.
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = StableHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = hex::encode(&h.0.finalize()[..8]);
        Self { dir, engine_key }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes` (whose hash is `sha256`), from the
    /// cache or freshly compiled (and then cached). Blocking: call it off the
    /// async workers.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, CacheOutcome), String> {
        let path = self.path(sha256);
        if path.exists() {
            // SAFETY: files in this folder are written only by `store` below,
            // from `Component::serialize` of this same engine configuration
            // (the name carries its key). wasmtime still checks the header.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "unusable cache entry, recompiling: {e}")
                }
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
        if let Err(e) = self.store(&component, &path) {
            tracing::warn!(path = %path.display(), "could not write the compile cache: {e}");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(&self, component: &Component, path: &PathBuf) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let tmp = path.with_extension(crate::util::unique_suffix());
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}
