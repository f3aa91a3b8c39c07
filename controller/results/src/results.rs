//! Results on disk: per-request records and per-point summaries as Parquet, partitioned the
//! Hive way so DuckDB, Polars, pandas and Spark read a whole fleet's results in one call:
//!
//! ```text
//! ROOT/model=<model-slug>/gpus=<N>/<sweep-id>.requests.parquet   one row per measured request
//! ROOT/model=<model-slug>/gpus=<N>/<sweep-id>.points.parquet     one row per point attempt
//! ```
//!
//! No column is called `model` or `gpus`: those are the partition keys, and readers that add
//! partition columns would clash; the columns are `model_name` and `gpu_count` instead.
//! Timestamps are `Timestamp(µs, "UTC")`; files are Snappy-compressed (but for the ITL
//! values, stored plain: measured floats barely compress; files written with zstd by earlier
//! versions are read too) and carry the sweep's key-value metadata. Files are written under a
//! temporary name and renamed into place, so a reader never sees half a file.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::builder::{Float64Builder, ListBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, ListArray, PrimitiveArray, RecordBatch,
    StringArray, TimestampMicrosecondArray, UInt32Array, types::ArrowPrimitiveType,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use fleetbench_proto::record::{ErrorKind, RequestRecord};
use fleetbench_proto::spec::model_slug;
use parquet::arrow::ARROW_SCHEMA_META_KEY;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::Compression;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::KeyValue;
use parquet::file::metadata::{ColumnChunkMetaData, PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::error::ResultsError;
use crate::metadata::PartitionMetadata;
use crate::summary::{ClientStats, InFlight, Percentiles, PointMeta, PointSummary, ServerStats};

/// Joins a point's fallbacks (one per line) in the one `fallbacks` column.
const FALLBACK_SEPARATOR: &str = "\n";

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

const REQUESTS_SUFFIX: &str = ".requests.parquet";
const POINTS_SUFFIX: &str = ".points.parquet";
const METRICS_SUFFIX: &str = ".metrics.parquet";

/// Picks one engine statistic out of a point summary's server stats.
type ServerStat = fn(&ServerStats) -> Option<f64>;

/// The engine's view of each point, as columns of the points file.
const SERVER: [(&str, ServerStat); 4] = [
    ("server_running_max", |s| s.running_max),
    ("server_waiting_max", |s| s.waiting_max),
    ("server_kv_cache_usage_max", |s| s.kv_cache_usage_max),
    ("server_preemptions", |s| s.preemptions),
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

/// Picks one distribution out of a point summary.
type Distribution = fn(&PointSummary) -> Percentiles;
/// Picks one statistic out of a distribution.
type Statistic = fn(&Percentiles) -> Option<f64>;

/// The distributions of a point summary, in column order; each becomes the columns
/// `<metric>_mean`, `<metric>_p50`, `<metric>_p90`, `<metric>_p99`.
const METRICS: [(&str, Distribution); 6] = [
    ("output_speed", |s| s.output_speed),
    ("ttft_s", |s| s.ttft_s),
    ("tpot_s", |s| s.tpot_s),
    ("itl_s", |s| s.itl_s),
    ("e2el_s", |s| s.e2el_s),
    ("send_lag_s", |s| s.send_lag_s),
];
/// The statistics of one distribution, in column order.
const STATS: [(&str, Statistic); 4] = [
    ("mean", |p| p.mean),
    ("p50", |p| p.p50),
    ("p90", |p| p.p90),
    ("p99", |p| p.p99),
];

/// The files of one (model, gpus) partition of a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFiles {
    pub requests: PathBuf,
    pub points: PathBuf,
    /// Engine `/metrics` samples taken during the points.
    pub metrics: PathBuf,
}

/// `root/model=<model_slug(model)>/gpus=<gpus>`.
pub fn partition_dir(root: &Path, model: &str, gpus: u32) -> PathBuf {
    root.join(format!("model={}", model_slug(model)))
        .join(format!("gpus={gpus}"))
}

/// Writes (replacing) the files of one (model, gpus) partition of a sweep, atomically: write
/// `<name>.tmp-<pid>` in the same dir, fsync it, rename it, fsync the dir.
///
/// Every point must belong to this sweep and partition (same sweep id, same model slug, same
/// GPU count); otherwise nothing is written. The requests file is renamed into place first, so
/// a visible points file always has its requests file next to it. `metadata` becomes the
/// key-value metadata of the files. Whatever the partition held before is replaced; see
/// [`update_partition`] to add points to it.
pub fn write_partition(
    root: &Path,
    sweep_id: &str,
    model: &str,
    gpus: u32,
    points: &[(PointSummary, &[RequestRecord])],
    metrics: &[MetricRow],
    metadata: &PartitionMetadata,
) -> Result<PartitionFiles, ResultsError> {
    let summaries: Vec<PointSummary> = points.iter().map(|(s, _)| s.clone()).collect();
    let update = PartitionUpdate {
        rows: points,
        summaries: &summaries,
        metrics,
        metadata,
    };
    write(root, sweep_id, model, gpus, &update, None)
}

/// What one [`update_partition`] changes in a partition.
#[derive(Debug, Clone, Copy)]
pub struct PartitionUpdate<'a> {
    /// Points whose request rows are added; rows of the same point ids already in the
    /// requests file are replaced (a re-written point never appears twice).
    pub rows: &'a [(PointSummary, &'a [RequestRecord])],
    /// Every point summary of the partition: the points file is rewritten from these.
    pub summaries: &'a [PointSummary],
    /// Every engine metric sample of the partition: the metrics file is rewritten from these.
    pub metrics: &'a [MetricRow],
    /// The key-value metadata of all three files.
    pub metadata: &'a PartitionMetadata,
}

/// Adds points to a partition without rewriting what it holds: the existing requests file's
/// row groups are copied byte for byte into the new file (except those of points in
/// `update.rows`, which are replaced), then each new point's rows follow as row groups of
/// their own. The small points and metrics files are rewritten. Every file goes to disk
/// atomically (temporary file, fsync, rename, fsync of the dir).
///
/// `next`, from [`prepare_next_requests`] after the previous write, saves copying the
/// existing row groups again: it is used when the requests file is still the one it was
/// prepared from and none of its points is re-written; otherwise it is discarded.
pub fn update_partition(
    root: &Path,
    sweep_id: &str,
    model: &str,
    gpus: u32,
    update: &PartitionUpdate<'_>,
    next: Option<NextRequests>,
) -> Result<PartitionFiles, ResultsError> {
    write(root, sweep_id, model, gpus, update, Some(next))
}

