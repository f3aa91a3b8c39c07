/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    #[error("protocol: {0}")]
    Proto(#[from] fleetbench_proto::ProtoError),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The controller could not be dialed (address, TLS files, connection).
    #[error("{0}")]
    Dial(#[from] fleetbench_proto::channel::DialError),
    #[error("gRPC: {0}")]
    Status(#[from] tonic::Status),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("engine failed to start: {message}")]
    EngineStart {
        message: String,
        exit_code: Option<i32>,
        log_tail: Vec<String>,
    },
    #[error("engine: {0}")]
    Engine(String),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("prompt: {0}")]
    Prompt(String),
    /// A dataset file (see [`crate::load::dataset`]) could not be found, read or parsed.
    #[error("dataset: {0}")]
    Dataset(String),
    /// The results spool (see [`crate::link::spool`]) could not be opened, written or read.
    #[error("results spool: {0}")]
    Spool(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("cancelled")]
    Cancelled,
}
