//! Reports: the plots people look at, drawn from the Parquet results.
//!
//! One concept per file: [`data`] (what is read from the results folder), [`charts`]
//! (which plots and what each line holds), [`plots`] (drawing SVG and PNG with plotters),
//! [`html`] (the self-contained page), [`csv`] (summaries for spreadsheets) and [`http`]
//! (the controller's read-only pages).

pub mod charts;
pub mod csv;
pub mod data;
pub mod html;
pub mod http;
pub mod plots;

use std::path::{Path, PathBuf};

use crate::cli::results::Filter;
use crate::error::ControllerError;
pub use data::ReportData;

/// A rendered report, in memory.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub sections: Vec<charts::Section>,
    /// Each chart's SVG, per section.
    pub svgs: Vec<Vec<String>>,
}

/// Draws every chart of `data` as SVG.
pub fn render(data: &ReportData) -> Result<Rendered, ControllerError> {
    let sections = charts::sections(data);
    let svgs = sections
        .iter()
        .map(|s| s.charts.iter().map(plots::render_svg).collect())
        .collect::<Result<Vec<Vec<String>>, ControllerError>>()?;
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
pub fn html_page(dir: &Path, filter: &Filter) -> Result<(String, usize), ControllerError> {
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

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ControllerError> {
    std::fs::write(path, bytes).map_err(|e| ControllerError::io(path, e))
}

/// Writes the report of `data` into `out` (created if missing): `index.html`, a PNG and an
/// SVG per chart, `points.csv` (every point) and `<model-slug>_gpus<N>.csv`.
pub fn write_report(
    data: &ReportData,
    title: &str,
    out: &Path,
) -> Result<Written, ControllerError> {
    std::fs::create_dir_all(out).map_err(|e| ControllerError::io(out, e))?;
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
