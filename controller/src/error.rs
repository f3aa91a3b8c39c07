use std::path::PathBuf;

/// Errors of the controller and controllerctl.
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
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("results file {path}: {reason}")]
    BadResults { path: PathBuf, reason: String },
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
    /// A report could not be drawn.
    #[error("report: {0}")]
    Report(String),
    /// A replicate sweep was submitted while no connected agent matches its placement.
    #[error("no connected agent matches the sweep's [placement] ({0}); nothing to replicate on")]
    NoMatchingAgent(String),
}

impl ControllerError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ControllerError::Io {
            path: path.into(),
            source,
        }
    }
}
