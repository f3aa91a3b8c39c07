//! `controllerctl report`: plots, an HTML page and CSV files from the Parquet results
//! folder, for one sweep, a filter, or everything under it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::error::CliError;
use crate::results::{EXIT_NO_MATCH, FilterArgs};
use fleetbench_report::{ReportData, title, write_report};
use fleetbench_results::query::Filter;

/// Arguments of `controllerctl report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Only this sweep (the same as --sweep).
    pub sweep_id: Option<String>,
    /// The results folder the controller writes (Hive-partitioned Parquet).
    #[arg(long, env = "FLEETBENCH_RESULTS", default_value = "results")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Where the report goes (created if missing; files of the same name are replaced).
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
}

/// Runs `controllerctl report`.
pub fn run(args: ReportArgs) -> Result<ExitCode, CliError> {
    let ReportArgs {
        sweep_id,
        dir,
        filter,
        out,
    } = args;
    let mut filter = Filter::from(filter);
    filter.narrow_to_sweep(sweep_id)?;
    let data = ReportData::load(&dir, &filter)?;
    if data.points.is_empty() {
        eprintln!("no points match (under {})", dir.display());
        return Ok(ExitCode::from(EXIT_NO_MATCH));
    }
    let written = write_report(&data, &title(&filter), &out)?;
    crate::output::outln(&format!(
        "{} points from {} points files: {} ({} plots as PNG and SVG, {} CSV files) in {}",
        written.points,
        data.files.len(),
        written.html.display(),
        written.png.len(),
        written.csv.len(),
        out.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}
