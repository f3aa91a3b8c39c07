//! One engine lane: runs the points the dispatcher gives it one after another, keeps its
//! engine up across points that share its configuration, restarts it when the
//! configuration or GPU count changes, streams records in batches while a point runs, and
//! reports how the point ended. Several lanes run side by side on disjoint GPUs when the
//! agent allows more than one engine (see [`crate::lanes::dispatch`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetbench_proto::pb::{self, agent_message::Msg};
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::{unix_micros_now, unix_millis_now};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::AgentConfig;
use crate::engine::docker::{self, Accelerator, ContainerPlan};
use crate::engine::gpu::{self, GpuGrant, GpuPool};
use crate::engine::{Engine, EngineKey, ExitInfo};
use crate::error::AgentError;
use crate::link::outbox::Outbox;
use crate::load::clients::HttpClients;
use crate::load::{self, LoadOutcome};
use crate::metrics::AgentMetrics;
use crate::policy::scrub::Scrubber;

/// What the session asks the agent to do, in order.
#[derive(Debug)]
pub enum RunnerCommand {
    Run(Box<pb::PointSpec>),
    /// The controller has no more work of this sweep for us: stop its engines.
    Release {
        sweep_id: String,
    },
}

/// What the dispatcher asks one lane to do, in order.
#[derive(Debug)]
pub enum LaneCommand {
    Run(Box<pb::PointSpec>),
    /// Stop the engine if it serves this sweep.
    Release {
        sweep_id: String,
    },
    /// Stop the engine now (its GPUs or its engine slot are needed by another
    /// configuration) and say when it is gone.
    Stop {
        why: &'static str,
        done: oneshot::Sender<()>,
    },
}

/// A lane's state after a `Run` or `Release`: idle, with this engine up (if any).
#[derive(Debug)]
pub struct LaneReport {
    pub lane: usize,
    pub engine: Option<EngineKey>,
}

/// What one lane is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaneStatus {
    pub state: String,
    pub point: String,
}

/// What the agent's lanes are doing, for heartbeats and re-registration.
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    lanes: BTreeMap<usize, LaneStatus>,
}

impl AgentStatus {
    pub fn set(&mut self, lane: usize, state: &str, point: &str) {
        self.lanes.insert(
            lane,
            LaneStatus {
                state: state.to_string(),
                point: point.to_string(),
            },
        );
    }

