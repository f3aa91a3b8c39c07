//! `vllm-sim`: a stand-in for a vLLM 0.32 OpenAI-compatible server.
//!
//! It accepts `vllm serve`'s flags, serves vLLM's endpoints with vLLM's JSON and SSE shapes,
//! reports vLLM's Prometheus metrics, logs vLLM's start-up and shutdown lines in vLLM's
//! formats (see [`logging`]; "Application startup complete." once the listener accepts), and
//! produces tokens on a deterministic continuous-batching timeline (see [`scheduler`]), or,
//! to measure a client rather than an engine, on a fixed per-request schedule or as fast as
//! possible (`--sim-timing exact|fast`, see [`direct`]).
//!
//! Modules, from the command line to the bytes on the wire:
//!
//! - [`cli`], [`config`], [`perf`]: `vllm serve`'s flags, the validated [`SimConfig`], and the
//!   GPU/model performance profiles that time an engine step;
//! - [`api`], [`protocol`], [`tokenizer`]: the HTTP routes, request and response bodies, and
//!   the synthetic tokenizer and output text;
//! - [`scheduler`]: the engine's continuous-batching step loop; [`direct`]: requests that
//!   bypass it (`--sim-timing exact|fast`), paced by [`precise_timer`];
//! - [`stream`]: the SSE chunks of streamed answers; [`stop`]: the engine's stop signal, as
//!   streams see it; [`finish`]: why a request ended;
//! - [`metrics`]: the engine statistics, their Prometheus text and periodic log line;
//!   [`logging`]: vLLM's log formats; [`error`]: the one error type;
//! - [`trace`]: what direct streams actually did (`--sim-trace-requests`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleetbench_sim::SimError> {
//! use fleetbench_sim::{SimConfig, run};
//! use tokio_util::sync::CancellationToken;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! run(SimConfig::new("smol"), listener, CancellationToken::new()).await
//! # }
//! ```

pub mod api;
pub mod cli;
pub mod config;
pub mod direct;
pub mod error;
pub mod finish;
pub mod logging;
pub mod metrics;
pub mod perf;
pub mod precise_timer;
pub mod protocol;
pub mod scheduler;
pub mod stop;
pub mod stream;
pub mod tokenizer;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::cli::{Args, ServeOptions};
pub use crate::config::{
    CrashAction, CrashAt, EngineConfig, ExactSchedule, FaultAction, Pacing, SimConfig, StreamFault,
    StreamFaults, TimingMode, TimingModel, VLLM_RELEASE, VLLM_VERSION,
};
pub use crate::error::SimError;

