//! The agent's one long-lived gRPC stream to the controller: register with inventory,
//! heartbeat, receive assignments and acknowledgements, send what the outbox holds.
//! Reconnects with exponential backoff; every attempt the controller has not acknowledged
//! with a `PointAck` is re-sent from the spool each time (see [`crate::link::outbox`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetbench_proto::pb::agent_service_client::AgentServiceClient;
use fleetbench_proto::pb::{self, agent_message::Msg, controller_message::Msg as CMsg};
use fleetbench_proto::{FLEETBENCH_VERSION, unix_millis_now};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::engine::gpu;
use crate::error::AgentError;
use crate::lanes::runner::{AgentStatus, CancelMap, RunnerCommand};
use crate::link::outbox::Outbox;
use crate::metrics::AgentMetrics;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Everything a session needs; shared with the runner.
#[derive(Clone)]
pub struct SessionContext {
    pub cfg: Arc<AgentConfig>,
    pub outbox: Arc<Outbox>,
    pub runner: mpsc::Sender<RunnerCommand>,
    pub cancels: CancelMap,
    pub status: Arc<Mutex<AgentStatus>>,
    /// This host's GPUs (from [`host_gpus`], once at start).
    pub gpus: Arc<gpu::Inventory>,
    /// Tagged images of the local Docker engine at start.
    pub engine_images: Vec<String>,
    pub metrics: AgentMetrics,
}

/// How long GPU discovery (sysfs, `nvidia-smi`, `xpu-smi`) may take before the agent
/// registers without GPUs.
const GPU_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// This agent's inventory as reported at registration, with `gpus` from [`host_gpus`].
pub fn inventory(cfg: &AgentConfig, gpus: &gpu::Inventory) -> pb::Inventory {
    pb::Inventory {
        agent_name: cfg.name.clone(),
        host: cfg.host.clone(),
        gpus: gpus.to_proto(),
        driver: gpus.driver.clone(),
        labels: cfg.labels.clone().into_iter().collect(),
        engine_images: Vec::new(),
        fleetbench_version: FLEETBENCH_VERSION.to_string(),
        max_engines: cfg.max_engines.max(1),
        cpu_model: std::fs::read_to_string("/proc/cpuinfo")
            .map(|text| cpu_model(&text))
            .unwrap_or_default(),
    }
}

/// The first `model name` of a `/proc/cpuinfo` text (x86; "" where there is none).
fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_default()
}

/// This host's GPUs: the config's list when it has one, otherwise discovered (on the
/// blocking pool; none when discovery fails or outlasts [`GPU_DISCOVERY_TIMEOUT`]).
pub async fn host_gpus(cfg: Arc<AgentConfig>) -> gpu::Inventory {
    let task = tokio::task::spawn_blocking(move || gpu::resolve(&cfg, gpu::discover_host));
    let gpus = match tokio::time::timeout(GPU_DISCOVERY_TIMEOUT, task).await {
        Ok(Ok(gpus)) => gpus,
        Ok(Err(e)) => {
            warn!(error = %e, "GPU discovery failed; registering without GPUs");
            gpu::Inventory::none()
        }
        Err(_) => {
            warn!(
                timeout_s = GPU_DISCOVERY_TIMEOUT.as_secs(),
                "GPU discovery timed out; registering without GPUs"
            );
            gpu::Inventory::none()
        }
    };
    info!(source = %gpus.source, driver = %gpus.driver, gpus = gpus.gpus.len(), "GPU inventory");
    gpus
}