    /// How many lanes are in each state.
    pub fn lane_counts(&self) -> Vec<(String, i64)> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for lane in self.lanes.values() {
            *counts.entry(lane.state.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// The agent's state (`running` when any lane runs a point, else `starting-engine`
    /// when any lane starts one, else `idle`) and its current points, comma-separated.
    pub fn summary(&self) -> (String, String) {
        let state = ["running", "starting-engine"]
            .into_iter()
            .find(|want| self.lanes.values().any(|l| l.state == *want))
            .unwrap_or("idle");
        (state.to_string(), self.active_points().join(","))
    }

    /// Points some lane is working on.
    pub fn active_points(&self) -> Vec<String> {
        self.lanes
            .values()
            .filter(|l| !l.point.is_empty())
            .map(|l| l.point.clone())
            .collect()
    }
}

/// Cancellation tokens of assigned points, by point id.
pub type CancelMap = Arc<Mutex<HashMap<String, CancellationToken>>>;

/// What every lane of an agent shares.
#[derive(Clone)]
pub struct LaneContext {
    pub cfg: Arc<AgentConfig>,
    pub clients: HttpClients,
    pub metrics: AgentMetrics,
    pub outbox: Arc<Outbox>,
    pub cancels: CancelMap,
    pub status: Arc<Mutex<AgentStatus>>,
    /// This host's GPUs, and which engine holds which.
    pub gpus: Arc<gpu::Inventory>,
    pub pool: Arc<Mutex<GpuPool>>,
    /// The Docker Engine when the agent reached it at start (a `docker` engine connects
    /// on first use otherwise).
    pub docker: Option<bollard::Docker>,
    /// Engines started so far by any lane (names containers and GPU holders).
    pub engines_started: Arc<AtomicU64>,
}

pub struct Runner {
    lane: usize,
    ctx: LaneContext,
    cfg: Arc<AgentConfig>,
    clients: HttpClients,
    outbox: Arc<Outbox>,
    engine: Option<(String, Engine)>,
    /// Who holds the GPUs of the running engine in the pool (empty: none held).
    gpu_holder: String,
    /// Where the lane reports that it is idle again.
    reports: Option<mpsc::Sender<LaneReport>>,
    docker: Option<bollard::Docker>,
    /// Redacts `engine_env` values from point errors before they are logged (the outbox
    /// redacts everything sent).
    scrubber: Scrubber,
}

#[derive(Default)]
struct PointResult {
    ok: bool,
    error: String,
    /// The engine died during the point or failed to start for it.
    engine_crashed: bool,
    endpoint: String,
    engine_metrics: Vec<pb::MetricSample>,
    fallbacks: Vec<String>,
    client_cpu_s: f64,
    load_wall_s: f64,
    client_cores: u32,
    warmup: Option<pb::WarmupResult>,
    data_file: Option<pb::DataFileUse>,
}

impl PointResult {
    fn failed(error: String) -> Self {
        PointResult {
            ok: false,
            error,
            ..PointResult::default()
        }
    }

    /// What the load run measured, whether or not the point as a whole succeeded.
    fn from_outcome(ok: bool, error: String, o: LoadOutcome) -> Self {
        PointResult {
            ok,
            error,
            engine_crashed: false,
            endpoint: o.endpoint.as_str().to_string(),
            engine_metrics: wire_samples(o.engine_metrics),
            fallbacks: o.fallbacks,
            client_cpu_s: o.client_cpu_s,
            load_wall_s: o.load_wall_s,
            client_cores: o.client_cores,
            warmup: o.warmup.map(|w| pb::WarmupResult {
                wave_output_tps: w.wave_output_tps,
                converged: w.converged,
                max_waves: w.max_waves,
                tolerance: w.tolerance,
            }),
            data_file: o.data_file,
        }
    }
}

impl Runner {
    pub fn new(lane: usize, ctx: LaneContext) -> Self {
        Runner {
            lane,
            cfg: ctx.cfg.clone(),
            clients: ctx.clients.clone(),
            outbox: ctx.outbox.clone(),
            docker: ctx.docker.clone(),
            scrubber: Scrubber::new(&ctx.cfg.engine_env),
            ctx,
            engine: None,
            gpu_holder: String::new(),
            reports: None,
        }
    }

    /// Serves the dispatcher's commands until the channel closes or the agent shuts
    /// down, then stops the engine.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<LaneCommand>,
        reports: mpsc::Sender<LaneReport>,
        shutdown: CancellationToken,
    ) {
        self.set_status("idle", "");
        self.reports = Some(reports);
        loop {
            let cmd = tokio::select! {
                c = rx.recv() => c,
                () = shutdown.cancelled() => None,
            };
            match cmd {
                Some(LaneCommand::Run(point)) => {
                    let span = info_span!("point", sweep_id = %point.sweep_id, point_id = %point.point_id, attempt = point.attempt, agent = %self.cfg.name, lane = self.lane);
                    // Reports idle itself, before the controller hears the point ended.
                    self.run_point(*point).instrument(span).await;
                    continue;
                }
                Some(LaneCommand::Release { sweep_id }) => {
                    if self.engine.as_ref().is_some_and(|(s, _)| *s == sweep_id) {
                        self.stop_engine(&sweep_id, "", "sweep finished").await;
                    }
                }
                Some(LaneCommand::Stop { why, done }) => {
                    if let Some((sweep, _)) = &self.engine {
                        let sweep = sweep.clone();
                        self.stop_engine(&sweep, "", why).await;
                    }
                    let _ = done.send(());
                    continue;
                }
                None => break,
            }
            self.report_idle().await;
        }
        if let Some((sweep, _)) = &self.engine {
            let sweep = sweep.clone();
            self.stop_engine(&sweep, "", "agent shutting down").await;
        }
    }

    /// Tells the dispatcher this lane is idle, with its engine (if it is still up).
    async fn report_idle(&mut self) {
        self.set_status("idle", "");
        let report = LaneReport {
            lane: self.lane,
            engine: self.engine.as_ref().map(|(_, e)| e.key.clone()),
        };
        if let Some(tx) = &self.reports {
            if tx.send(report).await.is_err() {
                warn!(lane = self.lane, "dispatcher gone");
            }
        }
    }

    /// The Docker client, connecting on first use.
    async fn docker(&mut self) -> Result<bollard::Docker, AgentError> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let d = docker::connect(&self.cfg.docker).await?;
        self.docker = Some(d.clone());
        Ok(d)
    }

