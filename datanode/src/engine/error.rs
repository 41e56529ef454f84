//! Why a request to a region failed, and what kind of failure that is to a client
//! (`EngineError::kind`, the engine's one mapping to `metronome_core::error`).

use super::*;

/// Why a request to a region failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("region {0} does not exist")]
    RegionNotFound(RegionId),
    #[error("region {0} already exists with a different schema")]
    RegionExists(RegionId),
    #[error("region {0} is closed on this datanode (open it to serve it again)")]
    RegionClosed(RegionId),
    #[error("region {region} is quarantined: {reason}")]
    Quarantined { region: RegionId, reason: String },
    #[error("invalid write to region {region}, {fault}")]
    InvalidWrite { region: RegionId, fault: BatchFault },
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("invalid scan of region {region}: {reason}")]
    InvalidScan { region: RegionId, reason: String },
    #[error(
        "the shard is overloaded ({memory_bytes} bytes in memtables, limit {limit}); retry later"
    )]
    Overloaded { memory_bytes: usize, limit: usize },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("storage error: {0}")]
    Io(String),
    /// A stored file failed its checks (it does not parse, or its contents do not
    /// decode): retrying reads the same bytes.
    #[error("corrupt {file}: {reason}")]
    Corrupt { file: String, reason: String },
    #[error("the datanode is unavailable: {0}")]
    Unavailable(String),
    /// A fault of the datanode's own (a shard answering a request with another's reply).
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The kind of failure, as every layer above sees it: the engine's one mapping.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::RegionNotFound(_) => ErrorKind::NotFound,
            // A closed region is not served here: a client with a route to it should
            // learn where it is now.
            EngineError::RegionClosed(_) => ErrorKind::WrongRoute,
            EngineError::Quarantined { .. } => ErrorKind::Quarantined,
            EngineError::RegionExists(_)
            | EngineError::InvalidWrite { .. }
            | EngineError::InvalidSchema(_)
            | EngineError::InvalidScan { .. }
            | EngineError::Wal(WalError::TooLarge { .. }) => ErrorKind::Invalid,
            EngineError::Overloaded { .. } | EngineError::Wal(WalError::Overloaded { .. }) => {
                ErrorKind::Overloaded
            }
            // A failed WAL makes the shard restart; the same request succeeds afterwards.
            EngineError::Unavailable(_) | EngineError::Wal(WalError::Failed(_)) => {
                ErrorKind::Unavailable
            }
            EngineError::Corrupt { .. } => ErrorKind::Corrupt,
            EngineError::Wal(WalError::Io(_)) | EngineError::Io(_) | EngineError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// Whether the client should retry the same request later.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// An SST's bytes that failed their checks.
pub(super) fn corrupt_sst(key: &str) -> impl FnOnce(String) -> EngineError + '_ {
    move |reason| EngineError::Corrupt {
        file: format!("SST {key}"),
        reason,
    }
}

impl From<std::io::Error> for EngineError {
    fn from(error: std::io::Error) -> EngineError {
        EngineError::Io(error.to_string())
    }
}
