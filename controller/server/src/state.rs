//! The controller's model of the fleet: sweeps and their points, agents and what they run.
//!
//! Everything here is plain data changed under one lock by short, synchronous methods that
//! return the messages to send afterwards ([`Outgoing`]): no I/O and no `.await` happens
//! while the state is locked, and the scheduling rules can be unit-tested directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use fleetbench_proto::pb::{self, controller_message::Msg as CMsg};
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::spec::{OnEngineCrash, PlannedPoint, SweepSpec};
use fleetbench_proto::unix_millis_now;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::ControllerError;
use crate::store::{AgentRow, Loaded, LoadedSweep, PointRow, StoreOp, SweepRow};
use fleetbench_results::summary::{ClientStats, PointMeta, PointSummary, summarize};

/// Messages to send to agents once the state lock is released: (agent name, message).
pub type Outgoing = Vec<(String, pb::ControllerMessage)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointState {
    Pending,
    Running {
        agent: String,
    },
    Done,
    Failed,
    Cancelled,
    /// Never run: the sweep's failure policy gave up on it (`on_engine_crash =
    /// "skip-larger"` after a smaller load crashed the engine).
    Skipped,
}

impl PointState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PointState::Pending => "pending",
            PointState::Running { .. } => "running",
            PointState::Done => "done",
            PointState::Failed => "failed",
            PointState::Cancelled => "cancelled",
            PointState::Skipped => "skipped",
        }
    }
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            PointState::Done | PointState::Failed | PointState::Cancelled | PointState::Skipped
        )
    }
}

#[derive(Debug, Clone)]
pub struct PointEntry {
    pub planned: PlannedPoint,
    pub point_id: String,
    pub state: PointState,
    /// Attempt number of the current/last run (0 before the first assignment).
    pub attempt: u32,
    /// Record batches of the current attempt, by sequence number (de-duplicated).
    pub batches: BTreeMap<u64, Vec<RequestRecord>>,
    pub summary: Option<PointSummary>,
    pub finished: Option<pb::PointFinished>,
    pub engine_events: Vec<pb::EngineEvent>,
    /// The current attempt's engine died ("exited") or failed to start ("start-failed").
    pub engine_crashed: bool,
    /// Attempts re-queued after an engine crash (`on_engine_crash = "retry"`).
    pub crash_retries: u32,
    pub agent: String,
    pub host: String,
    pub error: String,
}

impl PointEntry {
    /// All records of the current attempt in sequence order.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.batches.values().flatten().cloned().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepState {
    Running,
    Done,
    Cancelled,
}

impl SweepState {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Done => "done",
            SweepState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug)]
pub struct Sweep {
    pub id: String,
    pub spec: SweepSpec,
    pub engine: pb::EngineSpec,
    pub load: pb::LoadSpec,
    pub points: Vec<PointEntry>,
    pub state: SweepState,
    pub submitted_ms: i64,
    pub finished_ms: i64,
    pub result_files: BTreeSet<String>,
    pub agents_used: BTreeSet<String>,
    /// Partition writes queued but not yet on disk; a finished sweep reports `writing`
    /// until they are, so a watcher that sees `done` finds every file in place.
    pub pending_writes: u32,
    /// Bumped on every change; `watch` streams follow it.
    pub version: tokio::sync::watch::Sender<u64>,
    /// Set on the child sweeps of a `strategy = "replicate"` submission: each runs the
    /// whole sweep on one agent, grouped under the parent id.
    pub replica: Option<Replica>,
}

/// A child sweep of a replicate submission: `<parent>.<agent>`, pinned to `agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The id the user submitted under; `status`/`watch`/`cancel` of it cover all children.
    pub parent: String,
    /// The only agent that runs this child's points.
    pub agent: String,
}