fn write(
    root: &Path,
    sweep_id: &str,
    model: &str,
    gpus: u32,
    update: &PartitionUpdate<'_>,
    // `Some` keeps the existing requests rows (with a prepared next file, perhaps).
    keep_existing: Option<Option<NextRequests>>,
) -> Result<PartitionFiles, ResultsError> {
    let dir = partition_dir(root, model, gpus);
    if sweep_id.is_empty() || sweep_id == "." || sweep_id == ".." || sweep_id.contains(['/', '\\'])
    {
        return Err(bad(
            &dir,
            format!("sweep id {sweep_id:?} is not a file name"),
        ));
    }
    let slug = model_slug(model);
    let stranger = update
        .rows
        .iter()
        .map(|(s, _)| s)
        .chain(update.summaries)
        .find(|s| {
            s.meta.sweep_id != sweep_id || s.meta.gpus != gpus || model_slug(&s.meta.model) != slug
        });
    if let Some(s) = stranger {
        return Err(bad(
            &dir,
            format!(
                "point {} (sweep {}, model {}, {} GPUs) does not belong in this partition",
                s.meta.point_id, s.meta.sweep_id, s.meta.model, s.meta.gpus
            ),
        ));
    }
    fs::create_dir_all(&dir).map_err(|e| ResultsError::io(&dir, e))?;
    let files = PartitionFiles {
        requests: dir.join(format!("{sweep_id}{REQUESTS_SUFFIX}")),
        points: dir.join(format!("{sweep_id}{POINTS_SUFFIX}")),
        metrics: dir.join(format!("{sweep_id}{METRICS_SUFFIX}")),
    };
    let existing =
        (keep_existing.is_some() && files.requests.exists()).then_some(files.requests.as_path());
    let replaced: HashSet<&str> = update
        .rows
        .iter()
        .map(|(s, _)| s.meta.point_id.as_str())
        .collect();
    let prepared = keep_existing.flatten().and_then(|mut next| {
        let current = existing.is_some_and(|path| {
            next.requests == path && file_identity(path).ok() == Some(next.identity)
        });
        let untouched = next.points.iter().all(|p| !replaced.contains(p.as_str()));
        // Dropping an unusable one removes its file.
        (current && untouched).then(|| next.writer.take()).flatten()
    });
    // No rows to add (their points were written by an earlier, coalesced write) and the
    // same metadata: the requests file stays as it is.
    let metadata = update.metadata.to_key_values();
    let unchanged = update.rows.is_empty()
        && existing.is_some_and(|path| read_metadata(path).ok().as_ref() == Some(&metadata));
    match prepared {
        _ if unchanged => {}
        Some(mut w) => {
            let tmp = w.tmp.clone();
            let result = append_new(&mut w, update.rows, |_| Ok(()))
                .and_then(|()| w.finish(&metadata))
                .and_then(|()| {
                    fs::rename(&tmp, &files.requests)
                        .map_err(|e| ResultsError::io(&files.requests, e))
                });
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result?;
        }
        None => replace_atomically(&files.requests, |tmp| {
            append_requests(tmp, existing, &replaced, update.rows, &metadata)
        })?,
    }
    write_atomically(
        &files.metrics,
        &metrics_batch(sweep_id, update.metrics)?,
        &metadata,
    )?;
    let summaries: Vec<&PointSummary> = update.summaries.iter().collect();
    write_atomically(&files.points, &points_batch(&summaries)?, &metadata)?;
    sync_dir(&dir)?;
    Ok(files)
}

/// Rows turned into Arrow arrays at a time when encoding new rows: small buffers, reused
/// by the allocator, rather than arrays of a whole point (fresh pages cost page faults).
const ENCODE_CHUNK_ROWS: usize = 2048;

/// The encoded column chunks of one new row group, in schema order.
type EncodedRowGroup = Vec<ArrowColumnChunk>;

/// What tells one version of a file from the next: its inode (each version is a new file
/// renamed into place), size and modification time.
type FileIdentity = (u64, u64, std::time::SystemTime);

fn file_identity(path: &Path) -> Result<FileIdentity, ResultsError> {
    let meta = fs::metadata(path).map_err(|e| ResultsError::io(path, e))?;
    let modified = meta.modified().map_err(|e| ResultsError::io(path, e))?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok((inode, meta.len(), modified))
}

/// The next version of a partition's requests file, started before the write that needs
/// it: a temporary file already holding a copy of the current file's row groups, so that
/// write only adds the new points' rows. The copy is most of a write's cost once a sweep
/// has many rows, and made this way it runs while the next points stream in rather than
/// between a point's end and its acknowledgement. Dropped unused, it removes its file.
pub struct NextRequests {
    requests: PathBuf,
    identity: FileIdentity,
    points: HashSet<String>,
    writer: Option<RequestsWriter>,
}

impl std::fmt::Debug for NextRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextRequests")
            .field("requests", &self.requests)
            .field("points", &self.points.len())
            .finish_non_exhaustive()
    }
}

