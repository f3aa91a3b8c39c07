//! fleetbench's results format: the Hive-partitioned Parquet folder the controller writes
//! (`<root>/model=<slug>/gpus=<N>/<sweep-id>.{requests,points,metrics}.parquet`), its
//! schemas and encoding, reads, point summaries with their percentiles and verdicts, and a
//! clap-free query (filter, sort, group, CSV/JSON/table text) that `controllerctl`, the
//! reports and the controller's HTTP pages share.
//!
//! Modules, one concept each, each using only those listed before it:
//! [`error`]; [`metadata`] (the files' typed key-value metadata); [`summary`] (point
//! summaries, with [`summary::percentiles`] and [`summary::verdict`]); [`layout`] (the
//! Hive layout: partition folders, file names, finding result files); [`schema`] (the
//! Arrow schemas of the three files); `encode` (rows to Arrow arrays and record batches,
//! writer properties); [`read`] (point summaries, requests, metric samples and metadata
//! back from the files); [`write`](mod@write) (atomic partition writes and updates, the
//! prepared next requests file); [`text`] (points as table, CSV and JSON text); [`query`]
//! (filter, sort and group points); [`stages`] (per-stage summaries of multi-stage
//! points).

mod encode;
pub mod error;
pub mod layout;
pub mod metadata;
pub mod query;
pub mod read;
pub mod schema;
pub mod stages;
pub mod summary;
pub mod text;
pub mod write;

pub use error::ResultsError;
pub use metadata::{EngineEvent, PartitionMetadata};
