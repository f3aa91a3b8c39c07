//! Runs the controller: both gRPC services and the health service on one listener, the
//! results writer, the reaper that re-queues points of lost agents, and (with an `http`
//! address) the read-only report pages.

use std::net::SocketAddr;
use std::time::Duration;

use fleetbench_proto::pb::agent_service_server::AgentServiceServer;
use fleetbench_proto::pb::control_service_server::ControlServiceServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{Instrument, info, info_span, warn};

/// How long open connections may take to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

use crate::agent_service::AgentServiceImpl;
use crate::auth::{Access, AuthLayer};
use crate::control_service::ControlServiceImpl;
use crate::error::ControllerError;
use crate::service::{Controller, ControllerConfig};
use crate::state::{State, SweepState};
use crate::store::Store;
use crate::writer;

/// Pending connections the listener queues before the controller accepts them. A fleet
/// reconnects all at once after a controller restart; with tokio's default of 1024 a
/// thousand agents overflowed the accept queue (`ListenOverflows`) and some sessions were
/// reset (`examples/fleet_bench.rs`). The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 8192;

/// Binds the gRPC listener on `addr` with [`LISTEN_BACKLOG`] (address reuse on, as tokio's
/// `TcpListener::bind` sets it).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` is cancelled, then drains: pending partition writes are
/// flushed before this returns.
pub async fn run(
    config: ControllerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    // The S3 mirror's client (object_store, reqwest) brings rustls's aws-lc-rs provider
    // next to the ring one everything else uses; with two, rustls has no process default,
    // and tonic's TLS server asks for it (it panicked in the compose fleet). Ring it is;
    // an error only means one is installed already. (rustls deprecates ring's provider for
    // lacking post-quantum key exchange; see `tls_listener.rs`.)
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = listener
        .local_addr()
        .map_err(|e| ControllerError::io("listener", e))?;
    let (access, tls) = security(&config, addr)?;
    let (write_tx, write_rx) = mpsc::channel(256);
    let (state, store) = match &config.state_dir {
        Some(dir) => {
            let store = Store::open(dir)?;
            let mut state = State::default();
            let problems = state.restore(store.load()?);
            for p in &problems {
                warn!(problem = %p, "state not restored");
            }
            let unfinished = state
                .sweeps
                .iter()
                .filter(|s| s.state == SweepState::Running)
                .count();
            info!(store = %store.path().display(), sweeps = state.sweeps.len(), unfinished, "controller state restored");
            (state, Some(store))
        }
        None => (State::default(), None),
    };
    // The HTTP listeners are bound before anything runs: a taken port fails the start.
    let http = match config.http {
        Some(addr) => Some(bind_http(&config, addr, "report pages").await?),
        None => None,
    };
    let metrics = match config.metrics {
        Some(addr) => Some(bind_http(&config, addr, "metrics").await?),
        None => None,
    };
    // A results mirror that cannot be configured fails the start (a usage error).
    let mirror = match &config.results_s3 {
        Some(m) => Some(crate::mirror::start(m, &config.results_dir)?),
        None => None,
    };
    let (mirror, uploader) = match mirror {
        Some((m, u)) => (Some(m), Some(u)),
        None => (None, None),
    };
    let ctl = Controller::with_store(config, write_tx, state, store, mirror);
    let tracker = TaskTracker::new();
    let writer_task = tokio::spawn(
        writer::run(ctl.clone(), write_rx, shutdown.clone())
            .instrument(info_span!("results_writer")),
    );
    // Stopped after the writer: the files of its last writes are uploaded too.
    let mirror_stop = CancellationToken::new();
    let mirror_task = uploader.map(|u| {
        tokio::spawn(
            u.run(
                {
                    let ctl = ctl.clone();
                    move |ok| ctl.metrics.mirror_uploaded(ok)
                },
                mirror_stop.clone(),
            )
            .instrument(info_span!("results_mirror")),
        )
    });

    let reaper_ctl = ctl.clone();
    let reaper_stop = shutdown.clone();
    tracker.spawn(
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = reaper_stop.cancelled() => break,
                }
                let grace = reaper_ctl.config.agent_grace;
                let out = reaper_ctl.state().reap(grace);
                reaper_ctl.dispatch(out);
                reaper_ctl.archive();
            }
        }
        .instrument(info_span!("reaper")),
    );

    let listeners = [
        http.map(|l| {
            (
                l,
                "report pages",
                crate::http::router(ctl.config.results_dir.clone()),
            )
        }),
        metrics.map(|l| (l, "metrics", crate::http::metrics_router(ctl.clone()))),
    ];
    for ((listener, tls), what, routes) in listeners.into_iter().flatten() {
        let stop = shutdown.clone();
        tracker.spawn(
            async move {
                if let Err(e) = crate::http::serve(listener, routes, what, tls, stop).await {
                    warn!(error = %e, what, "HTTP listener stopped");
                }
            }
            .instrument(info_span!("http", what)),
        );
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AgentServiceServer<AgentServiceImpl>>()
        .await;
    health
        .set_serving::<ControlServiceServer<ControlServiceImpl>>()
        .await;
    let agents = AgentServiceImpl {
        ctl: ctl.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    };
    let control = ControlServiceImpl {
        ctl: ctl.clone(),
        shutdown: shutdown.clone(),
    };
    info!(%addr, results = %ctl.config.results_dir.display(), "controller listening");
    {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let server = builder
            .http2_keepalive_interval(Some(Duration::from_secs(15)))
            .layer(AuthLayer::new(access))
            .add_service(health_service)
            .add_service(
                AgentServiceServer::new(agents)
                    .max_decoding_message_size(fleetbench_proto::limits::AGENT_TO_CONTROLLER)
                    .max_encoding_message_size(fleetbench_proto::limits::CONTROLLER_TO_AGENT),
            )
            .add_service(
                ControlServiceServer::new(control)
                    .max_decoding_message_size(fleetbench_proto::limits::OPERATOR_TO_CONTROLLER)
                    .max_encoding_message_size(fleetbench_proto::limits::CONTROLLER_TO_OPERATOR),
            )
            .serve_with_incoming_shutdown(with_nodelay(listener), shutdown.cancelled());
        tokio::pin!(server);
        // Graceful shutdown waits for open connections; an idle client must not hold the
        // controller up forever, so draining gets a deadline.
        let drain_deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            r = &mut server => r?,
            () = drain_deadline => warn!("connections still open {DRAIN_TIMEOUT:?} after shutdown; closing them"),
        }
    }
    tracker.close();
    tracker.wait().await;
    // The writer flushes what is queued, then stops.
    let _ = writer_task.await;
    mirror_stop.cancel();
    if let Some(t) = mirror_task {
        let _ = t.await;
    }
    info!("controller stopped");
    Ok(())
}

