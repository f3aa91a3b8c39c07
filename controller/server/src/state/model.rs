//! The entity model: sweeps and their points, agents and what they run, and the states
//! each goes through. Plain data with the few helpers that only read or update one entity;
//! the rules that move entities between states live in the sibling modules.

use std::collections::{BTreeMap, BTreeSet};

use fleetbench_proto::pb::{self, controller_message::Msg as CMsg};
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::spec::{PlannedPoint, SweepSpec};
use fleetbench_results::summary::PointSummary;
use tokio::time::Instant;

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

/// The id of point `index` of sweep `sweep_id`.
pub fn point_id(sweep_id: &str, index: u32) -> String {
    format!("{sweep_id}/p{index:03}")
}

#[derive(Debug, Clone)]
pub struct PointEntry {
    pub planned: PlannedPoint,
    pub point_id: String,
    pub state: PointState,
    /// Attempt number of the current/last run (0 before the first assignment).
    pub attempt: u32,
    /// Record batches of the running attempt, by sequence number (de-duplicated). Emptied
    /// when the attempt ends: a finished point's records move into its write job.
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
    /// The finished attempt's rows are on their way to the results folder (a write job
    /// carries them); once a write of them failed, the point shows as `write-failed` until
    /// one lands (the writer keeps retrying). `None` once they are on disk.
    pub pending_write: Option<PendingWrite>,
    /// What the running attempt's buffered batches hold (see [`PointLimits`]).
    pub buffered: Buffered,
    /// Why the running attempt's records were dropped (a [`PointLimits`] cap was passed):
    /// the attempt ends failed with this reason, whatever the agent reports.
    pub overflow: Option<String>,
}

/// The running attempt's buffered record batches, counted against [`PointLimits`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buffered {
    pub batches: usize,
    pub records: usize,
    pub bytes: usize,
}

/// Caps on what the controller buffers for one point from its agent, so no agent can
/// grow the controller's memory without bound. Over a record cap the attempt's records
/// are dropped and the point fails with the reason; over the event cap the oldest events
/// but the first are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointLimits {
    /// Record bytes buffered per point attempt (the records' encoded size plus their
    /// in-memory overhead).
    pub max_bytes: usize,
    /// Records buffered per point attempt.
    pub max_records: usize,
    /// Record batches per point attempt (also the most a `PointFinished` may claim).
    pub max_batches: u64,
    /// Engine events kept per point.
    pub max_events: usize,
}

impl Default for PointLimits {
    fn default() -> Self {
        PointLimits {
            // A burst point of 65,536 requests x 16 waves with 1,024-token outputs is
            // about 9 KiB a record: 1M records, some 9 GiB. Realistic points (thousands of
            // requests) stay far below 512 MiB.
            max_bytes: 512 << 20,
            max_records: 1_000_000,
            max_batches: 1_000_000,
            max_events: 256,
        }
    }
}

/// Failed writes of a point's rows after which its sweep, once every point has ended,
/// shows `failed` (so `watch` ends and exits non-zero) rather than `writing`; the writer
/// keeps retrying, and a write that lands makes the points `done` again. With the
/// writer's backoff (1 s, 2 s, …) the third failure comes about 3 s after the first.
pub const WRITE_FAILED_AFTER: u32 = 3;

/// A finished point's rows not yet on disk, and how writing them went so far
/// (`crate::writer` retries failed writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingWrite {
    /// Failed writes of the point's rows so far (0: not tried yet, or the first try runs).
    pub failures: u32,
    /// The last failed write's error.
    pub error: String,
}

impl PointEntry {
    /// A point of a new sweep: pending, never run.
    pub(super) fn new(point_id: String, planned: PlannedPoint) -> PointEntry {
        PointEntry {
            point_id,
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
            pending_write: None,
            buffered: Buffered::default(),
            overflow: None,
        }
    }

    /// Drops the running attempt's buffered records (and the reason they overflowed).
    pub(super) fn clear_batches(&mut self) {
        self.batches.clear();
        self.buffered = Buffered::default();
        self.overflow = None;
    }

    /// The point's rows failed to write (and are not on disk yet): how often, and why.
    pub fn write_failure(&self) -> Option<&PendingWrite> {
        self.pending_write.as_ref().filter(|w| w.failures > 0)
    }

    /// All records of the running attempt in sequence order.
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
    /// Points changed since the state was last stored (see `State::store_ops`).
    pub(super) dirty: Dirty,
    /// No point before this index is pending: where the scheduler's searches start (each
    /// event scanned every point of a 4,000-point sweep before). Lowered whenever a point
    /// goes back to pending ([`Sweep::requeued`]).
    pub(super) pending_from: usize,
    /// Set once the finished sweep left memory (see `state/archive.rs`): its status
    /// without points, as it was then; `points` is empty.
    pub archived: Option<pb::SweepStatus>,
}

/// Which points of a sweep changed since the last store commit: each event changes one
/// or a few, and comparing every point of a 4,000-point sweep after each of its
/// thousands of events made commits quadratic (`examples/fleet_bench.rs`).
#[derive(Debug, Default)]
pub enum Dirty {
    /// Every point (a new sweep, a cancel, a failed commit): compared one by one.
    #[default]
    All,
    Points(BTreeSet<usize>),
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
    /// Something changed, perhaps any point: every point is compared at the next commit.
    pub(super) fn bump(&mut self) {
        self.dirty = Dirty::All;
        self.bump_sweep();
    }

    /// Point `idx` changed (and maybe the sweep's own fields).
    pub(super) fn bump_point(&mut self, idx: usize) {
        if let Dirty::Points(set) = &mut self.dirty {
            set.insert(idx);
        }
        self.bump_sweep();
    }

    /// The first pending point, moving [`Sweep::pending_from`] up to it.
    pub(super) fn first_pending(&mut self) -> Option<usize> {
        while let Some(p) = self.points.get(self.pending_from) {
            if p.state == PointState::Pending {
                return Some(self.pending_from);
            }
            self.pending_from += 1;
        }
        None
    }

    /// Point `idx` is pending again.
    pub(super) fn requeued(&mut self, idx: usize) {
        self.pending_from = self.pending_from.min(idx);
    }

    /// Only the sweep's own fields changed (state, files, agents), none of its points.
    pub(super) fn bump_sweep(&self) {
        self.version.send_modify(|v| *v += 1);
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
    pub(super) fn new(name: String, inventory: pb::Inventory, generation: u64) -> AgentEntry {
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
    pub(super) fn gpu_capacity(&self) -> u32 {
        count(self.inventory.gpus.len()).max(1)
    }

    /// Engines the agent runs at once (its `max_engines`, at least 1).
    pub(super) fn engine_slots(&self) -> usize {
        usize::try_from(self.inventory.max_engines.max(1)).unwrap_or(1)
    }

    /// Remembers that the agent now runs an engine of (sweep, GPU count).
    pub(super) fn warm(&mut self, group: (String, u32)) {
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
pub type PointRef = (String, usize);

/// A count as the wire's `u32` (saturating).
pub(super) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A controller message of `m`.
pub(super) fn msg(m: CMsg) -> pb::ControllerMessage {
    pb::ControllerMessage { msg: Some(m) }
}
