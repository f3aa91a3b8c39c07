//! Reading results files back: point summaries, request records, engine metric samples and
//! the key-value metadata. A read first checks that the file has every column of this
//! version's schema with the same type and nullability (extra columns are allowed) and names
//! the column when it has not. Files written with zstd by earlier versions read too.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use arrow_array::{
    Array, BooleanArray, Float64Array, ListArray, PrimitiveArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, types::ArrowPrimitiveType,
};
use arrow_schema::Schema;
use fleetbench_proto::record::{ErrorKind, RequestRecord};
use fleetbench_proto::spec::{Objective, Slo};
use parquet::arrow::ARROW_SCHEMA_META_KEY;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{ResultsError, bad};
use crate::metadata::PartitionMetadata;
use crate::schema::{
    FALLBACK_SEPARATOR, METRICS, MetricRow, SERVER, SLO_OBJECTIVES, STATS, metrics_schema,
    points_schema, requests_schema,
};
use crate::summary::{
    ClientStats, Hardware, InFlight, Percentiles, PointMeta, PointSummary, ServerStats, WarmupStats,
};

/// Reads every point summary of a `.points.parquet` file, in file order.
pub fn read_point_summaries(path: &Path) -> Result<Vec<PointSummary>, ResultsError> {
    let mut out = Vec::new();
    for batch in read_batches(path, &points_schema())? {
        let c = Columns {
            batch: &batch,
            path,
        };
        let sweep_id = c.get::<StringArray>("sweep_id")?;
        let point_id = c.get::<StringArray>("point_id")?;
        let point_index = c.get::<UInt32Array>("point_index")?;
        let attempt = c.get::<UInt32Array>("attempt")?;
        let state = c.get::<StringArray>("state")?;
        let error = c.get::<StringArray>("error")?;
        let agent = c.get::<StringArray>("agent")?;
        let host = c.get::<StringArray>("host")?;
        let model_name = c.get::<StringArray>("model_name")?;
        let gpu_count = c.get::<UInt32Array>("gpu_count")?;
        let batch_size = c.get::<UInt32Array>("batch_size")?;
        let input_tokens = c.get::<UInt32Array>("input_tokens")?;
        let output_tokens = c.get::<UInt32Array>("output_tokens")?;
        let endpoint = c.get::<StringArray>("endpoint")?;
        let started_at = c.get::<TimestampMicrosecondArray>("started_at")?;
        let finished_at = c.get::<TimestampMicrosecondArray>("finished_at")?;
        let completed = c.get::<UInt32Array>("completed")?;
        let failed = c.get::<UInt32Array>("failed")?;
        let duration_s = c.get::<Float64Array>("duration_s")?;
        let request_throughput = c.get::<Float64Array>("request_throughput")?;
        let output_throughput = c.get::<Float64Array>("output_throughput")?;
        let total_token_throughput = c.get::<Float64Array>("total_token_throughput")?;
        // One [mean, p50, p90, p99] column set per distribution, in METRICS order.
        let [output_speed, ttft_s, tpot_s, itl_s, e2el_s, send_lag_s] =
            METRICS.map(|(metric, _)| {
                let [mean, p50, p90, p99] =
                    STATS.map(|(stat, _)| c.get::<Float64Array>(&format!("{metric}_{stat}")));
                Ok::<_, ResultsError>([mean?, p50?, p90?, p99?])
            });
        let (output_speed, ttft_s, tpot_s, itl_s, e2el_s, send_lag_s) = (
            output_speed?,
            ttft_s?,
            tpot_s?,
            itl_s?,
            e2el_s?,
            send_lag_s?,
        );
        let [
            running_max,
            waiting_max,
            kv_cache_usage_max,
            preemptions,
            queries,
            hits,
        ] = SERVER.map(|(name, _)| c.opt::<Float64Array>(name));
        let (running_max, waiting_max, kv_cache_usage_max, preemptions) = (
            required(path, running_max, SERVER[0].0)?,
            required(path, waiting_max, SERVER[1].0)?,
            required(path, kv_cache_usage_max, SERVER[2].0)?,
            required(path, preemptions, SERVER[3].0)?,
        );
        // Files written before prefix-cache counters were kept lack these.
        let (prefix_queries, prefix_hits) = (queries?, hits?);
        let workload = c.opt::<StringArray>("workload")?;
        let data_sha256 = c.opt::<StringArray>("data_sha256")?;
        let data_skipped = c.opt::<UInt32Array>("data_skipped")?;
        let stage_durations = c.opt::<ListArray>("stage_durations_s")?;
        let stage_loads = c.opt::<ListArray>("stage_loads")?;
        let floats = |column: Option<&ListArray>, name: &str, i: usize| {
            let Some(list) = column else {
                return Ok(Vec::new());
            };
            let values = list.value(i);
            values
                .as_any()
                .downcast_ref::<Float64Array>()
                .map(|v| v.values().to_vec())
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("column `{name}` does not hold Float64 values"),
                    )
                })
        };
        let input_len_mismatches = c.get::<UInt32Array>("input_len_mismatches")?;
        let output_len_mismatches = c.get::<UInt32Array>("output_len_mismatches")?;
        let verdict = c.get::<StringArray>("verdict")?;
        let mode = c.get::<StringArray>("mode")?;
        let request_rate = c.get::<Float64Array>("request_rate")?;
        let achieved_rate = c.get::<Float64Array>("achieved_rate")?;
        let achieved_concurrency = c.get::<Float64Array>("achieved_concurrency")?;
        let client_cpu_s = c.get::<Float64Array>("client_cpu_s")?;
        let load_wall_s = c.get::<Float64Array>("load_wall_s")?;
        let client_cores = c.get::<UInt32Array>("client_cores")?;
        let fallbacks = c.get::<StringArray>("fallbacks")?;
        let in_flight_scrapes = c.get::<UInt32Array>("in_flight_scrapes")?;
        let in_flight_client = c.get::<Float64Array>("in_flight_client_peak")?;
        let in_flight_engine = c.get::<Float64Array>("in_flight_engine_peak")?;
        // Files written before warm-ups and GPU models were recorded lack these.
        let warmup_tps = c.opt::<ListArray>("warmup_output_tps")?;
        let warmup_converged = c.opt::<BooleanArray>("warmup_converged")?;
        let warmup_tolerance = c.opt::<Float64Array>("warmup_tolerance")?;
        let gpu_model = c.opt::<StringArray>("gpu_model")?;
        let gpu_driver = c.opt::<StringArray>("gpu_driver")?;
        let gpu_vendor = c.opt::<StringArray>("gpu_vendor")?;
        let gpu_memory_gib = c.opt::<Float64Array>("gpu_memory_gib")?;
        let gpu_pci_bus_ids = c.opt::<StringArray>("gpu_pci_bus_ids")?;
        let cpu_model = c.opt::<StringArray>("cpu_model")?;
        // Files written before SLOs were judged lack these.
        let [slo_ttft, slo_tpot, slo_e2el] = SLO_OBJECTIVES.map(|(metric, _)| {
            Ok::<_, ResultsError>((
                c.opt::<Float64Array>(&format!("slo_{metric}_ms"))?,
                c.opt::<Float64Array>(&format!("slo_{metric}_percentile"))?,
            ))
        });
        let slo_columns = [slo_ttft?, slo_tpot?, slo_e2el?];
        let goodput = c.opt::<Float64Array>("goodput")?;
        let slo_attainment = c.opt::<Float64Array>("slo_attainment")?;
        let slo_verdict = c.opt::<StringArray>("slo_verdict")?;
        let slo = |i: usize| {
            let [ttft, tpot, e2el] = slo_columns.map(|(ms, pct)| {
                Some(Objective {
                    threshold_s: opt(ms?, i)? / 1e3,
                    percentile: opt(pct?, i)?,
                })
            });
            let slo = Slo { ttft, tpot, e2el };
            (slo != Slo::default()).then_some(slo)
        };
        let warmup = |i: usize| -> Result<WarmupStats, ResultsError> {
            let Some(list) = warmup_tps else {
                return Ok(WarmupStats::default());
            };
            let values = list.value(i);
            let values = values
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| {
                    bad(
                        path,
                        "column `warmup_output_tps` does not hold Float64 values",
                    )
                })?;
            Ok(WarmupStats {
                wave_output_tps: values.values().to_vec(),
                converged: warmup_converged.is_some_and(|c| c.value(i)),
                tolerance: warmup_tolerance.map_or(0.0, |t| t.value(i)),
            })
        };
        let text = |column: Option<&StringArray>, i: usize| {
            column.map_or_else(String::new, |c| c.value(i).to_owned())
        };
        let distribution = |columns: &[&Float64Array; 4], row: usize| {
            let [mean, p50, p90, p99] = columns.map(|column| opt(column, row));
            Percentiles {
                mean,
                p50,
                p90,
                p99,
            }
        };
        for i in 0..batch.num_rows() {
            out.push(PointSummary {
                meta: PointMeta {
                    sweep_id: sweep_id.value(i).to_owned(),
                    point_id: point_id.value(i).to_owned(),
                    point_index: point_index.value(i),
                    attempt: attempt.value(i),
                    model: model_name.value(i).to_owned(),
                    gpus: gpu_count.value(i),
                    host: host.value(i).to_owned(),
                    agent: agent.value(i).to_owned(),
                    batch_size: batch_size.value(i),
                    input_tokens: input_tokens.value(i),
                    output_tokens: output_tokens.value(i),
                    state: state.value(i).to_owned(),
                    error: error.value(i).to_owned(),
                    endpoint: endpoint.value(i).to_owned(),
                    started_unix_us: started_at.value(i),
                    finished_unix_us: finished_at.value(i),
                    mode: mode.value(i).to_owned(),
                    request_rate: request_rate.value(i),
                    client: ClientStats {
                        cpu_s: client_cpu_s.value(i),
                        wall_s: load_wall_s.value(i),
                        cores: client_cores.value(i),
                    },
                    fallbacks: split_fallbacks(fallbacks.value(i)),
                    warmup: warmup(i)?,
                    gpu_model: text(gpu_model, i),
                    gpu_driver: text(gpu_driver, i),
                    hardware: Hardware {
                        gpu_vendor: text(gpu_vendor, i),
                        gpu_memory_gib: gpu_memory_gib.map_or(0.0, |c| c.value(i)),
                        gpu_pci_bus_ids: text(gpu_pci_bus_ids, i),
                        cpu_model: text(cpu_model, i),
                    },
                    slo: slo(i),
                    workload: text(workload, i),
                    data_sha256: text(data_sha256, i),
                    data_skipped: data_skipped.map_or(0, |c| c.value(i)),
                    stage_durations_s: floats(stage_durations, "stage_durations_s", i)?,
                    stage_loads: floats(stage_loads, "stage_loads", i)?,
                },
                completed: completed.value(i),
                failed: failed.value(i),
                duration_s: duration_s.value(i),
                request_throughput: request_throughput.value(i),
                output_throughput: output_throughput.value(i),
                total_token_throughput: total_token_throughput.value(i),
                output_speed: distribution(&output_speed, i),
                ttft_s: distribution(&ttft_s, i),
                tpot_s: distribution(&tpot_s, i),
                itl_s: distribution(&itl_s, i),
                e2el_s: distribution(&e2el_s, i),
                server: ServerStats {
                    running_max: opt(running_max, i),
                    waiting_max: opt(waiting_max, i),
                    kv_cache_usage_max: opt(kv_cache_usage_max, i),
                    preemptions: opt(preemptions, i),
                    prefix_cache_queries: prefix_queries.and_then(|c| opt(c, i)),
                    prefix_cache_hits: prefix_hits.and_then(|c| opt(c, i)),
                },
                input_len_mismatches: input_len_mismatches.value(i),
                output_len_mismatches: output_len_mismatches.value(i),
                achieved_rate: achieved_rate.value(i),
                achieved_concurrency: achieved_concurrency.value(i),
                send_lag_s: distribution(&send_lag_s, i),
                in_flight: match (
                    in_flight_scrapes.is_valid(i),
                    opt(in_flight_client, i),
                    opt(in_flight_engine, i),
                ) {
                    (true, Some(client_peak), Some(server_peak)) => Some(InFlight {
                        scrapes: in_flight_scrapes.value(i) as usize,
                        client_peak,
                        server_peak,
                    }),
                    _ => None,
                },
                verdict: verdict.value(i).to_owned(),
                goodput: goodput.and_then(|c| opt(c, i)),
                slo_attainment: slo_attainment.and_then(|c| opt(c, i)),
                slo_verdict: text(slo_verdict, i),
            });
        }
    }
    Ok(out)
}

