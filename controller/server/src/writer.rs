//! Writes a sweep's Parquet partition whenever one of its points finishes, one write at a
//! time (so two points of the same partition never race), then acknowledges the points
//! to their agents: an agent forgets results only once they are on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fleetbench_proto::FLEETBENCH_VERSION;
use fleetbench_proto::record::RequestRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::service::Controller;
use crate::state::WriteJob;
use fleetbench_results::schema::MetricRow;
use fleetbench_results::summary::PointSummary;
use fleetbench_results::write::{
    NextRequests, PartitionUpdate, prepare_next_requests, update_partition,
};
use fleetbench_results::{EngineEvent, PartitionMetadata};

/// Everything one partition write needs, taken out of the state.
struct Snapshot {
    model: String,
    /// Points whose request rows this write adds (or replaces), with their records; the
    /// records were moved out of the state and go back if the write fails.
    rows: Vec<(PointSummary, Vec<RequestRecord>)>,
    /// Every summary of the partition (the points file is rewritten from these).
    summaries: Vec<PointSummary>,
    metrics: Vec<MetricRow>,
    metadata: PartitionMetadata,
    /// Some point of the partition has not finished yet: another write will come.
    more_to_come: bool,
}

/// The next version of a partition's requests file, being prepared on the blocking pool
/// after a write (see [`NextRequests`]).
struct Preparing {
    sweep_id: String,
    gpus: u32,
    cancel: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<NextRequests>>,
}

impl Preparing {
    fn start(ctl: &Controller, sweep_id: String, gpus: u32, model: String) -> Self {
        let cancel = Arc::new(AtomicBool::new(false));
        let root = ctl.config.results_dir.clone();
        let (id, stop) = (sweep_id.clone(), cancel.clone());
        let task = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match prepare_next_requests(&root, &id, &model, gpus, &stop) {
                Ok(next) => {
                    debug!(sweep_id = %id, gpus, ready = next.is_some(), secs = started.elapsed().as_secs_f64(), "next requests file prepared");
                    next
                }
                Err(e) => {
                    warn!(sweep_id = %id, gpus, error = %e, "cannot prepare the next requests file; the next write copies the rows itself");
                    None
                }
            }
        });
        Preparing {
            sweep_id,
            gpus,
            cancel,
            task,
        }
    }

    /// The prepared file, for a write of (`sweep_id`, `gpus`); for another partition the
    /// preparation is cancelled and its file removed.
    async fn take(self, sweep_id: &str, gpus: u32) -> Option<NextRequests> {
        let wanted = self.sweep_id == sweep_id && self.gpus == gpus;
        if !wanted {
            self.cancel.store(true, Ordering::Relaxed);
        }
        let next = self.task.await.ok().flatten();
        if wanted { next } else { None }
    }
}