/// Keeps a session to the controller open until `shutdown`.
pub async fn run(ctx: SessionContext, shutdown: CancellationToken) {
    let gpus = ctx.gpus.clone();
    let mut backoff = BACKOFF_MIN;
    while !shutdown.is_cancelled() {
        let session = session_once(&ctx, &gpus, &shutdown, &mut backoff).await;
        ctx.metrics.session_ended();
        match session {
            Ok(()) => break,
            Err(e) => {
                warn!(agent = %ctx.cfg.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "controller session lost");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn session_once(
    ctx: &SessionContext,
    gpus: &gpu::Inventory,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), AgentError> {
    let channel = fleetbench_proto::channel::connect(&ctx.cfg.controller, &ctx.cfg.tls).await?;
    let mut client = AgentServiceClient::new(channel)
        .max_encoding_message_size(fleetbench_proto::limits::AGENT_TO_CONTROLLER)
        .max_decoding_message_size(fleetbench_proto::limits::CONTROLLER_TO_AGENT);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
    let mut active = ctx.outbox.unacked_points();
    if let Ok(s) = ctx.status.lock() {
        active.extend(s.active_points());
    }
    active.sort();
    active.dedup();
    let register = pb::AgentMessage {
        msg: Some(Msg::Register(pb::Register {
            inventory: Some(pb::Inventory {
                engine_images: ctx.engine_images.clone(),
                ..inventory(&ctx.cfg, gpus)
            }),
            active_points: active,
        })),
    };
    tx.send(register)
        .await
        .map_err(|_| AgentError::Engine("session channel closed".into()))?;
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    ctx.metrics.session_opened();
    ctx.outbox.requeue_unacked();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(ctx.cfg.heartbeat_s.max(1)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = ctx.outbox.next() => {
                if tx.send(msg).await.is_err() {
                    return Err(AgentError::Engine("controller stream closed".into()));
                }
            }
            m = inbound.message() => {
                match m? {
                    Some(cm) => handle(ctx, cm, backoff).await?,
                    None => return Err(AgentError::Engine("controller closed the stream".into())),
                }
            }
            _ = heartbeat.tick() => {
                let (state, current_point) = ctx
                    .status
                    .lock()
                    .map(|s| s.summary())
                    .unwrap_or_default();
                let hb = pb::AgentMessage {
                    msg: Some(Msg::Heartbeat(pb::Heartbeat { unix_ms: unix_millis_now(), state, current_point })),
                };
                if tx.send(hb).await.is_err() {
                    return Err(AgentError::Engine("controller stream closed".into()));
                }
            }
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn handle(
    ctx: &SessionContext,
    msg: pb::ControllerMessage,
    backoff: &mut Duration,
) -> Result<(), AgentError> {
    match msg.msg {
        Some(CMsg::Registered(r)) => {
            info!(agent = %ctx.cfg.name, agent_id = %r.agent_id, "registered with controller");
            *backoff = BACKOFF_MIN;
        }
        Some(CMsg::Assignment(a)) => {
            let Some(point) = a.point else {
                return Ok(());
            };
            if let Ok(mut m) = ctx.cancels.lock() {
                m.entry(point.point_id.clone()).or_default();
            }
            ctx.runner
                .send(RunnerCommand::Run(Box::new(point)))
                .await
                .map_err(|_| AgentError::Engine("runner stopped".into()))?;
        }
        Some(CMsg::BatchAck(a)) => ctx.outbox.ack_batch(&a.point_id, a.attempt, a.seq),
        Some(CMsg::PointAck(a)) => {
            debug!(point_id = %a.point_id, "point results stored by controller");
            ctx.outbox.ack_point(&a.point_id, a.attempt);
        }
        Some(CMsg::CancelPoint(c)) => {
            info!(point_id = %c.point_id, reason = %c.reason, "point cancelled by controller");
            if let Ok(mut m) = ctx.cancels.lock() {
                m.entry(c.point_id.clone()).or_default().cancel();
            }
        }
        Some(CMsg::ReleaseEngine(r)) => {
            ctx.runner
                .send(RunnerCommand::Release {
                    sweep_id: r.sweep_id,
                })
                .await
                .map_err(|_| AgentError::Engine("runner stopped".into()))?;
        }
        Some(CMsg::HeartbeatAck(_)) | None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_model_is_cpuinfos_first_model_name() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) w5-2455X\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(super::cpu_model(text), "Intel(R) Xeon(R) w5-2455X");
        assert_eq!(super::cpu_model("processor : 0\n"), "");
    }
}
