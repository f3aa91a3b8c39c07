//! Rows to Arrow: point summaries and metric samples as record batches, a point's request
//! records as column arrays (the ITL list apart, for the encoder thread of its own), and the
//! Parquet writer properties of every results file: Snappy-compressed but for the ITL values,
//! stored plain (measured floats barely compress), dictionaries for the repetitive text
//! columns only, the sweep's key-value metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, ListBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use fleetbench_proto::record::{ErrorKind, RequestRecord};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::ResultsError;
use crate::schema::{
    FALLBACK_SEPARATOR, METRICS, MetricRow, SERVER, SLO_OBJECTIVES, STATS, itl_item_field,
    itl_values_path, metrics_schema, points_schema,
};
use crate::summary::{PointMeta, PointSummary};

/// Rows turned into Arrow arrays at a time when encoding new rows: small buffers, reused
/// by the allocator, rather than arrays of a whole point (fresh pages cost page faults).
pub(crate) const ENCODE_CHUNK_ROWS: usize = 2048;

fn utf8<'a, R: 'a>(rows: &'a [R], f: impl Fn(&'a R) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

fn opt_utf8<'a, R: 'a>(rows: &'a [R], f: impl Fn(&'a R) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn u32s<R>(rows: &[R], f: impl Fn(&R) -> u32) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
}

fn opt_u32s<R>(rows: &[R], f: impl Fn(&R) -> Option<u32>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<UInt32Array>())
}

fn f64s<R>(rows: &[R], f: impl Fn(&R) -> f64) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
}

fn opt_f64s<R>(rows: &[R], f: impl Fn(&R) -> Option<f64>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<Float64Array>())
}

fn bools<R>(rows: &[R], f: impl Fn(&R) -> bool) -> ArrayRef {
    Arc::new(BooleanArray::from(
        rows.iter().map(f).collect::<Vec<bool>>(),
    ))
}

fn timestamps<R>(rows: &[R], f: impl Fn(&R) -> i64) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"))
}

/// The `itl_s` column of `records`, built straight from their ITL slices.
pub(crate) fn itl_array(records: &[RequestRecord]) -> ArrayRef {
    f64_lists(records.iter().map(|r| r.itl_s.as_slice()))
}

/// A column of Float64 lists (items as [`itl_item_field`]), one list per row.
fn f64_lists<'a>(lists: impl ExactSizeIterator<Item = &'a [f64]> + Clone) -> ArrayRef {
    let values = Float64Builder::with_capacity(lists.clone().map(<[f64]>::len).sum());
    let mut out =
        ListBuilder::with_capacity(values, lists.len()).with_field(Arc::new(itl_item_field()));
    for list in lists {
        out.values().append_slice(list);
        out.append(true);
    }
    Arc::new(out.finish())
}

/// Every column of the requests schema but `itl_s`, in schema order, for rows of one point.
pub(crate) fn scalar_columns(meta: &PointMeta, records: &[RequestRecord]) -> Vec<ArrayRef> {
    let n = records.len();
    let same = |value: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(value, n)))
    };
    let same_u32 = |value: u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(std::iter::repeat_n(value, n)))
    };
    vec![
        same(&meta.sweep_id),
        same(&meta.point_id),
        same_u32(meta.point_index),
        same_u32(meta.attempt),
        same(&meta.agent),
        same(&meta.host),
        same(&meta.model),
        same_u32(meta.gpus),
        same_u32(meta.batch_size),
        u32s(records, |r| r.request_index),
        u32s(records, |r| r.wave),
        timestamps(records, |r| r.send_time_unix_us),
        opt_f64s(records, |r| r.ttft_s),
        opt_f64s(records, |r| r.e2el_s),
        opt_f64s(records, |r| r.tpot_s),
        opt_u32s(records, |r| r.input_tokens),
        opt_u32s(records, |r| r.output_tokens),
        u32s(records, |r| r.target_input_tokens),
        u32s(records, |r| r.target_output_tokens),
        u32s(records, |r| r.content_chunks),
        bools(records, RequestRecord::success),
        opt_utf8(records, |r| r.error_kind.map(ErrorKind::as_str)),
        utf8(records, |r| &r.error),
        utf8(records, |r| &r.endpoint),
        bools(records, |r| r.usage_reported),
        f64s(records, |r| r.scheduled_offset_s),
        f64s(records, |r| r.send_offset_s),
        u32s(records, |r| r.retries),
    ]
}

