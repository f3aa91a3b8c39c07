//! Persistence: the state's durable copy in the redb store (`crate::store`). After each
//! event [`State::store_ops`] lists what changed since the last commit; at start-up
//! [`State::restore`] rebuilds the state from what the store loaded. A point finished but
//! not yet in the Parquet files is stored as still running on its agent, so a restarted
//! controller waits for the agent's resend rather than losing its records.

use std::collections::{BTreeSet, HashMap};

use fleetbench_proto::pb;
use fleetbench_proto::spec::{PlannedPoint, SweepSpec};
use fleetbench_results::summary::PointSummary;
use tokio::time::Instant;
use tracing::{info, warn};

use super::State;
use super::model::{
    AgentEntry, Dirty, PointEntry, PointState, Replica, Sweep, SweepState, count, point_id,
};
use super::search::workload_at;
use crate::store::{AgentRow, Loaded, LoadedSweep, PlannedRow, PointRow, StoreOp, SweepRow};

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
pub(super) struct Persisted {
    /// Sweep id → the sweep version last stored.
    sweeps: HashMap<String, u64>,
    points: HashMap<(String, usize), PointPrint>,
    /// Agents whose registration is not stored yet.
    pub(super) dirty_agents: BTreeSet<String>,
    /// (point id, attempt) finished but not yet in the Parquet files: stored as still
    /// running on its agent until `write_done` reports them durable (decision 2).
    pub(super) awaiting_write: BTreeSet<(String, u32)>,
    /// Sweep id → (spec TOML as submitted, its file name): what the store keeps of a spec.
    sources: HashMap<String, (String, String)>,
}

impl Persisted {
    /// Whether any point of sweep `sweep_id` waits for its rows to be written.
    fn awaits_any_write(&self, sweep_id: &str) -> bool {
        // Point ids are `<sweep id>/p<index>`: the sweep's points sort together.
        let prefix = format!("{sweep_id}/");
        self.awaiting_write
            .range((prefix.clone(), 0)..)
            .next()
            .is_some_and(|(id, _)| id.starts_with(&prefix))
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
        for s in &mut self.sweeps {
            let version = *s.version.borrow();
            if self.persisted.sweeps.get(&s.id) == Some(&version) {
                continue;
            }
            // Only the points marked since the last call (every point after a cancel, a
            // failed commit or at first).
            let candidates: Vec<usize> =
                match std::mem::replace(&mut s.dirty, Dirty::Points(BTreeSet::new())) {
                    Dirty::All => (0..s.points.len()).collect(),
                    Dirty::Points(set) => set.into_iter().collect(),
                };
            for i in candidates {
                let Some(p) = s.points.get(i) else { continue };
                let awaiting = self
                    .persisted
                    .awaiting_write
                    .contains(&(p.point_id.clone(), p.attempt));
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
            let any_awaiting = self.persisted.awaits_any_write(&s.id);
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

    /// The sweep version the store holds, if any.
    pub(super) fn persisted_version(&self, sweep_id: &str) -> Option<u64> {
        self.persisted.sweeps.get(sweep_id).copied()
    }

    /// Whether any point of sweep `sweep_id` waits for its rows to be written.
    pub(super) fn awaits_any_write(&self, sweep_id: &str) -> bool {
        self.persisted.awaits_any_write(sweep_id)
    }

    /// Drops what the store bookkeeping knows of an archived sweep's points.
    pub(super) fn forget_persisted_points(&mut self, sweep_id: &str) {
        self.persisted.points.retain(|(sid, _), _| sid != sweep_id);
    }

    /// Storing the last [`State::store_ops`] failed: the next call writes everything.
    pub fn store_failed(&mut self) {
        self.persisted.sweeps.clear();
        self.persisted.points.clear();
        for s in &mut self.sweeps {
            s.dirty = Dirty::All;
        }
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
                // A search probe (the sweep file expands only to each group's first).
                if idx == s.points.len()
                    && s.spec.search.is_some()
                    && let Some(planned) = &prow.planned
                {
                    if let Some(p) = stored_probe(s, pos, planned) {
                        s.points.push(p);
                    }
                }
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
            // A search whose last probe ended just before the crash goes on.
            self.advance_search(&id);
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
            planned: Some(planned_row(p)),
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
        planned: Some(planned_row(p)),
    }
}

fn planned_row(p: &PointEntry) -> PlannedRow {
    PlannedRow {
        gpus: p.planned.gpus,
        workload_index: p.planned.workload_index,
        batch_size: p.planned.batch_size,
        request_rate: p.planned.request_rate,
    }
}

/// A stored point the sweep file does not expand to (a search probe), rebuilt from its
/// stored place in the matrix.
fn stored_probe(s: &Sweep, pos: u32, row: &PlannedRow) -> Option<PointEntry> {
    let planned = PlannedPoint {
        index: pos,
        gpus: row.gpus,
        workload_index: row.workload_index,
        workload: workload_at(s, row.workload_index)?,
        batch_size: row.batch_size,
        request_rate: row.request_rate,
    };
    Some(PointEntry::new(point_id(&s.id, pos), planned))
}
