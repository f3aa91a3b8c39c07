//! Hands each assigned point to an engine lane ([`crate::lanes::runner::Runner`]). An agent runs
//! up to `max_engines` engines at once, each on GPUs of its own: a point goes to an idle
//! lane whose engine already has its configuration, else to a fresh lane, after stopping
//! the least recently used idle engines until its GPUs and an engine slot are free.
//! With `max_engines = 1` (the default) this is one engine at a time, restarted only when
//! the configuration changes.
//!
//! A point whose engine breaks the host's policy ([`crate::policy`]) is failed here, with
//! the rule named, before any lane sees it: no engine is stopped to make room for it, no
//! GPU is taken, nothing is started or fetched.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use fleetbench_proto::pb::{self, agent_message::Msg};
use fleetbench_proto::unix_micros_now;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::config::AgentConfig;
use crate::engine::EngineKey;
use crate::engine::docker;
use crate::engine::gpu::{self, GpuPool};
use crate::lanes::runner::{
    AgentStatus, CancelMap, LaneCommand, LaneContext, LaneReport, Runner, RunnerCommand,
};
use crate::link::outbox::Outbox;
use crate::load::clients::HttpClients;
use crate::metrics::AgentMetrics;
use crate::policy::Violation;

/// Commands a lane may have queued (a lane gets its next command only when idle).
const LANE_QUEUE: usize = 4;

/// What the dispatcher knows of one lane.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneView {
    pub busy: bool,
    /// The configuration of the lane's engine (busy lanes: the one it is running or
    /// starting).
    pub engine: Option<EngineKey>,
    /// When the lane was last given a point (larger is more recent).
    pub last_used: u64,
}

/// Where a point goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Idle lanes whose engines are stopped first, in this order.
    pub evict: Vec<usize>,
    /// The lane that runs the point; `lanes.len()` means a new one.
    pub lane: usize,
}

/// GPUs an engine of `key` takes on a host with `host_gpus` GPUs: its GPU count, or one
/// "slot" on a host without GPUs (where the count is only a tensor-parallel size).
pub fn engine_cost(key: &EngineKey, host_gpus: usize) -> u32 {
    if host_gpus == 0 { 1 } else { key.gpus.max(1) }
}

/// Decides where a point of `key` runs (see the module docs). Lanes with an engine count
/// against the host's GPUs (`max(1, host_gpus)`) and `max_engines`.
pub fn route(lanes: &[LaneView], key: &EngineKey, host_gpus: usize, max_engines: u32) -> Route {
    if let Some(i) = lanes
        .iter()
        .position(|l| !l.busy && l.engine.as_ref() == Some(key))
    {
        return Route {
            evict: Vec::new(),
            lane: i,
        };
    }
    let capacity = u32::try_from(host_gpus.max(1)).unwrap_or(u32::MAX);
    let need = engine_cost(key, host_gpus);
    let mut used: u32 = lanes
        .iter()
        .filter_map(|l| l.engine.as_ref())
        .map(|k| engine_cost(k, host_gpus))
        .sum();
    let mut engines = lanes.iter().filter(|l| l.engine.is_some()).count();
    let max_engines = usize::try_from(max_engines.max(1)).unwrap_or(usize::MAX);
    let mut idle_engines: Vec<(u64, usize)> = lanes
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.busy && l.engine.is_some())
        .map(|(i, l)| (l.last_used, i))
        .collect();
    idle_engines.sort_unstable();
    let mut evict = Vec::new();
    for (_, i) in idle_engines {
        if used.saturating_add(need) <= capacity && engines < max_engines {
            break;
        }
        if let Some(k) = lanes.get(i).and_then(|l| l.engine.as_ref()) {
            used = used.saturating_sub(engine_cost(k, host_gpus));
        }
        engines = engines.saturating_sub(1);
        evict.push(i);
    }
    // An idle lane without an engine (or one just emptied), else a new lane.
    let lane = lanes
        .iter()
        .enumerate()
        .find(|(i, l)| !l.busy && (l.engine.is_none() || evict.contains(i)))
        .map_or(lanes.len(), |(i, _)| i);
    Route { evict, lane }
}

struct Lane {
    view: LaneView,
    tx: mpsc::Sender<LaneCommand>,
}

/// Owns the lanes of one agent.
pub struct Dispatcher {
    ctx: LaneContext,
    lanes: Vec<Lane>,
    reports_tx: mpsc::Sender<LaneReport>,
    reports_rx: mpsc::Receiver<LaneReport>,
    tracker: TaskTracker,
    points_given: u64,
}

