//! Engine statistics and what reads them: vLLM's Prometheus text at `GET /metrics` and its
//! periodic "Engine 000: …" log line.
//!
//! - `stats.rs`: what the engine loop and the requests that bypass it record — counters, gauges
//!   and vLLM's request histograms with vLLM's buckets ([`EngineStats`]);
//! - `prometheus.rs`: the text exposition of those statistics, in vLLM's names, labels and
//!   order ([`EngineStats::render`], [`CONTENT_TYPE`]);
//! - `log.rs`: the periodic statistics line ([`log_stats_loop`]).

mod log;
mod prometheus;
mod stats;
#[cfg(test)]
mod tests;

pub use log::{log_stats_loop, stats_line};
pub use prometheus::{CONTENT_TYPE, go_float, py_repr};
pub use stats::{
    EngineStats, FinishedRecord, HIT_RATE_WINDOW_REQUESTS, PrefixCacheStats, StatsSnapshot,
    StepRecord, buckets_1_2_5,
};
