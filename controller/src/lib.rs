//! fleetbench controller: receives sweeps, assigns points to agents over gRPC, and turns
//! the per-request records agents stream back into Parquet results.

pub mod error;
pub mod results;
pub mod summary;

pub use error::ControllerError;