pub(crate) fn points_batch(rows: &[&PointSummary]) -> Result<RecordBatch, ResultsError> {
    let mut columns = vec![
        utf8(rows, |s| &s.meta.sweep_id),
        utf8(rows, |s| &s.meta.point_id),
        u32s(rows, |s| s.meta.point_index),
        u32s(rows, |s| s.meta.attempt),
        utf8(rows, |s| &s.meta.state),
        utf8(rows, |s| &s.meta.error),
        utf8(rows, |s| &s.meta.agent),
        utf8(rows, |s| &s.meta.host),
        utf8(rows, |s| &s.meta.model),
        u32s(rows, |s| s.meta.gpus),
        u32s(rows, |s| s.meta.batch_size),
        u32s(rows, |s| s.meta.input_tokens),
        u32s(rows, |s| s.meta.output_tokens),
        utf8(rows, |s| &s.meta.endpoint),
        timestamps(rows, |s| s.meta.started_unix_us),
        timestamps(rows, |s| s.meta.finished_unix_us),
        u32s(rows, |s| s.completed),
        u32s(rows, |s| s.failed),
        f64s(rows, |s| s.duration_s),
        f64s(rows, |s| s.request_throughput),
        f64s(rows, |s| s.output_throughput),
        f64s(rows, |s| s.total_token_throughput),
    ];
    for (_, distribution) in METRICS {
        for (_, stat) in STATS {
            columns.push(opt_f64s(rows, |s| stat(&distribution(s))));
        }
    }
    for (_, get) in SERVER {
        columns.push(opt_f64s(rows, |s| get(&s.server)));
    }
    columns.push(u32s(rows, |s| s.input_len_mismatches));
    columns.push(u32s(rows, |s| s.output_len_mismatches));
    columns.push(utf8(rows, |s| &s.verdict));
    columns.push(utf8(rows, |s| &s.meta.mode));
    columns.push(f64s(rows, |s| s.meta.request_rate));
    columns.push(f64s(rows, |s| s.achieved_rate));
    columns.push(f64s(rows, |s| s.achieved_concurrency));
    columns.push(f64s(rows, |s| s.meta.client.cpu_s));
    columns.push(f64s(rows, |s| s.meta.client.wall_s));
    columns.push(u32s(rows, |s| s.meta.client.cores));
    let fallbacks: Vec<String> = rows
        .iter()
        .map(|s| s.meta.fallbacks.join(FALLBACK_SEPARATOR))
        .collect();
    columns.push(Arc::new(StringArray::from_iter_values(fallbacks)));
    columns.push(Arc::new(UInt32Array::from_iter(rows.iter().map(|s| {
        s.in_flight
            .map(|f| u32::try_from(f.scrapes).unwrap_or(u32::MAX))
    }))));
    columns.push(opt_f64s(rows, |s| s.in_flight.map(|f| f.client_peak)));
    columns.push(opt_f64s(rows, |s| s.in_flight.map(|f| f.server_peak)));
    columns.push(f64_lists(
        rows.iter()
            .map(|s| s.meta.warmup.wave_output_tps.as_slice()),
    ));
    columns.push(Arc::new(BooleanArray::from_iter(
        rows.iter().map(|s| Some(s.meta.warmup.converged)),
    )));
    columns.push(f64s(rows, |s| s.meta.warmup.tolerance));
    columns.push(utf8(rows, |s| &s.meta.gpu_model));
    columns.push(utf8(rows, |s| &s.meta.gpu_driver));
    columns.push(utf8(rows, |s| &s.meta.hardware.gpu_vendor));
    columns.push(f64s(rows, |s| s.meta.hardware.gpu_memory_gib));
    columns.push(utf8(rows, |s| &s.meta.hardware.gpu_pci_bus_ids));
    columns.push(utf8(rows, |s| &s.meta.hardware.cpu_model));
    for (_, objective) in SLO_OBJECTIVES {
        let of = |s: &PointSummary| s.meta.slo.as_ref().and_then(objective);
        columns.push(opt_f64s(rows, |s| of(s).map(|o| o.threshold_s * 1e3)));
        columns.push(opt_f64s(rows, |s| of(s).map(|o| o.percentile)));
    }
    columns.push(opt_f64s(rows, |s| s.goodput));
    columns.push(opt_f64s(rows, |s| s.slo_attainment));
    columns.push(utf8(rows, |s| &s.slo_verdict));
    columns.push(utf8(rows, |s| &s.meta.workload));
    columns.push(utf8(rows, |s| &s.meta.data_sha256));
    columns.push(u32s(rows, |s| s.meta.data_skipped));
    columns.push(f64_lists(
        rows.iter().map(|s| s.meta.stage_durations_s.as_slice()),
    ));
    columns.push(f64_lists(
        rows.iter().map(|s| s.meta.stage_loads.as_slice()),
    ));
    Ok(RecordBatch::try_new(Arc::new(points_schema()), columns)?)
}