/// Reads every request of a `.requests.parquet` file as (point id, attempt, record), in file
/// order.
pub fn read_requests(path: &Path) -> Result<Vec<(String, u32, RequestRecord)>, ResultsError> {
    let mut out = Vec::new();
    for batch in read_batches(path, &requests_schema())? {
        let c = Columns {
            batch: &batch,
            path,
        };
        let point_id = c.get::<StringArray>("point_id")?;
        let attempt = c.get::<UInt32Array>("attempt")?;
        let request_index = c.get::<UInt32Array>("request_index")?;
        let wave = c.get::<UInt32Array>("wave")?;
        let send_time = c.get::<TimestampMicrosecondArray>("send_time")?;
        let ttft_s = c.get::<Float64Array>("ttft_s")?;
        let e2el_s = c.get::<Float64Array>("e2el_s")?;
        let tpot_s = c.get::<Float64Array>("tpot_s")?;
        let itl_s = c.get::<ListArray>("itl_s")?;
        let itl_values = itl_s
            .values()
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| bad(path, "column `itl_s` does not hold Float64 values"))?
            .values();
        let input_tokens = c.get::<UInt32Array>("input_tokens")?;
        let output_tokens = c.get::<UInt32Array>("output_tokens")?;
        let target_input_tokens = c.get::<UInt32Array>("target_input_tokens")?;
        let target_output_tokens = c.get::<UInt32Array>("target_output_tokens")?;
        let content_chunks = c.get::<UInt32Array>("content_chunks")?;
        let success = c.get::<BooleanArray>("success")?;
        let error_kind = c.get::<StringArray>("error_kind")?;
        let error = c.get::<StringArray>("error")?;
        let endpoint = c.get::<StringArray>("endpoint")?;
        let usage_reported = c.get::<BooleanArray>("usage_reported")?;
        let scheduled_offset_s = c.get::<Float64Array>("scheduled_offset_s")?;
        let send_offset_s = c.get::<Float64Array>("send_offset_s")?;
        // Absent from files written before the column existed: no resends then.
        let retries = c.opt::<UInt32Array>("retries")?;
        let offsets = itl_s.value_offsets();
        for i in 0..batch.num_rows() {
            let kind = error_kind.is_valid(i).then(|| error_kind.value(i));
            let kind = match kind {
                None => None,
                Some(k) => Some(
                    ErrorKind::parse(k)
                        .ok_or_else(|| bad(path, format!("row {i}: unknown error_kind {k:?}")))?,
                ),
            };
            if success.value(i) != kind.is_none() {
                return Err(bad(
                    path,
                    format!("row {i}: success disagrees with error_kind {kind:?}"),
                ));
            }
            let itl = offsets
                .get(i)
                .zip(offsets.get(i + 1))
                .and_then(|(&start, &end)| {
                    itl_values.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
                })
                .ok_or_else(|| bad(path, format!("row {i}: itl_s offsets out of range")))?;
            out.push((
                point_id.value(i).to_owned(),
                attempt.value(i),
                RequestRecord {
                    request_index: request_index.value(i),
                    wave: wave.value(i),
                    send_time_unix_us: send_time.value(i),
                    ttft_s: opt(ttft_s, i),
                    e2el_s: opt(e2el_s, i),
                    tpot_s: opt(tpot_s, i),
                    itl_s: itl.to_vec(),
                    input_tokens: opt(input_tokens, i),
                    output_tokens: opt(output_tokens, i),
                    target_input_tokens: target_input_tokens.value(i),
                    target_output_tokens: target_output_tokens.value(i),
                    content_chunks: content_chunks.value(i),
                    error_kind: kind,
                    error: error.value(i).to_owned(),
                    endpoint: endpoint.value(i).to_owned(),
                    usage_reported: usage_reported.value(i),
                    scheduled_offset_s: scheduled_offset_s.value(i),
                    send_offset_s: send_offset_s.value(i),
                    retries: retries.map_or(0, |r| r.value(i)),
                },
            ));
        }
    }
    Ok(out)
}