impl Sweep {
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn status(&self, with_points: bool) -> pb::SweepStatus {
        let done = self
            .points
            .iter()
            .filter(|p| p.state == PointState::Done)
            .count();
        let failed = self
            .points
            .iter()
            .filter(|p| p.state == PointState::Failed)
            .count();
        let skipped = self
            .points
            .iter()
            .filter(|p| p.state == PointState::Skipped)
            .count();
        pb::SweepStatus {
            sweep_id: self.id.clone(),
            name: self.spec.name.get_ref().clone(),
            model: self.spec.model.get_ref().clone(),
            state: if self.state != SweepState::Running && self.pending_writes > 0 {
                "writing".into()
            } else {
                self.state.as_str().into()
            },
            points_total: count(self.points.len()),
            points_done: count(done),
            points_failed: count(failed),
            points_skipped: count(skipped),
            points: if with_points {
                self.points.iter().map(point_status).collect()
            } else {
                Vec::new()
            },
            submitted_unix_ms: self.submitted_ms,
            finished_unix_ms: self.finished_ms,
            result_files: self.result_files.iter().cloned().collect(),
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn point_status(p: &PointEntry) -> pb::PointStatus {
    pb::PointStatus {
        point_id: p.point_id.clone(),
        index: p.planned.index,
        state: p.state.as_str().into(),
        agent: p.agent.clone(),
        gpus: p.planned.gpus,
        batch_size: p.planned.batch_size,
        workload: Some(pb::Workload {
            input_tokens: p.planned.workload.input,
            output_tokens: p.planned.workload.output,
        }),
        error: p.error.clone(),
        completed: p.summary.as_ref().map_or(0, |s| s.completed),
        failed: p.summary.as_ref().map_or(0, |s| s.failed),
        attempt: p.attempt,
        request_rate: p.planned.request_rate,
    }
}

#[derive(Debug)]
pub struct AgentEntry {
    pub name: String,
    pub inventory: pb::Inventory,
    pub connected: bool,
    /// Increases with every registration, so a stale session's disconnect is ignored.
    pub generation: u64,
    pub disconnected_at: Option<Instant>,
    pub state: String,
    /// Points running on the agent (several when it runs engines side by side).
    pub running: Vec<PointRef>,
    pub last_seen_ms: i64,
    /// (sweep id, GPU count) of the engines the agent last ran, most recent last, to keep
    /// engines warm (at most `max_engines` of them).
    pub engines: Vec<(String, u32)>,
}

impl AgentEntry {
    fn new(name: String, inventory: pb::Inventory, generation: u64) -> AgentEntry {
        AgentEntry {
            name,
            inventory,
            connected: false,
            generation,
            disconnected_at: None,
            state: "idle".into(),
            running: Vec::new(),
            last_seen_ms: 0,
            engines: Vec::new(),
        }
    }

    /// GPUs the agent has for points: its GPU count, or one for an agent without GPUs
    /// (simulated engines).
    fn gpu_capacity(&self) -> u32 {
        count(self.inventory.gpus.len()).max(1)
    }

    /// Engines the agent runs at once (its `max_engines`, at least 1).
    fn engine_slots(&self) -> usize {
        usize::try_from(self.inventory.max_engines.max(1)).unwrap_or(1)
    }

    /// Remembers that the agent now runs an engine of (sweep, GPU count).
    fn warm(&mut self, group: (String, u32)) {
        self.engines.retain(|g| *g != group);
        self.engines.push(group);
        let keep = self.engine_slots();
        if self.engines.len() > keep {
            let drop = self.engines.len() - keep;
            self.engines.drain(..drop);
        }
    }
}

/// Where a point lives: sweep id and index into its points.
type PointRef = (String, usize);

/// A partition (sweep, GPU count) whose results changed, and who waits for the write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteJob {
    pub sweep_id: String,
    pub gpus: u32,
    /// Point acknowledgements to send once the files are on disk.
    pub acks: Vec<(String, pb::PointAck)>,
}

/// A `RecordBatch` with its records decoded (unreadable ones are logged and dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    pub point_id: String,
    pub attempt: u32,
    pub seq: u64,
    pub records: Vec<RequestRecord>,
}

impl DecodedBatch {
    /// Decodes the records of `batch`; done before taking the state lock.
    pub fn decode(batch: pb::RecordBatch) -> Self {
        let mut records = Vec::with_capacity(batch.records.len());
        for r in batch.records {
            match RequestRecord::try_from(r) {
                Ok(r) => records.push(r),
                Err(e) => warn!(point_id = %batch.point_id, error = %e, "unreadable record"),
            }
        }
        Self {
            point_id: batch.point_id,
            attempt: batch.attempt,
            seq: batch.seq,
            records,
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    /// Sweeps in submission order (the order the scheduler serves them).
    pub sweeps: Vec<Sweep>,
    pub agents: HashMap<String, AgentEntry>,
    next_generation: u64,
    /// The sweep a free agent last took a new engine group from (round-robin cursor).
    last_sweep: Option<String>,
    /// What the store holds, to find what changed (see [`State::store_ops`]).
    persisted: Persisted,
    /// Point id → where it lives (a cache; see `find_point`).
    point_index: HashMap<String, PointRef>,
}

/// The part of a point's state whose change is worth a store write.
#[derive(Debug, Clone, PartialEq)]
struct PointPrint {
    state: PointState,
    attempt: u32,
    host: String,
    error: String,
    crash_retries: u32,
    summary: bool,
    events: usize,
    awaiting: bool,
}

/// Bookkeeping between the state and its durable copy.
#[derive(Debug, Default)]
struct Persisted {
    /// Sweep id → the sweep version last stored.
    sweeps: HashMap<String, u64>,
    points: HashMap<(String, usize), PointPrint>,
    /// Agents whose registration is not stored yet.
    dirty_agents: BTreeSet<String>,
    /// (point id, attempt) finished but not yet in the Parquet files: stored as still
    /// running on its agent until `write_done` reports them durable (decision 2).
    awaiting_write: BTreeSet<(String, u32)>,
    /// Points restored as running that are not their agent's current point.
    /// Sweep id → (spec TOML as submitted, its file name): what the store keeps of a spec.
    sources: HashMap<String, (String, String)>,
}

fn msg(m: CMsg) -> pb::ControllerMessage {
    pb::ControllerMessage { msg: Some(m) }
}

impl State {
    pub fn sweep(&self, id: &str) -> Option<&Sweep> {
        self.sweeps.iter().find(|s| s.id == id)
    }

    fn sweep_mut(&mut self, id: &str) -> Option<&mut Sweep> {
        self.sweeps.iter_mut().find(|s| s.id == id)
    }

    /// The sweep of a partition write, to move the finished points' records out of it.
    pub(crate) fn sweep_for_write(&mut self, id: &str) -> Option<&mut Sweep> {
        self.sweep_mut(id)
    }

    /// Puts back the records a failed partition write took, for points still at the same
    /// attempt whose records were not replaced meanwhile; a later write retries them.
    pub(crate) fn restore_records(
        &mut self,
        sweep_id: &str,
        rows: Vec<(PointSummary, Vec<RequestRecord>)>,
    ) {
        let Some(sweep) = self.sweep_mut(sweep_id) else {
            return;
        };
        for (summary, records) in rows {
            if let Some(p) = sweep.points.iter_mut().find(|p| {
                p.point_id == summary.meta.point_id
                    && p.attempt == summary.meta.attempt
                    && p.batches.is_empty()
            }) {
                p.batches.insert(0, records);
            }
        }
    }

    /// Where a point lives: an index lookup (checked, since it is only a cache), else a scan
    /// whose answer is remembered. Sweeps are only ever appended and their points never
    /// move, so a remembered place stays right.
    fn find_point(&mut self, point_id: &str) -> Option<PointRef> {
        if let Some((sid, i)) = self.point_index.get(point_id) {
            let hit = self
                .sweep(sid)
                .and_then(|s| s.points.get(*i))
                .is_some_and(|p| p.point_id == point_id);
            if hit {
                return Some((sid.clone(), *i));
            }
        }
        let found = self.sweeps.iter().find_map(|s| {
            s.points
                .iter()
                .position(|p| p.point_id == point_id)
                .map(|i| (s.id.clone(), i))
        })?;
        self.point_index.insert(point_id.to_owned(), found.clone());
        Some(found)
    }

    /// Adds a validated sweep; returns the number of points.
    pub fn add_sweep(&mut self, id: String, spec: SweepSpec) -> usize {
        let engine = spec.engine_wire();
        let load = spec.load_wire();
        let points: Vec<PointEntry> = spec
            .expand()
            .into_iter()
            .map(|planned| PointEntry {
                point_id: format!("{id}/p{:03}", planned.index),
                planned,
                state: PointState::Pending,
                attempt: 0,
                batches: BTreeMap::new(),
                summary: None,
                finished: None,
                engine_events: Vec::new(),
                engine_crashed: false,
                crash_retries: 0,
                agent: String::new(),
                host: String::new(),
                error: String::new(),
            })
            .collect();
        let n = points.len();
        let (version, _) = tokio::sync::watch::channel(0);
        self.sweeps.push(Sweep {
            id,
            spec,
            engine,
            load,
            points,
            state: SweepState::Running,
            submitted_ms: unix_millis_now(),
            finished_ms: 0,
            result_files: BTreeSet::new(),
            agents_used: BTreeSet::new(),
            pending_writes: 0,
            version,
            replica: None,
        });
        n
    }

    /// Connected agents that match `spec`'s placement, by name: the hosts a replicate
    /// submission makes one child sweep for.
    pub fn replica_targets(&self, spec: &SweepSpec) -> Vec<String> {
        let mut names: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.connected && spec.placement.matches(&a.inventory))
            .map(|a| a.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Adds one child sweep per connected agent matching `spec`'s placement (a
    /// `strategy = "replicate"` submission under `parent`); returns (child id, points).
    pub fn add_replicas(
        &mut self,
        parent: &str,
        spec: &SweepSpec,
    ) -> Result<Vec<(String, usize)>, ControllerError> {
        let targets = self.replica_targets(spec);
        if targets.is_empty() {
            let connected = self.agents.values().filter(|a| a.connected).count();
            return Err(ControllerError::NoMatchingAgent(format!(
                "{connected} agent(s) connected"
            )));
        }
        let children: Vec<(String, usize)> = targets
            .iter()
            .map(|agent| self.add_replica(parent, agent, spec.clone()))
            .collect();
        info!(sweep_id = %parent, children = children.len(), "replicate sweep submitted");
        Ok(children)
    }

    /// Adds the child sweep `<parent>.<agent>` of a replicate submission, pinned to
    /// `agent`; returns its id and number of points.
    pub fn add_replica(&mut self, parent: &str, agent: &str, spec: SweepSpec) -> (String, usize) {
        let id = format!("{parent}.{agent}");
        let n = self.add_sweep(id.clone(), spec);
        if let Some(s) = self.sweep_mut(&id) {
            s.replica = Some(Replica {
                parent: parent.to_string(),
                agent: agent.to_string(),
            });
        }
        (id, n)
    }

    /// The sweeps an id names: the sweep itself, or the children of a replicate parent.
    pub fn group(&self, id: &str) -> Vec<&Sweep> {
        match self.sweep(id) {
            Some(s) => vec![s],
            None => self
                .sweeps
                .iter()
                .filter(|s| s.replica.as_ref().is_some_and(|r| r.parent == id))
                .collect(),
        }
    }

    /// Cancels a sweep or every child of a replicate group; `None` when the id names
    /// nothing. Returns the messages to send (running points are stopped).
    pub fn cancel_group(&mut self, id: &str) -> Option<Outgoing> {
        let ids: Vec<String> = self.group(id).iter().map(|s| s.id.clone()).collect();
        if ids.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for member in &ids {
            out.extend(self.cancel(member).unwrap_or_default());
        }
        Some(out)
    }

    /// Status of a sweep or of a replicate group (counts summed, points of all children,
    /// running until every child has ended); `None` when the id names nothing.
    pub fn group_status(&self, id: &str, with_points: bool) -> Option<pb::SweepStatus> {
        let members = self.group(id);
        let (first, rest) = members.split_first()?;
        if rest.is_empty() && first.id == id {
            return Some(first.status(with_points));
        }
        let mut st = first.status(with_points);
        st.sweep_id = id.to_string();
        let mut states = vec![st.state.clone()];
        for s in rest {
            let c = s.status(with_points);
            st.points_total += c.points_total;
            st.points_done += c.points_done;
            st.points_failed += c.points_failed;
            st.points_skipped += c.points_skipped;
            st.points.extend(c.points);
            st.submitted_unix_ms = st.submitted_unix_ms.min(c.submitted_unix_ms);
            st.finished_unix_ms = st.finished_unix_ms.max(c.finished_unix_ms);
            st.result_files.extend(c.result_files);
            states.push(c.state);
        }
        st.state = ["running", "writing", "cancelled"]
            .into_iter()
            .find(|want| states.iter().any(|s| s == want))
            .unwrap_or("done")
            .to_string();
        if st.state == "running" || st.state == "writing" {
            st.finished_unix_ms = 0;
        }
        Some(st)
    }

    /// An agent registered (or re-registered after a reconnect). Points this agent was
    /// running but no longer knows about are re-queued.
    pub fn register(&mut self, inventory: pb::Inventory, active_points: &[String]) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        let name = inventory.agent_name.clone();
        let running: Vec<(PointRef, String)> = self
            .agents
            .get(&name)
            .map(|a| a.running.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pref| {
                let pid = self.sweep(&pref.0)?.points.get(pref.1)?.point_id.clone();
                Some((pref, pid))
            })
            .collect();
        let entry = self
            .agents
            .entry(name.clone())
            .or_insert_with(|| AgentEntry::new(name.clone(), inventory.clone(), generation));
        entry.inventory = inventory;
        entry.connected = true;
        entry.generation = generation;
        entry.disconnected_at = None;
        entry.last_seen_ms = unix_millis_now();
        self.persisted.dirty_agents.insert(name.clone());
        for (pref, pid) in running {
            if !active_points.contains(&pid) {
                warn!(agent = %name, point_id = %pid, "agent re-registered without its running point; re-queueing it");
                self.requeue(&pref, "agent restarted during the point");
            }
        }
        generation
    }

    /// The session of `generation` ended. The agent keeps its point for a grace period.
    pub fn disconnect(&mut self, name: &str, generation: u64) {
        if let Some(a) = self.agents.get_mut(name) {
            if a.generation == generation {
                a.connected = false;
                a.disconnected_at = Some(Instant::now());
            }
        }
    }

    pub fn heartbeat(&mut self, name: &str, hb: &pb::Heartbeat) {
        if let Some(a) = self.agents.get_mut(name) {
            a.last_seen_ms = unix_millis_now();
            a.state = hb.state.clone();
        }
    }

    fn requeue(&mut self, pref: &PointRef, why: &str) {
        if let Some(agent) = self
            .sweep(&pref.0)
            .and_then(|s| s.points.get(pref.1))
            .and_then(|p| match &p.state {
                PointState::Running { agent } => Some(agent.clone()),
                _ => None,
            })
        {
            if let Some(a) = self.agents.get_mut(&agent) {
                a.running.retain(|r| r != pref);
            }
        }
        if let Some(s) = self.sweep_mut(&pref.0) {
            if let Some(p) = s.points.get_mut(pref.1) {
                if !p.state.is_terminal() {
                    info!(point_id = %p.point_id, why, "point re-queued; partial records of the attempt discarded");
                    p.state = PointState::Pending;
                    p.batches.clear();
                    p.error = why.to_string();
                }
            }
            s.bump();
        }
    }

    /// Re-queues the points of agents disconnected for longer than `grace`.
    pub fn reap(&mut self, grace: Duration) -> Outgoing {
        let now = Instant::now();
        let gone: Vec<PointRef> = self
            .agents
            .values_mut()
            .filter(|a| !a.connected && a.disconnected_at.is_some_and(|t| now - t >= grace))
            .flat_map(|a| std::mem::take(&mut a.running))
            .collect();
        for pref in &gone {
            // The agent's running list was emptied above; requeue only resets the point.
            self.requeue(pref, "agent lost during the point");
        }
        if gone.is_empty() {
            Vec::new()
        } else {
            self.schedule()
        }
    }

    /// Stores a record batch of a running attempt (duplicates are ignored). Returns the
    /// acknowledgement to send (stale batches are acknowledged too, so agents drop them).
    pub fn record_batch(&mut self, agent: &str, batch: pb::RecordBatch) -> pb::ControllerMessage {
        self.record_decoded(agent, DecodedBatch::decode(batch))
    }

    /// [`State::record_batch`] of a batch decoded beforehand, outside the state lock.
    pub fn record_decoded(&mut self, agent: &str, batch: DecodedBatch) -> pb::ControllerMessage {
        let ack = msg(CMsg::BatchAck(pb::BatchAck {
            point_id: batch.point_id.clone(),
            attempt: batch.attempt,
            seq: batch.seq,
        }));
        let Some((sweep_id, idx)) = self.find_point(&batch.point_id) else {
            warn!(point_id = %batch.point_id, "record batch for an unknown point");
            return ack;
        };
        let Some(p) = self
            .sweep_mut(&sweep_id)
            .and_then(|s| s.points.get_mut(idx))
        else {
            return ack;
        };
        let current = p.attempt == batch.attempt
            && matches!(&p.state, PointState::Running { agent: a } if a == agent);
        if !current {
            warn!(point_id = %batch.point_id, attempt = batch.attempt, "record batch of a stale attempt ignored");
            return ack;
        }
        p.batches.entry(batch.seq).or_insert(batch.records);
        ack
    }

    pub fn engine_event(&mut self, agent: &str, ev: pb::EngineEvent) {
        info!(agent, sweep_id = %ev.sweep_id, point_id = %ev.point_id, kind = %ev.kind, exit_code = ?ev.exit_code, message = %ev.message, "engine event");
        if let Some((sweep_id, idx)) = self.find_point(&ev.point_id) {
            if let Some(s) = self.sweep_mut(&sweep_id) {
                if let Some(p) = s.points.get_mut(idx) {
                    // Only a death during this point's running attempt makes it a crash.
                    let running_here =
                        matches!(&p.state, PointState::Running { agent: a } if a == agent);
                    if running_here && matches!(ev.kind.as_str(), "exited" | "start-failed") {
                        p.engine_crashed = true;
                    }
                    p.engine_events.push(ev);
                }
                s.bump();
            }
        }
    }

    /// A point attempt ended on `agent`. Returns the partition write to make (which
    /// acknowledges the point once on disk) or, for a duplicate, the acknowledgement.
    pub fn point_finished(
        &mut self,
        agent: &str,
        pf: pb::PointFinished,
    ) -> (Option<WriteJob>, Outgoing) {
        let ack = pb::PointAck {
            point_id: pf.point_id.clone(),
            attempt: pf.attempt,
        };
        let Some((sweep_id, idx)) = self.find_point(&pf.point_id) else {
            return (None, vec![(agent.to_string(), msg(CMsg::PointAck(ack)))]);
        };
        let host = self
            .agents
            .get(agent)
            .map(|a| a.inventory.host.clone())
            .unwrap_or_default();
        let unwritten = self
            .persisted
            .awaiting_write
            .contains(&(pf.point_id.clone(), pf.attempt));
        let Some(sweep) = self.sweep_mut(&sweep_id) else {
            return (None, Vec::new());
        };
        let model = sweep.spec.model.get_ref().clone();
        let mode = sweep.load.mode.clone();
        let cancelled = sweep.state == SweepState::Cancelled;
        let on_crash = sweep.spec.policy.on_engine_crash;
        let max_retries = sweep.spec.policy.crash_retries();
        let Some(p) = sweep.points.get_mut(idx) else {
            return (None, Vec::new());
        };
        let current = p.attempt == pf.attempt
            && matches!(&p.state, PointState::Running { agent: a } if a == agent);
        if !current {
            if p.state.is_terminal() && unwritten {
                // A resend of a point whose rows are not on disk yet (its write is queued
                // or failed): acknowledged only by a write, so the agent keeps its spool
                // until then. The write is queued again (a failed one is retried).
                let gpus = p.planned.gpus;
                sweep.pending_writes += 1;
                let job = WriteJob {
                    sweep_id,
                    gpus,
                    acks: vec![(agent.to_string(), ack)],
                };
                return (Some(job), Vec::new());
            }
            // A resend after reconnect, or an attempt that was re-queued: already handled.
            return (None, vec![(agent.to_string(), msg(CMsg::PointAck(ack)))]);
        }
        let missing: Vec<u64> = (0..pf.batches)
            .filter(|s| !p.batches.contains_key(s))
            .collect();
        if !missing.is_empty() {
            warn!(point_id = %pf.point_id, ?missing, "point finished but record batches are missing; waiting for the resend");
            return (None, Vec::new());
        }
        // Moved into one batch, not cloned; the writer moves them out again.
        let records: Vec<RequestRecord> = std::mem::take(&mut p.batches)
            .into_values()
            .flatten()
            .collect();
        let state = if pf.ok {
            PointState::Done
        } else if cancelled || pf.error == "cancelled" {
            PointState::Cancelled
        } else {
            PointState::Failed
        };
        // An engine crash: the attempt failed and its engine died or never started.
        // The agent says so in the PointFinished too: its engine events are not spooled,
        // so a controller restart mid-point may have missed them.
        let crashed = state == PointState::Failed && (p.engine_crashed || pf.engine_crashed);
        if crashed && on_crash == OnEngineCrash::Retry && p.crash_retries < max_retries {
            // Back to the queue for a fresh engine; nothing of this attempt is kept (the
            // next attempt's records are never mixed with these) but its engine events.
            p.crash_retries += 1;
            p.state = PointState::Pending;
            p.batches.clear();
            p.summary = None;
            p.finished = None;
            p.error = format!(
                "engine crashed; retry {} of {max_retries}: {}",
                p.crash_retries, pf.error
            );
            info!(point_id = %p.point_id, attempt = p.attempt, error = %p.error, "point re-queued (policy retry)");
            sweep.bump();
            if let Some(a) = self.agents.get_mut(agent) {
                a.running.retain(|r| *r != (sweep_id.clone(), idx));
            }
            let mut out = vec![(agent.to_string(), msg(CMsg::PointAck(ack)))];
            out.extend(self.schedule());
            return (None, out);
        }
        let error = if state == PointState::Failed && p.crash_retries > 0 {
            format!(
                "engine crashed; retry {} of {max_retries} failed: {}",
                p.crash_retries, pf.error
            )
        } else {
            pf.error.clone()
        };
        let meta = PointMeta {
            sweep_id: sweep_id.clone(),
            point_id: p.point_id.clone(),
            point_index: p.planned.index,
            attempt: p.attempt,
            model,
            gpus: p.planned.gpus,
            host: host.clone(),
            agent: agent.to_string(),
            batch_size: p.planned.batch_size,
            input_tokens: p.planned.workload.input,
            output_tokens: p.planned.workload.output,
            state: state.as_str().into(),
            error: error.clone(),
            endpoint: pf.endpoint.clone(),
            started_unix_us: pf.started_unix_us,
            finished_unix_us: pf.finished_unix_us,
            mode,
            request_rate: p.planned.request_rate,
            client: ClientStats {
                cpu_s: pf.client_cpu_s,
                wall_s: pf.load_wall_s,
                cores: pf.client_cores,
            },
            fallbacks: pf.fallbacks.clone(),
        };
        let template = meta.clone();
        p.summary = Some(summarize(meta, &records, &pf.engine_metrics));
        if !records.is_empty() {
            p.batches.insert(0, records);
        }
        let awaiting = (p.point_id.clone(), p.attempt);
        p.state = state;
        p.error = error;
        p.host = host;
        p.finished = Some(pf);
        let planned = p.planned.clone();
        let gpus = planned.gpus;
        if crashed && on_crash == OnEngineCrash::SkipLarger {
            skip_larger(sweep, &planned, &template);
        }
        sweep.pending_writes += 1;
        sweep.bump();
        self.persisted.awaiting_write.insert(awaiting);
        if let Some(a) = self.agents.get_mut(agent) {
            a.running.retain(|r| *r != (sweep_id.clone(), idx));
        }
        // Assign the agent's next point before releasing this sweep's engines: an agent
        // whose next point (of another sweep) needs the same engine keeps it running.
        let mut out = self.schedule();
        out.extend(self.finish_sweep_if_complete(&sweep_id));
        let job = WriteJob {
            sweep_id,
            gpus,
            acks: vec![(agent.to_string(), ack)],
        };
        (Some(job), out)
    }

    /// Marks the sweep finished when every point is terminal, and releases its engines.
    fn finish_sweep_if_complete(&mut self, sweep_id: &str) -> Outgoing {
        let Some(s) = self.sweep_mut(sweep_id) else {
            return Vec::new();
        };
        if !s.points.iter().all(|p| p.state.is_terminal()) || s.finished_ms != 0 {
            return Vec::new();
        }
        if s.state == SweepState::Running {
            s.state = SweepState::Done;
        }
        s.finished_ms = unix_millis_now();
        s.bump();
        info!(sweep_id, state = s.state.as_str(), "sweep finished");
        release_engines(s)
    }

    /// Cancels a sweep: pending points are cancelled, running ones are told to stop, and
    /// the sweep's engines are released. Finished points keep their results.
    pub fn cancel(&mut self, sweep_id: &str) -> Option<Outgoing> {
        let s = self.sweep_mut(sweep_id)?;
        if s.state != SweepState::Running {
            return Some(Vec::new());
        }
        s.state = SweepState::Cancelled;
        let mut out = Vec::new();
        for p in &mut s.points {
            match &p.state {
                PointState::Pending => p.state = PointState::Cancelled,
                PointState::Running { agent } => out.push((
                    agent.clone(),
                    msg(CMsg::CancelPoint(pb::CancelPoint {
                        sweep_id: sweep_id.to_string(),
                        point_id: p.point_id.clone(),
                        reason: "sweep cancelled".into(),
                    })),
                )),
                _ => {}
            }
        }
        s.bump();
        out.extend(self.finish_sweep_if_complete(sweep_id));
        Some(out)
    }

    /// GPUs agent `name` has free (its capacity less the GPUs of its running points) and
    /// whether it may start one more engine.
    fn room(&self, name: &str) -> (u32, bool) {
        let Some(agent) = self.agents.get(name) else {
            return (0, false);
        };
        let used: u32 = agent
            .running
            .iter()
            .filter_map(|(sid, idx)| self.sweep(sid)?.points.get(*idx))
            .map(|p| p.planned.gpus.max(1))
            .sum();
        (
            agent.gpu_capacity().saturating_sub(used),
            agent.running.len() < agent.engine_slots(),
        )
    }

    /// The point agent `name` should run next on `gpu_count` free GPUs, if any (see
    /// [`State::schedule`]).
    fn pick_point(&mut self, name: &str, gpu_count: u32) -> Option<PointRef> {
        let agent = self.agents.get(name)?;
        let eligible: Vec<usize> = self
            .sweeps
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.state == SweepState::Running
                    && s.spec.placement.matches(&agent.inventory)
                    && s.replica.as_ref().is_none_or(|r| r.agent == name)
            })
            .map(|(i, _)| i)
            .collect();
        let first_pending = |si: usize, fits: &dyn Fn(&Sweep, u32) -> bool| {
            self.sweeps.get(si).and_then(|s| {
                s.points
                    .iter()
                    .position(|p| p.state == PointState::Pending && fits(s, p.planned.gpus))
                    .map(|i| (s.id.clone(), i))
            })
        };
        let warm = agent.engines.iter().rev().find_map(|(ws, wg)| {
            eligible
                .iter()
                .filter(|&&si| self.sweeps.get(si).is_some_and(|s| s.id == *ws))
                .find_map(|&si| first_pending(si, &|_, g| g == *wg && g <= gpu_count))
        });
        if warm.is_some() {
            return warm;
        }
        // Groups other connected agents hold warm engines for.
        let held: BTreeSet<(String, u32)> = self
            .agents
            .values()
            .filter(|a| a.connected && a.name != name)
            .flat_map(|a| a.engines.iter().cloned())
            .collect();
        let start = self
            .last_sweep
            .as_ref()
            .and_then(|last| {
                eligible
                    .iter()
                    .position(|&si| self.sweeps.get(si).is_some_and(|s| s.id == *last))
            })
            .map_or(0, |p| p + 1);
        let order: Vec<usize> = eligible
            .iter()
            .cycle()
            .skip(start)
            .take(eligible.len())
            .copied()
            .collect();
        let free = |s: &Sweep, g: u32| g <= gpu_count && !held.contains(&(s.id.clone(), g));
        let any = |_: &Sweep, g: u32| g <= gpu_count;
        let chosen = order
            .iter()
            .find_map(|&si| first_pending(si, &free))
            .or_else(|| order.iter().find_map(|&si| first_pending(si, &any)));
        if let Some((sid, _)) = &chosen {
            self.last_sweep = Some(sid.clone());
        }
        chosen
    }

