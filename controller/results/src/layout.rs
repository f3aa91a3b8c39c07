//! The Hive layout of the results folder: a folder per (model, GPU count) partition, three
//! files per sweep in it, and the walk that finds them again:
//!
//! ```text
//! ROOT/model=<model-slug>/gpus=<N>/<sweep-id>.requests.parquet   one row per measured request
//! ROOT/model=<model-slug>/gpus=<N>/<sweep-id>.points.parquet     one row per point attempt
//! ROOT/model=<model-slug>/gpus=<N>/<sweep-id>.metrics.parquet    one engine metric sample per row
//! ```
//!
//! Partitioned the Hive way so DuckDB, Polars, pandas and Spark read a whole fleet's results
//! in one call; no column is called `model` or `gpus`, the partition keys (the columns are
//! `model_name` and `gpu_count`). A file is written under a temporary name and renamed into
//! place, so a file of another name in a partition folder is never a result.

use std::fs;
use std::path::{Path, PathBuf};

use fleetbench_proto::spec::model_slug;

use crate::error::ResultsError;

const REQUESTS_SUFFIX: &str = ".requests.parquet";
const POINTS_SUFFIX: &str = ".points.parquet";
const METRICS_SUFFIX: &str = ".metrics.parquet";

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

/// The files of sweep `sweep_id` in the partition folder `dir`.
pub(crate) fn partition_files(dir: &Path, sweep_id: &str) -> PartitionFiles {
    PartitionFiles {
        requests: dir.join(format!("{sweep_id}{REQUESTS_SUFFIX}")),
        points: dir.join(format!("{sweep_id}{POINTS_SUFFIX}")),
        metrics: dir.join(format!("{sweep_id}{METRICS_SUFFIX}")),
    }
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
            let file_type = entry.file_type().map_err(|e| ResultsError::io(&path, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dir_is_hive_style() {
        assert_eq!(
            partition_dir(Path::new("/r"), "meta-llama/Llama-3.2-1B", 4),
            PathBuf::from("/r/model=meta-llama--Llama-3.2-1B/gpus=4")
        );
    }
}
