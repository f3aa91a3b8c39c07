//! `controllerctl results`: point summaries read back from the Parquet results folder
//! (`<dir>/model=<slug>/gpus=<n>/<sweep-id>.points.parquet`), across sweeps and hosts:
//! filtered, sorted, and printed one row per point or side by side (`--group-by`). The
//! query itself is [`fleetbench_results::query`]; this is its command line.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use fleetbench_results::query::{
    Filter, GroupBy, STATES, group, grouped_csv, grouped_json, grouped_table, load, to_csv,
    to_json, to_table,
};

use crate::connect::Credentials;
use crate::error::CliError;
use crate::output::{self, Format};

/// Exit code when no point matches the filters.
pub const EXIT_NO_MATCH: u8 = 1;

/// Arguments of `controllerctl results`.
#[derive(Args, Debug, Clone)]
pub struct ResultsArgs {
    /// Only this sweep (the same as --sweep).
    pub sweep_id: Option<String>,
    /// The results folder the controller writes (Hive-partitioned Parquet).
    #[arg(long, env = "FLEETBENCH_RESULTS", default_value = "results")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Compare side by side: one column group per host, GPU count, sweep, model or GPU
    /// model.
    #[arg(long, value_enum)]
    pub group_by: Option<GroupByArg>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Ask the controller for SWEEP_ID's summaries as it holds them in memory (running
    /// sweeps too) instead of reading --dir; no filters or grouping.
    #[arg(long)]
    pub live: bool,
    /// Multi-stage points (`[load] stages`): one row per stage, summarized from the
    /// stage's own requests (read from the requests files beside the points files).
    #[arg(long, conflicts_with = "live")]
    pub by_stage: bool,
}

/// Which points to show; every given filter must match, a list matches any of its values.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
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
    /// GPU model: points whose GPU model contains it, ignoring case (`--gpu-model h100`).
    #[arg(long, value_delimiter = ',')]
    pub gpu_model: Vec<String>,
}

impl From<FilterArgs> for Filter {
    fn from(a: FilterArgs) -> Filter {
        Filter {
            model: a.model,
            gpus: a.gpus,
            host: a.host,
            sweep: a.sweep,
            state: a.state,
            gpu_model: a.gpu_model,
        }
    }
}

/// The dimension `--group-by` puts side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupByArg {
    Host,
    Gpus,
    Sweep,
    Model,
    /// One column group per GPU model (hosts compared with each other).
    #[value(alias = "gpu_model")]
    GpuModel,
}

impl From<GroupByArg> for GroupBy {
    fn from(a: GroupByArg) -> GroupBy {
        match a {
            GroupByArg::Host => GroupBy::Host,
            GroupByArg::Gpus => GroupBy::Gpus,
            GroupByArg::Sweep => GroupBy::Sweep,
            GroupByArg::Model => GroupBy::Model,
            GroupByArg::GpuModel => GroupBy::GpuModel,
        }
    }
}

/// Runs `controllerctl results`.
pub async fn run(
    args: ResultsArgs,
    controller: &str,
    credentials: &Credentials,
) -> Result<ExitCode, CliError> {
    let ResultsArgs {
        sweep_id,
        dir,
        filter,
        group_by,
        format,
        live,
        by_stage,
    } = args;
    let mut filter = Filter::from(filter);
    let group_by = group_by.map(GroupBy::from);
    if live {
        let Some(sweep_id) = sweep_id else {
            return Err(CliError::Usage("--live needs a SWEEP_ID".into()));
        };
        if !filter.is_empty() || group_by.is_some() {
            return Err(CliError::Usage(
                "--live prints one sweep as the controller holds it: filters and --group-by read --dir".into(),
            ));
        }
        return live_results(controller, credentials, sweep_id, format).await;
    }
    filter.narrow_to_sweep(sweep_id)?;
    let (points, files) = if by_stage {
        fleetbench_results::stages::load_stages(&dir, &filter)?
    } else {
        load(&dir, &filter)?
    };
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
    crate::output::out(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The controller's in-memory summaries of one sweep (the `results` of before the
/// results folder was read).
async fn live_results(
    controller: &str,
    credentials: &Credentials,
    sweep_id: String,
    format: Format,
) -> Result<ExitCode, CliError> {
    let mut client = crate::connect(controller, credentials).await?;
    let resp = crate::paging::results(&mut client, &sweep_id).await?;
    crate::output::out(&output::render(&resp.points, format))?;
    if format == Format::Table {
        for f in resp.files {
            crate::output::outln(&f)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
