//! What can go wrong with a shard, naming the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{prefix}: {why}")]
    Invalid { prefix: PathBuf, why: String },
}

impl ShardError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ShardError::Io { path, source }
    }
}

pub type Result<T, E = ShardError> = std::result::Result<T, E>;
