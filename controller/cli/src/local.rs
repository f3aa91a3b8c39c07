//! `controllerctl local`: a controller, one agent and vllm-sim on this machine, a sweep
//! run to the end, the results printed. The README's main job.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use fleetbench_agent::config::{AgentConfig, GpuConfig};
use fleetbench_proto::pb;
use fleetbench_proto::spec::SweepSpec;
use tokio_util::sync::CancellationToken;

use crate::connect::{Client, Credentials};
use crate::error::CliError;
use crate::{output, progress, sweep_exit};
use fleetbench_controller::ControllerConfig;

/// Finds the vllm-sim binary: the given path, next to this executable, then PATH.
pub fn find_sim(explicit: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("vllm-sim")));
    if let Some(s) = sibling.filter(|s| s.is_file()) {
        return Ok(s);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("vllm-sim"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CliError::Usage(
                "vllm-sim not found next to controllerctl or on PATH; build it with `cargo build --bins` or pass --sim".into(),
            )
        })
}

pub async fn run_local(
    text: &str,
    file_name: &str,
    results: &Path,
    sim: Option<PathBuf>,
    format: output::Format,
) -> Result<ExitCode, CliError> {
    let spec = SweepSpec::parse(text, file_name)?;
    let sim = find_sim(sim)?;
    let max_gpus = spec.expand().iter().map(|p| p.gpus).max().unwrap_or(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::io("127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::io("listener", e))?;
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(fleetbench_controller::run(
        ControllerConfig {
            results_dir: results.to_path_buf(),
            ..ControllerConfig::default()
        },
        listener,
        shutdown.clone(),
    ));
    let agent_cfg = AgentConfig {
        name: "local".into(),
        controller: format!("http://{addr}"),
        gpus: (0..max_gpus)
            .map(|_| GpuConfig {
                vendor: "sim".into(),
                model: "vllm-sim".into(),
                memory_gib: 0.0,
            })
            .collect(),
        vllm_command: vec![sim.display().to_string(), "serve".into()],
        ..AgentConfig::default()
    };
    let agent = tokio::spawn(fleetbench_agent::run(agent_cfg, shutdown.clone()));

    let outcome = drive(&format!("http://{addr}"), text, file_name, format).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), agent).await;
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(30), controller).await {
        return Err(e.into());
    }
    outcome
}

async fn drive(
    addr: &str,
    text: &str,
    file_name: &str,
    format: output::Format,
) -> Result<ExitCode, CliError> {
    let mut client = connect_with_retry(addr).await?;
    let resp = client
        .submit_sweep(pb::SubmitSweepRequest {
            spec_toml: text.to_string(),
            file_name: file_name.to_string(),
        })
        .await?
        .into_inner();
    eprintln!(
        "submitted {} ({} points) to the local controller",
        resp.sweep_id, resp.points
    );
    let status = progress::watch(&mut client, &resp.sweep_id).await?;
    let results = crate::paging::results(&mut client, &resp.sweep_id).await?;
    crate::output::out(&output::render(&results.points, format))?;
    for f in &results.files {
        eprintln!("wrote {f}");
    }
    Ok(sweep_exit(&status))
}

async fn connect_with_retry(addr: &str) -> Result<Client, CliError> {
    let mut last = None;
    for _ in 0..50 {
        match tonic::transport::Endpoint::from_shared(addr.to_string())?
            .connect()
            .await
        {
            // The in-process controller listens on loopback without credentials.
            Ok(c) => return crate::connect::client(c, &Credentials::default()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.map_or_else(
        || CliError::Usage("cannot reach local controller".into()),
        CliError::from,
    ))
}
