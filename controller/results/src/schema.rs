//! The Arrow schemas of the three results files, the column tables the encoder and the
//! reader share (a `<metric>_<stat>` column per distribution and statistic of a point
//! summary, a column per engine statistic), and [`MetricRow`], the row of the metrics file.
//!
//! No column is called `model` or `gpus` (the partition keys): the columns are `model_name`
//! and `gpu_count` instead. Timestamps are `Timestamp(µs, "UTC")`. A point's fallbacks are
//! one text column, joined with newlines (`FALLBACK_SEPARATOR`).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::schema::types::ColumnPath;

use fleetbench_proto::spec::{Objective, Slo};

use crate::summary::{Percentiles, PointSummary, ServerStats};

/// Joins a point's fallbacks (one per line) in the one `fallbacks` column.
pub(crate) const FALLBACK_SEPARATOR: &str = "\n";

/// Picks one engine statistic out of a point summary's server stats.
pub(crate) type ServerStat = fn(&ServerStats) -> Option<f64>;

/// The engine's view of each point, as columns of the points file.
pub(crate) const SERVER: [(&str, ServerStat); 6] = [
    ("server_running_max", |s| s.running_max),
    ("server_waiting_max", |s| s.waiting_max),
    ("server_kv_cache_usage_max", |s| s.kv_cache_usage_max),
    ("server_preemptions", |s| s.preemptions),
    ("server_prefix_cache_queries", |s| s.prefix_cache_queries),
    ("server_prefix_cache_hits", |s| s.prefix_cache_hits),
];

/// Picks one objective out of an SLO.
pub(crate) type SloObjective = fn(&Slo) -> Option<Objective>;

/// The objectives of an SLO, in column order; each becomes the columns `slo_<metric>_ms`
/// and `slo_<metric>_percentile`.
pub(crate) const SLO_OBJECTIVES: [(&str, SloObjective); 3] = [
    ("ttft", |s| s.ttft),
    ("tpot", |s| s.tpot),
    ("e2el", |s| s.e2el),
];

/// Picks one distribution out of a point summary.
pub(crate) type Distribution = fn(&PointSummary) -> Percentiles;
/// Picks one statistic out of a distribution.
pub(crate) type Statistic = fn(&Percentiles) -> Option<f64>;

/// The distributions of a point summary, in column order; each becomes the columns
/// `<metric>_mean`, `<metric>_p50`, `<metric>_p90`, `<metric>_p99`.
pub(crate) const METRICS: [(&str, Distribution); 6] = [
    ("output_speed", |s| s.output_speed),
    ("ttft_s", |s| s.ttft_s),
    ("tpot_s", |s| s.tpot_s),
    ("itl_s", |s| s.itl_s),
    ("e2el_s", |s| s.e2el_s),
    ("send_lag_s", |s| s.send_lag_s),
];
/// The statistics of one distribution, in column order.
pub(crate) const STATS: [(&str, Statistic); 4] = [
    ("mean", |p| p.mean),
    ("p50", |p| p.p50),
    ("p90", |p| p.p90),
    ("p99", |p| p.p99),
];

/// One engine metric sample of one point: a row of `<sweep-id>.metrics.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub point_id: String,
    pub point_index: u32,
    pub attempt: u32,
    pub agent: String,
    /// Seconds since the point's measured load started.
    pub offset_s: f64,
    pub unix_ms: i64,
    /// e.g. `vllm:num_requests_running`
    pub metric: String,
    pub value: f64,
}

/// Timestamps: microseconds, UTC.
pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Parquet leaf of the `itl_s` list (`itl_s.list.item` in the 3-level list layout).
pub(crate) fn itl_values_path() -> ColumnPath {
    ColumnPath::new(vec![
        "itl_s".into(),
        "list".into(),
        itl_item_field().name().clone(),
    ])
}

/// The item of the `itl_s` list: a non-null `Float64`.
pub(crate) fn itl_item_field() -> Field {
    Field::new_list_field(DataType::Float64, false)
}

/// Columns of `<sweep-id>.requests.parquet`: the point's identity, then one request record.
pub(crate) fn requests_schema() -> Schema {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    let u32 = |name: &str| Field::new(name, DataType::UInt32, false);
    let opt_f64 = |name: &str| Field::new(name, DataType::Float64, true);
    Schema::new(vec![
        utf8("sweep_id"),
        utf8("point_id"),
        u32("point_index"),
        u32("attempt"),
        utf8("agent"),
        utf8("host"),
        utf8("model_name"),
        u32("gpu_count"),
        u32("batch_size"),
        u32("request_index"),
        u32("wave"),
        Field::new("send_time", timestamp_type(), false),
        opt_f64("ttft_s"),
        opt_f64("e2el_s"),
        opt_f64("tpot_s"),
        Field::new("itl_s", DataType::List(Arc::new(itl_item_field())), false),
        Field::new("input_tokens", DataType::UInt32, true),
        Field::new("output_tokens", DataType::UInt32, true),
        u32("target_input_tokens"),
        u32("target_output_tokens"),
        u32("content_chunks"),
        Field::new("success", DataType::Boolean, false),
        Field::new("error_kind", DataType::Utf8, true),
        utf8("error"),
        utf8("endpoint"),
        Field::new("usage_reported", DataType::Boolean, false),
        Field::new("scheduled_offset_s", DataType::Float64, false),
        Field::new("send_offset_s", DataType::Float64, false),
        u32("retries"),
    ])
}

