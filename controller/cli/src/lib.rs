//! `controllerctl` (crate `fleetbench-cli`, the only crate that depends on both the
//! controller and the agent): submit and follow sweeps, list agents, cancel, print results, and run
//! a whole sweep locally (controller + agent + vllm-sim in one command).
//!
//! Exit codes scripts can rely on: 0 success; 1 the sweep finished with failed points;
//! 2 the sweep was cancelled; 3 the sweep ended but results could not be written (points
//! `write-failed`, sweep `failed`; the controller keeps retrying and the points turn
//! `done` once a write lands: see `controllerctl status`); 64 usage error; 65 invalid
//! sweep file; 69 controller unavailable; 70 internal error.

pub mod certs;
pub mod connect;
pub mod error;
pub mod local;
pub mod output;
pub mod paging;
pub mod progress;
pub mod report;
pub mod results;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleetbench_proto::pb;
use fleetbench_proto::spec::SweepSpec;

use crate::error::CliError;
use connect::{Client, Credentials};
use fleetbench_controller::ControllerError;
use output::Format;

pub const EXIT_POINTS_FAILED: u8 = 1;
pub const EXIT_CANCELLED: u8 = 2;
/// The sweep ended with results the controller could not write (yet).
pub const EXIT_WRITE_FAILED: u8 = 3;
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_BAD_SWEEP: u8 = 65;
pub const EXIT_UNAVAILABLE: u8 = 69;
pub const EXIT_INTERNAL: u8 = 70;

/// The sweep `controllerctl local` runs when given no file.
pub const DEMO_SWEEP: &str = include_str!("../../../deploy/examples/demo-sweep.toml");