impl Drop for NextRequests {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            let tmp = w.tmp.clone();
            drop(w);
            // Best effort: a leftover temporary file is never read.
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Starts the next version of the requests file of a (model, gpus) partition of a sweep
/// (see [`NextRequests`]), as `<file>.next-<pid>` next to it. `None` when there is no
/// requests file yet, or when `cancel` was set before the copy finished.
pub fn prepare_next_requests(
    root: &Path,
    sweep_id: &str,
    model: &str,
    gpus: u32,
    cancel: &AtomicBool,
) -> Result<Option<NextRequests>, ResultsError> {
    let requests = partition_dir(root, model, gpus).join(format!("{sweep_id}{REQUESTS_SUFFIX}"));
    if !requests.exists() {
        return Ok(None);
    }
    let identity = file_identity(&requests)?;
    let mut tmp = requests.as_os_str().to_owned();
    tmp.push(format!(".next-{}", std::process::id()));
    let mut next = NextRequests {
        requests,
        identity,
        points: HashSet::new(),
        writer: Some(RequestsWriter::create(PathBuf::from(tmp))?),
    };
    let Some(w) = next.writer.as_mut() else {
        return Ok(None);
    };
    match copy_existing(w, Some(&next.requests), &HashSet::new(), Some(cancel))? {
        Some(points) => {
            next.points = points;
            // Written back now rather than by the fsync of the write that uses it, which
            // then only waits for the new rows.
            w.file
                .sync_data()
                .map_err(|e| ResultsError::io(&w.tmp, e))?;
            // The file may have changed while it was copied.
            Ok((file_identity(&next.requests)? == next.identity).then_some(next))
        }
        None => Ok(None),
    }
}

/// A requests file being written under its temporary name.
struct RequestsWriter {
    tmp: PathBuf,
    file: File,
    out: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: Arc<Schema>,
    max_rows: usize,
    row_groups: usize,
}

impl RequestsWriter {
    /// Creates `tmp`. The key-value metadata goes in when the file is finished, so a file
    /// started ahead of its write (see [`prepare_next_requests`]) carries that write's.
    fn create(tmp: PathBuf) -> Result<Self, ResultsError> {
        let schema = Arc::new(requests_schema());
        let properties = writer_properties(&BTreeMap::new());
        let max_rows = properties
            .max_row_group_row_count()
            .unwrap_or(1024 * 1024)
            .max(1);
        let file = File::create(&tmp).map_err(|e| ResultsError::io(&tmp, e))?;
        let handle = file.try_clone().map_err(|e| ResultsError::io(&tmp, e))?;
        let writer = ArrowWriter::try_new(handle, schema.clone(), Some(properties))?;
        let (out, factory) = writer.into_serialized_writer()?;
        Ok(RequestsWriter {
            tmp,
            file,
            out,
            factory,
            schema,
            max_rows,
            row_groups: 0,
        })
    }

    /// Writes the footer with `metadata` and syncs the file.
    fn finish(mut self, metadata: &BTreeMap<String, String>) -> Result<(), ResultsError> {
        for (k, v) in metadata {
            self.out
                .append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
        }
        self.out.close()?;
        self.file
            .sync_all()
            .map_err(|e| ResultsError::io(&self.tmp, e))
    }
}

/// Writes the requests file `tmp`: the row groups of `existing` whose point is not in
/// `replaced` (copied byte for byte; a row group mixing points, as older versions wrote, is
/// decoded and filtered instead), then one row group (or more, for very large points) per
/// point of `new`.
fn append_requests(
    tmp: &Path,
    existing: Option<&Path>,
    replaced: &HashSet<&str>,
    new: &[(PointSummary, &[RequestRecord])],
    metadata: &BTreeMap<String, String>,
) -> Result<(), ResultsError> {
    let mut w = RequestsWriter::create(tmp.to_path_buf())?;
    append_new(&mut w, new, |w| {
        copy_existing(w, existing, replaced, None).map(|_| ())
    })?;
    w.finish(metadata)
}

/// Appends one row group (or more, for very large points) per point of `new` to `w`, after
/// whatever `first` writes. The new rows are encoded on two threads of their own (the ITL
/// list column on one, the other columns on the other) while this thread runs `first`
/// (copying the existing row groups); encoded row groups are handed over one at a time
/// through bounded channels.
fn append_new(
    w: &mut RequestsWriter,
    new: &[(PointSummary, &[RequestRecord])],
    first: impl FnOnce(&mut RequestsWriter) -> Result<(), ResultsError>,
) -> Result<(), ResultsError> {
    let tmp = w.tmp.clone();
    let tmp = tmp.as_path();
    let (schema, max_rows) = (w.schema.clone(), w.max_rows);
    // The new row groups: at most `max_rows` rows of one point each.
    let groups: Vec<(&PointMeta, &[RequestRecord])> = new
        .iter()
        .flat_map(|(s, records)| records.chunks(max_rows).map(move |c| (&s.meta, c)))
        .collect();
    let itl_leaf = schema
        .index_of("itl_s")
        .map_err(|_| bad(tmp, "no column `itl_s` in the requests schema"))?;
    // Every column before `itl_s` has one leaf, so its leaf index is its field index.
    let mut itl_writers = Vec::with_capacity(groups.len());
    let mut other_writers = Vec::with_capacity(groups.len());
    for i in 0..groups.len() {
        let mut writers = w.factory.create_column_writers(w.row_groups + i)?;
        if itl_leaf >= writers.len() {
            return Err(bad(tmp, "fewer leaf columns than the schema has"));
        }
        itl_writers.push(writers.remove(itl_leaf));
        other_writers.push(writers);
    }
    let itl_field = schema.field(itl_leaf).clone();
    let other_fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != itl_leaf)
        .map(|(_, f)| f.as_ref().clone())
        .collect();
    std::thread::scope(|scope| {
        let (itl_tx, itl_rx) = std::sync::mpsc::sync_channel(1);
        let (other_tx, other_rx) = std::sync::mpsc::sync_channel(1);
        let groups = &groups;
        scope.spawn(move || {
            for ((_, records), mut writer) in groups.iter().zip(itl_writers) {
                let encoded = (|| {
                    for chunk in records.chunks(ENCODE_CHUNK_ROWS) {
                        for leaf in compute_leaves(&itl_field, &itl_array(chunk))? {
                            writer.write(&leaf)?;
                        }
                    }
                    Ok::<_, ResultsError>(writer.close()?)
                })();
                let failed = encoded.is_err();
                if itl_tx.send(encoded).is_err() || failed {
                    return;
                }
            }
        });
        scope.spawn(move || {
            for ((meta, records), mut writers) in groups.iter().zip(other_writers) {
                let encoded = (|| {
                    for chunk in records.chunks(ENCODE_CHUNK_ROWS) {
                        let columns = scalar_columns(meta, chunk);
                        let mut next = writers.iter_mut();
                        for (field, column) in other_fields.iter().zip(&columns) {
                            for leaf in compute_leaves(field, column)? {
                                next.next()
                                    .ok_or_else(|| bad(tmp, "more leaf columns than writers"))?
                                    .write(&leaf)?;
                            }
                        }
                    }
                    writers
                        .into_iter()
                        .map(|w| Ok(w.close()?))
                        .collect::<Result<Vec<_>, ResultsError>>()
                })();
                let failed = encoded.is_err();
                if other_tx.send(encoded).is_err() || failed {
                    return;
                }
            }
        });
        first(w)?;
        for _ in 0..groups.len() {
            let itl = itl_rx
                .recv()
                .map_err(|_| bad(tmp, "the ITL encoder stopped early"))??;
            let mut columns: EncodedRowGroup = other_rx
                .recv()
                .map_err(|_| bad(tmp, "the column encoder stopped early"))??;
            if itl_leaf > columns.len() {
                return Err(bad(tmp, "fewer encoded columns than the schema has"));
            }
            columns.insert(itl_leaf, itl);
            let mut rg_out = w.out.next_row_group()?;
            for column in columns {
                column.append_to_row_group(&mut rg_out)?;
            }
            rg_out.close()?;
            w.row_groups += 1;
        }
        Ok::<(), ResultsError>(())
    })?;
    Ok(())
}

