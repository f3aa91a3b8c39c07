//! `[search]` sweeps: each group (GPU count × workload) runs one probe point at a time;
//! when a group's last probe has ended, the search rule
//! ([`next_probe`](fleetbench_proto::spec::next_probe)) picks the next load from the
//! group's probes so far and the probe is appended to the sweep as a normal point. The
//! probes are the search's whole state, so a restored controller goes on where it was.

use std::collections::BTreeSet;

use fleetbench_proto::pb;
use fleetbench_proto::spec::{
    LoadMode, Next, PlannedPoint, Probe, SearchGoal, WorkloadEntry, next_probe, slo_bracket,
};
use tracing::info;

use super::State;
use super::model::{PointEntry, PointState, Sweep, SweepState, count, point_id};

/// A search group: (GPU count, the workload's position in the matrix).
type Group = (u32, u32);

fn group_of(p: &PointEntry) -> Group {
    (p.planned.gpus, p.planned.workload_index)
}

/// A probe's load on the search's axis.
fn load_of(p: &PointEntry) -> f64 {
    if p.planned.batch_size == 0 {
        p.planned.request_rate
    } else {
        f64::from(p.planned.batch_size)
    }
}

/// How an ended probe counts: met only when it is `done` and its summary met the SLO;
/// a failed, skipped or cancelled probe met nothing and delivered no throughput.
fn probe_of(p: &PointEntry) -> Probe {
    let done = p.state == PointState::Done;
    let summary = p.summary.as_ref().filter(|_| done);
    Probe {
        load: load_of(p),
        met: summary.is_some_and(|s| s.slo_met() == Some(true)),
        output_throughput: summary.map_or(0.0, |s| s.output_throughput),
    }
}

/// Workload `index` of the sweep's matrix.
pub(super) fn workload_at(s: &Sweep, index: u32) -> Option<WorkloadEntry> {
    s.spec
        .matrix
        .workloads
        .get_ref()
        .get(usize::try_from(index).ok()?)
        .map(|w| w.get_ref().clone())
}

/// The groups of a sweep, in the order their first probes were planned.
fn groups(s: &Sweep) -> Vec<Group> {
    let mut seen = BTreeSet::new();
    s.points
        .iter()
        .map(group_of)
        .filter(|g| seen.insert(*g))
        .collect()
}

/// The ended probes of one group, and whether every probe of it has ended.
fn probes(s: &Sweep, group: Group) -> (Vec<Probe>, bool) {
    let members = s.points.iter().filter(|p| group_of(p) == group);
    let ended = members.clone().all(|p| p.state.is_terminal());
    let probes = members
        .filter(|p| p.state.is_terminal())
        .map(probe_of)
        .collect();
    (probes, ended)
}

impl State {
    /// Adds the next probe of every group of search sweep `sweep_id` whose probes have all
    /// ended and whose search goes on. Returns whether a probe was added (the caller then
    /// schedules). Nothing happens to a sweep that is not running (cancelled).
    pub(super) fn advance_search(&mut self, sweep_id: &str) -> bool {
        let Some(s) = self.sweep_mut(sweep_id) else {
            return false;
        };
        let Some(search) = s.spec.search() else {
            return false;
        };
        if s.state != SweepState::Running {
            return false;
        }
        let mut added = false;
        for group in groups(s) {
            let (probes, ended) = probes(s, group);
            if !ended {
                continue;
            }
            let Next::Probe(load) = next_probe(&search, &probes) else {
                continue;
            };
            let (batch_size, request_rate) = s.spec.search_load(load);
            let index = count(s.points.len());
            let Some(workload) = workload_at(s, group.1) else {
                continue;
            };
            let planned = PlannedPoint {
                index,
                gpus: group.0,
                workload_index: group.1,
                workload,
                batch_size,
                request_rate,
            };
            let id = point_id(&s.id, index);
            info!(sweep_id, point_id = %id, gpus = group.0, load, "search probe added");
            s.points.push(PointEntry::new(id, planned));
            let idx = s.points.len() - 1;
            s.requeued(idx);
            s.bump_point(idx);
            added = true;
        }
        added
    }
}

/// Where each group of a search sweep stands (empty for other sweeps).
pub(super) fn search_results(s: &Sweep) -> Vec<pb::SearchResult> {
    let Some(search) = s.spec.search() else {
        return Vec::new();
    };
    let slo = s.spec.slo().map(|slo| slo.describe()).unwrap_or_default();
    groups(s)
        .into_iter()
        .map(|group| {
            let workload = workload_at(s, group.1).unwrap_or_default();
            let (probes, ended) = probes(s, group);
            let answer = match next_probe(&search, &probes) {
                Next::Done(answer) if ended => Some(answer),
                _ => None,
            };
            // A search still going (or stopped by a cancel): its bracket so far.
            let (best, above) = match (answer, search.goal) {
                (Some(a), _) => (a.best, a.above),
                (None, SearchGoal::Slo) => slo_bracket(&probes),
                (None, SearchGoal::Throughput) => (None, None),
            };
            pb::SearchResult {
                gpus: group.0,
                input_tokens: workload.input,
                output_tokens: workload.output,
                workload: workload.to_string(),
                goal: search.goal.as_str().into(),
                axis: axis(s.spec.load.mode).into(),
                best,
                above,
                finished: answer.is_some() || s.state != SweepState::Running,
                capped: answer.is_some_and(|a| a.capped),
                probes: count(probes.len()),
                slo: if search.goal == SearchGoal::Slo {
                    slo.clone()
                } else {
                    String::new()
                },
            }
        })
        .collect()
}

/// The name of a load axis for display: what a search's loads are.
fn axis(mode: LoadMode) -> &'static str {
    match mode {
        LoadMode::Burst => "batch",
        LoadMode::Concurrency => "concurrency",
        LoadMode::Rate => "rate",
        LoadMode::Trace => "trace",
    }
}
