//! Status views: the `pb` status and listing messages the control service answers with
//! (a sweep's status with its points, a replicate group's summed status, the agents).
//! Results that could not be written show as point state [`WRITE_FAILED`] and, once the
//! sweep has ended, sweep state [`SWEEP_WRITE_FAILED`].

use fleetbench_proto::pb;

use super::State;
use super::model::{PointEntry, PointState, Sweep, SweepState, WRITE_FAILED_AFTER, count};

/// A point's state as shown: `write-failed` while its finished attempt's rows are not
/// in the results folder because writing them failed (the controller keeps retrying; the
/// point goes back to `done`, `failed`… once a write lands), else its own state.
pub const WRITE_FAILED: &str = "write-failed";

/// The state a sweep shows when it has ended but some of its results could not be
/// written ([`WRITE_FAILED_AFTER`] failed writes of a point): a final state, so `watch`
/// ends (and `controllerctl` exits non-zero). Retries go on; once every write lands the
/// sweep shows its own state (`done`, `cancelled`) again.
pub const SWEEP_WRITE_FAILED: &str = "failed";

impl Sweep {
    /// Whether the sweep has ended with results that could not be written (see
    /// [`SWEEP_WRITE_FAILED`]): every point has ended, every pending write has been tried
    /// and failed, and some point's write [`WRITE_FAILED_AFTER`] times.
    pub fn results_unwritten(&self) -> bool {
        let pending = || self.points.iter().filter_map(|p| p.pending_write.as_ref());
        self.state != SweepState::Running
            && pending().all(|w| w.failures > 0)
            && pending().any(|w| w.failures >= WRITE_FAILED_AFTER)
    }

    pub fn status(&self, with_points: bool) -> pb::SweepStatus {
        // An archived sweep's counts are those it had; its points come from the store.
        if let Some(archived) = &self.archived {
            return archived.clone();
        }
        // Points whose rows failed to write count neither as done nor as failed.
        let written = |p: &&PointEntry| p.write_failure().is_none();
        let done = self
            .points
            .iter()
            .filter(written)
            .filter(|p| p.state == PointState::Done)
            .count();
        let failed = self
            .points
            .iter()
            .filter(written)
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
            state: if self.results_unwritten() {
                SWEEP_WRITE_FAILED.into()
            } else if self.state != SweepState::Running && self.pending_writes > 0 {
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
            next_page_token: String::new(),
            archived: false,
            search: super::search::search_results(self),
        }
    }
}

fn point_status(p: &PointEntry) -> pb::PointStatus {
    pb::PointStatus {
        point_id: p.point_id.clone(),
        index: p.planned.index,
        state: match p.write_failure() {
            Some(_) => WRITE_FAILED.into(),
            None => p.state.as_str().into(),
        },
        agent: p.agent.clone(),
        gpus: p.planned.gpus,
        batch_size: p.planned.batch_size,
        workload: Some(p.planned.workload.to_wire()),
        error: match p.write_failure() {
            Some(f) if p.error.is_empty() => format!(
                "results write failed: {} ({} tries, retrying)",
                f.error, f.failures
            ),
            Some(f) => format!(
                "results write failed: {} ({} tries, retrying); {}",
                f.error, f.failures, p.error
            ),
            None => p.error.clone(),
        },
        completed: p.summary.as_ref().map_or(0, |s| s.completed),
        failed: p.summary.as_ref().map_or(0, |s| s.failed),
        attempt: p.attempt,
        request_rate: p.planned.request_rate,
    }
}

impl State {
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
        st.state = ["running", "writing", SWEEP_WRITE_FAILED, "cancelled"]
            .into_iter()
            .find(|want| states.iter().any(|s| s == want))
            .unwrap_or("done")
            .to_string();
        if st.state == "running" || st.state == "writing" {
            st.finished_unix_ms = 0;
        }
        Some(st)
    }

    /// The status a watch (or a cancel) answers with: with its points unless there are
    /// more than [`WATCH_POINTS_MAX`](fleetbench_proto::limits::WATCH_POINTS_MAX).
    pub fn group_status_watched(&self, id: &str) -> Option<pb::SweepStatus> {
        let total: usize = self.group(id).iter().map(|s| s.points.len()).sum();
        self.group_status(id, total <= fleetbench_proto::limits::WATCH_POINTS_MAX)
    }

    /// One page of the points of a sweep or replicate group: the status of
    /// [`State::group_status`] without points, then points `offset..offset + limit` (in
    /// child order) and the next page's token (the next offset) when more follow.
    pub fn group_status_page(
        &self,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Option<pb::SweepStatus> {
        let mut st = self.group_status(id, false)?;
        let members = self.group(id);
        let total: usize = members.iter().map(|s| s.points.len()).sum();
        st.points = members
            .iter()
            .flat_map(|s| s.points.iter())
            .skip(offset)
            .take(limit)
            .map(point_status)
            .collect();
        let end = offset.saturating_add(limit);
        if end < total {
            st.next_page_token = end.to_string();
        }
        if offset > 0 {
            // The file list travels with the first page only.
            st.result_files.clear();
        }
        Some(st)
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

/// How many things are in each state: (state, count), every state listed (zeros too).
pub type StateCounts = Vec<(&'static str, i64)>;

impl State {
    /// Points and sweeps by state, for the metrics.
    pub fn counts_by_state(&self) -> (StateCounts, StateCounts) {
        let mut points: StateCounts = [
            "pending",
            "running",
            "done",
            "failed",
            "cancelled",
            "skipped",
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        let mut sweeps: StateCounts = ["running", "done", "cancelled"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        let bump = |list: &mut StateCounts, state: &str| {
            if let Some(e) = list.iter_mut().find(|(s, _)| *s == state) {
                e.1 += 1;
            }
        };
        for sweep in &self.sweeps {
            bump(&mut sweeps, sweep.state.as_str());
            if let Some(a) = &sweep.archived {
                // Every point of an archived sweep ended.
                let counts = [
                    ("done", a.points_done),
                    ("failed", a.points_failed),
                    ("skipped", a.points_skipped),
                    (
                        "cancelled",
                        a.points_total
                            .saturating_sub(a.points_done + a.points_failed + a.points_skipped),
                    ),
                ];
                for (state, n) in counts {
                    if let Some(e) = points.iter_mut().find(|(s, _)| *s == state) {
                        e.1 += i64::from(n);
                    }
                }
                continue;
            }
            for p in &sweep.points {
                bump(&mut points, p.state.as_str());
            }
        }
        (points, sweeps)
    }
}
