//! The controller's model of the fleet: sweeps and their points, agents and what they run.
//!
//! Everything here is plain data changed under one lock by short, synchronous methods that
//! return the messages to send afterwards ([`Outgoing`]): no I/O and no `.await` happens
//! while the state is locked, and the scheduling rules can be unit-tested directly.
//!
//! This file holds [`State`] itself (its fields, sweep lookup and submission); the
//! `impl State` blocks that change it are split by concept:
//!
//! - `model`: the entities (sweeps, points, agents, their states);
//! - `placement`: which agent runs which point next (the README's placement rules);
//! - `lifecycle`: agents coming and going, record batches, a point's end, the engine-crash
//!   policy, cancellation and the end of a partition write;
//! - `replicas`: `strategy = "replicate"` submissions and groups of child sweeps;
//! - `partition`: what a partition write takes from the state (its job, its snapshot);
//! - `persistence`: to and from the durable store (`crate::store`);
//! - `search`: `[search]` sweeps, which add each group's next probe as the last ends;
//! - `views`: the `pb` status and listing messages.
//!
//! Siblings import `model` (and `lifecycle` imports `partition`), never each other the
//! other way round.

mod archive;
mod lifecycle;
mod model;
mod partition;
mod persistence;
mod placement;
mod replicas;
mod search;
mod views;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use fleetbench_proto::spec::SweepSpec;
use fleetbench_proto::unix_millis_now;

pub use lifecycle::DecodedBatch;
pub use model::{
    AgentEntry, Buffered, Outgoing, PendingWrite, PointEntry, PointLimits, PointState, Replica,
    Sweep, SweepState, WRITE_FAILED_AFTER,
};
pub use partition::{PartitionSnapshot, PointRows, WriteJob};
pub use views::{SWEEP_WRITE_FAILED, WRITE_FAILED};

use model::PointRef;
use persistence::Persisted;

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
    /// What one point may buffer (records, batches, events).
    pub limits: PointLimits,
}

impl State {
    pub fn sweep(&self, id: &str) -> Option<&Sweep> {
        self.sweeps.iter().find(|s| s.id == id)
    }

    fn sweep_mut(&mut self, id: &str) -> Option<&mut Sweep> {
        self.sweeps.iter_mut().find(|s| s.id == id)
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
            .map(|planned| PointEntry::new(model::point_id(&id, planned.index), planned))
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
            result_files: Default::default(),
            agents_used: Default::default(),
            pending_writes: 0,
            version,
            replica: None,
            dirty: Default::default(),
            pending_from: 0,
            archived: None,
        });
        n
    }
}
