//! The state's side of a partition write (`crate::writer`), one way: a finished point's
//! records leave the state in its [`WriteJob`], and the writer reads the rest of the
//! partition (summaries, engine metrics, metadata) through one method,
//! [`State::partition_snapshot`]. The writer reports back with `State::write_done`
//! (`lifecycle`), or with [`State::write_failed`] when the files could not be written (the
//! points show `write-failed` with the error until a retry lands); nothing it takes ever
//! comes back into the state.

use std::collections::BTreeSet;

use fleetbench_proto::FLEETBENCH_VERSION;
use fleetbench_proto::pb;
use fleetbench_proto::record::RequestRecord;
use fleetbench_results::schema::MetricRow;
use fleetbench_results::summary::PointSummary;
use fleetbench_results::{EngineEvent, PartitionMetadata};

use super::State;

/// A partition (sweep, GPU count) whose results changed, and who waits for the write.
#[derive(Debug, PartialEq)]
pub struct WriteJob {
    pub sweep_id: String,
    pub gpus: u32,
    /// The finished point's request rows, moved out of the state (which keeps its summary
    /// only). `None` for the job of a resend whose rows an earlier job carries.
    pub rows: Option<PointRows>,
    /// Point acknowledgements to send once the files are on disk.
    pub acks: Vec<(String, pb::PointAck)>,
}

/// A finished point attempt's request rows: its summary and its records.
#[derive(Debug, PartialEq)]
pub struct PointRows {
    pub summary: PointSummary,
    /// In sequence order; empty when the attempt made no request (its summary is still
    /// written).
    pub records: Vec<RequestRecord>,
}

impl PointRows {
    /// (point id, attempt) of the rows.
    pub fn key(&self) -> (String, u32) {
        (
            self.summary.meta.point_id.clone(),
            self.summary.meta.attempt,
        )
    }
}

/// Everything of a partition a write needs besides the new rows (which its jobs carry).
#[derive(Debug)]
pub struct PartitionSnapshot {
    /// Every summary of the partition (the points file is rewritten from these).
    pub summaries: Vec<PointSummary>,
    /// Every engine metric sample of the partition (the metrics file is rewritten too).
    pub metrics: Vec<MetricRow>,
    /// The key-value metadata of the partition's files.
    pub metadata: PartitionMetadata,
    /// Some point of the partition has not finished yet: another write will come.
    pub more_to_come: bool,
}

impl State {
    /// Copies what partition (`sweep_id`, `gpus`) holds besides request rows: its points'
    /// summaries, engine metrics and metadata. `None` when there is no such sweep.
    pub fn partition_snapshot(&self, sweep_id: &str, gpus: u32) -> Option<PartitionSnapshot> {
        let sweep = self.sweep(sweep_id)?;
        let mut summaries = Vec::new();
        let mut hosts = BTreeSet::new();
        let mut engine_args = None;
        let mut engine_version = None;
        let mut engine_image: Option<(String, String)> = None;
        let mut events = Vec::new();
        let mut metrics = Vec::new();
        let mut more_to_come = false;
        for p in sweep.points.iter().filter(|p| p.planned.gpus == gpus) {
            more_to_come |= !p.state.is_terminal();
            if let Some(s) = &p.summary {
                summaries.push(s.clone());
                // Skipped points never ran anywhere.
                if !p.host.is_empty() {
                    hosts.insert(p.host.clone());
                }
            }
            if let Some(f) = &p.finished {
                metrics.extend(f.engine_metrics.iter().map(|m| MetricRow {
                    point_id: p.point_id.clone(),
                    point_index: p.planned.index,
                    attempt: f.attempt,
                    agent: p.agent.clone(),
                    offset_s: m.offset_s,
                    unix_ms: m.unix_ms,
                    metric: m.name.clone(),
                    value: m.value,
                }));
                if engine_args.is_none() && !f.engine_args.is_empty() {
                    engine_args = Some(f.engine_args.join(" "));
                }
                if engine_version.is_none() && !f.engine_version.is_empty() {
                    engine_version = Some(f.engine_version.clone());
                }
                if engine_image.is_none() && !f.engine_image.is_empty() {
                    engine_image = Some((f.engine_image.clone(), f.engine_image_digest.clone()));
                }
            }
            events.extend(p.engine_events.iter().map(|ev| EngineEvent {
                point_id: ev.point_id.clone(),
                kind: ev.kind.clone(),
                message: ev.message.clone(),
                exit_code: ev.exit_code.map(i64::from),
                unix_ms: ev.unix_ms,
                log_tail: ev.log_tail.clone(),
                oom_killed: ev.oom_killed,
                died_after_s: ev.died_after_s,
                container: ev.container.clone(),
                image: ev.image.clone(),
                image_digest: ev.image_digest.clone(),
                gpu_ids: ev.gpu_ids.clone(),
            }));
        }
        let (engine_image, engine_image_digest) = engine_image.unwrap_or_default();
        let metadata = PartitionMetadata {
            sweep_id: sweep.id.clone(),
            sweep_name: sweep.spec.name.get_ref().clone(),
            model: sweep.spec.model.get_ref().clone(),
            gpus,
            version: FLEETBENCH_VERSION.into(),
            hosts: hosts.into_iter().collect(),
            engine_runtime: sweep.spec.engine.runtime.as_str().into(),
            engine_kind: sweep.spec.engine.kind.as_str().into(),
            engine_args: engine_args.unwrap_or_default(),
            engine_version: engine_version.unwrap_or_default(),
            engine_image,
            engine_image_digest,
            load: format!("{:?}", sweep.load),
            engine_events: events,
        };
        Some(PartitionSnapshot {
            summaries,
            metrics,
            metadata,
            more_to_come,
        })
    }

    /// Whether the rows of (point id, attempt) are finished but not on disk yet (a write
    /// job still carries them).
    pub fn awaits_write(&self, point: &(String, u32)) -> bool {
        self.persisted.awaiting_write.contains(point)
    }

    /// A write of sweep `sweep_id` failed with `error`: the points whose rows it carried
    /// (`keys`: point id, attempt) show `write-failed` with the reason until a write of
    /// them lands (`State::write_done` clears it). The writer retries on its own.
    pub fn write_failed(&mut self, sweep_id: &str, keys: &[(String, u32)], error: &str) {
        let Some(s) = self.sweep_mut(sweep_id) else {
            return;
        };
        let mut changed = Vec::new();
        for (i, p) in s.points.iter_mut().enumerate() {
            if !keys
                .iter()
                .any(|(id, attempt)| *id == p.point_id && *attempt == p.attempt)
            {
                continue;
            }
            let w = p.pending_write.get_or_insert_with(Default::default);
            w.failures += 1;
            w.error = error.to_string();
            changed.push(i);
        }
        for i in changed {
            s.bump_point(i);
        }
    }
}