    /// GPUs for an engine of `gpus` GPUs from the pool, held as `holder`: none on a host
    /// without GPUs (a simulator's "GPUs" are only its tensor-parallel size).
    fn take_gpus(&mut self, holder: &str, gpus: u32) -> Result<Vec<u32>, AgentError> {
        if self.ctx.gpus.gpus.is_empty() {
            return Ok(Vec::new());
        }
        let mut pool = self
            .ctx
            .pool
            .lock()
            .map_err(|_| AgentError::Engine("GPU pool lock poisoned".into()))?;
        let ids = pool
            .allocate(holder, gpus)
            .map_err(|e| AgentError::EngineStart {
                message: e.to_string(),
                exit_code: None,
                log_tail: Vec::new(),
            })?;
        self.gpu_holder = holder.to_string();
        Ok(ids)
    }

    fn give_back_gpus(&mut self) {
        if self.gpu_holder.is_empty() {
            return;
        }
        if let Ok(mut pool) = self.ctx.pool.lock() {
            pool.release(&self.gpu_holder);
        }
        self.gpu_holder.clear();
    }

    /// Starts the engine of `key` for `point` on GPUs of its own from the pool: a
    /// container for `docker`, a process (GPUs picked by `CUDA_VISIBLE_DEVICES` /
    /// `ZE_AFFINITY_MASK`) or an attachment otherwise.
    async fn start_engine(
        &mut self,
        point: &pb::PointSpec,
        key: EngineKey,
        cancel: &CancellationToken,
    ) -> Result<Engine, AgentError> {
        let n = self.ctx.engines_started.fetch_add(1, Ordering::Relaxed) + 1;
        let name = docker::container_name(&self.cfg.name, n);
        if key.spec.runtime_kind() != pb::Runtime::Docker {
            let grant = if key.spec.runtime_kind() == pb::Runtime::Process {
                let ids = self.take_gpus(&name, key.gpus)?;
                GpuGrant::for_process(self.ctx.gpus.gpus.first().map(|g| g.vendor), ids)
            } else {
                GpuGrant::default()
            };
            let started = Engine::start(key, &self.cfg, &self.clients.probes, cancel, &grant).await;
            if started.is_err() {
                self.give_back_gpus();
            }
            return started;
        }
        let docker = self.docker().await?;
        let accelerator = Accelerator::resolve(
            &self.cfg.docker.accelerator,
            self.ctx.gpus.gpus.first().map(|g| g.vendor.as_str()),
        )?;
        let gpu_ids = if self.ctx.gpus.gpus.is_empty() && accelerator == Accelerator::None {
            Vec::new()
        } else {
            self.take_gpus(&name, key.gpus)?
        };
        let plan = ContainerPlan::new(
            &key.spec,
            key.gpus,
            &gpu_ids,
            &self.cfg,
            accelerator,
            &point.sweep_id,
            &name,
        );
        let started =
            Engine::start_container(key, &plan, &docker, &self.cfg, &self.clients.probes, cancel)
                .await;
        if started.is_err() {
            self.give_back_gpus();
        }
        started
    }

    /// Stops `engine` and gives its GPUs back.
    async fn retire(&mut self, mut engine: Engine) {
        engine.stop().await;
        self.give_back_gpus();
    }

    fn set_status(&self, state: &str, point: &str) {
        if let Ok(mut s) = self.ctx.status.lock() {
            s.set(self.lane, state, point);
        }
    }

    fn event(
        &self,
        sweep_id: &str,
        point_id: &str,
        kind: &str,
        message: String,
    ) -> pb::EngineEvent {
        pb::EngineEvent {
            sweep_id: sweep_id.to_string(),
            point_id: point_id.to_string(),
            kind: kind.to_string(),
            message,
            unix_ms: unix_millis_now(),
            ..Default::default()
        }
    }