/// Reads every engine metric sample of a `.metrics.parquet` file, in file order.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, ResultsError> {
    let mut out = Vec::new();
    for batch in read_batches(path, &metrics_schema())? {
        let c = Columns {
            batch: &batch,
            path,
        };
        let point_id = c.get::<StringArray>("point_id")?;
        let point_index = c.get::<UInt32Array>("point_index")?;
        let attempt = c.get::<UInt32Array>("attempt")?;
        let agent = c.get::<StringArray>("agent")?;
        let offset_s = c.get::<Float64Array>("offset_s")?;
        let sample_time = c.get::<TimestampMicrosecondArray>("sample_time")?;
        let metric = c.get::<StringArray>("metric")?;
        let value = c.get::<Float64Array>("value")?;
        for i in 0..batch.num_rows() {
            out.push(MetricRow {
                point_id: point_id.value(i).to_owned(),
                point_index: point_index.value(i),
                attempt: attempt.value(i),
                agent: agent.value(i).to_owned(),
                offset_s: offset_s.value(i),
                unix_ms: sample_time.value(i) / 1000,
                metric: metric.value(i).to_owned(),
                value: value.value(i),
            });
        }
    }
    Ok(out)
}

/// The typed `fleetbench.*` metadata of a results file.
pub fn read_partition_metadata(path: &Path) -> Result<PartitionMetadata, ResultsError> {
    Ok(PartitionMetadata::from_key_values(&read_metadata(path)?))
}

