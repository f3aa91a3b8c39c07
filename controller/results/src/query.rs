//! Queries over the results folder: which points match a filter, in which order, grouped
//! side by side (one column group per host, GPU count, sweep or model), and as CSV, JSON or
//! table text. Clap-free: `controllerctl results`, the reports and the controller's HTTP
//! pages build a [`Filter`] from their own inputs.
//!
//! Flat output is one row per point, sorted by model, GPU count, host, workload and load
//! (batch size or rate). Grouped output has one section per model, GPU count, host,
//! workload and load mode, without the dimension grouped by, which becomes the column
//! groups; the rows are the load levels. When several points fall in one cell (the same
//! load measured by two sweeps on one host, say), the one that finished last is shown and
//! the others are counted as hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fleetbench_proto::pb;
use fleetbench_proto::spec::model_slug;
use serde_json::{Map, Value, json};

use crate::error::ResultsError;
use crate::layout::find_result_files;
use crate::read::read_point_summaries;
use crate::summary::PointSummary;
use crate::text;

/// The point states a points file holds.
pub const STATES: [&str; 4] = ["done", "failed", "cancelled", "skipped"];

/// Which points to show; every given filter must match, a list matches any of its values.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Model name or its slug (`org--name`); repeat or comma-separate for several.
    pub model: Vec<String>,
    /// GPU count (tensor parallel size).
    pub gpus: Vec<u32>,
    /// Host the point ran on.
    pub host: Vec<String>,
    /// Sweep id.
    pub sweep: Vec<String>,
    /// Point state.
    pub state: Vec<String>,
    /// GPU model, as the agent's inventory names it; matches a point whose `gpu_model`
    /// contains it, ignoring case (`h100` matches `NVIDIA H100 80GB HBM3`).
    pub gpu_model: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.model.is_empty()
            && self.gpus.is_empty()
            && self.host.is_empty()
            && self.sweep.is_empty()
            && self.state.is_empty()
            && self.gpu_model.is_empty()
    }

    pub fn matches(&self, p: &PointSummary) -> bool {
        let m = &p.meta;
        let any =
            |wanted: &[String], value: &str| wanted.is_empty() || wanted.iter().any(|w| w == value);
        let slug = model_slug(&m.model);
        (self.model.is_empty()
            || self
                .model
                .iter()
                .any(|w| *w == m.model || model_slug(w) == slug))
            && (self.gpus.is_empty() || self.gpus.contains(&m.gpus))
            && any(&self.host, &m.host)
            && any(&self.sweep, &m.sweep_id)
            && any(&self.state, &m.state)
            && (self.gpu_model.is_empty() || {
                let have = m.gpu_model.to_lowercase();
                self.gpu_model
                    .iter()
                    .any(|w| have.contains(&w.to_lowercase()))
            })
    }

    /// Narrows the filter to the positional SWEEP_ID, when given; an id that `--sweep`
    /// already excludes is a usage error rather than an empty result.
    pub fn narrow_to_sweep(&mut self, sweep_id: Option<String>) -> Result<(), ResultsError> {
        if let Some(id) = sweep_id {
            if !self.sweep.is_empty() && !self.sweep.contains(&id) {
                return Err(ResultsError::Query(format!(
                    "SWEEP_ID {id} is not among --sweep {}",
                    self.sweep.join(",")
                )));
            }
            self.sweep = vec![id];
        }
        Ok(())
    }
}

/// The dimension `--group-by` puts side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Host,
    Gpus,
    Sweep,
    Model,
    /// The GPU model the points ran on; hosts are compared with each other (a section
    /// does not hold the host fixed). Points without one are `unknown`.
    GpuModel,
}

impl GroupBy {
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Host => "host",
            GroupBy::Gpus => "gpus",
            GroupBy::Sweep => "sweep",
            GroupBy::Model => "model",
            GroupBy::GpuModel => "gpu_model",
        }
    }

    fn column(self, p: &PointSummary) -> Column {
        let m = &p.meta;
        match self {
            GroupBy::Host => Column::text(&m.host),
            GroupBy::Gpus => Column {
                number: m.gpus,
                text: m.gpus.to_string(),
            },
            GroupBy::Sweep => Column::text(&m.sweep_id),
            GroupBy::Model => Column::text(&m.model),
            GroupBy::GpuModel if m.gpu_model.is_empty() => Column::text("unknown"),
            GroupBy::GpuModel => Column::text(&m.gpu_model),
        }
    }
}

/// One column group of a grouped comparison: a host, GPU count, sweep or model. GPU counts
/// sort as numbers, the rest as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    number: u32,
    pub text: String,
}

