//! `controllerctl results`: point summaries read back from the Parquet results folder
//! (`<dir>/model=<slug>/gpus=<n>/<sweep-id>.points.parquet`), across sweeps and hosts:
//! filtered, sorted, and printed one row per point or side by side (`--group-by`).
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
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use fleetbench_proto::pb;
use fleetbench_proto::spec::model_slug;
use serde_json::{Map, Value, json};

use super::output::{self, Format};
use crate::error::ControllerError;
use crate::results::{find_result_files, read_point_summaries};
use crate::summary::PointSummary;

/// Exit code when no point matches the filters.
pub const EXIT_NO_MATCH: u8 = 1;

/// The point states a points file holds.
const STATES: [&str; 4] = ["done", "failed", "cancelled", "skipped"];

/// Arguments of `controllerctl results`.
#[derive(Args, Debug, Clone)]
pub struct ResultsArgs {
    /// Only this sweep (the same as --sweep).
    pub sweep_id: Option<String>,
    /// The results folder the controller writes (Hive-partitioned Parquet).
    #[arg(long, env = "FLEETBENCH_RESULTS", default_value = "results")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub filter: Filter,
    /// Compare side by side: one column group per host, GPU count, sweep or model.
    #[arg(long, value_enum)]
    pub group_by: Option<GroupBy>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Ask the controller for SWEEP_ID's summaries as it holds them in memory (running
    /// sweeps too) instead of reading --dir; no filters or grouping.
    #[arg(long)]
    pub live: bool,
}

