//! controllerctl's one error enum, and the exit code each error means.

use std::path::PathBuf;

use fleetbench_controller::ControllerError;
use fleetbench_report::ReportError;
use fleetbench_results::ResultsError;

/// Errors of controllerctl.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The sweep file is invalid.
    #[error("{0}")]
    Spec(#[from] fleetbench_proto::error::SpecError),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The controller could not be dialed.
    #[error("{0}")]
    Dial(#[from] fleetbench_proto::channel::DialError),
    #[error("gRPC: {0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Results(ResultsError),
    #[error(transparent)]
    Report(ReportError),
    /// The in-process controller of `controllerctl local` failed.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// A task of controllerctl's own ended abnormally.
    #[error("internal: {0}")]
    Internal(String),
}

impl CliError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<ResultsError> for CliError {
    fn from(e: ResultsError) -> Self {
        match e {
            // Contradicting filters are a usage error of the command line that built them.
            ResultsError::Query(m) => CliError::Usage(m),
            e => CliError::Results(e),
        }
    }
}

impl From<ReportError> for CliError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Results(e) => CliError::from(e),
            e => CliError::Report(e),
        }
    }
}