pub(crate) fn metrics_batch(
    sweep_id: &str,
    rows: &[MetricRow],
) -> Result<RecordBatch, ResultsError> {
    let columns = vec![
        utf8(rows, |_| sweep_id),
        utf8(rows, |r| &r.point_id),
        u32s(rows, |r| r.point_index),
        u32s(rows, |r| r.attempt),
        utf8(rows, |r| &r.agent),
        f64s(rows, |r| r.offset_s),
        timestamps(rows, |r| r.unix_ms.saturating_mul(1000)),
        utf8(rows, |r| &r.metric),
        f64s(rows, |r| r.value),
    ];
    Ok(RecordBatch::try_new(Arc::new(metrics_schema()), columns)?)
}

/// The writer properties of every results file, with `metadata` as its key-value metadata.
pub(crate) fn writer_properties(metadata: &BTreeMap<String, String>) -> WriterProperties {
    let key_values = metadata
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    // Dictionaries pay off for the repetitive text columns only: trying them on measured
    // floats (the ITLs are most of the bytes) cost more time than anything else in a write.
    // Snappy, not zstd: parquet creates a codec per column chunk, and a zstd codec allocates
    // and clears a compression and a decompression context (hundreds of KB) each time. With
    // a row group per point that is ~30 contexts per point: for 2048 points of 256 records,
    // 17% of the controller's CPU plus the page clearing (`examples/ingest_bench.rs`), for
    // files ~5% larger.
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("sweep_id"), true)
        .set_column_dictionary_enabled(ColumnPath::from("point_id"), true)
        .set_column_dictionary_enabled(ColumnPath::from("agent"), true)
        .set_column_dictionary_enabled(ColumnPath::from("host"), true)
        .set_column_dictionary_enabled(ColumnPath::from("model_name"), true)
        .set_column_dictionary_enabled(ColumnPath::from("endpoint"), true)
        .set_column_dictionary_enabled(ColumnPath::from("error"), true)
        .set_column_dictionary_enabled(ColumnPath::from("error_kind"), true)
        // The ITL values are most of a requests file and measured floats barely compress
        // (zstd saved ~5% of them at a cost of ~1/3 of the write); their min/max per page
        // helps no query. Stored plain, uncompressed, without statistics.
        .set_column_compression(itl_values_path(), Compression::UNCOMPRESSED)
        .set_column_statistics_enabled(itl_values_path(), EnabledStatistics::None)
        .set_key_value_metadata(Some(key_values))
        .build()
}
