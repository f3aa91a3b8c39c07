//! Archiving: a finished sweep leaves memory. Once every point of a sweep (and of its
//! replicate siblings) has ended, its rows are in the Parquet files, its state is in the
//! store and it has been finished for a while, its points are dropped: the sweep keeps
//! only its status counts ([`Sweep::archived`]), and a request for its points reads them
//! back from the store ([`crate::service::Controller::archived_view`]). A controller that
//! runs for months then holds only its running sweeps' points (the 1,000-agent benchmark
//! grew by ~12 MB per 2,000-point sweep before).

use std::time::Duration;

use fleetbench_proto::unix_millis_now;
use tracing::info;

use super::State;
use super::model::{Sweep, SweepState};

impl State {
    /// Archives every finished sweep group that has been finished for `after` and whose
    /// state the store holds; returns the archived sweep ids.
    pub fn archive_finished(&mut self, after: Duration) -> Vec<String> {
        let now = unix_millis_now();
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let ready: Vec<String> = self
            .sweeps
            .iter()
            .filter(|s| s.archived.is_none() && self.archivable(s, now, after_ms))
            .filter(|s| {
                // A replicate group goes together: every child archivable.
                s.replica.as_ref().is_none_or(|r| {
                    self.group(&r.parent)
                        .iter()
                        .all(|c| c.archived.is_some() || self.archivable(c, now, after_ms))
                })
            })
            .map(|s| s.id.clone())
            .collect();
        for id in &ready {
            self.archive(id);
        }
        ready
    }

    /// Whether `s` has ended for `after_ms`, its rows are all written and the store holds
    /// its current version.
    fn archivable(&self, s: &Sweep, now_ms: i64, after_ms: i64) -> bool {
        let ended = s.state != SweepState::Running
            && s.finished_ms != 0
            && now_ms.saturating_sub(s.finished_ms) >= after_ms;
        let written = s.pending_writes == 0
            && !self.awaits_any_write(&s.id)
            && s.points.iter().all(|p| p.pending_write.is_none());
        ended && written && self.persisted_version(&s.id) == Some(*s.version.borrow())
    }

    fn archive(&mut self, id: &str) {
        let Some(s) = self.sweeps.iter_mut().find(|s| s.id == id) else {
            return;
        };
        let mut status = s.status(false);
        status.archived = true;
        let points = std::mem::take(&mut s.points);
        s.archived = Some(status);
        s.pending_from = 0;
        for p in &points {
            self.point_index.remove(&p.point_id);
        }
        self.forget_persisted_points(id);
        info!(
            sweep_id = id,
            points = points.len(),
            "finished sweep archived (its points are read from the store on demand)"
        );
    }
}