impl Column {
    fn text(s: &str) -> Column {
        Column {
            number: 0,
            text: s.to_owned(),
        }
    }
}

/// What one section of a grouped comparison holds fixed; the grouped dimension is `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SectionKey {
    pub model: Option<String>,
    pub gpus: Option<u32>,
    pub host: Option<String>,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub mode: String,
}

/// One load level of a section: a point per column group.
#[derive(Debug)]
pub struct Row<'a> {
    pub batch_size: u32,
    pub request_rate: f64,
    pub cells: BTreeMap<Column, &'a PointSummary>,
}

#[derive(Debug)]
pub struct Section<'a> {
    pub key: SectionKey,
    /// The column groups with at least one point in this section, sorted.
    pub columns: Vec<Column>,
    pub rows: Vec<Row<'a>>,
}

/// Points arranged side by side.
#[derive(Debug)]
pub struct Grouped<'a> {
    pub by: GroupBy,
    pub sections: Vec<Section<'a>>,
    /// Every column group of every section, sorted (the CSV columns).
    pub columns: Vec<Column>,
    /// Points not shown because a later point of the same cell was.
    pub hidden: usize,
}

/// Sorts points by model, GPU count, host, workload, load mode, batch size, rate, then
/// sweep, point and attempt.
pub fn sort_points(points: &mut [PointSummary]) {
    points.sort_by(|a, b| {
        let (a, b) = (&a.meta, &b.meta);
        (
            &a.model,
            a.gpus,
            &a.host,
            a.input_tokens,
            a.output_tokens,
            &a.mode,
        )
            .cmp(&(
                &b.model,
                b.gpus,
                &b.host,
                b.input_tokens,
                b.output_tokens,
                &b.mode,
            ))
            .then(a.batch_size.cmp(&b.batch_size))
            .then(a.request_rate.total_cmp(&b.request_rate))
            .then((&a.sweep_id, a.point_index, a.attempt).cmp(&(
                &b.sweep_id,
                b.point_index,
                b.attempt,
            )))
    });
}

/// Arranges points for a side-by-side comparison along `by`.
pub fn group(points: &[PointSummary], by: GroupBy) -> Grouped<'_> {
    // section → (batch size, rate bits) → column → point
    type Cells<'a> = BTreeMap<Column, &'a PointSummary>;
    let mut sections: BTreeMap<SectionKey, BTreeMap<(u32, u64), Cells<'_>>> = BTreeMap::new();
    let mut hidden = 0;
    for p in points {
        let m = &p.meta;
        let key = SectionKey {
            model: (by != GroupBy::Model).then(|| m.model.clone()),
            gpus: (by != GroupBy::Gpus).then_some(m.gpus),
            host: (by != GroupBy::Host && by != GroupBy::GpuModel).then(|| m.host.clone()),
            input_tokens: m.input_tokens,
            output_tokens: m.output_tokens,
            mode: m.mode.clone(),
        };
        // Rates are never negative, so their bits sort like the numbers.
        let row = (m.batch_size, m.request_rate.max(0.0).to_bits());
        let cells = sections.entry(key).or_default().entry(row).or_default();
        let later = |p: &PointSummary| {
            (
                p.meta.finished_unix_us,
                p.meta.sweep_id.clone(),
                p.meta.attempt,
            )
        };
        match cells.entry(by.column(p)) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(p);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                hidden += 1;
                if later(p) > later(e.get()) {
                    e.insert(p);
                }
            }
        }
    }
    let mut all_columns = BTreeSet::new();
    let sections = sections
        .into_iter()
        .map(|(key, rows)| {
            let columns: BTreeSet<Column> = rows
                .values()
                .flat_map(|cells| cells.keys().cloned())
                .collect();
            all_columns.extend(columns.iter().cloned());
            Section {
                key,
                columns: columns.into_iter().collect(),
                rows: rows
                    .into_iter()
                    .map(|((batch_size, rate), cells)| Row {
                        batch_size,
                        request_rate: f64::from_bits(rate),
                        cells,
                    })
                    .collect(),
            }
        })
        .collect();
    Grouped {
        by,
        sections,
        columns: all_columns.into_iter().collect(),
        hidden,
    }
}

/// Every field of a point summary, in a stable order: the fields of the controller's
/// `results` output (`text::fields`), then `attempt`, `started_unix_us`,
/// `finished_unix_us`.
pub fn fields(p: &PointSummary) -> Vec<(String, Value)> {
    let mut f = text::fields(&pb::PointSummary::from(p));
    f.push(("attempt".into(), json!(p.meta.attempt)));
    f.push(("started_unix_us".into(), json!(p.meta.started_unix_us)));
    f.push(("finished_unix_us".into(), json!(p.meta.finished_unix_us)));
    f
}

