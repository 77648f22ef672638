//! Why a statement failed, as the guest is told.

/// Why a call failed. Every SQLite failure is one of these, never a trap.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SqlError {
    /// SQLite refused or failed the statement (its message).
    #[error("{0}")]
    Statement(String),
    /// Past one of the host's limits.
    #[error("{0}")]
    Limit(String),
    /// The statement reaches outside its database.
    #[error("{0}")]
    NotAllowed(String),
    /// The host could not run it (a storage failure); nothing changed.
    #[error("{0}")]
    Internal(String),
}

impl SqlError {
    /// The kind, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SqlError::Statement(_) => "statement",
            SqlError::Limit(_) => "limit",
            SqlError::NotAllowed(_) => "not_allowed",
            SqlError::Internal(_) => "internal",
        }
    }

    /// The same error, its message after `place` (a batch's statement).
    pub fn at(self, place: &str) -> Self {
        let with = |m: String| format!("{place}: {m}");
        match self {
            SqlError::Statement(m) => SqlError::Statement(with(m)),
            SqlError::Limit(m) => SqlError::Limit(with(m)),
            SqlError::NotAllowed(m) => SqlError::NotAllowed(with(m)),
            SqlError::Internal(m) => SqlError::Internal(with(m)),
        }
    }
}