/// Which points to show; every given filter must match, a list matches any of its values.
/// (The GPU model is not in the points files, so there is no filter for it.)
#[derive(Args, Debug, Clone, Default)]
pub struct Filter {
    /// Model name or its slug (`org--name`); repeat or comma-separate for several.
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// GPU count (tensor parallel size).
    #[arg(long, value_delimiter = ',')]
    pub gpus: Vec<u32>,
    /// Host the point ran on.
    #[arg(long, value_delimiter = ',')]
    pub host: Vec<String>,
    /// Sweep id.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<String>,
    /// Point state.
    #[arg(long, value_delimiter = ',', value_parser = STATES)]
    pub state: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.model.is_empty()
            && self.gpus.is_empty()
            && self.host.is_empty()
            && self.sweep.is_empty()
            && self.state.is_empty()
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
    }

    /// Narrows the filter to the positional SWEEP_ID, when given; an id that `--sweep`
    /// already excludes is a usage error rather than an empty result.
    pub fn narrow_to_sweep(&mut self, sweep_id: Option<String>) -> Result<(), ControllerError> {
        if let Some(id) = sweep_id {
            if !self.sweep.is_empty() && !self.sweep.contains(&id) {
                return Err(ControllerError::Usage(format!(
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupBy {
    Host,
    Gpus,
    Sweep,
    Model,
}

impl GroupBy {
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Host => "host",
            GroupBy::Gpus => "gpus",
            GroupBy::Sweep => "sweep",
            GroupBy::Model => "model",
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
            host: (by != GroupBy::Host).then(|| m.host.clone()),
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
/// `results` output (`output::fields`), then `attempt`, `started_unix_us`,
/// `finished_unix_us`.
pub fn fields(p: &PointSummary) -> Vec<(String, Value)> {
    let mut f = output::fields(&pb::PointSummary::from(p));
    f.push(("attempt".into(), json!(p.meta.attempt)));
    f.push(("started_unix_us".into(), json!(p.meta.started_unix_us)));
    f.push(("finished_unix_us".into(), json!(p.meta.finished_unix_us)));
    f
}

fn csv_line(cells: impl IntoIterator<Item = Value>) -> String {
    let mut line = cells
        .into_iter()
        .map(|v| output::csv_cell(&v))
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
    output::to_fleet_table(&pb)
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
        format!("{}{flag}", output::num(p.output_throughput)),
        output::num(p.total_token_throughput),
        output::ms(p.ttft_s.p50),
        output::ms(p.tpot_s.p50),
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
                let mut cells = vec![output::load_text(&s.key.mode, r.batch_size, r.request_rate)];
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
pub fn points_files(dir: &Path, filter: &Filter) -> Result<BTreeSet<PathBuf>, ControllerError> {
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
pub fn load(dir: &Path, filter: &Filter) -> Result<(Vec<PointSummary>, usize), ControllerError> {
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

/// Runs `controllerctl results`.
pub async fn run(args: ResultsArgs, controller: &str) -> Result<ExitCode, ControllerError> {
    let ResultsArgs {
        sweep_id,
        dir,
        mut filter,
        group_by,
        format,
        live,
    } = args;
    if live {
        let Some(sweep_id) = sweep_id else {
            return Err(ControllerError::Usage("--live needs a SWEEP_ID".into()));
        };
        if !filter.is_empty() || group_by.is_some() {
            return Err(ControllerError::Usage(
                "--live prints one sweep as the controller holds it: filters and --group-by read --dir".into(),
            ));
        }
        return live_results(controller, sweep_id, format).await;
    }
    filter.narrow_to_sweep(sweep_id)?;
    let (points, files) = load(&dir, &filter)?;
    if points.is_empty() {
        eprintln!(
            "no points match ({files} points files under {})",
            dir.display()
        );
        return Ok(ExitCode::from(EXIT_NO_MATCH));
    }
    let text = match group_by {
        None => match format {
            Format::Table => {
                let mut t = to_table(&points);
                let _ = writeln!(
                    t,
                    "{} points from {files} files under {}",
                    points.len(),
                    dir.display()
                );
                t
            }
            Format::Csv => to_csv(&points),
            Format::Json => to_json(&points),
        },
        Some(by) => {
            let g = group(&points, by);
            if g.hidden > 0 && format != Format::Table {
                eprintln!(
                    "controllerctl: {} older points of the same cell not shown: narrow with --sweep",
                    g.hidden
                );
            }
            match format {
                Format::Table => grouped_table(&g),
                Format::Csv => grouped_csv(&g),
                Format::Json => grouped_json(&g),
            }
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The controller's in-memory summaries of one sweep (the `results` of before the
/// results folder was read).
async fn live_results(
    controller: &str,
    sweep_id: String,
    format: Format,
) -> Result<ExitCode, ControllerError> {
    let mut client = super::connect(controller).await?;
    let resp = client
        .get_results(pb::GetResultsRequest { sweep_id })
        .await?
        .into_inner();
    print!("{}", output::render(&resp.points, format));
    if format == Format::Table {
        for f in resp.files {
            println!("{f}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{ClientStats, Percentiles, PointMeta, ServerStats};

    #[test]
    fn sweep_id_narrows_the_filter_unless_sweep_excludes_it() {
        let mut f = Filter::default();
        f.narrow_to_sweep(None).unwrap();
        assert!(f.sweep.is_empty());
        f.narrow_to_sweep(Some("a".into())).unwrap();
        assert_eq!(f.sweep, ["a"]);
        let mut f = Filter {
            sweep: vec!["a".into(), "b".into()],
            ..Filter::default()
        };
        f.narrow_to_sweep(Some("b".into())).unwrap();
        assert_eq!(f.sweep, ["b"]);
        let err = f.narrow_to_sweep(Some("c".into())).unwrap_err();
        assert!(
            matches!(&err, ControllerError::Usage(m) if m == "SWEEP_ID c is not among --sweep b"),
            "{err}"
        );
    }

    fn point(sweep: &str, host: &str, gpus: u32, batch: u32, tput: f64) -> PointSummary {
        PointSummary {
            meta: PointMeta {
                sweep_id: sweep.into(),
                point_id: format!("{sweep}/b{batch}"),
                point_index: batch,
                attempt: 1,
                model: "meta-llama/Llama-3.2-1B".into(),
                gpus,
                host: host.into(),
                agent: format!("{host}-agent"),
                batch_size: batch,
                input_tokens: 128,
                output_tokens: 32,
                state: "done".into(),
                error: String::new(),
                endpoint: "completions".into(),
                started_unix_us: 1_000,
                finished_unix_us: 2_000,
                mode: "burst".into(),
                request_rate: 0.0,
                client: ClientStats::default(),
                fallbacks: Vec::new(),
            },
            completed: batch,
            failed: 0,
            duration_s: 1.0,
            request_throughput: f64::from(batch),
            output_throughput: tput,
            total_token_throughput: tput * 5.0,
            output_speed: Percentiles::default(),
            ttft_s: Percentiles {
                mean: Some(0.1),
                p50: Some(0.1),
                p90: Some(0.1),
                p99: Some(0.1),
            },
            tpot_s: Percentiles {
                p50: Some(0.02),
                ..Percentiles::default()
            },
            itl_s: Percentiles::default(),
            e2el_s: Percentiles::default(),
            server: ServerStats::default(),
            input_len_mismatches: 0,
            output_len_mismatches: 0,
            achieved_rate: 0.0,
            achieved_concurrency: 0.0,
            send_lag_s: Percentiles::default(),
            in_flight: None,
            verdict: "valid".into(),
        }
    }

    fn fleet() -> Vec<PointSummary> {
        let mut points = vec![
            point("sw-b", "beta", 1, 8, 800.0),
            point("sw-a", "alpha", 1, 8, 400.0),
            point("sw-a", "alpha", 2, 1, 60.0),
            point("sw-b", "beta", 1, 1, 110.0),
            point("sw-a", "alpha", 1, 1, 100.0),
        ];
        points[2].meta.state = "failed".into();
        points
    }

    #[test]
    fn filters_match_every_given_dimension() {
        let points = fleet();
        let count = |f: &Filter| points.iter().filter(|p| f.matches(p)).count();
        assert_eq!(count(&Filter::default()), 5);
        let by_host = Filter {
            host: vec!["beta".into()],
            ..Filter::default()
        };
        assert_eq!(count(&by_host), 2);
        let by_slug = Filter {
            model: vec!["meta-llama--Llama-3.2-1B".into()],
            gpus: vec![2],
            ..Filter::default()
        };
        assert_eq!(count(&by_slug), 1);
        let by_name_and_state = Filter {
            model: vec!["meta-llama/Llama-3.2-1B".into()],
            state: vec!["done".into()],
            sweep: vec!["sw-a".into(), "sw-b".into()],
            ..Filter::default()
        };
        assert_eq!(count(&by_name_and_state), 4);
        let nothing = Filter {
            model: vec!["other/model".into()],
            ..Filter::default()
        };
        assert_eq!(count(&nothing), 0);
    }

    #[test]
    fn points_sort_by_model_gpus_host_workload_and_load() {
        let mut points = fleet();
        sort_points(&mut points);
        let order: Vec<(u32, &str, u32)> = points
            .iter()
            .map(|p| (p.meta.gpus, p.meta.host.as_str(), p.meta.batch_size))
            .collect();
        assert_eq!(
            order,
            [
                (1, "alpha", 1),
                (1, "alpha", 8),
                (1, "beta", 1),
                (1, "beta", 8),
                (2, "alpha", 1)
            ]
        );
    }

    #[test]
    fn group_by_host_puts_hosts_side_by_side_per_gpu_count() {
        let mut points = fleet();
        sort_points(&mut points);
        let g = group(&points, GroupBy::Host);
        assert_eq!(g.hidden, 0);
        let hosts: Vec<&str> = g.columns.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(hosts, ["alpha", "beta"]);
        assert_eq!(g.sections.len(), 2, "one per GPU count");
        let one = &g.sections[0];
        assert_eq!(one.key.gpus, Some(1));
        assert_eq!(one.key.host, None);
        assert_eq!(one.rows.len(), 2);
        let b8 = &one.rows[1];
        assert_eq!(b8.batch_size, 8);
        let tput: Vec<f64> = b8.cells.values().map(|p| p.output_throughput).collect();
        assert_eq!(tput, [400.0, 800.0]);
        let two = &g.sections[1];
        assert_eq!(two.columns.len(), 1);

        let t = grouped_table(&g);
        assert!(
            t.contains("meta-llama/Llama-3.2-1B, 1 GPU, 128/32 tokens, burst"),
            "{t}"
        );
        assert!(t.contains("host=alpha"), "{t}");
        assert!(t.contains("800.0"), "{t}");
        assert!(t.contains("60.0*"), "the failed point is flagged: {t}");
        assert!(t.contains("20.0"), "TPOT p50 in ms: {t}");
    }

    #[test]
    fn group_by_gpus_sorts_counts_as_numbers_and_keeps_hosts_apart() {
        let mut points = fleet();
        points.push(point("sw-a", "alpha", 16, 1, 1.0));
        let g = group(&points, GroupBy::Gpus);
        let counts: Vec<&str> = g.columns.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(counts, ["1", "2", "16"]);
        let hosts: Vec<Option<&str>> = g.sections.iter().map(|s| s.key.host.as_deref()).collect();
        assert_eq!(hosts, [Some("alpha"), Some("beta")]);
    }

    #[test]
    fn a_cell_shows_the_point_that_finished_last() {
        let mut old = point("sw-a", "alpha", 1, 1, 100.0);
        old.meta.finished_unix_us = 10;
        let new = point("sw-c", "alpha", 1, 1, 150.0);
        let points = [new, old];
        let g = group(&points, GroupBy::Host);
        assert_eq!(g.hidden, 1);
        let cell = g.sections[0].rows[0].cells.values().next().unwrap();
        assert_eq!(cell.meta.sweep_id, "sw-c");
        assert!(grouped_table(&g).contains("1 older points"));
    }

    #[test]
    fn grouped_csv_has_a_column_group_per_host() {
        let mut points = fleet();
        sort_points(&mut points);
        let g = group(&points, GroupBy::Host);
        let csv = grouped_csv(&g);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 3, "{csv}");
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(
            &header[..7],
            [
                "model",
                "gpus",
                "input_tokens",
                "output_tokens",
                "mode",
                "batch_size",
                "request_rate"
            ]
        );
        assert_eq!(header.len(), 7 + 2 * CELL_FIELDS.len());
        assert!(header.contains(&"host=beta:total_token_throughput"));
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let row: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row[col("batch_size")], "8");
        assert_eq!(row[col("host=alpha:total_token_throughput")], "2000.0");
        assert_eq!(row[col("host=beta:total_token_throughput")], "4000.0");
        // 2 GPUs ran on alpha only: beta's cells are empty.
        let row: Vec<&str> = lines[3].split(',').collect();
        assert_eq!(row[col("gpus")], "2");
        assert_eq!(row[col("host=alpha:state")], "failed");
        assert_eq!(row[col("host=beta:state")], "");

        let j: Value = serde_json::from_str(&grouped_json(&g)).unwrap();
        assert_eq!(j.as_array().unwrap().len(), 3);
        assert_eq!(j[1]["host"]["beta"]["output_throughput"], 800.0);
        assert_eq!(j[2]["host"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn flat_csv_and_json_have_every_field_in_a_stable_order() {
        let mut points = fleet();
        sort_points(&mut points);
        let csv = to_csv(&points);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 6);
        let header: Vec<&str> = lines[0].split(',').collect();
        let old: Vec<String> = output::fields(&pb::PointSummary::default())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(header[..old.len()], old);
        assert_eq!(
            header[old.len()..],
            ["attempt", "started_unix_us", "finished_unix_us"]
        );
        for line in &lines[1..] {
            assert_eq!(line.split(',').count(), header.len(), "{line}");
        }
        assert!(lines[1].starts_with("sw-a,sw-a/b1,1,meta-llama/Llama-3.2-1B,1,alpha,"));
        let j: Value = serde_json::from_str(&to_json(&points)).unwrap();
        assert_eq!(j[3]["host"], "beta");
        assert_eq!(j[3]["output_throughput"], 800.0);
        assert_eq!(j[3]["attempt"], 1);
        let t = to_table(&points);
        assert!(
            t.lines().next().unwrap().trim_start().starts_with("model"),
            "{t}"
        );
        assert!(t.contains("sw-b"), "{t}");
    }
}
