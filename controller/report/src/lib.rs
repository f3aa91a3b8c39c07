//! Reports: the plots people look at, drawn from the Parquet results.
//!
//! One concept per file: [`data`] (what is read from the results folder), [`charts`]
//! (which plots and what each line holds), [`plots`] (drawing SVG and PNG with plotters),
//! [`html`] (the self-contained page), [`markup`] (XML escaping) and [`csv`] (summaries for
//! spreadsheets). Depends on
//! `fleetbench-results` only: `controllerctl report` writes these files and the
//! controller's HTTP pages serve [`html_page`].

pub mod capacity;
pub mod charts;
pub mod csv;
pub mod data;
pub mod error;
pub mod html;
pub mod markup;
pub mod plots;

use std::path::{Path, PathBuf};

pub use data::ReportData;
pub use error::ReportError;
use fleetbench_results::query::Filter;

/// A rendered report, in memory.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub sections: Vec<charts::Section>,
    /// Each chart's SVG, per section.
    pub svgs: Vec<Vec<String>>,
}

/// Draws every chart of `data` as SVG.
pub fn render(data: &ReportData) -> Result<Rendered, ReportError> {
    let sections = charts::sections(data);
    let svgs = sections
        .iter()
        .map(|s| s.charts.iter().map(plots::render_svg).collect())
        .collect::<Result<Vec<Vec<String>>, ReportError>>()?;
    Ok(Rendered { sections, svgs })
}

/// The page's title for a filter.
pub fn title(filter: &Filter) -> String {
    if filter.sweep.len() == 1 {
        format!("fleetbench report — sweep {}", filter.sweep[0])
    } else {
        "fleetbench report".into()
    }
}

/// The HTML page alone (what the controller serves), rendered from the results folder.
pub fn html_page(dir: &Path, filter: &Filter) -> Result<(String, usize), ReportError> {
    let data = ReportData::load(dir, filter)?;
    let r = render(&data)?;
    let page = html::page(
        &data,
        &r.sections,
        &r.svgs,
        &title(filter),
        html::Links::None,
    );
    Ok((page, data.points.len()))
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub points: usize,
    pub html: PathBuf,
    pub csv: Vec<PathBuf>,
    pub svg: Vec<PathBuf>,
    pub png: Vec<PathBuf>,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|e| ReportError::io(path, e))
}

