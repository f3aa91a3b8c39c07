//! `vllm-sim` binary: parse `vllm serve`-style flags, set up logging and signals, run the lib.

use std::process::ExitCode;

use anyhow::Context as _;
use fleetbench_sim::Args;
use fleetbench_sim::logging::{UVICORN, VllmFormat};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;

/// `EX_USAGE` from sysexits.h.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse_vllm(std::env::args_os()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(args.log_level()));
    // Like vLLM: its own loggers and uvicorn's access log on stdout, uvicorn's server lines
    // ("Application startup complete.") on stderr.
    let writer = std::io::stdout
        .with_filter(|meta: &tracing::Metadata<'_>| meta.target() != UVICORN)
        .or_else(std::io::stderr);
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .event_format(VllmFormat::new())
        .with_env_filter(filter)
        .init();
    let model = args.model_tag.clone().or_else(|| args.model.clone());
    fleetbench_sim::log_banner(model.as_deref().unwrap_or(""));
    tracing::info!(
        src = "api_utils.py:286",
        "non-default args: {}",
        Args::non_default_args(std::env::args_os())
    );
    let (config, serve) = match args.into_config() {
        Ok(parts) => parts,
        Err(fleetbench_sim::SimError::EngineStartup(message)) => {
            // What vLLM dies of while loading the model: its error line, exit code 1.
            tracing::error!(
                src = "core.py:708",
                proc = "EngineCore",
                "EngineCore failed to start.\n{message}"
            );
            tracing::error!(
                src = "api_server.py:1469",
                "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{}}"
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("vllm-sim: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vllm-sim: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let Some(listener) = fleetbench_sim::bind_after_startup(&serve, &shutdown).await? else {
            return Ok(());
        };
        fleetbench_sim::run(config, listener, shutdown)
            .await
            .context("vllm-sim stopped with an error")
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT (leaves it alone if signals cannot be watched).
async fn cancel_on_signal(shutdown: CancellationToken) {
    let result: anyhow::Result<()> = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => tracing::debug!("received SIGTERM"),
            r = tokio::signal::ctrl_c() => { r?; tracing::debug!("received SIGINT"); }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => shutdown.cancel(),
        Err(e) => tracing::error!("cannot listen for signals: {e}"),
    }
}
