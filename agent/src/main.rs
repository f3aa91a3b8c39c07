use std::path::PathBuf;

use clap::Parser;
use fleetbench_agent::AgentConfig;
use tokio_util::sync::CancellationToken;

/// fleetbench agent: runs benchmark points on this GPU host for a controller.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Agent config file (TOML).
    #[arg(long, env = "FLEETBENCH_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Agent name (overrides the config file).
    #[arg(long, env = "FLEETBENCH_AGENT_NAME")]
    name: Option<String>,
    /// Controller URL (overrides the config file), e.g. http://controller:50051.
    #[arg(long, env = "FLEETBENCH_CONTROLLER")]
    controller: Option<String>,
    /// Serve the agent's Prometheus metrics at GET /metrics on this address (overrides
    /// the config file's metrics_addr).
    #[arg(long, env = "FLEETBENCH_AGENT_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(path) => match AgentConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("agent: {e}");
                return std::process::ExitCode::from(64);
            }
        },
        None => AgentConfig::default(),
    };
    if let Some(n) = args.name {
        cfg.name = n;
    }
    if let Some(c) = args.controller {
        cfg.controller = c;
    }
    if let Some(a) = args.metrics_addr {
        cfg.metrics_addr = Some(a);
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; stopping engine and shutting down");
        signal.cancel();
    });
    match fleetbench_agent::run(cfg, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
