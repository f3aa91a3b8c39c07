//! What a report shows, read from the results folder: the matching point summaries, the
//! metadata of the points files they came from (engine image, args, hosts, crash
//! forensics), and the groupings the plots use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fleetbench_proto::spec::model_slug;

use crate::error::ReportError;
use fleetbench_results::PartitionMetadata;
use fleetbench_results::query::{Filter, points_files, sort_points};
use fleetbench_results::read::{read_partition_metadata, read_point_summaries};
use fleetbench_results::summary::PointSummary;

/// One points file that holds at least one of the report's points.
#[derive(Debug, Clone)]
pub struct SweepFile {
    pub path: PathBuf,
    pub sweep_id: String,
    pub model: String,
    pub gpus: u32,
    /// Its key-value metadata.
    pub meta: PartitionMetadata,
}

impl SweepFile {
    /// The engine as titles name it: the image, else the runtime (with the engine kind
    /// when it is not vLLM, e.g. `transformers process engine`).
    pub fn engine(&self) -> String {
        let image = &self.meta.engine_image;
        if image.is_empty() {
            let runtime = &self.meta.engine_runtime;
            let kind = &self.meta.engine_kind;
            if runtime.is_empty() {
                "engine unknown".into()
            } else if kind.is_empty() || kind == "vllm" {
                format!("{runtime} engine")
            } else {
                format!("{kind} {runtime} engine")
            }
        } else {
            image.to_owned()
        }
    }

    /// The engine settings that make two runs of one model and GPU count differ: the image
    /// and the engine arguments.
    pub fn engine_setting(&self) -> String {
        let args = &self.meta.engine_args;
        format!("{} {}", self.engine(), args).trim().to_owned()
    }
}

/// The input of a report.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub dir: PathBuf,
    /// Matching points, sorted like `controllerctl results`.
    pub points: Vec<PointSummary>,
    pub files: Vec<SweepFile>,
    /// Points files that could not be read, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// A workload: tokens in and out, and the load mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub input: u32,
    pub output: u32,
    pub mode: String,
}

impl Workload {
    pub fn of(p: &PointSummary) -> Workload {
        Workload {
            input: p.meta.input_tokens,
            output: p.meta.output_tokens,
            mode: p.meta.mode.clone(),
        }
    }

    pub fn label(&self) -> String {
        if self.mode == "burst" || self.mode.is_empty() {
            format!("{}/{} tok", self.input, self.output)
        } else {
            format!("{}/{} tok {}", self.input, self.output, self.mode)
        }
    }
}

/// A point drawn against batch size: burst and concurrency points (rate points have no
/// batch size).
pub fn has_batch_size(p: &PointSummary) -> bool {
    p.meta.batch_size > 0 && p.meta.mode != "rate"
}

/// The point did not measure: failed, cancelled, or its engine crashed.
pub fn is_failed(p: &PointSummary) -> bool {
    p.meta.state != "done"
}

/// Per-request output speed: the mean (the seed's "per-request throughput"), else p50.
pub fn output_speed(p: &PointSummary) -> Option<f64> {
    p.output_speed.mean.or(p.output_speed.p50)
}

/// Keeps one point per key: the one that finished last (then the later sweep id and
/// attempt), like a cell of `controllerctl results --group-by`.
pub fn latest<'a, K: Ord>(
    points: impl IntoIterator<Item = &'a PointSummary>,
    key: impl Fn(&PointSummary) -> K,
) -> Vec<&'a PointSummary> {
    let mut cells: BTreeMap<K, &PointSummary> = BTreeMap::new();
    let later = |p: &PointSummary| {
        (
            p.meta.finished_unix_us,
            p.meta.sweep_id.clone(),
            p.meta.attempt,
        )
    };
    for p in points {
        let k = key(p);
        match cells.get(&k) {
            Some(old) if later(old) >= later(p) => {}
            _ => {
                cells.insert(k, p);
            }
        }
    }
    cells.into_values().collect()
}

