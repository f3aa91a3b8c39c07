//! Writing a partition: the three files of a (model, GPU count) partition of a sweep, each
//! written under a temporary name, synced and renamed into place (then the folder synced),
//! so a reader never sees half a file. [`write_partition`] replaces a partition;
//! [`update_partition`] copies the existing requests file's row groups byte for byte and
//! appends the new points' rows, encoded on two threads while the copy runs; and
//! [`prepare_next_requests`] makes that copy ahead of the next update ([`NextRequests`]).
//!
//! Modes: partition folders are created 0750 and files 0640 (less what the umask takes):
//! readable by the owner's group (analysts reading the results folder), never
//! world-readable or world-writable. The results hold measurements and engine events
//! (scrubbed of secrets by the agent), not credentials, so group access is allowed.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::spec::model_slug;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::KeyValue;
use parquet::file::metadata::{ColumnChunkMetaData, PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;

use crate::encode::{
    ENCODE_CHUNK_ROWS, itl_array, metrics_batch, points_batch, scalar_columns, writer_properties,
};
use crate::error::{ResultsError, bad};
use crate::layout::{PartitionFiles, partition_dir, partition_files};
use crate::metadata::PartitionMetadata;
use crate::read::read_metadata;
use crate::schema::{MetricRow, requests_schema};
use crate::summary::{PointMeta, PointSummary};

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
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&dir)
        .map_err(|e| ResultsError::io(&dir, e))?;
    let files = partition_files(&dir, sweep_id);
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
    let requests = partition_files(&partition_dir(root, model, gpus), sweep_id).requests;
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
        let file = create_file(&tmp).map_err(|e| ResultsError::io(&tmp, e))?;
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
/// Mode of the partition folders the writer creates (see the module doc).
const DIR_MODE: u32 = 0o750;
/// Mode of the files the writer creates.
const FILE_MODE: u32 = 0o640;

/// `File::create` with [`FILE_MODE`].
fn create_file(path: &Path) -> std::io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

fn sync_dir(dir: &Path) -> Result<(), ResultsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ResultsError::io(dir, e))
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
    let file = create_file(path).map_err(|e| ResultsError::io(path, e))?;
    let mut writer = ArrowWriter::try_new(&file, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    file.sync_all().map_err(|e| ResultsError::io(path, e))
}

#[cfg(test)]
mod tests;