/// Copies into `w` the row groups of `existing` whose point is not in `replaced`: byte
/// for byte, or (for a row group mixing points) decoded, filtered and encoded again.
/// Returns the point ids copied, or `None` when `cancel` was set (checked between row
/// groups).
fn copy_existing(
    w: &mut RequestsWriter,
    existing: Option<&Path>,
    replaced: &HashSet<&str>,
    cancel: Option<&AtomicBool>,
) -> Result<Option<HashSet<String>>, ResultsError> {
    let (schema, max_rows) = (w.schema.clone(), w.max_rows);
    let mut points = HashSet::new();
    let mut rewrite: Vec<RecordBatch> = Vec::new();
    if let Some(path) = existing {
        let input = File::open(path).map_err(|e| ResultsError::io(path, e))?;
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&input)?;
        if meta.file_metadata().schema_descr().root_schema() != w.out.schema_descr().root_schema() {
            return Err(bad(
                path,
                "the requests file's schema differs from this version's; not appending to it",
            ));
        }
        let point_column = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.path().string() == "point_id")
            .ok_or_else(|| bad(path, "missing column `point_id`"))?;
        let page_index = meta.page_index();
        let mut mixed = Vec::new();
        for (rg_idx, rg) in meta.row_groups().iter().enumerate() {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Ok(None);
            }
            match single_point(rg.column(point_column)) {
                Some(point) if replaced.contains(point.as_str()) => continue,
                Some(point) => {
                    points.insert(point);
                }
                None => {
                    mixed.push(rg_idx);
                    continue;
                }
            }
            let mut rg_out = w.out.next_row_group()?;
            for (col_idx, column) in rg.columns().iter().enumerate() {
                let result = ColumnCloseResult {
                    bytes_written: u64::try_from(column.compressed_size()).unwrap_or_default(),
                    rows_written: u64::try_from(rg.num_rows()).unwrap_or_default(),
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: page_index
                        .and_then(|pi| pi.column_index(rg_idx, col_idx))
                        .cloned(),
                    offset_index: page_index
                        .and_then(|pi| pi.offset_index(rg_idx, col_idx))
                        .cloned(),
                };
                rg_out.append_column(&input, result)?;
            }
            rg_out.close()?;
            w.row_groups += 1;
        }
        if !mixed.is_empty() {
            let reader = ParquetRecordBatchReaderBuilder::try_new(
                File::open(path).map_err(|e| ResultsError::io(path, e))?,
            )?
            .with_row_groups(mixed)
            .build()?;
            for batch in reader {
                let batch = batch?;
                let ids = batch
                    .column_by_name("point_id")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| bad(path, "column `point_id` is not text"))?;
                // Keep the runs of rows whose point is not replaced.
                let mut start = None;
                for i in 0..=batch.num_rows() {
                    let keep = i < batch.num_rows()
                        && !(ids.is_valid(i) && replaced.contains(ids.value(i)));
                    if keep && ids.is_valid(i) {
                        points.insert(ids.value(i).to_owned());
                    }
                    match (keep, start) {
                        (true, None) => start = Some(i),
                        (false, Some(s)) => {
                            rewrite.push(batch.slice(s, i - s).with_schema(schema.clone())?);
                            start = None;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for batch in &rewrite {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = max_rows.min(batch.num_rows() - offset);
            let slice = batch.slice(offset, len);
            let mut writers = w.factory.create_column_writers(w.row_groups)?;
            let mut next = writers.iter_mut();
            for (field, column) in schema.fields().iter().zip(slice.columns()) {
                for leaf in compute_leaves(field, column)? {
                    let writer = next.next().ok_or_else(|| {
                        bad(
                            existing.unwrap_or(Path::new("")),
                            "more leaf columns than the schema has",
                        )
                    })?;
                    writer.write(&leaf)?;
                }
            }
            let mut rg_out = w.out.next_row_group()?;
            for writer in writers {
                writer.close()?.append_to_row_group(&mut rg_out)?;
            }
            rg_out.close()?;
            w.row_groups += 1;
            offset += len;
        }
    }
    Ok(Some(points))
}

/// The point id of a row group whose `point_id` column holds one value only (exact
/// statistics with min = max), or `None` when it may hold several.
fn single_point(column: &ColumnChunkMetaData) -> Option<String> {
    let Some(Statistics::ByteArray(stats)) = column.statistics() else {
        return None;
    };
    if !stats.min_is_exact() || !stats.max_is_exact() {
        return None;
    }
    let (min, max) = (stats.min_opt()?, stats.max_opt()?);
    (min == max)
        .then(|| min.as_utf8().ok().map(str::to_owned))
        .flatten()
}

/// fsyncs a directory, so the renames in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), ResultsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ResultsError::io(dir, e))
}

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
        let [running_max, waiting_max, kv_cache_usage_max, preemptions] =
            SERVER.map(|(name, _)| c.get::<Float64Array>(name));
        let (running_max, waiting_max, kv_cache_usage_max, preemptions) = (
            running_max?,
            waiting_max?,
            kv_cache_usage_max?,
            preemptions?,
        );
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
                },
            ));
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

