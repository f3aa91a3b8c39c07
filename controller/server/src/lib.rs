//! fleetbench controller daemon: receives sweeps, assigns points to agents over gRPC, and
//! turns the per-request records agents stream back into Parquet results (through
//! `fleetbench-results`). Depends on neither the CLI nor the agent.
//!
//! Modules, one concept each: [`auth`] (who may call what), [`state`] (sweeps, points, agents, scheduling), [`store`]
//! (durable state, redb), [`service`] (shared controller handle), [`agent_service`] and
//! [`control_service`] (the two gRPC services), [`writer`] (Parquet writes, then
//! acknowledgements), [`http`] (read-only report pages, drawn by `fleetbench-report`,
//! over TLS through [`tls_listener`] when the controller has a certificate),
//! [`metrics`] (Prometheus metrics, on `--metrics-addr`), [`mirror`] (the optional S3
//! copy of the results folder, `--results-s3`), [`server`] (`run`).

pub mod agent_service;
pub mod auth;
pub mod control_service;
pub mod error;
pub mod http;
pub mod metrics;
pub mod mirror;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod tls_listener;
pub mod writer;

pub use error::ControllerError;
pub use server::run;
pub use service::{ControllerConfig, TlsFiles};