    /// Assigns pending points to connected agents that match the sweep's placement and
    /// have enough free GPUs (an agent without GPUs counts as one, for simulated engines)
    /// and a free engine slot (`max_engines`: one point at a time unless the agent runs
    /// engines side by side on disjoint GPUs). Agents take one point per round, so a
    /// many-GPU agent does not take every point before the others get one.
    ///
    /// Spread: an agent first keeps taking points of its warm engine group (same sweep
    /// and GPU count) so engines restart rarely; a free agent takes a group no other agent
    /// holds, and only when there is none, shares a held group (so every matching host
    /// works). Free agents serve the running sweeps round-robin, starting after the sweep
    /// that got the last new group, rather than strictly in submission order. Replicate
    /// children run only on their own agent.
    pub fn schedule(&mut self) -> Outgoing {
        let mut out = Vec::new();
        let mut open: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.connected)
            .map(|a| a.name.clone())
            .collect();
        open.sort();
        while !open.is_empty() {
            open.retain(|name| self.assign_one(name, &mut out));
        }
        out
    }

    /// Gives agent `name` one more point if it has room and there is one for it; false
    /// when it got none.
    fn assign_one(&mut self, name: &str, out: &mut Outgoing) -> bool {
        let name = name.to_string();
        let (free_gpus, slot) = self.room(&name);
        if free_gpus == 0 || !slot {
            return false;
        }
        {
            let Some((sid, idx)) = self.pick_point(&name, free_gpus) else {
                return false;
            };
            let Some(s) = self.sweep_mut(&sid) else {
                return false;
            };
            let (engine, load) = (s.engine.clone(), s.load.clone());
            s.agents_used.insert(name.clone());
            let Some(p) = s.points.get_mut(idx) else {
                return false;
            };
            p.attempt += 1;
            p.state = PointState::Running {
                agent: name.clone(),
            };
            p.agent = name.clone();
            p.batches.clear();
            p.error.clear();
            p.engine_crashed = false;
            let spec = pb::PointSpec {
                sweep_id: sid.clone(),
                point_id: p.point_id.clone(),
                index: p.planned.index,
                engine: Some(engine),
                gpus: p.planned.gpus,
                workload: Some(pb::Workload {
                    input_tokens: p.planned.workload.input,
                    output_tokens: p.planned.workload.output,
                }),
                batch_size: p.planned.batch_size,
                load: Some(load),
                attempt: p.attempt,
                request_rate: p.planned.request_rate,
            };
            let gpus = p.planned.gpus;
            info!(agent = %name, point_id = %spec.point_id, attempt = spec.attempt, "point assigned");
            s.bump();
            if let Some(a) = self.agents.get_mut(&name) {
                a.running.push((sid.clone(), idx));
                a.warm((sid, gpus));
            }
            out.push((
                name,
                msg(CMsg::Assignment(pb::Assignment { point: Some(spec) })),
            ));
        }
        true
    }