#[derive(Parser, Debug)]
#[command(
    name = "controllerctl",
    version,
    about = "Drive a fleetbench controller"
)]
pub struct Cli {
    /// Controller address.
    #[arg(
        long,
        global = true,
        env = "FLEETBENCH_CONTROLLER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub controller: String,
    #[command(flatten)]
    pub credentials: Credentials,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate and submit a sweep file. The controller refuses a sweep over its
    /// --max-points (exit 65) and, once any agent is known, one that no known agent could
    /// ever run: more GPUs than any matching agent has, or a [placement] no known agent
    /// matches (exit 69). With no agent known yet, the sweep is queued until one registers.
    Submit {
        file: PathBuf,
        /// Follow the sweep until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a sweep's progress until it ends (re-attach any time).
    Watch { sweep_id: String },
    /// Show one sweep's points, or list all sweeps.
    Status { sweep_id: Option<String> },
    /// List agents with their inventory and state.
    Agents,
    /// Cancel a sweep: running points stop, finished results stay.
    Cancel { sweep_id: String },
    /// Print point summaries read back from the results folder, across sweeps and hosts:
    /// filtered, one row per point or side by side (--group-by). Exits 1 when no point
    /// matches; `--gpu-model` filters and `--group-by gpu-model` compares GPU models.
    Results(results::ResultsArgs),
    /// Plots, an HTML page and CSV files from the results folder (one sweep, a filter, or
    /// everything): throughput and per-request speed vs batch size per model and GPU
    /// count, scaling across GPU counts, latency, and hosts or engine settings compared.
    Report(report::ReportArgs),
    /// Make a development CA and certificates for a controller, agents and operators, and
    /// operator tokens (README: Securing a fleet).
    Certs(certs::CertsArgs),
    /// Check a sweep file and print the expanded plan without submitting.
    Validate { file: PathBuf },
    /// Run a sweep end to end on this machine: a controller, one agent and vllm-sim.
    /// Without a file, runs the embedded demo sweep.
    Local {
        file: Option<PathBuf>,
        /// Where the Parquet results go.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// The vllm-sim binary (default: next to controllerctl, then PATH).
        #[arg(long, env = "FLEETBENCH_VLLM_SIM")]
        sim: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("controllerctl: {e}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

fn exit_code_for(e: &CliError) -> u8 {
    match e {
        CliError::Spec(_) | CliError::Controller(ControllerError::Spec(_)) => EXIT_BAD_SWEEP,
        CliError::Usage(_) | CliError::Controller(ControllerError::SweepNotFound(_)) => EXIT_USAGE,
        CliError::Transport(_)
        | CliError::Dial(_)
        | CliError::Controller(ControllerError::NoMatchingAgent(_)) => EXIT_UNAVAILABLE,
        CliError::Status(s) => match s.code() {
            tonic::Code::InvalidArgument => EXIT_BAD_SWEEP,
            tonic::Code::NotFound => EXIT_USAGE,
            tonic::Code::Unavailable | tonic::Code::FailedPrecondition => EXIT_UNAVAILABLE,
            _ => EXIT_INTERNAL,
        },
        _ => EXIT_INTERNAL,
    }
}

/// Exit code for a finished sweep.
pub fn sweep_exit(status: &pb::SweepStatus) -> ExitCode {
    ExitCode::from(progress::exit_code(status))
}

/// Reads a sweep file; bytes that are not UTF-8 are an invalid sweep (exit 65) located at
/// the line and column of the first bad byte.
pub fn read_sweep_file(path: &Path) -> Result<String, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let offset = e.utf8_error().valid_up_to();
        let before = &bytes[..offset];
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let column =
            std::str::from_utf8(&before[line_start..]).map_or(1, |s| s.chars().count() + 1);
        CliError::Spec(fleetbench_proto::error::SpecError {
            file: path.display().to_string(),
            line: before.iter().filter(|b| **b == b'\n').count() + 1,
            column,
            field: String::new(),
            message: format!(
                "byte {offset} (0x{:02x}) is not valid UTF-8; a sweep file must be UTF-8 text",
                bytes[offset]
            ),
        })
    })
}

async fn connect(controller: &str, credentials: &Credentials) -> Result<Client, CliError> {
    connect::connect(controller, credentials).await
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Certs(args) => {
            let written = certs::generate(&args)?;
            for f in &written.files {
                crate::output::outln(&format!("wrote {}", f.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { file } => {
            let text = read_sweep_file(&file)?;
            let spec = SweepSpec::parse(&text, &file.display().to_string())?;
            crate::output::out(&plan_text(&spec))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { file, watch } => {
            let text = read_sweep_file(&file)?;
            // Validate locally first: a bad file never reaches the controller (which checks
            // the point count against its own --max-points).
            let spec = SweepSpec::parse_limited(
                &text,
                &file.display().to_string(),
                fleetbench_proto::spec::MAX_POINTS_CEILING,
            )?;
            for note in &spec.notes {
                eprintln!("note: {}:{note}", file.display());
            }
            let mut client = connect(&cli.controller, &cli.credentials).await?;
            let resp = client
                .submit_sweep(pb::SubmitSweepRequest {
                    spec_toml: text,
                    file_name: file.display().to_string(),
                })
                .await?
                .into_inner();
            crate::output::outln(&format!(
                "submitted {} ({} points)",
                resp.sweep_id, resp.points
            ))?;
            for child in &resp.children {
                crate::output::outln(&format!("  replica {child}"))?;
            }
            if watch {
                let status = progress::watch(&mut client, &resp.sweep_id).await?;
                return Ok(sweep_exit(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { sweep_id } => {
            let mut client = connect(&cli.controller, &cli.credentials).await?;
            let status = progress::watch(&mut client, &sweep_id).await?;
            Ok(sweep_exit(&status))
        }
        Command::Status { sweep_id: Some(id) } => {
            let mut client = connect(&cli.controller, &cli.credentials).await?;
            let s = paging::sweep_status(&mut client, &id).await?;
            crate::output::out(&progress::status_text(&s))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { sweep_id: None } => {
            let mut client = connect(&cli.controller, &cli.credentials).await?;
            let list = client
                .list_sweeps(pb::ListSweepsRequest {})
                .await?
                .into_inner();
            if list.sweeps.is_empty() {
                crate::output::outln("no sweeps")?;
            }
            for s in list.sweeps {
                crate::output::outln(&format!(
                    "{:<40} {:<10} {:>3}/{:<3} points finished: {} done, {} failed, {} skipped  {}",
                    s.sweep_id,
                    s.state,
                    progress::points_finished(&s),
                    s.points_total,
                    s.points_done,
                    s.points_failed,
                    s.points_skipped,
                    s.model
                ))?;
            }
            // Per agent: what it does now (`disconnected` during its grace period).
            let agents = client
                .list_agents(pb::ListAgentsRequest {})
                .await?
                .into_inner()
                .agents;
            for a in agents {
                crate::output::outln(&format!(
                    "agent {:<20} {:<14} {}",
                    a.agent_id,
                    a.state,
                    if a.current_point.is_empty() {
                        String::new()
                    } else {
                        format!("running {}", a.current_point)
                    }
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Agents => {
            let mut client = connect(&cli.controller, &cli.credentials).await?;
            let list = client
                .list_agents(pb::ListAgentsRequest {})
                .await?
                .into_inner();
            if list.agents.is_empty() {
                crate::output::outln("no agents")?;
            }
            for a in list.agents {
                let inv = a.inventory.unwrap_or_default();
                let gpus: Vec<String> = inv
                    .gpus
                    .iter()
                    .map(|g| format!("{} {}", g.vendor, g.model))
                    .collect();
                let mut labels: Vec<String> =
                    inv.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                labels.sort();
                crate::output::outln(&format!(
                    "{:<20} {:<14} host={} gpus={} [{}] labels={} {}",
                    a.agent_id,
                    a.state,
                    inv.host,
                    inv.gpus.len(),
                    gpus.join(", "),
                    labels.join(","),
                    if a.current_point.is_empty() {
                        String::new()
                    } else {
                        format!("running {}", a.current_point)
                    }
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { sweep_id } => {
            let mut client = connect(&cli.controller, &cli.credentials).await?;
            let resp = client
                .cancel_sweep(pb::CancelSweepRequest {
                    sweep_id: sweep_id.clone(),
                })
                .await?
                .into_inner();
            let state = resp.status.map(|s| s.state).unwrap_or_default();
            crate::output::outln(&format!("{sweep_id}: {state}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Results(args) => results::run(args, &cli.controller, &cli.credentials).await,
        Command::Report(args) => tokio::task::spawn_blocking(move || report::run(args))
            .await
            .map_err(|e| CliError::Internal(e.to_string()))?,
        Command::Local {
            file,
            results,
            sim,
            format,
        } => {
            let (text, name) = match &file {
                Some(f) => (read_sweep_file(f)?, f.display().to_string()),
                None => (
                    DEMO_SWEEP.to_string(),
                    "demo-sweep.toml (embedded)".to_string(),
                ),
            };
            local::run_local(&text, &name, &results, sim, format).await
        }
    }
}

/// The expanded plan of a sweep, as `validate` prints it.
pub fn plan_text(spec: &SweepSpec) -> String {
    use std::fmt::Write;
    let points = spec.expand();
    let mut out = String::new();
    for note in &spec.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(
        out,
        "sweep {:?}: model {}",
        spec.name.get_ref(),
        spec.model.get_ref()
    );
    let _ = writeln!(
        out,
        "engine: {} ({}) arguments at 1 GPU (the agent picks host and port): {}",
        spec.engine.kind.as_str(),
        spec.engine.runtime.as_str(),
        fleetbench_proto::spec::engine_args(
            &spec.engine_wire(),
            1,
            spec.model.get_ref(),
            fleetbench_proto::spec::Listen {
                host: "HOST",
                port: 0,
            },
            fleetbench_proto::spec::VllmModelArg::Positional,
        )
        .join(" ")
    );
    let mut gpu_counts: Vec<u32> = points.iter().map(|p| p.gpus).collect();
    gpu_counts.dedup();
    let _ = writeln!(
        out,
        "{} points; engine starts per agent: {} (one per GPU count: {:?}; tensor parallel = GPUs)",
        points.len(),
        gpu_counts.len(),
        gpu_counts
    );
    let _ = writeln!(
        out,
        "{:>5}  {:>4}  {:>8}  {:>6}  {:>6}",
        "point", "gpus", "load", "input", "output"
    );
    for p in &points {
        let load = if p.request_rate > 0.0 {
            format!("{}/s", p.request_rate)
        } else {
            p.batch_size.to_string()
        };
        let _ = writeln!(
            out,
            "{:>5}  {:>4}  {:>8}  {:>6}  {:>6}{}",
            p.index,
            p.gpus,
            load,
            p.workload.input,
            p.workload.output,
            if p.workload.is_fixed() {
                String::new()
            } else {
                format!("  {}", p.workload)
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_has_no_clashing_flags() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        // The global --controller address and `certs --controller-names` stay apart.
        let cli = Cli::try_parse_from([
            "controllerctl",
            "--controller",
            "https://c:1",
            "certs",
            "--controller-names",
            "c.lab",
        ])
        .unwrap();
        assert_eq!(cli.controller, "https://c:1");
        let Command::Certs(args) = cli.command else {
            panic!("not certs")
        };
        assert_eq!(args.controller_names, ["c.lab"]);
    }

    #[test]
    fn demo_sweep_is_valid_and_plans_restarts() {
        let spec = SweepSpec::parse(DEMO_SWEEP, "demo").unwrap();
        let plan = plan_text(&spec);
        assert!(
            plan.contains("20 points; engine starts per agent: 2"),
            "{plan}"
        );
        assert!(plan.contains("--tensor-parallel-size 1"), "{plan}");
    }

    #[test]
    fn every_example_sweep_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with("sweep.toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let spec = SweepSpec::parse(&text, &name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!spec.expand().is_empty(), "{name}");
            checked.push(name);
        }
        checked.sort();
        assert_eq!(
            checked,
            [
                "capacity-slo-sweep.toml",
                "concurrency-sweep.toml",
                "demo-sweep.toml",
                "prefix-caching-sweep.toml",
                "rate-sweep.toml",
                "seed-sweep.toml",
                "trace-replay-sweep.toml"
            ]
        );
    }

    #[test]
    fn cli_parses_every_command() {
        for args in [
            vec!["controllerctl", "submit", "s.toml", "--watch"],
            vec!["controllerctl", "status"],
            vec!["controllerctl", "results", "x", "--format", "csv"],
            vec!["controllerctl", "--controller", "http://h:1", "agents"],
            vec!["controllerctl", "local"],
            vec!["controllerctl", "results"],
            vec![
                "controllerctl",
                "results",
                "--dir",
                "r",
                "--model",
                "a/b",
                "--gpus",
                "1,2",
                "--host",
                "h",
                "--sweep",
                "s",
                "--state",
                "done,failed",
                "--group-by",
                "gpus",
                "--format",
                "json",
            ],
            vec!["controllerctl", "results", "x", "--live"],
            vec!["controllerctl", "report"],
            vec![
                "controllerctl",
                "report",
                "x",
                "--dir",
                "r",
                "--model",
                "a/b",
                "--gpus",
                "1,2",
                "--host",
                "h",
                "--out",
                "o",
            ],
        ] {
            Cli::try_parse_from(args.clone()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(Cli::try_parse_from(["controllerctl", "results", "x", "--format", "xml"]).is_err());
        assert!(Cli::try_parse_from(["controllerctl", "results", "--state", "ok"]).is_err());
        assert!(Cli::try_parse_from(["controllerctl", "results", "--group-by", "agent"]).is_err());
    }
}
