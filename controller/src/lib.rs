//! fleetbench controller: receives sweeps, assigns points to agents over gRPC, and turns
//! the per-request records agents stream back into Parquet results.
//!
//! Modules, one concept each: [`state`] (sweeps, points, agents, scheduling), [`store`] (durable state, redb),
//! [`service`] (shared controller handle), [`agent_service`] and [`control_service`]
//! (the two gRPC services), [`writer`] (Parquet writes, then acknowledgements),
//! [`summary`] (point summaries), [`results`] (Parquet layout), [`report`] (plots and
//! HTML reports, and their HTTP pages), [`server`] (`run`),
//! [`cli`] (controllerctl).

pub mod agent_service;
pub mod cli;
pub mod control_service;
pub mod error;
pub mod report;
pub mod results;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod summary;
pub mod writer;

pub use error::ControllerError;
pub use server::run;
pub use service::ControllerConfig;