    /// A queued partition write ended; `files` are what it wrote (empty when it failed)
    /// and `durable` the (point id, attempt) pairs whose rows it put on disk: their
    /// terminal state and summary go to the store with the next [`State::store_ops`].
    pub fn write_done(
        &mut self,
        sweep_id: &str,
        files: impl IntoIterator<Item = String>,
        durable: &[(String, u32)],
    ) {
        for pair in durable {
            self.persisted.awaiting_write.remove(pair);
        }
        if let Some(s) = self.sweep_mut(sweep_id) {
            s.pending_writes = s.pending_writes.saturating_sub(1);
            s.result_files.extend(files);
            s.bump();
        }
    }

    pub fn agent_statuses(&self) -> Vec<pb::AgentStatus> {
        let mut v: Vec<pb::AgentStatus> = self
            .agents
            .values()
            .map(|a| pb::AgentStatus {
                agent_id: a.name.clone(),
                inventory: Some(a.inventory.clone()),
                connected: a.connected,
                state: if a.connected {
                    a.state.clone()
                } else {
                    "disconnected".into()
                },
                current_point: a
                    .running
                    .iter()
                    .filter_map(|(s, i)| self.sweep(s).and_then(|s| s.points.get(*i)))
                    .map(|p| p.point_id.clone())
                    .collect::<Vec<_>>()
                    .join(","),
                last_seen_unix_ms: a.last_seen_ms,
            })
            .collect();
        v.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        v
    }
}

