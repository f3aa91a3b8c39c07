//! The report crate's one error enum.

use std::path::PathBuf;

use fleetbench_results::ResultsError;

/// Errors of reading results for a report and drawing or writing it.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("report: {0}")]
    Draw(String),
}

impl ReportError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}