/// The key-value metadata of a results file, without the Arrow schema parquet stores there
/// (`ARROW:schema`). A key without a value reads as the empty string.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, ResultsError> {
    let builder = open(path)?;
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != ARROW_SCHEMA_META_KEY)
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    Ok(metadata)
}

fn split_fallbacks(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        Vec::new()
    } else {
        joined
            .split(FALLBACK_SEPARATOR)
            .map(str::to_owned)
            .collect()
    }
}

pub(crate) fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, ResultsError> {
    let file = File::open(path).map_err(|e| ResultsError::io(path, e))?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file)?)
}

/// All record batches of `path`, after checking that every column of `expected` is present
/// with the same type and nullability (extra columns are allowed).
/// Columns added after files were first written: a file without them still reads (the
/// readers take their absence as the value old files meant, e.g. no resends).
const ADDED_COLUMNS: &[&str] = &[
    // requests files
    "retries",
    // points files: the converging warm-up and the hardware
    "warmup_output_tps",
    "warmup_converged",
    "warmup_tolerance",
    "gpu_model",
    "gpu_driver",
    "gpu_vendor",
    "gpu_memory_gib",
    "gpu_pci_bus_ids",
    "cpu_model",
    // points files: the SLO and goodput
    "slo_ttft_ms",
    "slo_ttft_percentile",
    "slo_tpot_ms",
    "slo_tpot_percentile",
    "slo_e2el_ms",
    "slo_e2el_percentile",
    "goodput",
    "slo_attainment",
    "slo_verdict",
    // points files: the workload described, the engine's prefix-cache counters
    "workload",
    "server_prefix_cache_queries",
    "server_prefix_cache_hits",
    // points files: the dataset or trace file used
    "data_sha256",
    "data_skipped",
    // points files: multi-stage points
    "stage_durations_s",
    "stage_loads",
];