    fn send_event(&self, ev: pb::EngineEvent) {
        // Events are not spooled: pushing them cannot fail.
        let _ = self.outbox.push(pb::AgentMessage {
            msg: Some(Msg::EngineEvent(ev)),
        });
    }

    async fn stop_engine(&mut self, sweep_id: &str, point_id: &str, why: &str) {
        if let Some((_, engine)) = self.engine.take() {
            info!(why, container = %engine.container, "stopping engine");
            let mut ev = self.event(sweep_id, point_id, "stopped", why.to_string());
            ev.container = engine.container.clone();
            self.retire(engine).await;
            self.send_event(ev);
        }
    }

    /// Makes sure an engine for `key` is ready; reuses the running one when it matches.
    /// The error says why, and whether the engine itself failed to start (an engine crash
    /// for the sweep's failure policy) rather than the agent.
    async fn ensure_engine(
        &mut self,
        point: &pb::PointSpec,
        key: EngineKey,
        cancel: &CancellationToken,
    ) -> Result<(), (String, bool)> {
        if let Some((sweep, engine)) = &mut self.engine {
            if engine.key == key && engine.exited().await.is_none() {
                *sweep = point.sweep_id.clone();
                return Ok(());
            }
        }
        self.stop_engine(
            &point.sweep_id,
            &point.point_id,
            "engine configuration changed",
        )
        .await;
        self.set_status("starting-engine", &point.point_id);
        self.send_event(self.event(
            &point.sweep_id,
            &point.point_id,
            "starting",
            format!(
                "runtime {} with {} GPU(s)",
                fleetbench_proto::spec::Runtime::try_from(key.spec.runtime_kind())
                    .map_or("", fleetbench_proto::spec::Runtime::as_str),
                key.gpus
            ),
        ));
        match self.start_engine(point, key, cancel).await {
            Ok(engine) => {
                let mut ev = self.event(
                    &point.sweep_id,
                    &point.point_id,
                    "ready",
                    engine.base_url.clone(),
                );
                ev.engine_version = engine.version.clone();
                ev.image = engine.image.clone();
                ev.image_digest = engine.image_digest.clone();
                ev.container = engine.container.clone();
                ev.gpu_ids = engine.gpu_ids.clone();
                self.send_event(ev);
                self.engine = Some((point.sweep_id.clone(), engine));
                Ok(())
            }
            Err(AgentError::EngineStart {
                message,
                exit_code,
                log_tail,
            }) => {
                let mut ev = self.event(
                    &point.sweep_id,
                    &point.point_id,
                    "start-failed",
                    message.clone(),
                );
                ev.exit_code = exit_code;
                ev.log_tail = log_tail;
                self.send_event(ev);
                Err((message, true))
            }
            Err(e) => Err((e.to_string(), false)),
        }
    }