/// All `*.points.parquet` files under `root` (recursively, sorted), or only those of sweep
/// `sweep_id` (`<sweep_id>.points.parquet`). A missing `root` has no results.
pub fn find_result_files(
    root: &Path,
    sweep_id: Option<&str>,
) -> Result<Vec<PathBuf>, ResultsError> {
    let wanted = sweep_id.map(|id| format!("{id}{POINTS_SUFFIX}"));
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => break,
            Err(e) => return Err(ResultsError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| ResultsError::io(&dir, e))?;
            let path = entry.path();
            let file_type = entry
                .file_type()
                .map_err(|e| ResultsError::io(&path, e))?;
            if file_type.is_dir() {
                pending.push(path);
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let matches = match &wanted {
                Some(wanted) => name == wanted,
                None => name.ends_with(POINTS_SUFFIX),
            };
            if matches {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

// ---- schemas -------------------------------------------------------------------------------

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Parquet leaf of the `itl_s` list (`itl_s.list.item` in the 3-level list layout).
fn itl_values_path() -> ColumnPath {
    ColumnPath::new(vec![
        "itl_s".into(),
        "list".into(),
        itl_item_field().name().clone(),
    ])
}

fn itl_item_field() -> Field {
    Field::new_list_field(DataType::Float64, false)
}

/// Columns of `<sweep-id>.requests.parquet`: the point's identity, then one request record.
fn requests_schema() -> Schema {
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
    ])
}

/// Columns of `<sweep-id>.points.parquet`: one point summary per row.
fn points_schema() -> Schema {
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
    Schema::new(fields)
}

/// Columns of `<sweep-id>.metrics.parquet`: one engine metric sample per row (long format).
fn metrics_schema() -> Schema {
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

// ---- writing -------------------------------------------------------------------------------

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
fn itl_array(records: &[RequestRecord]) -> ArrayRef {
    let values = Float64Builder::with_capacity(records.iter().map(|r| r.itl_s.len()).sum());
    let mut itl =
        ListBuilder::with_capacity(values, records.len()).with_field(Arc::new(itl_item_field()));
    for r in records {
        itl.values().append_slice(&r.itl_s);
        itl.append(true);
    }
    Arc::new(itl.finish())
}

/// Every column of the requests schema but `itl_s`, in schema order, for rows of one point.
fn scalar_columns(meta: &PointMeta, records: &[RequestRecord]) -> Vec<ArrayRef> {
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
    ]
}

fn points_batch(rows: &[&PointSummary]) -> Result<RecordBatch, ResultsError> {
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
    Ok(RecordBatch::try_new(Arc::new(points_schema()), columns)?)
}

fn metrics_batch(sweep_id: &str, rows: &[MetricRow]) -> Result<RecordBatch, ResultsError> {
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

fn writer_properties(metadata: &BTreeMap<String, String>) -> WriterProperties {
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

/// Writes `batch` to `<path>.tmp-<pid>`, syncs it, then renames it to `path`; the temporary
/// file is removed if anything fails.
fn write_atomically(
    path: &Path,
    batch: &RecordBatch,
    metadata: &BTreeMap<String, String>,
) -> Result<(), ResultsError> {
    replace_atomically(path, |tmp| {
        write_file(tmp, batch, writer_properties(metadata))
    })
}

/// Lets `write` fill (and sync) `<path>.tmp-<pid>`, then renames it to `path`; the temporary
/// file is removed if anything fails.
fn replace_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), ResultsError>,
) -> Result<(), ResultsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result =
        write(&tmp).and_then(|()| fs::rename(&tmp, path).map_err(|e| ResultsError::io(path, e)));
    if result.is_err() {
        // Best effort: the original error is what matters.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_file(
    path: &Path,
    batch: &RecordBatch,
    properties: WriterProperties,
) -> Result<(), ResultsError> {
    let file = File::create(path).map_err(|e| ResultsError::io(path, e))?;
    let mut writer = ArrowWriter::try_new(&file, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    file.sync_all().map_err(|e| ResultsError::io(path, e))
}

// ---- reading -------------------------------------------------------------------------------

fn bad(path: &Path, reason: impl Into<String>) -> ResultsError {
    ResultsError::BadResults {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, ResultsError> {
    let file = File::open(path).map_err(|e| ResultsError::io(path, e))?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file)?)
}

/// All record batches of `path`, after checking that every column of `expected` is present
/// with the same type and nullability (extra columns are allowed).
fn read_batches(path: &Path, expected: &Schema) -> Result<Vec<RecordBatch>, ResultsError> {
    let builder = open(path)?;
    let actual = builder.schema();
    for want in expected.fields() {
        let Some((_, have)) = actual.column_with_name(want.name()) else {
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

/// Typed access to the columns of one batch, naming the column in errors.
struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Columns<'a> {
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
    use crate::summary::summarize;
    use fleetbench_proto::record::tpot;

    const T0: i64 = 1_700_000_000_000_000;

    fn meta(point_index: u32) -> PointMeta {
        PointMeta {
            sweep_id: "sw-20260101-abc".into(),
            point_id: format!("p-{point_index:04}"),
            point_index,
            attempt: 2,
            model: "meta-llama/Llama-3.2-1B".into(),
            gpus: 2,
            host: "gpu-host-1".into(),
            agent: "agent-a".into(),
            batch_size: 3,
            input_tokens: 128,
            output_tokens: 16,
            state: "done".into(),
            error: String::new(),
            endpoint: "chat".into(),
            started_unix_us: T0 - 2_000_000,
            finished_unix_us: T0 + 5_000_000,
            mode: "rate".into(),
            request_rate: 12.5,
            client: ClientStats {
                cpu_s: 1.5,
                wall_s: 3.0,
                cores: 2,
            },
            fallbacks: vec!["ignore_eos refused (HTTP 422: a; b)".into(), "x".into()],
        }
    }

    fn records() -> Vec<RequestRecord> {
        vec![
            RequestRecord {
                request_index: 0,
                wave: 0,
                send_time_unix_us: T0,
                ttft_s: Some(0.125),
                e2el_s: Some(1.625),
                tpot_s: tpot(0.125, 1.625, 16),
                itl_s: vec![0.1, 0.2, 0.30000000000000004],
                input_tokens: Some(128),
                output_tokens: Some(16),
                target_input_tokens: 128,
                target_output_tokens: 16,
                content_chunks: 4,
                error_kind: None,
                error: String::new(),
                endpoint: "chat".into(),
                usage_reported: true,
                scheduled_offset_s: 0.0,
                send_offset_s: 0.000_25,
            },
            RequestRecord {
                request_index: 1,
                wave: 0,
                send_time_unix_us: T0 + 17,
                ttft_s: Some(0.25),
                e2el_s: Some(0.25),
                tpot_s: None,
                itl_s: vec![],
                input_tokens: None,
                output_tokens: Some(1),
                target_input_tokens: 128,
                target_output_tokens: 16,
                content_chunks: 1,
                error_kind: None,
                error: String::new(),
                endpoint: "completions".into(),
                usage_reported: false,
                scheduled_offset_s: 0.08,
                send_offset_s: 0.081,
            },
            RequestRecord {
                request_index: 2,
                wave: 1,
                send_time_unix_us: T0 + 1_000_000,
                ttft_s: None,
                e2el_s: None,
                tpot_s: None,
                itl_s: vec![],
                input_tokens: None,
                output_tokens: None,
                target_input_tokens: 128,
                target_output_tokens: 16,
                content_chunks: 0,
                error_kind: Some(ErrorKind::HttpStatus),
                error: "HTTP 500: boom".into(),
                endpoint: "chat".into(),
                usage_reported: false,
                scheduled_offset_s: 0.08,
                send_offset_s: 0.081,
            },
        ]
    }

    fn metadata() -> PartitionMetadata {
        PartitionMetadata {
            sweep_id: "sw-20260101-abc".into(),
            engine_args: "--max-num-seqs 256".into(),
            version: "0.1.0".into(),
            ..PartitionMetadata::default()
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn partition_dir_is_hive_style() {
        assert_eq!(
            partition_dir(Path::new("/r"), "meta-llama/Llama-3.2-1B", 4),
            PathBuf::from("/r/model=meta-llama--Llama-3.2-1B/gpus=4")
        );
    }

    #[test]
    fn partition_round_trips_exactly() {
        let root = tempfile::tempdir().unwrap();
        let recs = records();
        let done = summarize(meta(0), &recs, &[]);
        let mut failed_meta = meta(1);
        failed_meta.state = "failed".into();
        failed_meta.error = "engine OOM-killed".into();
        failed_meta.attempt = 1;
        let failed = summarize(failed_meta, &[], &[]);
        let mut done = done;
        done.in_flight = Some(InFlight {
            scrapes: 7,
            client_peak: 8.0,
            server_peak: 7.0,
        });
        done.server = ServerStats {
            running_max: Some(8.0),
            waiting_max: Some(0.0),
            kv_cache_usage_max: Some(0.125),
            preemptions: None,
        };
        let points: Vec<(PointSummary, &[RequestRecord])> =
            vec![(done.clone(), recs.as_slice()), (failed.clone(), &[][..])];
        let samples = vec![
            MetricRow {
                point_id: "p-0000".into(),
                point_index: 0,
                attempt: 2,
                agent: "agent-a".into(),
                offset_s: 0.0,
                unix_ms: 1_767_225_600_123,
                metric: "vllm:num_requests_running".into(),
                value: 0.0,
            },
            MetricRow {
                point_id: "p-0000".into(),
                point_index: 0,
                attempt: 2,
                agent: "agent-a".into(),
                offset_s: 0.5,
                unix_ms: 1_767_225_600_623,
                metric: "vllm:num_requests_running".into(),
                value: 8.0,
            },
        ];

        let files = write_partition(
            root.path(),
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &points,
            &samples,
            &metadata(),
        )
        .unwrap();

        let dir = root.path().join("model=meta-llama--Llama-3.2-1B/gpus=2");
        assert_eq!(
            files,
            PartitionFiles {
                requests: dir.join("sw-20260101-abc.requests.parquet"),
                points: dir.join("sw-20260101-abc.points.parquet"),
                metrics: dir.join("sw-20260101-abc.metrics.parquet"),
            }
        );
        assert_eq!(
            files_in(&dir),
            [
                "sw-20260101-abc.metrics.parquet",
                "sw-20260101-abc.points.parquet",
                "sw-20260101-abc.requests.parquet"
            ]
        );
        assert_eq!(read_metrics(&files.metrics).unwrap(), samples);

        let summaries = read_point_summaries(&files.points).unwrap();
        assert_eq!(summaries, vec![done, failed]);
        // the failed point really carries None percentiles
        assert_eq!(summaries[1].ttft_s, Percentiles::default());

        let read = read_requests(&files.requests).unwrap();
        let expected: Vec<(String, u32, RequestRecord)> = recs
            .iter()
            .map(|r| ("p-0000".to_owned(), 2, r.clone()))
            .collect();
        assert_eq!(read, expected);

        assert_eq!(read_metadata(&files.points).unwrap(), metadata().to_key_values());
        assert_eq!(read_metadata(&files.requests).unwrap(), metadata().to_key_values());
    }

    /// Earlier versions wrote zstd: such files (re-encoded here with zstd, as they were) still
    /// read back exactly.
    #[test]
    fn files_written_with_zstd_by_earlier_versions_read_back() {
        use parquet::arrow::ArrowWriter;
        use parquet::basic::ZstdLevel;
        let root = tempfile::tempdir().unwrap();
        let (files, done, recs) = one_point_partition(root.path());
        for path in [&files.points, &files.requests] {
            let reader = open(path).unwrap();
            let schema = reader.schema().clone();
            let batches: Vec<RecordBatch> =
                reader.build().unwrap().collect::<Result<_, _>>().unwrap();
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap()))
                .set_key_value_metadata(Some(
                    metadata()
                        .to_key_values()
                        .into_iter()
                        .map(|(k, v)| KeyValue::new(k, v))
                        .collect(),
                ))
                .build();
            let mut out = Vec::new();
            let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
            for b in &batches {
                w.write(b).unwrap();
            }
            w.close().unwrap();
            fs::write(path, out).unwrap();
            let column = open(path)
                .unwrap()
                .metadata()
                .row_group(0)
                .column(0)
                .clone();
            assert!(matches!(column.compression(), Compression::ZSTD(_)));
        }
        assert_eq!(read_point_summaries(&files.points).unwrap(), vec![done]);
        let expected: Vec<(String, u32, RequestRecord)> = recs
            .iter()
            .map(|r| ("p-0000".to_owned(), 2, r.clone()))
            .collect();
        assert_eq!(read_requests(&files.requests).unwrap(), expected);
    }

    /// A partition holding one finished point of [`records`]: its files, summary and rows.
    fn one_point_partition(root: &Path) -> (PartitionFiles, PointSummary, Vec<RequestRecord>) {
        let recs = records();
        let done = summarize(meta(0), &recs, &[]);
        let points = vec![(done.clone(), recs.as_slice())];
        let files = write_partition(
            root,
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &points,
            &[],
            &metadata(),
        )
        .unwrap();
        (files, done, recs)
    }

    #[test]
    fn columns_avoid_partition_keys_and_use_utc_micros() {
        let root = tempfile::tempdir().unwrap();
        let (files, _, _) = one_point_partition(root.path());
        for path in [&files.points, &files.requests] {
            let builder = open(path).unwrap();
            let schema = builder.schema();
            assert!(schema.field_with_name("model").is_err());
            assert!(schema.field_with_name("gpus").is_err());
            assert!(schema.field_with_name("model_name").is_ok());
            assert!(schema.field_with_name("gpu_count").is_ok());
            let column = builder.metadata().row_group(0).column(0);
            assert_eq!(column.compression(), Compression::SNAPPY);
        }
        let builder = open(&files.requests).unwrap();
        let row_group = builder.metadata().row_group(0);
        let itl = row_group
            .columns()
            .iter()
            .find(|c| c.column_path() == &itl_values_path())
            .expect("the ITL leaf column");
        assert_eq!(itl.compression(), Compression::UNCOMPRESSED);
        assert!(itl.statistics().is_none());
        assert_eq!(
            builder
                .schema()
                .field_with_name("send_time")
                .unwrap()
                .data_type(),
            &timestamp_type()
        );
    }

    /// Sorted (point id, attempt, record) rows of a requests file.
    fn rows_of(path: &Path) -> Vec<(String, u32, RequestRecord)> {
        let mut rows = read_requests(path).unwrap();
        rows.sort_by(|a, b| (&a.0, a.2.request_index).cmp(&(&b.0, b.2.request_index)));
        rows
    }

    fn update(
        root: &Path,
        rows: &[(PointSummary, &[RequestRecord])],
        summaries: &[PointSummary],
    ) -> PartitionFiles {
        update_partition(
            root,
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &PartitionUpdate {
                rows,
                summaries,
                metrics: &[],
                metadata: &metadata(),
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn updates_append_points_and_replace_a_rewritten_one() {
        let root = tempfile::tempdir().unwrap();
        let recs = records();
        let a1 = summarize(meta(0), &recs, &[]);
        let b = summarize(meta(1), &recs[..2], &[]);
        // A, then B: B's rows are appended, A's copied.
        update(
            root.path(),
            &[(a1.clone(), recs.as_slice())],
            std::slice::from_ref(&a1),
        );
        let files = update(
            root.path(),
            &[(b.clone(), &recs[..2])],
            &[a1.clone(), b.clone()],
        );
        let first_schema = open(&files.requests).unwrap().schema().clone();
        assert_eq!(
            open(&files.requests).unwrap().metadata().num_row_groups(),
            2,
            "one row group per point"
        );
        let mut expected: Vec<_> = recs
            .iter()
            .map(|r| ("p-0000".to_owned(), 2, r.clone()))
            .chain(
                recs[..2]
                    .iter()
                    .map(|r| ("p-0001".to_owned(), 2, r.clone())),
            )
            .collect();
        assert_eq!(rows_of(&files.requests), expected);

        // A again, with other rows (a resend after a controller restart): A's rows once.
        let a2 = summarize(meta(0), &recs[2..], &[]);
        let files = update(
            root.path(),
            &[(a2.clone(), &recs[2..])],
            &[a2.clone(), b.clone()],
        );
        expected.retain(|(p, _, _)| p != "p-0000");
        expected.extend(
            recs[2..]
                .iter()
                .map(|r| ("p-0000".to_owned(), 2, r.clone())),
        );
        expected.sort_by(|a, b| (&a.0, a.2.request_index).cmp(&(&b.0, b.2.request_index)));
        assert_eq!(rows_of(&files.requests), expected);
        let builder = open(&files.requests).unwrap();
        assert_eq!(
            builder.schema(),
            &first_schema,
            "same schema after appending"
        );
        assert_eq!(builder.metadata().num_row_groups(), 2);
        assert_eq!(read_metadata(&files.requests).unwrap(), metadata().to_key_values());
        assert_eq!(read_point_summaries(&files.points).unwrap(), vec![a2, b]);
        // Only the three files: no temporary left behind.
        assert_eq!(
            files_in(&partition_dir(root.path(), "meta-llama/Llama-3.2-1B", 2)).len(),
            3
        );
    }

    fn prepare(root: &Path) -> Option<NextRequests> {
        prepare_next_requests(
            root,
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    #[test]
    fn a_prepared_next_file_is_used_only_while_it_is_current() {
        let root = tempfile::tempdir().unwrap();
        let recs = records();
        let s0 = summarize(meta(0), &recs, &[]);
        let s1 = summarize(meta(1), &recs[..1], &[]);
        let s2 = summarize(meta(2), &recs[1..], &[]);
        // Nothing to prepare before the first write.
        assert!(prepare(root.path()).is_none());
        update(
            root.path(),
            &[(s0.clone(), &recs[..])],
            std::slice::from_ref(&s0),
        );
        let next = prepare(root.path()).unwrap();
        assert_eq!(next.points, HashSet::from([s0.meta.point_id.clone()]));
        let tmp = next.writer.as_ref().unwrap().tmp.clone();
        assert!(tmp.exists());
        let all = [s0.clone(), s1.clone()];
        let files = update_partition(
            root.path(),
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &PartitionUpdate {
                rows: &[(s1.clone(), &recs[..1])],
                summaries: &all,
                metrics: &[],
                metadata: &metadata(),
            },
            Some(next),
        )
        .unwrap();
        assert!(!tmp.exists(), "the prepared file became the requests file");
        let points: Vec<String> = rows_of(&files.requests).into_iter().map(|r| r.0).collect();
        assert_eq!(points.len(), recs.len() + 1);
        assert_eq!(read_metadata(&files.requests).unwrap(), metadata().to_key_values());
        // Prepared, then the file changes (point 0 re-written): the stale copy is dropped
        // and removed, and the write copies the current file itself.
        let stale = prepare(root.path()).unwrap();
        let stale_tmp = stale.writer.as_ref().unwrap().tmp.clone();
        update(
            root.path(),
            &[(s2.clone(), &recs[1..])],
            &[s0.clone(), s1.clone(), s2.clone()],
        );
        let files = update_partition(
            root.path(),
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &PartitionUpdate {
                rows: &[(s0.clone(), &recs[..1])],
                summaries: &[s0.clone(), s1.clone(), s2.clone()],
                metrics: &[],
                metadata: &metadata(),
            },
            Some(stale),
        )
        .unwrap();
        assert!(!stale_tmp.exists());
        let mut by_point: Vec<(String, u32)> = rows_of(&files.requests)
            .into_iter()
            .map(|r| (r.0, r.2.request_index))
            .collect();
        by_point.sort();
        let mut want = vec![(s0.meta.point_id.clone(), recs[0].request_index)];
        want.push((s1.meta.point_id.clone(), recs[0].request_index));
        want.extend(
            recs[1..]
                .iter()
                .map(|r| (s2.meta.point_id.clone(), r.request_index)),
        );
        want.sort();
        assert_eq!(by_point, want);
        // A cancelled preparation leaves nothing behind.
        let cancelled = prepare_next_requests(
            root.path(),
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &AtomicBool::new(true),
        )
        .unwrap();
        assert!(cancelled.is_none());
        let leftovers: Vec<_> = fs::read_dir(files.requests.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".next-") || n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn large_points_round_trip_through_the_chunked_encoders() {
        // More rows than one encoding chunk, ITL lists of varying length, failures mixed in,
        // and an update adding a second point after the first is on disk.
        let root = tempfile::tempdir().unwrap();
        let base = records();
        let big: Vec<RequestRecord> = (0..(2 * ENCODE_CHUNK_ROWS + 77))
            .map(|i| {
                let mut r = base[i % base.len()].clone();
                r.request_index = u32::try_from(i).unwrap();
                r.itl_s = (0..i % 7).map(|k| k as f64 / 3.0 + i as f64).collect();
                r
            })
            .collect();
        let first = summarize(meta(0), &big, &[]);
        let second = summarize(meta(1), &big[..10], &[]);
        update(
            root.path(),
            &[(first.clone(), &big[..])],
            std::slice::from_ref(&first),
        );
        let files = update(
            root.path(),
            &[(second.clone(), &big[..10])],
            &[first.clone(), second.clone()],
        );
        let rows = rows_of(&files.requests);
        let mut want: Vec<(String, u32, RequestRecord)> = big
            .iter()
            .map(|r| (first.meta.point_id.clone(), first.meta.attempt, r.clone()))
            .chain(
                big[..10]
                    .iter()
                    .map(|r| (second.meta.point_id.clone(), second.meta.attempt, r.clone())),
            )
            .collect();
        want.sort_by(|a, b| (&a.0, a.2.request_index).cmp(&(&b.0, b.2.request_index)));
        assert_eq!(rows, want);
    }

    #[test]
    fn an_update_filters_row_groups_that_mix_points() {
        // write_partition puts all points in one row group (as older versions did).
        let root = tempfile::tempdir().unwrap();
        let recs = records();
        let a = summarize(meta(0), &recs, &[]);
        let b = summarize(meta(1), &recs[..1], &[]);
        write_partition(
            root.path(),
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &[(a.clone(), recs.as_slice()), (b.clone(), &recs[..1])],
            &[],
            &metadata(),
        )
        .unwrap();
        let a2 = summarize(meta(0), &recs[..2], &[]);
        let files = update(root.path(), &[(a2.clone(), &recs[..2])], &[a2, b]);
        let expected: Vec<_> = recs[..2]
            .iter()
            .map(|r| ("p-0000".to_owned(), 2, r.clone()))
            .chain(
                recs[..1]
                    .iter()
                    .map(|r| ("p-0001".to_owned(), 2, r.clone())),
            )
            .collect();
        assert_eq!(rows_of(&files.requests), expected);
    }

    #[test]
    fn rewriting_a_partition_replaces_it() {
        let root = tempfile::tempdir().unwrap();
        let recs = records();
        let model = "meta-llama/Llama-3.2-1B";
        let first = vec![(summarize(meta(0), &recs, &[]), recs.as_slice())];
        write_partition(
            root.path(),
            "sw-20260101-abc",
            model,
            2,
            &first,
            &[],
            &metadata(),
        )
        .unwrap();
        let second = vec![(summarize(meta(5), &recs[..1], &[]), &recs[..1])];
        let files = write_partition(
            root.path(),
            "sw-20260101-abc",
            model,
            2,
            &second,
            &[],
            &metadata(),
        )
        .unwrap();
        assert_eq!(read_requests(&files.requests).unwrap().len(), 1);
        let summaries = read_point_summaries(&files.points).unwrap();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].meta.point_index, 5);
        assert_eq!(files_in(&partition_dir(root.path(), model, 2)).len(), 3);
    }

    #[test]
    fn points_of_another_partition_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        let points = vec![(summarize(meta(0), &[], &[]), &[][..])];
        let err = write_partition(
            root.path(),
            "sw-20260101-abc",
            "other/model",
            2,
            &points,
            &[],
            &metadata(),
        )
        .unwrap_err();
        assert!(matches!(err, ResultsError::BadResults { .. }), "{err}");
        let err = write_partition(
            root.path(),
            "../escape",
            "meta-llama/Llama-3.2-1B",
            2,
            &points,
            &[],
            &metadata(),
        )
        .unwrap_err();
        assert!(matches!(err, ResultsError::BadResults { .. }), "{err}");
        assert!(fs::read_dir(root.path()).unwrap().next().is_none());
    }

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

    #[test]
    fn finds_points_files_recursively_and_by_sweep() {
        let root = tempfile::tempdir().unwrap();
        let recs = records();
        let mut other = meta(0);
        other.sweep_id = "sw-2".into();
        other.gpus = 1;
        let a = write_partition(
            root.path(),
            "sw-20260101-abc",
            "meta-llama/Llama-3.2-1B",
            2,
            &[(summarize(meta(0), &recs, &[]), recs.as_slice())],
            &[],
            &metadata(),
        )
        .unwrap();
        let b = write_partition(
            root.path(),
            "sw-2",
            "meta-llama/Llama-3.2-1B",
            1,
            &[(summarize(other, &recs, &[]), recs.as_slice())],
            &[],
            &metadata(),
        )
        .unwrap();
        fs::write(a.points.with_extension("parquet.tmp-1"), b"partial").unwrap();

        let mut all = vec![a.points.clone(), b.points.clone()];
        all.sort();
        assert_eq!(find_result_files(root.path(), None).unwrap(), all);
        assert_eq!(
            find_result_files(root.path(), Some("sw-2")).unwrap(),
            vec![b.points]
        );
        assert_eq!(
            find_result_files(root.path(), Some("nope")).unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            find_result_files(&root.path().join("missing"), None).unwrap(),
            Vec::<PathBuf>::new()
        );
    }
}