/// Columns of `<sweep-id>.points.parquet`: one point summary per row.
pub(crate) fn points_schema() -> Schema {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    let u32 = |name: &str| Field::new(name, DataType::UInt32, false);
    let f64 = |name: &str| Field::new(name, DataType::Float64, false);
    let mut fields = vec![
        utf8("sweep_id"),
        utf8("point_id"),
        u32("point_index"),
        u32("attempt"),
        utf8("state"),
        utf8("error"),
        utf8("agent"),
        utf8("host"),
        utf8("model_name"),
        u32("gpu_count"),
        u32("batch_size"),
        u32("input_tokens"),
        u32("output_tokens"),
        utf8("endpoint"),
        Field::new("started_at", timestamp_type(), false),
        Field::new("finished_at", timestamp_type(), false),
        u32("completed"),
        u32("failed"),
        f64("duration_s"),
        f64("request_throughput"),
        f64("output_throughput"),
        f64("total_token_throughput"),
    ];
    for (metric, _) in METRICS {
        for (stat, _) in STATS {
            fields.push(Field::new(
                format!("{metric}_{stat}"),
                DataType::Float64,
                true,
            ));
        }
    }
    for (name, _) in SERVER {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    fields.push(u32("input_len_mismatches"));
    fields.push(u32("output_len_mismatches"));
    fields.push(utf8("verdict"));
    fields.push(utf8("mode"));
    fields.push(f64("request_rate"));
    fields.push(f64("achieved_rate"));
    fields.push(f64("achieved_concurrency"));
    fields.push(f64("client_cpu_s"));
    fields.push(f64("load_wall_s"));
    fields.push(u32("client_cores"));
    // Request extensions the engine refused, joined with FALLBACK_SEPARATOR.
    fields.push(utf8("fallbacks"));
    // Peak requests in flight at the engine's scrapes, as the client and as the engine
    // counted them (null with too few scrapes during the load).
    fields.push(Field::new("in_flight_scrapes", DataType::UInt32, true));
    fields.push(Field::new("in_flight_client_peak", DataType::Float64, true));
    fields.push(Field::new("in_flight_engine_peak", DataType::Float64, true));
    // The converging warm-up: each wave's output throughput (empty: none), whether the last
    // two agreed before the cap, and the tolerance they were held to.
    fields.push(Field::new(
        "warmup_output_tps",
        DataType::List(Arc::new(itl_item_field())),
        false,
    ));
    fields.push(Field::new("warmup_converged", DataType::Boolean, false));
    fields.push(f64("warmup_tolerance"));
    // The engine's GPUs as the agent's inventory names them, and the host's GPU driver.
    fields.push(utf8("gpu_model"));
    fields.push(utf8("gpu_driver"));
    // The held GPUs' vendor, memory of one (GiB) and PCI bus ids, and the host's CPU.
    fields.push(utf8("gpu_vendor"));
    fields.push(f64("gpu_memory_gib"));
    fields.push(utf8("gpu_pci_bus_ids"));
    fields.push(utf8("cpu_model"));
    // The sweep's [slo] (null: no objective on that metric), and the point against it:
    // goodput (good requests/s), the share of good requests and the verdict (`met`,
    // `missed: …`; empty without an SLO).
    for (metric, _) in SLO_OBJECTIVES {
        fields.push(Field::new(
            format!("slo_{metric}_ms"),
            DataType::Float64,
            true,
        ));
        fields.push(Field::new(
            format!("slo_{metric}_percentile"),
            DataType::Float64,
            true,
        ));
    }
    fields.push(Field::new("goodput", DataType::Float64, true));
    fields.push(Field::new("slo_attainment", DataType::Float64, true));
    fields.push(utf8("slo_verdict"));
    // The workload described (its lengths are input_tokens/output_tokens when fixed,
    // their means otherwise).
    fields.push(utf8("workload"));
    // Dataset and trace workloads: the file's SHA-256 (empty otherwise) and the entries
    // skipped.
    fields.push(utf8("data_sha256"));
    fields.push(u32("data_skipped"));
    // A multi-stage point: each stage's duration (s) and load (rate or concurrency);
    // empty lists otherwise.
    for name in ["stage_durations_s", "stage_loads"] {
        fields.push(Field::new(
            name,
            DataType::List(Arc::new(itl_item_field())),
            false,
        ));
    }
    Schema::new(fields)
}

/// Columns of `<sweep-id>.metrics.parquet`: one engine metric sample per row (long format).
pub(crate) fn metrics_schema() -> Schema {
    Schema::new(vec![
        Field::new("sweep_id", DataType::Utf8, false),
        Field::new("point_id", DataType::Utf8, false),
        Field::new("point_index", DataType::UInt32, false),
        Field::new("attempt", DataType::UInt32, false),
        Field::new("agent", DataType::Utf8, false),
        Field::new("offset_s", DataType::Float64, false),
        Field::new("sample_time", timestamp_type(), false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ])
}
