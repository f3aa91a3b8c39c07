//! The results crate's one error enum.

use std::path::{Path, PathBuf};

/// Errors of writing, reading and querying the results folder.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A results file that is not what this version writes (or reads).
    #[error("results file {path}: {reason}")]
    BadResults { path: PathBuf, reason: String },
    /// A query whose parts contradict each other (a usage error to the CLI).
    #[error("{0}")]
    Query(String),
}

impl ResultsError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ResultsError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A [`ResultsError::BadResults`] about `path`.
pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> ResultsError {
    ResultsError::BadResults {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