impl ReportData {
    /// Reads the points under `dir` matching `filter` and the metadata of their files.
    /// Unreadable points files are listed, not fatal.
    pub fn load(dir: &Path, filter: &Filter) -> Result<ReportData, ReportError> {
        let mut data = ReportData {
            dir: dir.to_path_buf(),
            ..ReportData::default()
        };
        for path in points_files(dir, filter)? {
            let read = match read_point_summaries(&path) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "points file skipped");
                    data.unreadable.push((path, e.to_string()));
                    continue;
                }
            };
            let matching: Vec<PointSummary> =
                read.into_iter().filter(|p| filter.matches(p)).collect();
            let Some(first) = matching.first() else {
                continue;
            };
            let meta = match read_partition_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    data.unreadable.push((path.clone(), e.to_string()));
                    PartitionMetadata::default()
                }
            };
            data.files.push(SweepFile {
                sweep_id: first.meta.sweep_id.clone(),
                model: first.meta.model.clone(),
                gpus: first.meta.gpus,
                path,
                meta,
            });
            data.points.extend(matching);
        }
        sort_points(&mut data.points);
        Ok(data)
    }

    /// The file a point came from.
    pub fn file_of(&self, p: &PointSummary) -> Option<&SweepFile> {
        self.files.iter().find(|f| {
            f.sweep_id == p.meta.sweep_id && f.gpus == p.meta.gpus && f.model == p.meta.model
        })
    }

    /// The engine setting a point ran with ([`SweepFile::engine_setting`]).
    pub fn engine_setting(&self, p: &PointSummary) -> String {
        self.file_of(p)
            .map(SweepFile::engine_setting)
            .unwrap_or_else(|| "engine unknown".into())
    }

    /// The models, sorted.
    pub fn models(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.points.iter().map(|p| &p.meta.model).collect();
        set.into_iter().cloned().collect()
    }

    pub fn points_of_model<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a PointSummary> {
        self.points.iter().filter(move |p| p.meta.model == model)
    }

    /// The GPU counts a model ran with, ascending.
    pub fn gpu_counts(&self, model: &str) -> Vec<u32> {
        let set: BTreeSet<u32> = self.points_of_model(model).map(|p| p.meta.gpus).collect();
        set.into_iter().collect()
    }

    pub fn points_of<'a>(
        &'a self,
        model: &'a str,
        gpus: u32,
    ) -> impl Iterator<Item = &'a PointSummary> {
        self.points_of_model(model)
            .filter(move |p| p.meta.gpus == gpus)
    }

    /// Hosts of a model's points at a GPU count, sorted.
    pub fn hosts(&self, model: &str, gpus: u32) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .points_of(model, gpus)
            .filter(|p| !p.meta.host.is_empty())
            .map(|p| &p.meta.host)
            .collect();
        set.into_iter().cloned().collect()
    }

    /// Engines (images or runtimes) of a model's points at a GPU count, sorted.
    pub fn engines(&self, model: &str, gpus: u32) -> Vec<String> {
        let set: BTreeSet<String> = self
            .points_of(model, gpus)
            .filter_map(|p| self.file_of(p).map(SweepFile::engine))
            .collect();
        set.into_iter().collect()
    }

    /// The sweep files in the order of the metadata table: by sweep, then GPU count.
    pub fn sweeps(&self) -> Vec<&SweepFile> {
        let mut files: Vec<&SweepFile> = self.files.iter().collect();
        files.sort_by(|a, b| (&a.sweep_id, &a.model, a.gpus).cmp(&(&b.sweep_id, &b.model, b.gpus)));
        files
    }
}

/// A file name stem for a model at a GPU count: `<slug>_gpus<N>`.
pub fn stem(model: &str, gpus: Option<u32>) -> String {
    let slug: String = model_slug(model)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match gpus {
        Some(n) => format!("{slug}_gpus{n}"),
        None => slug,
    }
}