fn read_batches(path: &Path, expected: &Schema) -> Result<Vec<RecordBatch>, ResultsError> {
    let builder = open(path)?;
    let actual = builder.schema();
    for want in expected.fields() {
        let Some((_, have)) = actual.column_with_name(want.name()) else {
            if ADDED_COLUMNS.contains(&want.name().as_str()) {
                continue;
            }
            return Err(bad(path, format!("missing column `{}`", want.name())));
        };
        if have.data_type() != want.data_type() || (have.is_nullable() && !want.is_nullable()) {
            return Err(bad(
                path,
                format!(
                    "column `{}` is {}{}, expected {}{}",
                    want.name(),
                    have.data_type(),
                    if have.is_nullable() {
                        " (nullable)"
                    } else {
                        ""
                    },
                    want.data_type(),
                    if want.is_nullable() {
                        " (nullable)"
                    } else {
                        ""
                    },
                ),
            ));
        }
    }
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    Ok(batches)
}

/// A column every file has, read with [`Columns::opt`].
fn required<'a, T>(
    path: &Path,
    column: Result<Option<&'a T>, ResultsError>,
    name: &str,
) -> Result<&'a T, ResultsError> {
    column?.ok_or_else(|| bad(path, format!("missing column `{name}`")))
}

/// Typed access to the columns of one batch, naming the column in errors.
struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Columns<'a> {
    /// [`Columns::get`] for a column that older files lack.
    fn opt<T: Array + 'static>(&self, name: &str) -> Result<Option<&'a T>, ResultsError> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(None);
        }
        self.get(name).map(Some)
    }

    fn get<T: Array + 'static>(&self, name: &str) -> Result<&'a T, ResultsError> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| bad(self.path, format!("missing column `{name}`")))?;
        column.as_any().downcast_ref::<T>().ok_or_else(|| {
            bad(
                self.path,
                format!("column `{name}` has unexpected type {}", column.data_type()),
            )
        })
    }
}

