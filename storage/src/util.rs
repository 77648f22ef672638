//! Small helpers every layer uses, from the bottom one up: the wall
//! clock, hashes, names for temporary files, private files and folders.

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

/// Creates `dir` (and its parents) if needed and makes it private to this
/// user (0700): it holds every user's documents, KV values, room logs and
/// keys. A folder that was open to others is tightened, and said so.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        tracing::warn!(
            dir = %dir.display(),
            "the data folder was readable by other users ({mode:o}); it is 700 now"
        );
    }
    Ok(())
}

/// Makes the file at `path` readable and writable by this user only (0600).
pub fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What a lock guards, even if a holder panicked with it: one panicked
/// request must not fail every later one that takes the lock. spike's
/// locks are held for short changes of a table or a counter, which a panic
/// elsewhere in the request does not leave half made (the locking rules:
/// `docs/ARCHITECTURE.md`).
pub fn unpoisoned<T>(locked: std::sync::LockResult<T>) -> T {
    locked.unwrap_or_else(std::sync::PoisonError::into_inner)
}