/// Writes the report of `data` into `out` (created if missing): `index.html`, a PNG and an
/// SVG per chart, `points.csv` (every point) and `<model-slug>_gpus<N>.csv`.
pub fn write_report(data: &ReportData, title: &str, out: &Path) -> Result<Written, ReportError> {
    std::fs::create_dir_all(out).map_err(|e| ReportError::io(out, e))?;
    let r = render(data)?;
    let mut written = Written {
        points: data.points.len(),
        html: out.join("index.html"),
        ..Written::default()
    };
    for (section, svgs) in r.sections.iter().zip(&r.svgs) {
        for (chart, svg) in section.charts.iter().zip(svgs) {
            let svg_path = out.join(format!("{}.svg", chart.id));
            write_file(&svg_path, svg.as_bytes())?;
            written.svg.push(svg_path);
            let png_path = out.join(format!("{}.png", chart.id));
            plots::render_png(chart, &png_path)?;
            written.png.push(png_path);
        }
    }
    for (name, text) in csv::files(data) {
        let path = out.join(name);
        write_file(&path, text.as_bytes())?;
        written.csv.push(path);
    }
    let page = html::page(data, &r.sections, &r.svgs, title, html::Links::Files);
    write_file(&written.html, page.as_bytes())?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::data::{ReportData, SweepFile};
    use super::*;
    use fleetbench_results::PartitionMetadata;
    use fleetbench_results::summary::{
        ClientStats, Percentiles, PointMeta, PointSummary, ServerStats,
    };

    fn pct(v: f64) -> Percentiles {
        Percentiles {
            mean: Some(v),
            p50: Some(v),
            p90: Some(v * 1.2),
            p99: Some(v * 1.5),
        }
    }

    fn point(sweep: &str, host: &str, gpus: u32, batch: u32, state: &str) -> PointSummary {
        let tput = f64::from(batch * gpus) * 100.0;
        PointSummary {
            meta: PointMeta {
                sweep_id: sweep.into(),
                point_id: format!("{sweep}/g{gpus}b{batch}"),
                point_index: batch,
                attempt: 1,
                model: "org/m".into(),
                gpus,
                host: host.into(),
                agent: host.into(),
                batch_size: batch,
                input_tokens: 128,
                output_tokens: 32,
                state: state.into(),
                error: String::new(),
                endpoint: "chat".into(),
                started_unix_us: 1,
                finished_unix_us: 2,
                mode: "burst".into(),
                request_rate: 0.0,
                client: ClientStats::default(),
                fallbacks: Vec::new(),
                warmup: Default::default(),
                gpu_model: String::new(),
                gpu_driver: String::new(),
                hardware: Default::default(),
                slo: None,
                workload: String::new(),
                data_sha256: String::new(),
                data_skipped: 0,
                stage_durations_s: Vec::new(),
                stage_loads: Vec::new(),
            },
            completed: batch,
            failed: 0,
            duration_s: 1.0,
            request_throughput: f64::from(batch),
            output_throughput: tput,
            total_token_throughput: tput * 5.0,
            output_speed: pct(100.0 / f64::from(batch).sqrt()),
            ttft_s: pct(0.01 * f64::from(batch)),
            tpot_s: pct(0.005 * f64::from(batch).sqrt()),
            itl_s: Percentiles::default(),
            e2el_s: pct(0.3),
            server: ServerStats::default(),
            input_len_mismatches: 0,
            output_len_mismatches: 0,
            achieved_rate: 0.0,
            achieved_concurrency: 0.0,
            send_lag_s: Percentiles::default(),
            in_flight: None,
            verdict: if state == "done" {
                "valid".into()
            } else {
                "failed requests".into()
            },
            goodput: None,
            slo_attainment: None,
            slo_verdict: String::new(),
        }
    }

    fn file(sweep: &str, gpus: u32, args: &str) -> SweepFile {
        SweepFile {
            path: format!("{sweep}.points.parquet").into(),
            sweep_id: sweep.into(),
            model: "org/m".into(),
            gpus,
            meta: PartitionMetadata {
                engine_image: "vllm/vllm-openai:v0".into(),
                engine_args: args.into(),
                ..PartitionMetadata::default()
            },
        }
    }

    /// Two hosts and two engine settings at 1 GPU, one host at 2 GPUs.
    fn fleet() -> ReportData {
        let mut points = Vec::new();
        for b in [1, 2, 4, 8] {
            let state = if b == 8 { "failed" } else { "done" };
            points.push(point("sw-a", "alpha", 1, b, state));
            points.push(point("sw-b", "beta", 1, b, "done"));
            points.push(point("sw-a", "alpha", 2, b, "done"));
        }
        ReportData {
            dir: "results".into(),
            points,
            files: vec![
                file("sw-a", 1, "--max-num-seqs 256"),
                file("sw-b", 1, "--max-num-seqs 64"),
                file("sw-a", 2, "--max-num-seqs 256"),
            ],
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn hosts_and_engine_settings_that_differ_are_compared() {
        let data = fleet();
        let sections = charts::sections(&data);
        let ids: Vec<&str> = sections
            .iter()
            .flat_map(|s| s.charts.iter().map(|c| c.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                "org--m_gpus1_throughput",
                "org--m_gpus1_latency",
                "org--m_gpus1_hosts",
                "org--m_gpus1_engines",
                "org--m_gpus2_throughput",
                "org--m_gpus2_latency",
                "org--m_scaling",
                "org--m_tradeoff",
            ]
        );
        let hosts = &sections[0].charts[2];
        let labels: Vec<&str> = hosts.panels[0]
            .series
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(labels, ["alpha · 128/32 tok", "beta · 128/32 tok"]);
        // alpha's batch 8 failed: a cross, not a point of the line.
        assert_eq!(hosts.panels[0].series[0].points.len(), 3);
        assert_eq!(hosts.panels[0].series[0].failed, [(8.0, 800.0)]);
        // The dual plot keeps one point per batch size: the later of alpha's and beta's.
        assert_eq!(sections[0].charts[0].panels[0].series.len(), 1);
        let title = &sections[0].charts[0].title;
        assert!(
            title.contains("org/m · 1 GPU · host alpha, beta · vllm/vllm-openai:v0"),
            "{title}"
        );
    }

    /// Hosts with different GPU models at the same GPU count get a chart of their own,
    /// one line per GPU model.
    #[test]
    fn gpu_models_measured_side_by_side_are_compared() {
        let mut data = fleet();
        for p in &mut data.points {
            p.meta.gpu_model = if p.meta.host == "alpha" {
                "Intel Arc Pro B60".into()
            } else {
                "NVIDIA H100 80GB HBM3".into()
            };
        }
        let sections = charts::sections(&data);
        let chart = sections[0]
            .charts
            .iter()
            .find(|c| c.id == "org--m_gpus1_gpu_models")
            .expect("a GPU model chart at 1 GPU");
        let labels: Vec<&str> = chart.panels[0]
            .series
            .iter()
            .map(|s| s.label.as_str())
            .collect();
        assert_eq!(
            labels,
            [
                "Intel Arc Pro B60 · 128/32 tok",
                "NVIDIA H100 80GB HBM3 · 128/32 tok"
            ]
        );
        // Only one GPU model at 2 GPUs: no comparison there.
        assert!(
            !sections[1]
                .charts
                .iter()
                .any(|c| c.id.ends_with("gpu_models")),
            "{:?}",
            sections[1].charts.iter().map(|c| &c.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_report_writes_html_svg_png_and_csv() {
        let data = fleet();
        let dir = tempfile::tempdir().unwrap();
        let w = write_report(&data, "t", dir.path()).unwrap();
        // To look at the plots: FLEETBENCH_REPORT_TEST_OUT=<folder> cargo test …
        if let Ok(keep) = std::env::var("FLEETBENCH_REPORT_TEST_OUT") {
            write_report(&data, "t", std::path::Path::new(&keep)).unwrap();
        }
        assert_eq!(w.svg.len(), 8);
        assert_eq!(w.png.len(), 8);
        assert_eq!(w.csv.len(), 3);
        let html = std::fs::read_to_string(&w.html).unwrap();
        assert!(html.contains("Engine settings"));
        assert!(html.contains("11 of 12 points valid"), "{html}");
        let csv = std::fs::read_to_string(dir.path().join("points.csv")).unwrap();
        assert_eq!(csv.lines().count(), 13);
    }
}