fn opt<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>, i: usize) -> Option<T::Native> {
    array.is_valid(i).then(|| array.value(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::ArrayRef;
    use arrow_schema::{DataType, Field};
    use parquet::arrow::ArrowWriter;

    #[test]
    fn wrong_schema_names_the_missing_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.points.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new(
            "sweep_id",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["sw"])) as ArrayRef],
        )
        .unwrap();
        let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        match read_point_summaries(&path).unwrap_err() {
            ResultsError::BadResults { path: p, reason } => {
                assert_eq!(p, path);
                assert!(reason.contains("`point_id`"), "{reason}");
            }
            other => panic!("unexpected error {other}"),
        }
        match read_requests(&path).unwrap_err() {
            ResultsError::BadResults { reason, .. } => {
                assert!(reason.contains("missing column `point_id`"), "{reason}")
            }
            other => panic!("unexpected error {other}"),
        }
    }

    /// A points file written before the warm-up and hardware columns existed reads, with
    /// those fields empty; the columns it has keep their values.
    #[test]
    fn points_files_without_the_added_columns_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.points.parquet");
        let meta = PointMeta {
            sweep_id: "sw".into(),
            point_id: "sw/p000".into(),
            model: "m".into(),
            host: "h".into(),
            state: "done".into(),
            gpu_model: "NVIDIA H100 80GB HBM3".into(),
            hardware: Hardware {
                cpu_model: "Xeon".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let summary = crate::summary::summarize(meta, &[], &[]);
        let full = crate::encode::points_batch(&[&summary]).unwrap();
        let keep: Vec<usize> = (0..full.num_columns())
            .filter(|&i| !ADDED_COLUMNS.contains(&full.schema().field(i).name().as_str()))
            .collect();
        assert!(keep.len() < full.num_columns());
        let old = full.project(&keep).unwrap();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), old.schema(), None).unwrap();
        writer.write(&old).unwrap();
        writer.close().unwrap();

        let read = read_point_summaries(&path).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].meta.point_id, "sw/p000");
        assert_eq!(read[0].meta.host, "h");
        assert_eq!(read[0].meta.gpu_model, "");
        assert_eq!(read[0].meta.hardware, Hardware::default());
        assert_eq!(read[0].meta.warmup, WarmupStats::default());
        // And a file with them keeps them.
        let path = dir.path().join("new.points.parquet");
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), full.schema(), None).unwrap();
        writer.write(&full).unwrap();
        writer.close().unwrap();
        let read = read_point_summaries(&path).unwrap();
        assert_eq!(read[0].meta.gpu_model, "NVIDIA H100 80GB HBM3");
        assert_eq!(read[0].meta.hardware.cpu_model, "Xeon");
    }

    #[test]
    fn wrong_column_type_is_bad_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.requests.parquet");
        let mut fields: Vec<Field> = requests_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[2] = Field::new("point_index", DataType::Utf8, false);
        let schema = Arc::new(Schema::new(fields));
        let writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        writer.close().unwrap();
        match read_requests(&path).unwrap_err() {
            ResultsError::BadResults { reason, .. } => {
                assert!(reason.contains("`point_index`"), "{reason}")
            }
            other => panic!("unexpected error {other}"),
        }
    }
}
