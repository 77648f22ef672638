//! Host capabilities given to plugins, one module per capability.
//!
//! Each module follows the shape of wasmtime's own WASI crates: a context the
//! host owns (`KvCtx`, `BlobCtx`), a borrowed view that implements the
//! generated `Host` traits (`KvView`, `BlobView`), and one `add_to_linker`.
//! Host functions return `wasmtime::Result<Result<T, WitError>>`: the outer
//! error traps the guest (a host bug or a bad handle), the inner one is the
//! WIT `error` variant the guest handles.

pub mod blob;
pub mod grants;
pub mod kv;
pub mod outbound;

pub use crate::bindings::spike::host::types::Error as WitError;
pub use grants::Grants;

/// A capability call that failed in a way the guest should see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CapError {
    /// A storage or I/O failure. The detail goes to the log; the guest gets a
    /// short message, since it has no use for our file paths.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::Internal(format!("{context} failed"))
    }
}

/// The one place capability errors become the WIT variant.
impl From<CapError> for WitError {
    fn from(e: CapError) -> Self {
        match e {
            CapError::AccessDenied(m) => WitError::AccessDenied(m),
            CapError::InvalidInput(m) => WitError::InvalidInput(m),
            CapError::TooLarge(m) => WitError::TooLarge(m),
            CapError::Internal(m) => WitError::Internal(m),
        }
    }
}

macro_rules! storage_errors_are_internal {
    ($($t:ty),*) => {$(
        impl From<$t> for CapError {
            fn from(e: $t) -> Self {
                CapError::internal("storage", e)
            }
        }
    )*};
}
storage_errors_are_internal!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    std::io::Error
);

/// Most entries one `list` call returns (KV keys, blob objects).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// A listing's `limit` argument: 0 means the maximum, more is refused.
pub(crate) fn page_limit(limit: u32) -> Result<usize, CapError> {
    match limit {
        0 => Ok(MAX_LIST_LIMIT as usize),
        l if l > MAX_LIST_LIMIT => Err(CapError::InvalidInput(format!(
            "limit {l} is over the maximum of {MAX_LIST_LIMIT}"
        ))),
        l => Ok(l as usize),
    }
}

/// Runs blocking storage work (redb commits fsync) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CapError> + Send + 'static,
) -> Result<T, CapError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CapError::internal("storage task", e))?
}

/// Adds every capability interface to the linker.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<crate::runtime::RequestState>,
) -> wasmtime::Result<()> {
    kv::add_to_linker(linker, |s| s.kv_view())?;
    blob::add_to_linker(linker, |s| s.blob_view())?;
    Ok(())
}
