//! The sweep file: what a user submits with `controllerctl submit sweep.toml`.
//!
//! Parsing is strict: unknown fields and impossible values are errors that name the line,
//! the column and the field ([`SpecError`](crate::error::SpecError)). [`SweepSpec::expand`]
//! turns a valid sweep into the ordered list of points (GPU count × workload × batch size)
//! the controller schedules.
//!
//! One concept a file, each importing only the ones before it in this list:
//! - `workload`: one `[matrix] workloads` entry (lengths, distributions, shared prefixes,
//!   datasets);
//! - `sections`: the TOML sections as serde reads them, their enums and defaults;
//! - `locate`: line:column of a TOML span, for error messages;
//! - `limits`: the hard limits on a sweep (file size, points, name and model lengths,
//!   model names) and the point count from the matrix sizes (uses `sections`);
//! - `validate`: [`SweepSpec::parse`] and the value checks (uses `sections`, `locate`,
//!   `limits`);
//! - `expand`: [`SweepSpec::expand`] into [`PlannedPoint`]s (uses `sections`);
//! - `wire`: [`SweepSpec::engine_wire`] / [`SweepSpec::load_wire`], and the sweep-file
//!   enums to and from their generated `pb` enums (uses `sections`);
//! - `slo`: `[slo]` and [`Slo`], the objectives points are judged against (uses `locate`);
//! - `search`: `[search]`, [`Search`] and the search rule [`next_probe`] (uses `locate`,
//!   `sections`);
//! - `engine_args`: each engine kind's command line from a wire [`EngineSpec`](crate::pb::EngineSpec).
//!
//! This file only declares the modules and re-exports their public items.

mod engine_args;
mod expand;
mod limits;
mod locate;
mod search;
mod sections;
mod slo;
mod validate;
mod wire;
mod workload;

#[cfg(test)]
mod tests;

pub use engine_args::{Listen, VllmModelArg, engine_args, vllm_flags};
pub use expand::PlannedPoint;
pub use limits::{
    DEFAULT_MAX_POINTS, MAX_MODEL_LEN, MAX_NAME_LEN, MAX_POINT_ID_LEN, MAX_POINTS_CEILING,
    MAX_SWEEP_FILE_BYTES, longest_point_id, model_name_problem, point_id_fits, sweep_id_len,
};
pub use search::{
    Answer, DEFAULT_MIN_GAIN, DEFAULT_SEARCH_POINTS, MAX_SEARCH_POINTS, Next, Probe, Search,
    SearchGoal, SearchSection, next_probe, slo_bracket,
};
pub use sections::{
    Arrival, BatchSizes, DEFAULT_CRASH_RETRIES, DEFAULT_MAX_FAILED_SHARE, DEFAULT_WARMUP_TOLERANCE,
    Endpoint, EngineKind, EngineSection, GPU_VENDORS, LoadMode, LoadSection, MAX_STAGES,
    MatrixSection, OnEngineCrash, PlacementSection, PolicySection, Runtime, StageEntry, Strategy,
    SweepSpec, TokenizerSource, WarmupSection, model_slug,
};
pub use slo::{DEFAULT_SLO_PERCENTILE, Objective, Slo, SloSection};
pub use validate::MAX_BATCH_SIZE;
pub use workload::{LengthDist, WorkloadEntry};
