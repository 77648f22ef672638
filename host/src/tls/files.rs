//! The certificate and key files (`--tls-cert`, `--tls-key`): read at the
//! start, where a bad file stops the server naming what is wrong, then
//! looked at every `CHECK_EVERY` and read again when either changed (a
//! certbot renewal swaps symlinks, which a file watch on the names would
//! miss). New handshakes get the new certificate; connections open keep
//! theirs. A pair that does not load (the key written, the certificate
//! not yet) keeps the old one served and is tried again at the next look.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use super::{CertStore, Certificate, Source};
use crate::metrics::Metrics;
use crate::util::AbortOnDrop;

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The pair at `cert` and `key`.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Certificate> {
    let chain = std::fs::read(cert).with_context(|| format!("--tls-cert {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("--tls-key {}", key.display()))?;
    Certificate::from_pem(&chain, &key_pem, Source::File).with_context(|| {
        format!(
            "the certificate {} with the key {}",
            cert.display(),
            key.display()
        )
    })
}

/// What changes when a file is replaced (through a symlink too).
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

pub fn watch(
    cert: &Path,
    key: &Path,
    store: &Arc<CertStore>,
    metrics: &Arc<Metrics>,
) -> AbortOnDrop {
    let (cert, key): (PathBuf, PathBuf) = (cert.into(), key.into());
    let (store, metrics) = (store.clone(), metrics.clone());
    AbortOnDrop(tokio::spawn(async move {
        let mut served = (stamp(&cert), stamp(&key));
        let mut failed = None;
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let now = (stamp(&cert), stamp(&key));
            if now == served || Some(now) == failed {
                continue;
            }
            let (c, k) = (cert.clone(), key.clone());
            match tokio::task::spawn_blocking(move || load(&c, &k)).await {
                Ok(Ok(loaded)) => {
                    tracing::info!(
                        cert = %cert.display(),
                        names = ?loaded.names,
                        expires = loaded.expires_unix(),
                        "TLS certificate reloaded"
                    );
                    metrics.tls.served(&loaded);
                    store.set_file(loaded);
                    served = now;
                    failed = None;
                }
                Ok(Err(e)) => {
                    tracing::warn!("TLS certificate not reloaded, the old one still served: {e:#}");
                    failed = Some(now);
                }
                Err(_) => {}
            }
        }
    }))
}
