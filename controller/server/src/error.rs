use std::path::PathBuf;

/// Errors of the controller daemon.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    Spec(#[from] fleetbench_proto::error::SpecError),
    #[error("protocol: {0}")]
    Proto(#[from] fleetbench_proto::ProtoError),
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading the results folder failed.
    #[error(transparent)]
    Results(#[from] fleetbench_results::ResultsError),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC: {0}")]
    Status(#[from] tonic::Status),
    #[error("sweep {0} not found")]
    SweepNotFound(String),
    #[error("{0}")]
    Usage(String),
    /// The controller's state store (redb) failed.
    #[error("state store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    /// The state store holds something this controller cannot read.
    #[error("state store {path}: {reason}")]
    BadStore { path: PathBuf, reason: String },
    /// A report page could not be drawn.
    #[error(transparent)]
    Report(#[from] fleetbench_report::ReportError),
    /// A replicate sweep was submitted while no connected agent matches its placement.
    #[error("no connected agent matches the sweep's [placement] ({0}); nothing to replicate on")]
    NoMatchingAgent(String),
    /// The results mirror (S3) could not upload a file; retried, the local file stays.
    #[error("results mirror: {0}")]
    Mirror(String),
    /// A background task of the controller failed (e.g. reading an archived sweep back).
    #[error("{0}")]
    Internal(String),
}

impl ControllerError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ControllerError::Io {
            path: path.into(),
            source,
        }
    }
}
