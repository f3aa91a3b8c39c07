//! fleetbench agent: runs on each GPU host, dials the controller, starts engines for the
//! points it is assigned and measures them with its load generator.
//!
//! Modules, grouped by subsystem, one concept each:
//!
//! - [`config`] (agent config) and [`error`] (the agent's errors);
//! - [`policy`], what sweeps may make this host run (checked before anything starts for a
//!   point), and [`policy::scrub`] (the agent's secrets never leave the host);
//! - [`link`], the link to the controller: [`link::session`] (the gRPC stream),
//!   [`link::outbox`] (messages to send, results until acknowledged), [`link::spool`] (the
//!   outbox's on-disk file per attempt);
//! - [`lanes`], points to engines: [`lanes::dispatch`] (which lane runs a point, engine
//!   reuse, GPUs), [`lanes::runner`] (one lane: its points in order on its engine);
//! - [`engine`] (engine lifecycle) and what an engine runs on: [`engine::process`] and
//!   [`engine::docker`] (the runtimes), [`engine::log_tail`] (its last log lines),
//!   [`engine::gpu`] (GPU inventory and which engine holds which GPUs),
//!   [`engine::telemetry`] (the engine's `/metrics`);
//! - [`load`] (a point's load: burst, concurrency or rate) and what it is made of:
//!   [`load::schedule`] (rate mode's arrival times), [`load::prompt`] (exact-length
//!   prompts), [`load::tokenizer`] (local token counting), [`load::probe`] (what the engine
//!   accepts), [`load::request`] (one measured request), [`load::sse`] (stream parser),
//!   [`load::cpu`] (the agent's own CPU time).

pub mod config;
pub mod engine;
pub mod error;
pub mod lanes;
pub mod link;
pub mod load;
pub mod metrics;
pub mod policy;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use config::AgentConfig;
pub use error::AgentError;
pub use load::clients::HttpClients;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

/// The HTTP clients the agent uses (see [`load::clients`]), keeping idle connections for
/// [`config::DEFAULT_HTTP_IDLE_TIMEOUT_MS`].
pub fn http_clients() -> Result<HttpClients, AgentError> {
    HttpClients::new(Duration::from_millis(config::DEFAULT_HTTP_IDLE_TIMEOUT_MS))
}

/// Raises this process's open-file limit to its hard limit: every in-flight request holds
/// a socket, so a burst of thousands must not hit the usual soft limit of 1024. Returns
/// (old soft limit, new soft limit).
pub fn raise_open_file_limit() -> Result<(u64, u64), AgentError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| AgentError::Io(std::io::Error::from(e)))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| AgentError::Io(std::io::Error::from(e)))?;
    }
    Ok((soft, hard.max(soft)))
}

/// Runs the agent until `shutdown` is cancelled; stops its engine on the way out.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let cfg = Arc::new(cfg.finish()?);
    match raise_open_file_limit() {
        Ok((old, new)) => tracing::info!(old, new, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let metrics = metrics::AgentMetrics::new();
    let clients = HttpClients::new(Duration::from_millis(cfg.http_idle_timeout_ms))?
        .counting(metrics.requests.clone());
    // Bound before anything runs: a taken port fails the start.
    let metrics_listener = match cfg.metrics_addr {
        Some(addr) => {
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| AgentError::Config {
                        path: "metrics_addr".into(),
                        message: format!("cannot listen on {addr}: {e}"),
                    })?,
            )
        }
        None => None,
    };
    let gpus = tokio::select! {
        gpus = link::session::host_gpus(cfg.clone()) => Arc::new(gpus),
        () = shutdown.cancelled() => return Ok(()),
    };
    // Images this host can start without a registry, for the inventory (none without Docker).
    let engine_images = match engine::docker::connect(&cfg.docker).await {
        Ok(d) => engine::docker::local_images(&d).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list local images");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    let outbox = Arc::new(
        link::outbox::Outbox::open(&cfg.spool_dir)?
            .scrubbing(policy::scrub::Scrubber::new(&cfg.engine_env)),
    );
    tracing::info!(spool = %cfg.spool_dir.display(), "results spool open");
    let cancels: lanes::runner::CancelMap = Arc::default();
    let status = Arc::new(Mutex::new(lanes::runner::AgentStatus::default()));
    let (runner_tx, runner_rx) = mpsc::channel(64);
    let tracker = TaskTracker::new();
    let span = info_span!("agent", agent = %cfg.name);
    let runner = lanes::dispatch::Dispatcher::new(
        cfg.clone(),
        clients,
        outbox.clone(),
        cancels.clone(),
        status.clone(),
        gpus.clone(),
        metrics.clone(),
    );
    if let Some(listener) = metrics_listener {
        let (outbox, status) = (outbox.clone(), status.clone());
        let gauges = move || metrics::AgentGauges {
            lanes: status.lock().map(|s| s.lane_counts()).unwrap_or_default(),
            spool_bytes: i64::try_from(outbox.spooled_bytes()).unwrap_or(i64::MAX),
            unacked_points: i64::try_from(outbox.unacked_len()).unwrap_or(i64::MAX),
        };
        let (served, stop) = (metrics.clone(), shutdown.clone());
        tracker.spawn(
            async move {
                if let Err(e) = metrics::serve(listener, served, gauges, stop).await {
                    tracing::warn!(error = %e, "metrics listener stopped");
                }
            }
            .instrument(span.clone()),
        );
    }
    tracker.spawn(
        runner
            .run(runner_rx, shutdown.clone())
            .instrument(span.clone()),
    );
    let ctx = link::session::SessionContext {
        cfg,
        outbox,
        runner: runner_tx,
        cancels,
        status,
        gpus,
        engine_images,
        metrics,
    };
    tracker.spawn(link::session::run(ctx, shutdown.clone()).instrument(span));
    tracker.close();
    tracker.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_file_limit_is_raised_to_the_hard_limit() {
        let (_, new) = super::raise_open_file_limit().unwrap();
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(new, soft);
    }
}