    async fn run_point(&mut self, point: pb::PointSpec) {
        let cancel = self
            .ctx
            .cancels
            .lock()
            .ok()
            .and_then(|m| m.get(&point.point_id).cloned())
            .unwrap_or_default();
        let started = unix_micros_now();
        let key = EngineKey {
            spec: point.engine.clone().unwrap_or_default(),
            gpus: point.gpus,
        };
        info!(
            batch = point.batch_size,
            gpus = point.gpus,
            "point assigned"
        );
        let (tx, rx) = mpsc::channel::<RequestRecord>(256);
        let batcher = tokio::spawn(batch_records(
            rx,
            self.outbox.clone(),
            point.clone(),
            self.cfg.batch_records,
            Duration::from_millis(self.cfg.batch_flush_ms),
        ));
        let mut result = match self.ensure_engine(&point, key, &cancel).await {
            Err((error, engine_crashed)) => PointResult {
                engine_crashed,
                ..PointResult::failed(format!("engine start failed: {error}"))
            },
            Ok(()) => {
                self.set_status("running", &point.point_id);
                self.load_point(&point, &tx, &cancel).await
            }
        };
        drop(tx);
        let (batches, spool_error) = batcher.await.unwrap_or_else(|e| {
            warn!(error = %e, "record batcher failed");
            (0, Some(format!("record batcher failed: {e}")))
        });
        if let Some(e) = spool_error {
            // The records were still sent, but a restart of this agent could lose them:
            // the point is not trustworthy, and says why.
            result.ok = false;
            result.error = if result.error.is_empty() {
                e
            } else {
                format!("{}; {e}", result.error)
            };
        }
        let (engine_version, engine_args, engine_image, engine_image_digest, gpu_ids) = self
            .engine
            .as_ref()
            .map(|(_, e)| {
                (
                    e.version.clone(),
                    e.args.clone(),
                    e.image.clone(),
                    e.image_digest.clone(),
                    e.gpu_ids.clone(),
                )
            })
            .unwrap_or_default();
        self.scrubber.scrub_string(&mut result.error);
        info!(ok = result.ok, error = %result.error, batches, "point finished");
        if let Ok(mut m) = self.ctx.cancels.lock() {
            m.remove(&point.point_id);
        }
        // Idle before the controller hears of the end, so the dispatcher knows this lane
        // is free when the controller's next assignment arrives.
        self.report_idle().await;
        self.ctx
            .metrics
            .point_finished(if result.ok { "done" } else { "failed" });
        let pushed = self.outbox.push(pb::AgentMessage {
            msg: Some(Msg::PointFinished(pb::PointFinished {
                sweep_id: point.sweep_id.clone(),
                point_id: point.point_id.clone(),
                attempt: point.attempt,
                batches,
                ok: result.ok,
                error: result.error,
                endpoint: result.endpoint,
                engine_version,
                engine_args,
                started_unix_us: started,
                finished_unix_us: unix_micros_now(),
                engine_metrics: result.engine_metrics,
                client_cpu_s: result.client_cpu_s,
                load_wall_s: result.load_wall_s,
                client_cores: result.client_cores,
                fallbacks: result.fallbacks,
                engine_image,
                engine_image_digest,
                engine_crashed: result.engine_crashed,
                warmup: result.warmup,
                gpu_ids,
                data_file: result.data_file,
            })),
        });
        if let Err(e) = pushed {
            // Sent from memory; a restart before the controller's acknowledgement loses
            // the attempt, and the controller re-queues the point.
            warn!(error = %e, "point-finished message not spooled");
        }
    }

    async fn load_point(
        &mut self,
        point: &pb::PointSpec,
        tx: &mpsc::Sender<RequestRecord>,
        cancel: &CancellationToken,
    ) -> PointResult {
        let Some((_, engine)) = self.engine.as_mut() else {
            return PointResult::failed("no engine".into());
        };
        let base_url = engine.base_url.clone();
        let interval = Duration::from_millis(self.cfg.metrics_interval_ms.max(10));
        let tokenizer_source = point
            .load
            .as_ref()
            .map(|l| l.tokenizer_source)
            .unwrap_or_default();
        let model = point
            .engine
            .as_ref()
            .map(|e| e.model.clone())
            .unwrap_or_default();
        let tokenizer = match load::local_tokenizer(tokenizer_source, &model, &self.cfg.model_paths)
        {
            Ok(t) => t,
            Err(e) => return PointResult::failed(e.to_string()),
        };
        let load_started_us = unix_micros_now();
        let outcome = load::run_point(
            &self.clients,
            &base_url,
            point,
            tx,
            interval,
            tokenizer,
            &load::DataDirs {
                dirs: self.cfg.dataset_dirs.clone(),
                max_bytes: self.cfg.max_dataset_bytes,
            },
            cancel,
        )
        .await;
        // An engine that died during the point fails it; forensics travel as an event.
        let exit = match self.engine.as_mut() {
            Some((_, engine)) => engine.exit_after_point(&self.clients.probes).await,
            None => None,
        };
        if let Some(exit) = exit {
            let error = death_message(&exit);
            let mut ev = self.event(&point.sweep_id, &point.point_id, "exited", error.clone());
            ev.exit_code = exit.code;
            ev.oom_killed = exit.oom_killed;
            let died_us = exit.finished_unix_us.unwrap_or_else(unix_micros_now);
            ev.died_after_s = Some((died_us - load_started_us) as f64 / 1e6);
            ev.log_tail = exit.log_tail;
            if let Some((_, engine)) = self.engine.take() {
                ev.image = engine.image.clone();
                ev.image_digest = engine.image_digest.clone();
                ev.container = engine.container.clone();
                ev.gpu_ids = engine.gpu_ids.clone();
                // The dead container goes (its logs are in the event); the next point
                // starts a fresh one.
                self.retire(engine).await;
            }
            self.send_event(ev);
            let result = match outcome {
                Ok(o) => PointResult::from_outcome(false, error, o),
                Err(_) => PointResult::failed(error),
            };
            return PointResult {
                engine_crashed: true,
                ..result
            };
        }
        match outcome {
            Ok(o) => {
                let error = if o.inexact_prompts > 0 {
                    format!(
                        "{} prompt(s) not at the exact input length",
                        o.inexact_prompts
                    )
                } else {
                    String::new()
                };
                PointResult::from_outcome(true, error, o)
            }
            Err(AgentError::Cancelled) => PointResult::failed("cancelled".into()),
            Err(e) => PointResult::failed(e.to_string()),
        }
    }
}