/// Copies a partition's summaries and metadata and moves out the records of its finished
/// points that are not on disk yet (a point's records are in the state only until written).
fn snapshot(ctl: &Controller, sweep_id: &str, gpus: u32) -> Option<Snapshot> {
    let mut st = ctl.state();
    let sweep = st.sweep_for_write(sweep_id)?;
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    let mut hosts = std::collections::BTreeSet::new();
    let mut engine_args = None;
    let mut engine_version = None;
    let mut engine_image: Option<(String, String)> = None;
    let mut events = Vec::new();
    let mut metrics = Vec::new();
    let mut more_to_come = false;
    for p in sweep.points.iter_mut().filter(|p| p.planned.gpus == gpus) {
        more_to_come |= !p.state.is_terminal();
        if let Some(s) = &p.summary {
            summaries.push(s.clone());
            if p.state.is_terminal() && !p.batches.is_empty() {
                // Moved, not cloned: the rows are freed once on disk.
                let records: Vec<RequestRecord> = std::mem::take(&mut p.batches)
                    .into_values()
                    .flatten()
                    .collect();
                rows.push((s.clone(), records));
            }
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
        engine_args: engine_args.unwrap_or_default(),
        engine_version: engine_version.unwrap_or_default(),
        engine_image,
        engine_image_digest,
        load: format!("{:?}", sweep.load),
        engine_events: events,
    };
    Some(Snapshot {
        model: sweep.spec.model.get_ref().clone(),
        rows,
        summaries,
        metrics,
        metadata,
        more_to_come,
    })
}

/// Runs until `shutdown`, then writes whatever is still queued and stops. Jobs queued while
/// a write runs are coalesced: one write per partition adds all their points.
pub async fn run(
    ctl: Arc<Controller>,
    mut jobs: mpsc::Receiver<WriteJob>,
    shutdown: CancellationToken,
) {
    let mut preparing: Option<Preparing> = None;
    loop {
        let job = tokio::select! {
            biased;
            j = jobs.recv() => j,
            () = shutdown.cancelled() => jobs.try_recv().ok(),
        };
        let Some(job) = job else { break };
        // Everything queued behind it, grouped by partition in arrival order.
        let mut groups: Vec<Vec<WriteJob>> = vec![vec![job]];
        while let Ok(more) = jobs.try_recv() {
            match groups.iter_mut().find(|g| {
                g.first()
                    .is_some_and(|j| j.sweep_id == more.sweep_id && j.gpus == more.gpus)
            }) {
                Some(g) => g.push(more),
                None => groups.push(vec![more]),
            }
        }
        for group in groups {
            let Some(first) = group.first() else { continue };
            let (sweep_id, gpus) = (first.sweep_id.clone(), first.gpus);
            let next = match preparing.take() {
                Some(p) => p.take(&sweep_id, gpus).await,
                None => None,
            };
            if let Some(model) = write_group(&ctl, group, next).await {
                if !shutdown.is_cancelled() {
                    preparing = Some(Preparing::start(&ctl, sweep_id, gpus, model));
                }
            }
        }
    }
    if let Some(p) = preparing {
        p.take("", 0).await;
    }
}

/// Writes one partition for the jobs of `group` (same sweep and GPU count), reports each
/// job done and acknowledges their points once the files are on disk. `next` is the
/// partition's prepared next requests file, if any. Returns the model when the write
/// succeeded and more points of the partition are to come (worth preparing the next file).
async fn write_group(
    ctl: &Arc<Controller>,
    group: Vec<WriteJob>,
    next: Option<NextRequests>,
) -> Option<String> {
    let first = group.first()?;
    let (sweep_id, gpus) = (first.sweep_id.clone(), first.gpus);
    let span = info_span!("partition_write", sweep_id = %sweep_id, gpus, jobs = group.len());
    let started = std::time::Instant::now();
    let Some(snap) = snapshot(ctl, &sweep_id, gpus) else {
        let mut st = ctl.state();
        for job in &group {
            st.write_done(&job.sweep_id, [], &[]);
        }
        return None;
    };
    let root = ctl.config.results_dir.clone();
    let (model, more_to_come) = (snap.model.clone(), snap.more_to_come);
    let (id, n_rows) = (
        sweep_id.clone(),
        snap.rows.iter().map(|(_, r)| r.len()).sum::<usize>(),
    );
    let written = tokio::task::spawn_blocking(move || {
        let refs: Vec<(PointSummary, &[RequestRecord])> = snap
            .rows
            .iter()
            .map(|(s, r)| (s.clone(), r.as_slice()))
            .collect();
        let update = PartitionUpdate {
            rows: &refs,
            summaries: &snap.summaries,
            metrics: &snap.metrics,
            metadata: &snap.metadata,
        };
        let result = update_partition(&root, &id, &snap.model, gpus, &update, next);
        drop(refs);
        (result, snap.rows)
    })
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    match written {
        Ok((Ok(files), _rows)) => {
            info!(requests = %files.requests.display(), rows = n_rows, secs = started.elapsed().as_secs_f64(), "results written");
            let mut acks = Vec::new();
            {
                let mut st = ctl.state();
                for job in group {
                    let durable: Vec<(String, u32)> = job
                        .acks
                        .iter()
                        .map(|(_, a)| (a.point_id.clone(), a.attempt))
                        .collect();
                    st.write_done(
                        &job.sweep_id,
                        [
                            files.requests.display().to_string(),
                            files.points.display().to_string(),
                        ],
                        &durable,
                    );
                    acks.extend(job.acks);
                }
            }
            let acks = acks
                .into_iter()
                .map(|(agent, ack)| {
                    (
                        agent,
                        fleetbench_proto::pb::ControllerMessage {
                            msg: Some(fleetbench_proto::pb::controller_message::Msg::PointAck(ack)),
                        },
                    )
                })
                .collect();
            ctl.dispatch(acks);
            more_to_come.then_some(model)
        }
        // Not acknowledged: the records go back to the state (a later write retries them)
        // and the agent keeps the results and resends them.
        Ok((Err(e), rows)) => {
            error!(error = %e, "writing results failed");
            let mut st = ctl.state();
            st.restore_records(&sweep_id, rows);
            for job in &group {
                st.write_done(&job.sweep_id, [], &[]);
            }
            None
        }
        Err(e) => {
            error!(error = %e, "results writer task failed");
            let mut st = ctl.state();
            for job in &group {
                st.write_done(&job.sweep_id, [], &[]);
            }
            None
        }
    }
}