/// Interval of the "Engine 000: Avg prompt throughput ..." log lines (vLLM's 10 s).
pub const LOG_STATS_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `config` on an already bound `listener` until `shutdown` is cancelled, then stops the
/// engine (open streams end), drains connections and returns.
pub async fn run(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    config.validate()?;
    let addr = listener.local_addr()?;
    tracing::info!(
        src = "model.py:2152",
        "Using max model len {}",
        config.max_model_len
    );
    let engine_config = &config.engine;
    tracing::info!(
        src = "kv_cache_utils.py:2327",
        proc = "EngineCore",
        "GPU KV cache size: {} tokens, Maximum concurrency for {} tokens per request: {:.2}x",
        thousands(engine_config.kv_cache_tokens),
        thousands(u64::from(config.max_model_len)),
        engine_config.kv_cache_tokens as f64 / f64::from(config.max_model_len)
    );
    tracing::info!(src = "entry.py:136", "Supported tasks: ['generate']");
    match config.timing_mode {
        TimingMode::Model => {}
        TimingMode::Exact(s) => {
            if s.pacing == Pacing::Precise {
                // The timer thread, before the first request needs it.
                precise_timer::start();
            }
            tracing::info!(
                "vllm-sim timing: exact, TTFT {:?}, ITL {:?} per request in real time (no \
                 engine, no batching, no --sim-speedup)",
                s.ttft,
                s.itl
            )
        }
        TimingMode::Fast { chunks_per_frame } => tracing::info!(
            "vllm-sim timing: fast, up to {chunks_per_frame} token events per frame (no engine, \
             no batching)"
        ),
    }
    if let Some(crash) = &config.engine.crash {
        tracing::warn!(
            "vllm-sim: the engine will die of a simulated GPU out-of-memory error when {} \
             requests run (--sim-crash-at-running)",
            crash.running
        );
        if crash.running > config.engine.max_num_seqs {
            tracing::warn!(
                "vllm-sim: --sim-crash-at-running {} can never fire: --max-num-seqs is {}",
                crash.running,
                config.engine.max_num_seqs
            );
        }
    }
    if let Some(fault) = config.faults.armed() {
        let n = fault.after_tokens;
        match fault.action {
            FaultAction::Stall => tracing::warn!(
                "vllm-sim: every response will stall after {n} content tokens, its connection \
                 left open (--sim-stall-after-tokens)"
            ),
            FaultAction::Disconnect => tracing::warn!(
                "vllm-sim: every response will be cut after {n} content tokens, its connection \
                 closed abruptly (--sim-disconnect-after-tokens)"
            ),
        }
    }

    let stats = Arc::new(
        metrics::EngineStats::with_max_model_len(config.max_model_len)
            .with_prefix_caching(config.engine.prefix_caching),
    );
    let tracker = TaskTracker::new();
    // A child token: the engine stops with `shutdown`, and also when serving fails on its own,
    // without cancelling the caller's token.
    let engine_shutdown = shutdown.child_token();
    let engine = scheduler::spawn_engine(
        config.engine.clone(),
        stats.clone(),
        engine_shutdown.clone(),
        &tracker,
    );
    if config.log_stats {
        tracker.spawn(metrics::log_stats_loop(
            stats.clone(),
            LOG_STATS_INTERVAL,
            engine_shutdown.clone(),
        ));
    }
    let disable_completions = config.disable_completions;
    let stop = stop::StopSignal::new(engine_shutdown.clone(), &tracker);
    let app = api::router(api::AppState::new(config, engine, stats, stop));

    tracing::info!(
        src = "entry.py:140",
        "Starting vLLM server on http://{addr}"
    );
    tracing::info!(src = "launcher.py:186", "Available routes are:");
    for (path, methods) in api::ROUTES {
        if !(disable_completions && *path == "/v1/completions") {
            tracing::info!(src = "launcher.py:195", "Route: {path}, Methods: {methods}");
        }
    }
    tracing::info!(
        target: logging::UVICORN,
        "Started server process [{}]",
        std::process::id()
    );
    tracing::info!(target: logging::UVICORN, "Waiting for application startup.");
    tracing::info!(target: logging::UVICORN, "Application startup complete.");

    // vLLM (uvicorn on asyncio) sets TCP_NODELAY; without it each small SSE chunk that
    // follows another waits for a delayed ACK and token timing is distorted by Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    // vLLM's shutdown sequence: abort the engine's requests (open streams end), then stop the
    // HTTP server, which drains the connections.
    let stopping = {
        let shutdown = shutdown.clone();
        let engine_shutdown = engine_shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!(
                src = "launcher.py:254",
                "[shutdown] API server: shutdown triggered"
            );
            tracing::info!(
                src = "launcher.py:270",
                "[shutdown] API server: stopping engine client mode=abort timeout=0s"
            );
            engine_shutdown.cancel();
            tracing::info!(
                src = "launcher.py:279",
                "[shutdown] API server: engine client stopped"
            );
            tracing::info!(
                src = "launcher.py:282",
                "[shutdown] API server: signalling HTTP server shutdown"
            );
            tracing::info!(
                src = "launcher.py:304",
                "[shutdown] API server: shutting down FastAPI HTTP server"
            );
            tracing::info!(target: logging::UVICORN, "Shutting down");
        }
    };
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopping)
    .into_future();
    let result = served.await;
    engine_shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!(target: logging::UVICORN, "Waiting for application shutdown.");
    tracing::info!(target: logging::UVICORN, "Application shutdown complete.");
    result.map_err(SimError::Io)
}

/// Python's `f"{n:,}"`: `93,184`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// vLLM's start-up banner (`[api_utils.py:347]`, one message over five lines).
pub fn log_banner(model: &str) {
    tracing::info!(
        src = "api_utils.py:347",
        "\n       █     █     █▄   ▄█\n ▄▄ ▄█ █     █     █ ▀▄▀ █  version {VLLM_VERSION}\n  █▄█▀ █     █     █     █  model   {model}\n   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀\n"
    );
}

/// Waits the simulated start-up time, then binds `host:port`. Returns `None` if `shutdown`
/// fires first.
pub async fn bind_after_startup(
    options: &ServeOptions,
    shutdown: &CancellationToken,
) -> Result<Option<TcpListener>, SimError> {
    if !options.startup_delay.is_zero() {
        tracing::info!(
            "Simulating engine start-up: {} ms",
            options.startup_delay.as_millis()
        );
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(options.startup_delay) => {}
        }
    }
    let addr = format!("{}:{}", options.host, options.port);
    let listener = TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    Ok(Some(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators_like_python() {
        assert_eq!(thousands(93_184), "93,184");
        assert_eq!(thousands(2048), "2,048");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