impl State {
    /// The store writes that bring the durable copy up to date: agents that registered,
    /// and the sweeps and points that changed since the last call. A point finished but
    /// not yet in the Parquet files is written as still running on its agent.
    pub fn store_ops(&mut self) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for name in std::mem::take(&mut self.persisted.dirty_agents) {
            if let Some(a) = self.agents.get(&name) {
                ops.push(StoreOp::Agent {
                    name,
                    row: AgentRow {
                        inventory: Some(a.inventory.clone()),
                        last_seen_ms: a.last_seen_ms,
                    },
                });
            }
        }
        for s in &self.sweeps {
            let version = *s.version.borrow();
            if self.persisted.sweeps.get(&s.id) == Some(&version) {
                continue;
            }
            let mut any_awaiting = false;
            for (i, p) in s.points.iter().enumerate() {
                let awaiting = self
                    .persisted
                    .awaiting_write
                    .contains(&(p.point_id.clone(), p.attempt));
                any_awaiting |= awaiting;
                let print = PointPrint {
                    state: p.state.clone(),
                    attempt: p.attempt,
                    host: p.host.clone(),
                    error: p.error.clone(),
                    crash_retries: p.crash_retries,
                    summary: p.summary.is_some(),
                    events: p.engine_events.len(),
                    awaiting,
                };
                let key = (s.id.clone(), i);
                if self.persisted.points.get(&key) == Some(&print) {
                    continue;
                }
                ops.push(StoreOp::Point {
                    sweep_id: s.id.clone(),
                    pos: count(i),
                    row: Box::new(point_row(p, awaiting)),
                });
                self.persisted.points.insert(key, print);
            }
            let (spec_toml, file_name) =
                self.persisted
                    .sources
                    .get(&s.id)
                    .cloned()
                    .unwrap_or_else(|| {
                        warn!(sweep_id = %s.id, "sweep has no spec source; it cannot be restored");
                        (String::new(), String::new())
                    });
            // A sweep whose last points are not on disk yet is not finished for the store.
            let (state, finished_ms) = if any_awaiting && s.state == SweepState::Done {
                (SweepState::Running, 0)
            } else if any_awaiting {
                (s.state, 0)
            } else {
                (s.state, s.finished_ms)
            };
            ops.push(StoreOp::Sweep {
                id: s.id.clone(),
                row: SweepRow {
                    spec_toml,
                    file_name,
                    submitted_ms: s.submitted_ms,
                    state: state.as_str().into(),
                    finished_ms,
                    result_files: s.result_files.iter().cloned().collect(),
                    agents_used: s.agents_used.iter().cloned().collect(),
                    replica_parent: s
                        .replica
                        .as_ref()
                        .map(|r| r.parent.clone())
                        .unwrap_or_default(),
                    replica_agent: s
                        .replica
                        .as_ref()
                        .map(|r| r.agent.clone())
                        .unwrap_or_default(),
                },
            });
            self.persisted.sweeps.insert(s.id.clone(), version);
        }
        ops
    }

    /// Records the spec text a sweep was submitted with (the store keeps it; a restart
    /// re-parses it).
    pub fn set_source(&mut self, sweep_id: &str, spec_toml: String, file_name: String) {
        self.persisted
            .sources
            .insert(sweep_id.to_string(), (spec_toml, file_name));
    }

    /// Storing the last [`State::store_ops`] failed: the next call writes everything.
    pub fn store_failed(&mut self) {
        self.persisted.sweeps.clear();
        self.persisted.points.clear();
        self.persisted
            .dirty_agents
            .extend(self.agents.keys().cloned());
    }

    /// Rebuilds the state from the store at start-up. Agents count as disconnected since
    /// now, so points running on them wait the grace period for their reconnect (and
    /// resend) before they are re-queued. Returns what could not be restored.
    pub fn restore(&mut self, loaded: Loaded) -> Vec<String> {
        let mut problems = Vec::new();
        let now = Instant::now();
        for (name, row) in loaded.agents {
            self.next_generation += 1;
            let inventory = row.inventory.unwrap_or_else(|| pb::Inventory {
                agent_name: name.clone(),
                ..Default::default()
            });
            let mut entry = AgentEntry::new(name.clone(), inventory, self.next_generation);
            entry.disconnected_at = Some(now);
            entry.state = "disconnected".into();
            entry.last_seen_ms = row.last_seen_ms;
            self.agents.insert(name, entry);
        }
        for LoadedSweep { id, row, points } in loaded.sweeps {
            let spec = match SweepSpec::parse(&row.spec_toml, &row.file_name) {
                Ok(spec) => spec,
                Err(e) => {
                    problems.push(format!("sweep {id}: stored spec does not parse: {e}"));
                    continue;
                }
            };
            self.add_sweep(id.clone(), spec);
            self.set_source(&id, row.spec_toml, row.file_name);
            let Some(s) = self.sweeps.last_mut() else {
                continue;
            };
            s.submitted_ms = row.submitted_ms;
            s.finished_ms = row.finished_ms;
            s.state = match row.state.as_str() {
                "done" => SweepState::Done,
                "cancelled" => SweepState::Cancelled,
                _ => SweepState::Running,
            };
            s.result_files = row.result_files.into_iter().collect();
            s.agents_used = row.agents_used.into_iter().collect();
            if !row.replica_parent.is_empty() {
                s.replica = Some(Replica {
                    parent: row.replica_parent,
                    agent: row.replica_agent,
                });
            }
            let mut running = Vec::new();
            for (pos, prow) in points {
                let idx = pos as usize;
                let Some(p) = s.points.get_mut(idx) else {
                    problems.push(format!("sweep {id}: stored point {pos} is not in its spec"));
                    continue;
                };
                p.attempt = prow.attempt;
                p.host = prow.host;
                p.error = prow.error;
                p.crash_retries = prow.crash_retries;
                p.summary = if prow.summary_toml.is_empty() {
                    None
                } else {
                    match toml::from_str::<PointSummary>(&prow.summary_toml) {
                        Ok(summary) => Some(summary),
                        Err(e) => {
                            problems
                                .push(format!("{}: stored summary unreadable: {e}", p.point_id));
                            None
                        }
                    }
                };
                p.finished = prow.finished;
                p.engine_events = prow.engine_events;
                p.state = match prow.state.as_str() {
                    "running" => {
                        running.push((idx, prow.agent.clone(), p.planned.gpus));
                        PointState::Running {
                            agent: prow.agent.clone(),
                        }
                    }
                    "done" => PointState::Done,
                    "failed" => PointState::Failed,
                    "cancelled" => PointState::Cancelled,
                    "skipped" => PointState::Skipped,
                    _ => PointState::Pending,
                };
                p.agent = prow.agent;
            }
            for (idx, agent, gpus) in running {
                self.next_generation += 1;
                let generation = self.next_generation;
                let a = self.agents.entry(agent.clone()).or_insert_with(|| {
                    let inventory = pb::Inventory {
                        agent_name: agent.clone(),
                        ..Default::default()
                    };
                    let mut entry = AgentEntry::new(agent.clone(), inventory, generation);
                    entry.disconnected_at = Some(now);
                    entry.state = "disconnected".into();
                    entry
                });
                a.running.push((id.clone(), idx));
                a.warm((id.clone(), gpus));
            }
            info!(sweep_id = %id, state = row.state, "sweep restored");
            // A sweep whose points all ended before the crash finishes now.
            let _ = self.finish_sweep_if_complete(&id);
        }
        // What was just loaded is what the store holds.
        let _ = self.store_ops();
        problems
    }
}

fn point_row(p: &PointEntry, awaiting: bool) -> PointRow {
    if awaiting {
        return PointRow {
            state: "running".into(),
            attempt: p.attempt,
            agent: p.agent.clone(),
            host: p.host.clone(),
            error: String::new(),
            crash_retries: p.crash_retries,
            summary_toml: String::new(),
            finished: None,
            engine_events: p.engine_events.clone(),
        };
    }
    let agent = match &p.state {
        PointState::Running { agent } => agent.clone(),
        _ => p.agent.clone(),
    };
    PointRow {
        state: p.state.as_str().into(),
        attempt: p.attempt,
        agent,
        host: p.host.clone(),
        error: p.error.clone(),
        crash_retries: p.crash_retries,
        summary_toml: p
            .summary
            .as_ref()
            .and_then(|s| {
                toml::to_string(s)
                    .map_err(
                        |e| warn!(point_id = %p.point_id, error = %e, "summary cannot be stored"),
                    )
                    .ok()
            })
            .unwrap_or_default(),
        finished: p.finished.clone(),
        engine_events: p.engine_events.clone(),
    }
}

/// `on_engine_crash = "skip-larger"`: `crashed` took its engine down, so every still-pending
/// point of the sweep with the same GPU count and workload and a larger load (batch size;
/// rate mode: request rate) is skipped. Skipped points get an empty summary, so they are
/// written with the partition (state "skipped", the reason in `error`).
fn skip_larger(sweep: &mut Sweep, crashed: &PlannedPoint, template: &PointMeta) {
    let rate_mode = crashed.batch_size == 0;
    let reason = if rate_mode {
        format!(
            "skipped: engine crashed at rate {} req/s (policy skip-larger)",
            crashed.request_rate
        )
    } else {
        format!(
            "skipped: engine crashed at batch {} (policy skip-larger)",
            crashed.batch_size
        )
    };
    for q in &mut sweep.points {
        let larger = if rate_mode {
            q.planned.request_rate > crashed.request_rate
        } else {
            q.planned.batch_size > crashed.batch_size
        };
        if q.state != PointState::Pending
            || q.planned.gpus != crashed.gpus
            || q.planned.workload != crashed.workload
            || !larger
        {
            continue;
        }
        info!(point_id = %q.point_id, reason, "point skipped");
        let meta = PointMeta {
            point_id: q.point_id.clone(),
            point_index: q.planned.index,
            attempt: q.attempt,
            host: String::new(),
            agent: String::new(),
            batch_size: q.planned.batch_size,
            request_rate: q.planned.request_rate,
            state: PointState::Skipped.as_str().into(),
            error: reason.clone(),
            endpoint: String::new(),
            started_unix_us: 0,
            finished_unix_us: 0,
            client: ClientStats::default(),
            fallbacks: Vec::new(),
            ..template.clone()
        };
        q.summary = Some(summarize(meta, &[], &[]));
        q.state = PointState::Skipped;
        q.error = reason.clone();
    }
}