/// Who may call this controller, and its TLS configuration. Plain text, or a controller
/// that asks no credentials, is refused on a non-loopback address unless the operator said
/// `insecure` (logged as a warning on every start).
fn security(
    config: &ControllerConfig,
    addr: SocketAddr,
) -> Result<(Access, Option<ServerTlsConfig>), ControllerError> {
    let read =
        |path: &std::path::Path| std::fs::read(path).map_err(|e| ControllerError::io(path, e));
    let tls = match &config.tls {
        Some(files) => {
            let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
            let mut tls = ServerTlsConfig::new().identity(identity);
            if let Some(ca) = &files.client_ca {
                // Optional at the TLS layer (operators may use tokens instead); the auth
                // layer refuses whoever brings neither. A certificate that is presented
                // must chain to this CA, or the handshake fails.
                tls = tls
                    .client_ca_root(Certificate::from_pem(read(ca)?))
                    .client_auth_optional(true);
            }
            Some(tls)
        }
        None => None,
    };
    let client_certs = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let access = Access::new(client_certs, config.tokens.as_deref())?;
    let loopback = addr.ip().is_loopback();
    let mut exposed = Vec::new();
    if tls.is_none() {
        exposed.push("plain text (no --tls-cert/--tls-key)");
    }
    if access.is_open() {
        exposed.push("no credentials asked (no --client-ca, no --tokens)");
    }
    if !exposed.is_empty() && !loopback {
        if !config.insecure {
            return Err(ControllerError::Usage(format!(
                "refusing to listen on {addr} with {}: anyone who reaches it could run containers on every GPU host. Configure TLS and credentials (README: Securing a fleet), listen on 127.0.0.1, or pass --insecure",
                exposed.join(" and ")
            )));
        }
        warn!(%addr, "INSECURE: listening with {} on a non-loopback address (--insecure)", exposed.join(" and "));
    }
    Ok((access, tls))
}

/// The accepted connections with TCP_NODELAY set. Without it Nagle's algorithm holds the
/// controller's small HTTP/2 frames (window updates, acks) until the peer's TCP ack, and each
/// agent's record stream stalls near 30k records/s (`examples/ingest_bench.rs`). A socket
/// that refuses the option is served as it is.
fn with_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                warn!(error = %e, "TCP_NODELAY not set on an accepted connection");
            }
        })
    })
}

/// Binds an HTTP listener (`what`: the report pages or the metrics) on `addr`: TLS with
/// the controller's certificate; without one, plain HTTP on loopback only, unless the
/// operator passed `--insecure`.
async fn bind_http(
    config: &ControllerConfig,
    addr: SocketAddr,
    what: &str,
) -> Result<(TcpListener, Option<rustls::ServerConfig>), ControllerError> {
    let tls = match &config.tls {
        Some(files) => Some(crate::tls_listener::server_config(files)?),
        None if addr.ip().is_loopback() => None,
        None if config.insecure => {
            warn!(%addr, what, "INSECURE: plain HTTP on a non-loopback address (--insecure)");
            None
        }
        None => {
            return Err(ControllerError::Usage(format!(
                "refusing to serve {what} in plain HTTP on {addr}: give the controller --tls-cert/--tls-key, serve them on 127.0.0.1, or pass --insecure"
            )));
        }
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ControllerError::io(format!("{what} listen address {addr}"), e))?;
    Ok((listener, tls))
}