fn csv_line(cells: impl IntoIterator<Item = Value>) -> String {
    let mut line = cells
        .into_iter()
        .map(|v| text::csv_cell(&v))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// One row per point: a header, then every field of [`fields`].
pub fn to_csv(points: &[PointSummary]) -> String {
    let header = match points.first() {
        Some(p) => fields(p),
        None => return String::new(),
    };
    let mut out = csv_line(header.into_iter().map(|(k, _)| Value::String(k)));
    for p in points {
        out.push_str(&csv_line(fields(p).into_iter().map(|(_, v)| v)));
    }
    out
}

/// An array with one object per point, the fields of [`fields`].
pub fn to_json(points: &[PointSummary]) -> String {
    let rows: Vec<Value> = points
        .iter()
        .map(|p| Value::Object(fields(p).into_iter().collect()))
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// One row per point with the model and sweep in front of the `results` table's columns.
pub fn to_table(points: &[PointSummary]) -> String {
    let pb: Vec<pb::PointSummary> = points.iter().map(pb::PointSummary::from).collect();
    text::to_fleet_table(&pb)
}

/// The fields of each cell of a grouped CSV or JSON comparison.
pub const CELL_FIELDS: [&str; 13] = [
    "sweep_id",
    "state",
    "verdict",
    "completed",
    "failed",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "ttft_s_p50",
    "ttft_s_p99",
    "tpot_s_p50",
    "tpot_s_p99",
    "e2el_s_p50",
];

fn cell_fields(p: &PointSummary) -> Vec<(&'static str, Value)> {
    let all: BTreeMap<String, Value> = fields(p).into_iter().collect();
    CELL_FIELDS
        .iter()
        .map(|f| (*f, all.get(*f).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// The fixed part of a grouped row: what its section holds fixed, then its load.
fn row_key_fields(key: &SectionKey, row: &Row<'_>) -> Vec<(&'static str, Value)> {
    let mut f = Vec::new();
    if let Some(model) = &key.model {
        f.push(("model", json!(model)));
    }
    if let Some(gpus) = key.gpus {
        f.push(("gpus", json!(gpus)));
    }
    if let Some(host) = &key.host {
        f.push(("host", json!(host)));
    }
    f.extend([
        ("input_tokens", json!(key.input_tokens)),
        ("output_tokens", json!(key.output_tokens)),
        ("mode", json!(key.mode)),
        ("batch_size", json!(row.batch_size)),
        ("request_rate", json!(row.request_rate)),
    ]);
    f
}

/// One row per section and load level; after the fixed columns, the [`CELL_FIELDS`] of
/// every column group as `<group-by>=<value>:<field>` (empty where a group has no point).
pub fn grouped_csv(g: &Grouped<'_>) -> String {
    let Some((first, row)) = g
        .sections
        .first()
        .and_then(|s| s.rows.first().map(|r| (s, r)))
    else {
        return String::new();
    };
    let mut header: Vec<Value> = row_key_fields(&first.key, row)
        .into_iter()
        .map(|(k, _)| json!(k))
        .collect();
    for c in &g.columns {
        for f in CELL_FIELDS {
            header.push(json!(format!("{}={}:{f}", g.by.name(), c.text)));
        }
    }
    let mut out = csv_line(header);
    for s in &g.sections {
        for r in &s.rows {
            let mut cells: Vec<Value> = row_key_fields(&s.key, r)
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            for c in &g.columns {
                match r.cells.get(c) {
                    Some(p) => cells.extend(cell_fields(p).into_iter().map(|(_, v)| v)),
                    None => cells.extend(CELL_FIELDS.map(|_| Value::Null)),
                }
            }
            out.push_str(&csv_line(cells));
        }
    }
    out
}

/// An array with one object per section and load level; the column groups are an object
/// under the group-by name (`"host": {"a": {…}, "b": {…}}`).
pub fn grouped_json(g: &Grouped<'_>) -> String {
    let mut rows = Vec::new();
    for s in &g.sections {
        for r in &s.rows {
            let mut obj: Map<String, Value> = row_key_fields(&s.key, r)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            let groups: Map<String, Value> = r
                .cells
                .iter()
                .map(|(c, p)| {
                    let cell: Map<String, Value> = cell_fields(p)
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect();
                    (c.text.clone(), Value::Object(cell))
                })
                .collect();
            obj.insert(g.by.name().to_owned(), Value::Object(groups));
            rows.push(Value::Object(obj));
        }
    }
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// The columns of each group in a grouped table.
const TABLE_CELLS: [&str; 4] = ["out tok/s", "tot tok/s", "ttft p50", "tpot p50"];

fn table_cells(p: &PointSummary) -> [String; 4] {
    let flag = if p.meta.state == "done" && p.verdict == "valid" {
        ""
    } else {
        "*"
    };
    [
        format!("{}{flag}", text::num(p.output_throughput)),
        text::num(p.total_token_throughput),
        text::ms(p.ttft_s.p50),
        text::ms(p.tpot_s.p50),
    ]
}

fn section_title(key: &SectionKey) -> String {
    let mut parts = Vec::new();
    if let Some(model) = &key.model {
        parts.push(model.clone());
    }
    if let Some(gpus) = key.gpus {
        parts.push(format!("{gpus} GPU{}", if gpus == 1 { "" } else { "s" }));
    }
    if let Some(host) = &key.host {
        parts.push(format!("host {host}"));
    }
    parts.push(format!("{}/{} tokens", key.input_tokens, key.output_tokens));
    parts.push(if key.mode.is_empty() {
        "burst".into()
    } else {
        key.mode.clone()
    });
    parts.join(", ")
}

/// One table per section: rows are load levels, one column group per value of the
/// grouped dimension, side by side.
pub fn grouped_table(g: &Grouped<'_>) -> String {
    let mut out = String::new();
    for (i, s) in g.sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", section_title(&s.key));
        // Cells: the load column, then TABLE_CELLS per column group.
        let mut header = vec!["load".to_owned()];
        for _ in &s.columns {
            header.extend(TABLE_CELLS.map(str::to_owned));
        }
        let rows: Vec<Vec<String>> = s
            .rows
            .iter()
            .map(|r| {
                let mut cells = vec![text::load_text(&s.key.mode, r.batch_size, r.request_rate)];
                for c in &s.columns {
                    match r.cells.get(c) {
                        Some(p) => cells.extend(table_cells(p)),
                        None => cells.extend(TABLE_CELLS.map(|_| "-".to_owned())),
                    }
                }
                cells
            })
            .collect();
        let mut widths: Vec<usize> = header.iter().map(String::len).collect();
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        // A group's name must fit over its columns: widen its first column if not.
        for (gi, c) in s.columns.iter().enumerate() {
            let first = 1 + gi * TABLE_CELLS.len();
            let span: usize = widths[first..first + TABLE_CELLS.len()]
                .iter()
                .sum::<usize>()
                + 2 * (TABLE_CELLS.len() - 1);
            let name = format!("{}={}", g.by.name(), c.text);
            if name.len() > span {
                widths[first] += name.len() - span;
            }
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut groups = vec![" ".repeat(widths[0])];
        for (gi, c) in s.columns.iter().enumerate() {
            let first = 1 + gi * TABLE_CELLS.len();
            let span: usize = widths[first..first + TABLE_CELLS.len()]
                .iter()
                .sum::<usize>()
                + 2 * (TABLE_CELLS.len() - 1);
            let name = format!("{}={}", g.by.name(), c.text);
            groups.push(format!("{name:<span$}"));
        }
        let _ = writeln!(out, "{}", groups.join("  ").trim_end());
        let _ = writeln!(out, "{}", line(&header));
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
    }
    out.push_str(
        "(latencies in ms; load = burst batch, cN = N in flight, R/s = request rate; * = point not done or verdict not valid)\n",
    );
    if g.hidden > 0 {
        let _ = writeln!(
            out,
            "({} older points of the same cell not shown: narrow with --sweep)",
            g.hidden
        );
    }
    out
}

/// The points files under `dir` that may hold points matching `filter` (all of them, or
/// those of the filter's sweeps), sorted.
pub fn points_files(dir: &Path, filter: &Filter) -> Result<BTreeSet<PathBuf>, ResultsError> {
    let mut files = BTreeSet::new();
    if filter.sweep.is_empty() {
        files.extend(find_result_files(dir, None)?);
    } else {
        for sweep in &filter.sweep {
            files.extend(find_result_files(dir, Some(sweep))?);
        }
    }
    Ok(files)
}

/// The points under `dir` that match `filter`, sorted ([`sort_points`]), and the number of
/// points files read. Files that cannot be read are reported on stderr and skipped.
pub fn load(dir: &Path, filter: &Filter) -> Result<(Vec<PointSummary>, usize), ResultsError> {
    let files = points_files(dir, filter)?;
    let mut points = Vec::new();
    for file in &files {
        match read_point_summaries(file) {
            Ok(read) => points.extend(read.into_iter().filter(|p| filter.matches(p))),
            Err(e) => eprintln!("controllerctl: skipping {}: {e}", file.display()),
        }
    }
    sort_points(&mut points);
    Ok((points, files.len()))
}

#[cfg(test)]
mod tests;