fn release_engines(s: &Sweep) -> Outgoing {
    s.agents_used
        .iter()
        .map(|a| {
            (
                a.clone(),
                msg(CMsg::ReleaseEngine(pb::ReleaseEngine {
                    sweep_id: s.id.clone(),
                })),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "t"
model = "m/x"
[engine]
kind = "vllm"
runtime = "process"
[matrix]
gpus = [1, 2]
batch_sizes = [1, 2]
workloads = [{ input = 8, output = 4 }]
"#;

    fn agent(name: &str, gpus: usize) -> pb::Inventory {
        pb::Inventory {
            agent_name: name.into(),
            host: format!("{name}-host"),
            gpus: (0..gpus)
                .map(|i| pb::Gpu {
                    index: i as u32,
                    vendor: "sim".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn assignments(out: &Outgoing) -> Vec<(String, String)> {
        out.iter()
            .filter_map(|(a, m)| match &m.msg {
                Some(CMsg::Assignment(x)) => {
                    Some((a.clone(), x.point.as_ref().unwrap().point_id.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn finish(
        st: &mut State,
        agent: &str,
        point_id: &str,
        attempt: u32,
        ok: bool,
    ) -> (Option<WriteJob>, Outgoing) {
        st.point_finished(
            agent,
            pb::PointFinished {
                point_id: point_id.into(),
                attempt,
                ok,
                error: if ok { String::new() } else { "boom".into() },
                ..Default::default()
            },
        )
    }

    #[test]
    fn points_go_to_agents_with_enough_gpus_and_engines_stay_warm() {
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
        st.register(agent("a", 1), &[]);
        st.register(agent("b", 2), &[]);
        let a = assignments(&st.schedule());
        // a holds the 1-GPU group; b, free, takes the 2-GPU group nobody holds.
        assert_eq!(
            a,
            vec![("a".into(), "s/p000".into()), ("b".into(), "s/p002".into())]
        );
        // a finishes p000 and keeps its warm 1-GPU engine.
        let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
        assert_eq!(job.unwrap().gpus, 1);
        assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
        // a finishes p001: only 2-GPU points are left, too big for it; a idles.
        let (_, out) = finish(&mut st, "a", "s/p001", 1, true);
        assert!(assignments(&out).is_empty());
        let (_, out) = finish(&mut st, "b", "s/p002", 1, true);
        assert_eq!(assignments(&out), vec![("b".into(), "s/p003".into())]);
    }

    #[test]
    fn an_agent_with_max_engines_runs_points_side_by_side_within_its_gpus() {
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
        st.register(
            pb::Inventory {
                max_engines: 2,
                ..agent("w", 3)
            },
            &[],
        );
        // Two 1-GPU points at once (two engine slots), not a third.
        assert_eq!(
            assignments(&st.schedule()),
            vec![("w".into(), "s/p000".into()), ("w".into(), "s/p001".into())]
        );
        assert_eq!(st.agent_statuses()[0].current_point, "s/p000,s/p001");
        // p000 ends: 2 GPUs free, so a 2-GPU point runs beside p001.
        let (_, out) = finish(&mut st, "w", "s/p000", 1, true);
        assert_eq!(assignments(&out), vec![("w".into(), "s/p002".into())]);
        // p001 ends: 1 GPU free is too few for the last 2-GPU point.
        let (_, out) = finish(&mut st, "w", "s/p001", 1, true);
        assert!(assignments(&out).is_empty());
        let (_, out) = finish(&mut st, "w", "s/p002", 1, true);
        assert_eq!(assignments(&out), vec![("w".into(), "s/p003".into())]);
    }

    #[test]
    fn a_resent_finish_is_acknowledged_only_once_its_rows_are_on_disk() {
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
        st.register(agent("a", 2), &[]);
        st.schedule();
        let acks = |out: &Outgoing| {
            out.iter()
                .filter(|(_, m)| matches!(m.msg, Some(CMsg::PointAck(_))))
                .count()
        };
        let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
        assert!(job.is_some());
        assert_eq!(acks(&out), 0);
        // The agent reconnects and resends before the write is done: no ack, but a
        // write (retried if the first failed) that will acknowledge it.
        let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
        let job = job.expect("a write for the resent point");
        assert_eq!(job.acks.len(), 1);
        assert_eq!(acks(&out), 0);
        st.write_done("s", [], &[("s/p000".to_string(), 1)]);
        st.write_done("s", [], &[]);
        // Once on disk, a resend is acknowledged at once.
        let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
        assert!(job.is_none());
        assert_eq!(acks(&out), 1);
    }

    #[test]
    fn duplicate_batches_and_stale_attempts_are_ignored() {
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
        st.register(agent("a", 2), &[]);
        st.schedule();
        let rec = pb::RecordBatch {
            point_id: "s/p000".into(),
            attempt: 1,
            seq: 0,
            records: vec![pb::RequestRecord {
                success: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        st.record_batch("a", rec.clone());
        st.record_batch("a", rec.clone());
        st.record_batch(
            "a",
            pb::RecordBatch {
                attempt: 7,
                seq: 1,
                ..rec
            },
        );
        let p = &st.sweep("s").unwrap().points[0];
        assert_eq!(p.records().len(), 1);
        // Finishing with 2 batches announced but 1 held waits for the resend.
        let (job, _) = st.point_finished(
            "a",
            pb::PointFinished {
                point_id: "s/p000".into(),
                attempt: 1,
                batches: 2,
                ok: true,
                ..Default::default()
            },
        );
        assert!(job.is_none());
        assert_eq!(st.sweep("s").unwrap().points[0].state.as_str(), "running");
    }

    #[test]
    fn lost_agent_points_are_requeued_after_grace() {
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
        let g = st.register(agent("a", 2), &[]);
        st.schedule();
        st.disconnect("a", g);
        assert!(st.reap(Duration::from_secs(3600)).is_empty());
        assert_eq!(st.sweep("s").unwrap().points[0].state.as_str(), "running");
        let out = st.reap(Duration::ZERO);
        assert!(
            assignments(&out).is_empty(),
            "disconnected agent gets nothing"
        );
        assert_eq!(st.sweep("s").unwrap().points[0].state.as_str(), "pending");
        st.register(agent("b", 2), &[]);
        let a = assignments(&st.schedule());
        assert_eq!(a, vec![("b".into(), "s/p000".into())]);
        assert_eq!(st.sweep("s").unwrap().points[0].attempt, 2);
    }

    #[test]
    fn cancel_keeps_finished_points_and_releases_engines() {
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
        st.register(agent("a", 2), &[]);
        st.schedule();
        finish(&mut st, "a", "s/p000", 1, true);
        let out = st.cancel("s").unwrap();
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m.msg, Some(CMsg::CancelPoint(_))))
        );
        let (_, out) = st.point_finished(
            "a",
            pb::PointFinished {
                point_id: "s/p001".into(),
                attempt: 1,
                ok: false,
                error: "cancelled".into(),
                ..Default::default()
            },
        );
        assert!(
            out.iter()
                .any(|(_, m)| matches!(m.msg, Some(CMsg::ReleaseEngine(_))))
        );
        let s = st.sweep("s").unwrap();
        assert_eq!(s.state, SweepState::Cancelled);
        let states: Vec<&str> = s.points.iter().map(|p| p.state.as_str()).collect();
        assert_eq!(states, vec!["done", "cancelled", "cancelled", "cancelled"]);
        assert!(s.finished_ms > 0);
    }

    const POLICY_SPEC: &str = r#"
name = "t"
model = "m/x"
[engine]
kind = "vllm"
runtime = "process"
[matrix]
gpus = [1, 2]
batch_sizes = [1, 4, 16, 32, 64]
workloads = [{ input = 8, output = 4 }, { input = 16, output = 4 }]
[policy]
"#;

    fn exited(point_id: &str) -> pb::EngineEvent {
        pb::EngineEvent {
            point_id: point_id.into(),
            kind: "exited".into(),
            exit_code: Some(1),
            message: "engine exited during the point with code 1".into(),
            ..Default::default()
        }
    }

    /// Runs the point the agent was just given to its end; returns the next assignment.
    fn run_current(st: &mut State, agent: &str, ok: bool, crash: bool) -> Outgoing {
        let (sid, idx) = st.agents[agent].running[0].clone();
        let p = &st.sweep(&sid).unwrap().points[idx];
        let (pid, attempt) = (p.point_id.clone(), p.attempt);
        if crash {
            st.engine_event(agent, exited(&pid));
        }
        finish(st, agent, &pid, attempt, ok).1
    }

    fn states(st: &State) -> Vec<(u32, u32, u32, &'static str)> {
        st.sweep("s")
            .unwrap()
            .points
            .iter()
            .map(|p| {
                (
                    p.planned.gpus,
                    p.planned.workload.input,
                    p.planned.batch_size,
                    p.state.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn a_crash_reported_only_in_the_point_finished_counts_for_the_policy() {
        // After a controller restart mid-point the engine's `exited` event may be gone;
        // the agent's PointFinished still says the engine crashed.
        let spec = format!("{POLICY_SPEC}on_engine_crash = \"skip-larger\"\n");
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
        st.register(agent("a", 1), &[]);
        st.schedule();
        run_current(&mut st, "a", true, false);
        run_current(&mut st, "a", true, false);
        let (sid, idx) = st.agents["a"].running[0].clone();
        let p = &st.sweep(&sid).unwrap().points[idx];
        let (pid, attempt) = (p.point_id.clone(), p.attempt);
        st.point_finished(
            "a",
            pb::PointFinished {
                point_id: pid,
                attempt,
                ok: false,
                error: "engine exited during the point with code 1".into(),
                engine_crashed: true,
                ..Default::default()
            },
        );
        let got: Vec<_> = states(&st)[..5].iter().map(|t| (t.2, t.3)).collect();
        assert_eq!(
            got,
            vec![
                (1, "done"),
                (4, "done"),
                (16, "failed"),
                (32, "skipped"),
                (64, "skipped")
            ]
        );
    }

    #[test]
    fn skip_larger_skips_larger_batches_of_the_same_gpus_and_workload() {
        let spec = format!("{POLICY_SPEC}on_engine_crash = \"skip-larger\"\n");
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
        st.register(agent("a", 1), &[]);
        st.schedule();
        // Batches 1 and 4 pass, 16 crashes the engine.
        run_current(&mut st, "a", true, false);
        run_current(&mut st, "a", true, false);
        let out = run_current(&mut st, "a", false, true);
        // The agent moves on to the other workload, not to batch 32.
        assert_eq!(assignments(&out), vec![("a".into(), "s/p005".into())]);
        let s = st.sweep("s").unwrap();
        let got = states(&st);
        let first: Vec<_> = got[..5].iter().map(|t| (t.2, t.3)).collect();
        assert_eq!(
            first,
            vec![
                (1, "done"),
                (4, "done"),
                (16, "failed"),
                (32, "skipped"),
                (64, "skipped")
            ]
        );
        // Other workloads and GPU counts are untouched.
        assert_eq!(got[5].3, "running");
        assert!(got[6..].iter().all(|t| t.3 == "pending"), "{got:?}");
        assert_eq!(
            s.points[3].error,
            "skipped: engine crashed at batch 16 (policy skip-larger)"
        );
        assert_eq!(s.points[2].error, "boom");
        // Skipped points carry a summary, so the partition write includes them.
        let sk = s.points[4].summary.as_ref().unwrap();
        assert_eq!(
            (sk.meta.state.as_str(), sk.meta.batch_size, sk.completed),
            ("skipped", 64, 0)
        );
        assert_eq!(sk.meta.error, s.points[4].error);
        let status = s.status(false);
        assert_eq!(
            (
                status.points_done,
                status.points_failed,
                status.points_skipped
            ),
            (2, 1, 2)
        );
    }

    #[test]
    fn only_engine_crashes_trigger_the_policy() {
        let spec = format!("{POLICY_SPEC}on_engine_crash = \"skip-larger\"\n");
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
        st.register(agent("a", 1), &[]);
        st.schedule();
        // A failure without an engine death (e.g. requests failed) skips nothing.
        run_current(&mut st, "a", false, false);
        let got = states(&st);
        assert_eq!(got[0].3, "failed");
        assert!(got.iter().all(|t| t.3 != "skipped"), "{got:?}");
        // An exit event for a point that is not running on that agent marks nothing.
        st.engine_event("a", exited("s/p000"));
        st.engine_event("b", exited("s/p001"));
        let points = &st.sweep("s").unwrap().points;
        assert!(!points[0].engine_crashed && !points[1].engine_crashed);
        // With the default policy (continue) a crash fails just the point.
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(POLICY_SPEC, "t").unwrap());
        st.register(agent("a", 1), &[]);
        st.schedule();
        run_current(&mut st, "a", false, true);
        let got = states(&st);
        assert_eq!(got[0].3, "failed");
        assert!(got[1..].iter().all(|t| t.3 != "skipped"), "{got:?}");
    }

    #[test]
    fn retry_requeues_a_crashed_point_then_fails_it() {
        let spec = format!("{POLICY_SPEC}on_engine_crash = \"retry\"\nretries = 2\n");
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
        st.register(agent("a", 1), &[]);
        st.schedule();
        // Attempt 1 sends a record, then the engine dies.
        st.record_batch(
            "a",
            pb::RecordBatch {
                point_id: "s/p000".into(),
                attempt: 1,
                seq: 0,
                records: vec![pb::RequestRecord::default()],
                ..Default::default()
            },
        );
        st.engine_event("a", exited("s/p000"));
        let (job, out) = st.point_finished(
            "a",
            pb::PointFinished {
                point_id: "s/p000".into(),
                attempt: 1,
                batches: 1,
                ok: false,
                error: "engine exited during the point with code 1".into(),
                ..Default::default()
            },
        );
        // Nothing is written; the attempt is acknowledged and the point runs again.
        assert!(job.is_none());
        assert!(
            out.iter()
                .any(|(a, m)| a == "a" && matches!(m.msg, Some(CMsg::PointAck(_))))
        );
        assert_eq!(assignments(&out), vec![("a".into(), "s/p000".into())]);
        let p = &st.sweep("s").unwrap().points[0];
        assert_eq!(p.attempt, 2);
        assert!(p.batches.is_empty(), "records of attempt 1 discarded");
        assert!(p.summary.is_none());
        // Attempt 2 crashes too: retry 2 of 2.
        let out = run_current(&mut st, "a", false, true);
        assert_eq!(assignments(&out), vec![("a".into(), "s/p000".into())]);
        let p = &st.sweep("s").unwrap().points[0];
        assert_eq!(p.attempt, 3);
        assert_eq!(p.crash_retries, 2);
        // Attempt 3 crashes: no retries left, the point fails and the sweep moves on.
        let out = run_current(&mut st, "a", false, true);
        assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
        let p = &st.sweep("s").unwrap().points[0];
        assert_eq!(p.state, PointState::Failed);
        assert_eq!(p.error, "engine crashed; retry 2 of 2 failed: boom");
        let summary = p.summary.as_ref().unwrap();
        assert_eq!(
            (summary.meta.attempt, summary.meta.state.as_str()),
            (3, "failed")
        );
        assert_eq!(summary.meta.error, p.error);
        // Other points are not skipped by retry.
        assert!(states(&st).iter().all(|t| t.3 != "skipped"));
    }

    #[test]
    fn retry_pending_error_names_the_retry() {
        let spec = format!("{POLICY_SPEC}on_engine_crash = \"retry\"\n");
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
        // The agent disconnects before its crash report lands, so nothing picks the
        // re-queued point up at once and its pending state is visible.
        let g = st.register(agent("a", 1), &[]);
        st.schedule();
        st.disconnect("a", g);
        run_current(&mut st, "a", false, true);
        let p = &st.sweep("s").unwrap().points[0];
        assert_eq!(p.state, PointState::Pending);
        assert_eq!(p.error, "engine crashed; retry 1 of 1: boom");
        // A crash of the retry fails the point for good (default retries = 1).
        st.register(agent("a", 1), &[]);
        st.schedule();
        run_current(&mut st, "a", false, true);
        let p = &st.sweep("s").unwrap().points[0];
        assert_eq!((p.state.as_str(), p.attempt), ("failed", 2));
        assert_eq!(p.error, "engine crashed; retry 1 of 1 failed: boom");
    }

    /// Store round trip: a state written op by op, reopened and restored, is the same
    /// state; a point finished but not yet on disk comes back as running on its agent.
    #[test]
    fn state_survives_a_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t.toml").unwrap());
        st.set_source("s", SPEC.into(), "t.toml".into());
        st.register(agent("a", 2), &[]);
        st.schedule();
        store.apply(&st.store_ops()).unwrap();
        let current = |st: &State| st.agents["a"].running[0].clone();
        // a finishes its first point and the write lands; its second point's finish
        // (a failure) is not written yet when the controller stops.
        let (_, i0) = current(&st);
        let (job, _) = finish(&mut st, "a", &format!("s/p{i0:03}"), 1, true);
        let durable: Vec<(String, u32)> = job
            .unwrap()
            .acks
            .iter()
            .map(|(_, a)| (a.point_id.clone(), a.attempt))
            .collect();
        st.write_done("s", ["f.parquet".to_string()], &durable);
        store.apply(&st.store_ops()).unwrap();
        let (_, i1) = current(&st);
        let (job, _) = finish(&mut st, "a", &format!("s/p{i1:03}"), 1, false);
        assert!(job.is_some());
        let (_, i2) = current(&st);
        store.apply(&st.store_ops()).unwrap();
        // Nothing changed: nothing to write.
        assert!(st.store_ops().is_empty());
        drop(store);

        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut back = State::default();
        let problems = back.restore(store.load().unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        let (orig, s) = (st.sweep("s").unwrap(), back.sweep("s").unwrap());
        assert_eq!(s.submitted_ms, orig.submitted_ms);
        assert_eq!(s.state, SweepState::Running);
        assert_eq!(s.result_files.iter().collect::<Vec<_>>(), vec!["f.parquet"]);
        let p0 = &s.points[i0];
        assert_eq!((p0.state.as_str(), p0.attempt), ("done", 1));
        assert_eq!(p0.summary, orig.points[i0].summary, "summary restored");
        assert_eq!(p0.host, "a-host");
        assert!(p0.finished.is_some());
        // The failure of the second point is not on disk: it waits for a's resend.
        let p1 = &s.points[i1];
        assert_eq!(p1.state, PointState::Running { agent: "a".into() });
        assert_eq!(p1.attempt, 1);
        assert!(p1.summary.is_none());
        assert_eq!(
            s.points[i2].state,
            PointState::Running { agent: "a".into() }
        );
        let pending = s
            .points
            .iter()
            .filter(|p| p.state == PointState::Pending)
            .count();
        assert_eq!(pending, s.points.len() - 3);
        // Agents come back disconnected; a keeps its points.
        assert!(!back.agents["a"].connected);
        assert_eq!(back.agents["a"].inventory.host, "a-host");
        // a reconnects reporting both and resends its finish: it fails for good, once.
        let active = vec![format!("s/p{i1:03}"), format!("s/p{i2:03}")];
        back.register(agent("a", 2), &active);
        let (job, _) = finish(&mut back, "a", &format!("s/p{i1:03}"), 1, false);
        assert!(job.is_some());
        let s = back.sweep("s").unwrap();
        assert_eq!(
            (s.points[i1].state.as_str(), s.points[i1].attempt),
            ("failed", 1)
        );
        assert_eq!(
            s.points[i2].state,
            PointState::Running { agent: "a".into() }
        );
        assert_eq!(s.points[i2].attempt, 1);
    }

    #[test]
    fn restored_points_of_an_agent_that_never_returns_are_requeued() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t.toml").unwrap());
        st.set_source("s", SPEC.into(), "t.toml".into());
        st.register(agent("a", 2), &[]);
        st.schedule();
        // p000 finished but not on disk, then a runs p001.
        let (_, out) = finish(&mut st, "a", "s/p000", 1, true);
        assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
        store.apply(&st.store_ops()).unwrap();
        let mut back = State::default();
        back.restore(store.load().unwrap());
        let states: Vec<&str> = back.sweep("s").unwrap().points[..2]
            .iter()
            .map(|p| p.state.as_str())
            .collect();
        assert_eq!(states, vec!["running", "running"]);
        assert!(back.reap(Duration::from_secs(3600)).is_empty());
        back.reap(Duration::ZERO);
        let p = &back.sweep("s").unwrap().points;
        assert_eq!(
            (p[0].state.as_str(), p[1].state.as_str()),
            ("pending", "pending")
        );
    }

    #[test]
    fn placement_filters_agents() {
        let spec = SPEC.replace("[matrix]", "[placement]\nagents = [\"b\"]\n[matrix]");
        let mut st = State::default();
        st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
        st.register(agent("a", 2), &[]);
        st.register(agent("b", 2), &[]);
        let a = assignments(&st.schedule());
        assert_eq!(a, vec![("b".into(), "s/p000".into())]);
    }

    fn spec_with(matrix_gpus: &str, batches: &str, placement: &str) -> SweepSpec {
        let text = format!(
            "name = \"t\"\nmodel = \"m/x\"\n[engine]\nkind = \"vllm\"\nruntime = \"process\"\n\
             [placement]\n{placement}\n[matrix]\ngpus = {matrix_gpus}\nbatch_sizes = {batches}\n\
             workloads = [{{ input = 8, output = 4 }}]\n"
        );
        SweepSpec::parse(&text, "t").unwrap()
    }

    /// Runs the state machine until nothing is left: every assignment finishes at once,
    /// in the order sent. Returns (agent, point id) in assignment order.
    fn run_to_end(st: &mut State) -> Vec<(String, String)> {
        let queue = assignments(&st.schedule());
        run_from(st, queue)
    }

    /// [`run_to_end`] from assignments already made.
    fn run_from(st: &mut State, mut queue: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut log = Vec::new();
        while let Some((agent, pid)) = queue.first().cloned() {
            queue.remove(0);
            log.push((agent.clone(), pid.clone()));
            let (_, out) = finish(st, &agent, &pid, 1, true);
            queue.extend(assignments(&out));
        }
        log
    }

    fn gpus_of(st: &State, pid: &str) -> u32 {
        st.sweeps
            .iter()
            .flat_map(|s| s.points.iter())
            .find(|p| p.point_id == pid)
            .unwrap()
            .planned
            .gpus
    }

    #[test]
    fn spread_shares_a_sweep_and_keeps_engine_groups_on_one_agent() {
        let mut st = State::default();
        st.add_sweep("s".into(), spec_with("[1, 2]", "[1, 2, 4, 8]", ""));
        st.register(agent("a", 2), &[]);
        st.register(agent("b", 2), &[]);
        let log = run_to_end(&mut st);
        assert_eq!(log.len(), 8, "{log:?}");
        let groups = |who: &str| -> BTreeSet<u32> {
            log.iter()
                .filter(|(a, _)| a == who)
                .map(|(_, p)| gpus_of(&st, p))
                .collect()
        };
        // Both hosts work, each on one engine configuration: 2 engine starts, not 8.
        assert_eq!(groups("a"), BTreeSet::from([1]), "{log:?}");
        assert_eq!(groups("b"), BTreeSet::from([2]), "{log:?}");
        assert!(
            st.sweep("s")
                .unwrap()
                .points
                .iter()
                .all(|p| p.state == PointState::Done)
        );
    }

    #[test]
    fn spread_splits_one_group_when_no_other_is_free() {
        let mut st = State::default();
        st.add_sweep("s".into(), spec_with("[1]", "[1, 2, 4, 8]", ""));
        st.register(agent("a", 1), &[]);
        st.register(agent("b", 1), &[]);
        let a = assignments(&st.schedule());
        assert_eq!(
            a,
            vec![("a".into(), "s/p000".into()), ("b".into(), "s/p001".into())]
        );
        let log = run_from(&mut st, a);
        assert_eq!(log.len(), 4);
        assert!(log.iter().any(|(w, _)| w == "a") && log.iter().any(|(w, _)| w == "b"));
    }

    #[test]
    fn free_agents_serve_running_sweeps_round_robin() {
        let mut st = State::default();
        st.add_sweep("s1".into(), spec_with("[1, 2]", "[1, 2]", ""));
        st.add_sweep("s2".into(), spec_with("[1]", "[1, 2]", ""));
        st.register(agent("a", 2), &[]);
        st.register(agent("b", 2), &[]);
        st.register(agent("c", 2), &[]);
        // Strict FIFO would give s1 both a and b; round-robin gives s2 the second agent.
        assert_eq!(
            assignments(&st.schedule()),
            vec![
                ("a".into(), "s1/p000".into()),
                ("b".into(), "s2/p000".into()),
                ("c".into(), "s1/p002".into()),
            ]
        );
    }

    #[test]
    fn points_only_go_to_agents_with_enough_gpus() {
        let mut st = State::default();
        st.add_sweep("s".into(), spec_with("[4]", "[1, 2]", ""));
        st.register(agent("one", 1), &[]);
        st.register(agent("none", 0), &[]);
        assert!(assignments(&st.schedule()).is_empty());
        st.register(agent("four", 4), &[]);
        let log = run_to_end(&mut st);
        assert!(log.iter().all(|(a, _)| a == "four"), "{log:?}");
        assert_eq!(log.len(), 2);
        // A GPU-less (simulated) agent counts as one GPU.
        st.add_sweep("t".into(), spec_with("[1]", "[1]", ""));
        let a = assignments(&st.schedule());
        assert_eq!(a.len(), 1, "{a:?}");
    }

    fn labelled(name: &str, site: &str) -> pb::Inventory {
        pb::Inventory {
            labels: [("site".to_string(), site.to_string())].into(),
            ..agent(name, 1)
        }
    }

    #[test]
    fn replicate_runs_the_whole_sweep_on_every_matching_agent() {
        let mut st = State::default();
        let spec = spec_with(
            "[1]",
            "[1, 2, 4]",
            "strategy = \"replicate\"\nlabels = { site = \"x\" }",
        );
        // Nobody connected: rejected.
        assert!(matches!(
            st.add_replicas("r", &spec),
            Err(ControllerError::NoMatchingAgent(_))
        ));
        st.register(labelled("a", "x"), &[]);
        st.register(labelled("b", "x"), &[]);
        st.register(labelled("c", "y"), &[]);
        let g = st.register(labelled("d", "x"), &[]);
        st.disconnect("d", g);
        let children = st.add_replicas("r", &spec).unwrap();
        assert_eq!(
            children,
            vec![("r.a".to_string(), 3), ("r.b".to_string(), 3)]
        );
        let status = st.group_status("r", true).unwrap();
        assert_eq!((status.sweep_id.as_str(), status.points_total), ("r", 6));
        assert_eq!(status.state, "running");
        let log = run_to_end(&mut st);
        assert_eq!(log.len(), 6);
        for (agent, pid) in &log {
            assert!(pid.starts_with(&format!("r.{agent}/")), "{agent} ran {pid}");
        }
        assert_eq!(st.group_status("r", false).unwrap().points_done, 6);
        assert!(st.group_status("nope", false).is_none());
        // A child is also addressable by its own id.
        assert_eq!(st.group_status("r.a", false).unwrap().points_total, 3);
    }

    #[test]
    fn cancelling_a_replicate_parent_cancels_every_child() {
        let mut st = State::default();
        let spec = spec_with("[1]", "[1, 2, 4]", "strategy = \"replicate\"");
        st.register(agent("a", 1), &[]);
        st.register(agent("b", 1), &[]);
        st.add_replicas("r", &spec).unwrap();
        assert_eq!(assignments(&st.schedule()).len(), 2);
        assert!(st.cancel_group("nope").is_none());
        let out = st.cancel_group("r").unwrap();
        let stopped: BTreeSet<String> = out
            .iter()
            .filter_map(|(_, m)| match &m.msg {
                Some(CMsg::CancelPoint(c)) => Some(c.point_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            stopped,
            BTreeSet::from(["r.a/p000".to_string(), "r.b/p000".to_string()])
        );
        for child in ["r.a", "r.b"] {
            assert_eq!(st.sweep(child).unwrap().state, SweepState::Cancelled);
        }
        assert!(assignments(&st.schedule()).is_empty());
    }

    #[test]
    fn replica_children_stay_pinned_across_a_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let text = "name = \"t\"\nmodel = \"m/x\"\n[engine]\nkind = \"vllm\"\nruntime = \"process\"\n\
                    [placement]\nstrategy = \"replicate\"\n[matrix]\ngpus = [1]\nbatch_sizes = [1, 2]\n\
                    workloads = [{ input = 8, output = 4 }]\n";
        let spec = SweepSpec::parse(text, "r.toml").unwrap();
        let mut st = State::default();
        st.register(agent("a", 1), &[]);
        st.register(agent("b", 1), &[]);
        for (child, _) in st.add_replicas("r", &spec).unwrap() {
            st.set_source(&child, text.into(), "r.toml".into());
        }
        store.apply(&st.store_ops()).unwrap();
        drop(store);
        let store = crate::store::Store::open(dir.path()).unwrap();
        let mut back = State::default();
        let problems = back.restore(store.load().unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            back.sweep("r.b").unwrap().replica,
            Some(Replica {
                parent: "r".into(),
                agent: "b".into()
            })
        );
        assert_eq!(back.group_status("r", false).unwrap().points_total, 4);
        // Only b is back: it runs its own child, never a's.
        back.register(agent("b", 1), &[]);
        let log = run_to_end(&mut back);
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(
            log.iter().all(|(w, p)| w == "b" && p.starts_with("r.b/")),
            "{log:?}"
        );
    }
}
