use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fleetbench_controller::mirror::MirrorConfig;
use fleetbench_controller::{ControllerConfig, ControllerError, TlsFiles};
use tokio_util::sync::CancellationToken;

/// fleetbench controller: receives sweeps, drives agents, writes Parquet results.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address for agents and controllerctl (gRPC). Loopback by default; any other address
    /// needs TLS and credentials (--tls-cert, --tls-key, --client-ca and/or --tokens) or
    /// --insecure.
    #[arg(long, env = "FLEETBENCH_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// The controller's certificate (PEM), for TLS on the gRPC listener.
    #[arg(long, env = "FLEETBENCH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "FLEETBENCH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs agent and operator certificates: clients authenticate with
    /// certificates chaining to it (agents must). Needs --tls-cert.
    #[arg(long, env = "FLEETBENCH_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Operator tokens (TOML: `[[token]]` with `name`, `role` = admin|viewer and `sha256`,
    /// the hex SHA-256 of the token; `controllerctl certs` writes one).
    #[arg(long, env = "FLEETBENCH_TOKENS")]
    tokens: Option<PathBuf>,
    /// Serve plain text or without credentials on a non-loopback address. Anyone who
    /// reaches the port can then run containers on every GPU host: lab use only.
    #[arg(long)]
    insecure: bool,
    /// Root of the Hive-partitioned results tree.
    #[arg(long, env = "FLEETBENCH_RESULTS", default_value = "results")]
    results: PathBuf,
    /// Seconds a disconnected agent keeps its running point before it is re-queued.
    #[arg(long, default_value_t = 60)]
    agent_grace_s: u64,
    /// Directory of the durable controller state (redb): sweeps, points, agents. A
    /// restarted controller resumes unfinished sweeps from it. Default: `controller-state`
    /// next to the results directory.
    #[arg(long, env = "FLEETBENCH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Also serve read-only report pages over HTTP on this address (`GET /` lists the
    /// sweeps, `GET /sweeps/<id>/report` renders one from the results folder).
    #[arg(long, env = "FLEETBENCH_HTTP")]
    http: Option<SocketAddr>,
    /// Serve Prometheus metrics at `GET /metrics` on this address (same TLS rules as the
    /// report pages: TLS with --tls-cert, plain HTTP on loopback or with --insecure).
    #[arg(long, env = "FLEETBENCH_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Points one sweep may expand to; larger sweeps are refused at submit, counted from
    /// the matrix before anything is expanded (at most 1000000).
    #[arg(long, env = "FLEETBENCH_MAX_POINTS", default_value_t = fleetbench_proto::spec::DEFAULT_MAX_POINTS,
          value_parser = clap::value_parser!(u64).range(1..=fleetbench_proto::spec::MAX_POINTS_CEILING))]
    max_points: u64,
    /// Record bytes the controller buffers for one running point (MiB); a point whose agent
    /// sends more fails with the reason.
    #[arg(long, env = "FLEETBENCH_MAX_POINT_MIB", default_value_t = 512)]
    max_point_mib: usize,
    /// Seconds a finished sweep stays in memory; then only its counts do, and its points
    /// are read back from the state store when asked for.
    #[arg(long, env = "FLEETBENCH_ARCHIVE_AFTER_S", default_value_t = 300)]
    archive_after_s: u64,
    /// Also mirror the results folder to an S3-compatible bucket, same Hive layout under
    /// the prefix (`s3://bucket/prefix`). Endpoint, region and credentials come from the
    /// AWS environment variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP=true for an http:// endpoint).
    #[arg(long, env = "FLEETBENCH_RESULTS_S3", value_parser = parse_s3)]
    results_s3: Option<MirrorConfig>,
}

fn parse_s3(s: &str) -> Result<MirrorConfig, String> {
    MirrorConfig::parse(s).map_err(|e| e.to_string())
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
    let state_dir = args.state_dir.unwrap_or_else(|| {
        args.results
            .parent()
            .unwrap_or_else(|| std::path::Path::new(""))
            .join("controller-state")
    });
    let config = ControllerConfig {
        results_dir: args.results,
        agent_grace: Duration::from_secs(args.agent_grace_s),
        state_dir: Some(state_dir),
        http: args.http,
        metrics: args.metrics_addr,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: args.client_ca,
            }),
            _ => None,
        },
        tokens: args.tokens,
        insecure: args.insecure,
        max_points: args.max_points,
        point_limits: fleetbench_controller::state::PointLimits {
            max_bytes: args.max_point_mib.saturating_mul(1 << 20),
            ..Default::default()
        },
        archive_after: Duration::from_secs(args.archive_after_s),
        results_s3: args.results_s3,
    };
    // Bind before anything else runs: a taken port is a usage error, reported at once.
    let listener = match fleetbench_controller::server::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("controller: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::from(64);
        }
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        tracing::info!("signal received; draining");
        signal.cancel();
    });
    match fleetbench_controller::run(config, listener, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("controller: {e}");
            // A configuration the controller refuses (plain text on a public address, a
            // bad tokens file) is a usage error.
            let code = if matches!(e, ControllerError::Usage(_)) {
                64
            } else {
                1
            };
            std::process::ExitCode::from(code)
        }
    }
}