/// "engine exited during the point with code 1 (OOM-killed)".
fn death_message(exit: &ExitInfo) -> String {
    let code = exit
        .code
        .map_or_else(|| "unknown".to_string(), |c| c.to_string());
    let oom = if exit.oom_killed == Some(true) {
        " (OOM-killed)"
    } else {
        ""
    };
    format!("engine exited during the point with code {code}{oom}")
}

fn wire_samples(samples: Vec<crate::engine::telemetry::MetricSample>) -> Vec<pb::MetricSample> {
    samples
        .into_iter()
        .map(|s| pb::MetricSample {
            offset_s: s.offset_s,
            unix_ms: s.unix_ms,
            name: s.name,
            value: s.value,
        })
        .collect()
}

/// Groups records into batches of `max` (or whatever arrived within `flush`) and queues
/// them with consecutive sequence numbers. Returns how many batches were queued and the
/// first spool write error (the batches were queued all the same).
async fn batch_records(
    mut rx: mpsc::Receiver<RequestRecord>,
    outbox: Arc<Outbox>,
    point: pb::PointSpec,
    max: usize,
    flush: Duration,
) -> (u64, Option<String>) {
    let mut seq = 0u64;
    let mut spool_error: Option<String> = None;
    let mut pending: Vec<pb::RequestRecord> = Vec::with_capacity(max);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + flush, flush);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let emit =
        |pending: &mut Vec<pb::RequestRecord>, seq: &mut u64, spool_error: &mut Option<String>| {
            if pending.is_empty() {
                return;
            }
            let pushed = outbox.push(pb::AgentMessage {
                msg: Some(Msg::RecordBatch(pb::RecordBatch {
                    sweep_id: point.sweep_id.clone(),
                    point_id: point.point_id.clone(),
                    attempt: point.attempt,
                    seq: *seq,
                    records: std::mem::take(pending),
                })),
            });
            if let (Err(e), None) = (pushed, &spool_error) {
                *spool_error = Some(e.to_string());
            }
            *seq += 1;
        };
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Some(record) => {
                    pending.push(pb::RequestRecord::from(&record));
                    if pending.len() >= max {
                        emit(&mut pending, &mut seq, &mut spool_error);
                    }
                }
                None => break,
            },
            _ = tick.tick() => emit(&mut pending, &mut seq, &mut spool_error),
        }
    }
    emit(&mut pending, &mut seq, &mut spool_error);
    (seq, spool_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn batches_fill_up_or_flush_on_time() {
        let outbox = Arc::new(Outbox::new());
        let (tx, rx) = mpsc::channel(16);
        let point = pb::PointSpec {
            point_id: "p".into(),
            ..Default::default()
        };
        let task = tokio::spawn(batch_records(
            rx,
            outbox.clone(),
            point,
            3,
            Duration::from_millis(250),
        ));
        for i in 0..4 {
            tx.send(RequestRecord {
                request_index: i,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        // 3 records make a full batch at once; the 4th waits for the flush tick.
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(RequestRecord {
            request_index: 4,
            ..Default::default()
        })
        .await
        .unwrap();
        drop(tx);
        assert_eq!(task.await.unwrap(), (3, None));
        let mut sizes = Vec::new();
        for _ in 0..3 {
            if let Some(Msg::RecordBatch(b)) = outbox.next().await.msg {
                sizes.push((b.seq, b.records.len()));
            }
        }
        assert_eq!(sizes, vec![(0, 3), (1, 1), (2, 1)]);
    }
}