impl Dispatcher {
    pub fn new(
        cfg: Arc<AgentConfig>,
        clients: HttpClients,
        outbox: Arc<Outbox>,
        cancels: CancelMap,
        status: Arc<Mutex<AgentStatus>>,
        gpus: Arc<gpu::Inventory>,
        metrics: AgentMetrics,
    ) -> Self {
        let pool = GpuPool::new(gpus.gpus.iter().map(|g| g.index).collect());
        let lanes_max = usize::try_from(cfg.max_engines.max(1)).unwrap_or(1);
        let (reports_tx, reports_rx) = mpsc::channel(LANE_QUEUE * (lanes_max + 1));
        Dispatcher {
            ctx: LaneContext {
                cfg,
                clients,
                metrics,
                outbox,
                cancels,
                status,
                gpus,
                pool: Arc::new(Mutex::new(pool)),
                docker: None,
                engines_started: Arc::new(AtomicU64::new(0)),
            },
            lanes: Vec::new(),
            reports_tx,
            reports_rx,
            tracker: TaskTracker::new(),
            points_given: 0,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<RunnerCommand>, shutdown: CancellationToken) {
        self.remove_leftover_containers().await;
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(RunnerCommand::Run(point)) => self.dispatch(point, &shutdown).await,
                    Some(RunnerCommand::Release { sweep_id }) => {
                        for lane in &self.lanes {
                            let cmd = LaneCommand::Release { sweep_id: sweep_id.clone() };
                            if lane.tx.send(cmd).await.is_err() {
                                warn!("an engine lane has stopped");
                            }
                        }
                    }
                    None => break,
                },
                Some(report) = self.reports_rx.recv() => self.apply(report),
                () = shutdown.cancelled() => break,
            }
        }
        // Lanes stop their engines when their channel closes or on shutdown.
        self.lanes.clear();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn apply(&mut self, report: LaneReport) {
        if let Some(lane) = self.lanes.get_mut(report.lane) {
            lane.view.busy = false;
            lane.view.engine = report.engine;
        }
    }

    async fn dispatch(&mut self, point: Box<pb::PointSpec>, shutdown: &CancellationToken) {
        // A lane reports idle before its point's end reaches the controller, so every
        // lane the controller counts as free has reported by now.
        while let Ok(report) = self.reports_rx.try_recv() {
            self.apply(report);
        }
        let key = EngineKey {
            spec: point.engine.clone().unwrap_or_default(),
            gpus: point.gpus,
        };
        if let Err(violation) = self.ctx.cfg.policy.check(&key.spec) {
            self.refuse(&point, &violation);
            return;
        }
        let views: Vec<LaneView> = self.lanes.iter().map(|l| l.view.clone()).collect();
        let route = route(
            &views,
            &key,
            self.ctx.gpus.gpus.len(),
            self.ctx.cfg.max_engines,
        );
        for i in route.evict {
            self.stop_lane_engine(i).await;
        }
        let lane = if route.lane < self.lanes.len() {
            route.lane
        } else {
            self.spawn_lane(shutdown)
        };
        self.points_given += 1;
        let Some(l) = self.lanes.get_mut(lane) else {
            return;
        };
        l.view.busy = true;
        l.view.engine = Some(key);
        l.view.last_used = self.points_given;
        info!(lane, point_id = %point.point_id, "point handed to engine lane");
        if l.tx.send(LaneCommand::Run(point)).await.is_err() {
            warn!(lane, "engine lane has stopped; point dropped");
        }
    }

    /// Fails `point` for breaking the host's policy: its end goes to the controller like
    /// any failed point's (not an engine crash, so it is not retried).
    fn refuse(&self, point: &pb::PointSpec, violation: &Violation) {
        warn!(point_id = %point.point_id, rule = violation.rule, error = %violation, "point refused by the host's policy");
        if let Ok(mut m) = self.ctx.cancels.lock() {
            m.remove(&point.point_id);
        }
        let now = unix_micros_now();
        let pushed = self.ctx.outbox.push(pb::AgentMessage {
            msg: Some(Msg::PointFinished(pb::PointFinished {
                sweep_id: point.sweep_id.clone(),
                point_id: point.point_id.clone(),
                attempt: point.attempt,
                batches: 0,
                ok: false,
                error: violation.to_string(),
                started_unix_us: now,
                finished_unix_us: now,
                engine_crashed: false,
                ..Default::default()
            })),
        });
        if let Err(e) = pushed {
            warn!(error = %e, "point-finished message not spooled");
        }
    }

    /// Stops the engine of idle lane `i` and waits until it is gone (so its GPUs are free).
    async fn stop_lane_engine(&mut self, i: usize) {
        let Some(lane) = self.lanes.get(i) else {
            return;
        };
        let (done_tx, mut done_rx) = oneshot::channel();
        let cmd = LaneCommand::Stop {
            why: "engine configuration changed",
            done: done_tx,
        };
        if lane.tx.send(cmd).await.is_err() {
            return;
        }
        // Other lanes' reports keep arriving meanwhile.
        loop {
            tokio::select! {
                _ = &mut done_rx => break,
                Some(report) = self.reports_rx.recv() => self.apply(report),
            }
        }
        if let Some(lane) = self.lanes.get_mut(i) {
            lane.view.engine = None;
        }
    }

    fn spawn_lane(&mut self, shutdown: &CancellationToken) -> usize {
        let id = self.lanes.len();
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        let runner = Runner::new(id, self.ctx.clone());
        let span = tracing::Span::current();
        self.tracker.spawn(
            runner
                .run(rx, self.reports_tx.clone(), shutdown.clone())
                .instrument(span),
        );
        self.lanes.push(Lane {
            view: LaneView {
                busy: false,
                engine: None,
                last_used: 0,
            },
            tx,
        });
        id
    }

    /// Containers of an earlier run of this agent (killed before it could stop them) hold
    /// GPUs and ports: remove them. A host without Docker just has nothing to remove.
    async fn remove_leftover_containers(&mut self) {
        match docker::connect(&self.ctx.cfg.docker).await {
            Ok(client) => {
                match docker::remove_own_containers(&client, &self.ctx.cfg.name).await {
                    Ok(removed) if !removed.is_empty() => {
                        info!(?removed, "removed containers left by an earlier run");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot list this agent's old containers"),
                }
                self.ctx.docker = Some(client);
            }
            Err(e) => info!(error = %e, "no Docker engine; the docker runtime is unavailable"),
        }
    }
}

#[cfg(test)]
mod tests;
