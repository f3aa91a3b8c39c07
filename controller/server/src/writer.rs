//! Writes a sweep's Parquet partition whenever one of its points finishes, one write at a
//! time (so two points of the same partition never race), then acknowledges the points
//! to their agents: an agent forgets results only once they are on disk.
//!
//! The records' way is one-way: a [`WriteJob`] carries its point's records out of the
//! state; the rest of the partition comes from [`State::partition_snapshot`]; once the
//! files are on disk the writer reports each job done (`State::write_done`) and sends its
//! acknowledgements. A failed write is kept here, jobs and records, and retried: with the
//! partition's next write, or after a backoff (1 s, doubling up to 30 s). Jobs queued
//! while a write runs are coalesced into one write per partition.
//!
//! Failures are shown, not only logged: each failed write marks the points whose rows it
//! carried (`State::write_failed`), which then show the point state `write-failed` with
//! `results write failed: <error>`; once every point of the sweep has ended, every
//! pending write has been tried and failed, and a point's write has failed
//! `WRITE_FAILED_AFTER` (3) times, the sweep shows `failed`, a final state (`watch` ends,
//! `controllerctl` exits 3). The retries go on regardless: a write
//! that lands clears the failure (points `done` again, the sweep `done`) and only then are
//! the points acknowledged, so the agents keep their spooled records until the rows are
//! on disk, exactly once.
//!
//! [`State::partition_snapshot`]: crate::state::State::partition_snapshot

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_proto::record::RequestRecord;
use fleetbench_results::summary::PointSummary;
use fleetbench_results::write::{
    NextRequests, PartitionUpdate, prepare_next_requests, update_partition,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::service::Controller;
use crate::state::{PointRows, WriteJob};

/// The first wait before a failed write is retried; each failure in a row doubles it, up
/// to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

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

/// Why the writer woke up: a job, the end of a failed write's backoff (retry), or
/// shutdown with nothing queued (last round: what failed is tried once more).
fn woke(job: Option<WriteJob>) -> (Vec<WriteJob>, bool, bool) {
    match job {
        Some(job) => (vec![job], false, false),
        None => (Vec::new(), true, true),
    }
}

/// Runs until `shutdown`, then writes whatever is still queued (and tries what failed
/// once more) and stops. Jobs queued while a write runs are coalesced: one write per
/// partition adds all their points.
pub async fn run(
    ctl: Arc<Controller>,
    mut jobs: mpsc::Receiver<WriteJob>,
    shutdown: CancellationToken,
) {
    let mut preparing: Option<Preparing> = None;
    // Jobs not done yet: those of failed writes (with their records), and resends whose
    // rows another job, still on its way, carries.
    let mut held: Vec<WriteJob> = Vec::new();
    let mut retry_at: Option<Instant> = None;
    let mut backoff = RETRY_FIRST;
    // Jobs of other partitions that arrived while a write of this round waited: the next
    // round starts with them.
    let mut later: Vec<WriteJob> = Vec::new();
    loop {
        let (mut fresh, retry, last) = if later.is_empty() {
            tokio::select! {
                biased;
                j = jobs.recv() => woke(j),
                () = shutdown.cancelled() => woke(jobs.try_recv().ok()),
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => (Vec::new(), true, false),
            }
        } else {
            (std::mem::take(&mut later), false, false)
        };
        // Everything queued behind it.
        while let Ok(more) = jobs.try_recv() {
            fresh.push(more);
        }
        if retry {
            retry_at = None;
        }
        for mut group in plan(&mut held, fresh, retry) {
            let Some(first) = group.first() else { continue };
            let (sweep_id, gpus) = (first.sweep_id.clone(), first.gpus);
            let next = match preparing.take() {
                Some(p) => p.take(&sweep_id, gpus).await,
                None => None,
            };
            // Points of this partition that finished while the previous write's follow-up
            // was being prepared join this write rather than costing one of their own.
            while let Ok(more) = jobs.try_recv() {
                if more.sweep_id == sweep_id && more.gpus == gpus {
                    group.push(more);
                } else {
                    later.push(more);
                }
            }
            match write_group(&ctl, group, next).await {
                Written::Done { model, waiting } => {
                    held.extend(waiting);
                    if let Some(model) = model {
                        if !shutdown.is_cancelled() {
                            preparing = Some(Preparing::start(&ctl, sweep_id, gpus, model));
                        }
                    }
                }
                Written::Failed(jobs) => held.extend(jobs),
                Written::Dropped => {}
            }
        }
        if last && later.is_empty() {
            break;
        }
        if held.iter().any(|j| j.rows.is_some()) {
            if retry_at.is_none() {
                warn!(
                    jobs = held.len(),
                    retry_in_s = backoff.as_secs_f64(),
                    "results not written; retrying"
                );
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        } else {
            retry_at = None;
            backoff = RETRY_FIRST;
        }
    }
    if let Some(p) = preparing {
        p.take("", 0).await;
    }
    if !held.is_empty() {
        warn!(
            jobs = held.len(),
            "results writer stopped with writes not done; their agents keep the results and resend them"
        );
    }
}

/// The partition writes of one round, each with its jobs (held ones first, then fresh ones
/// in arrival order). A partition is written when a fresh job goes to it or, on a `retry`
/// round, when a held job of it carries rows; every held job of a written partition joins
/// the write. Held jobs of other partitions stay in `held`.
fn plan(held: &mut Vec<WriteJob>, fresh: Vec<WriteJob>, retry: bool) -> Vec<Vec<WriteJob>> {
    let key = |j: &WriteJob| (j.sweep_id.clone(), j.gpus);
    let mut keys: Vec<(String, u32)> = Vec::new();
    let retried = held.iter().filter(|j| retry && j.rows.is_some());
    for k in retried.chain(&fresh).map(key) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut groups: Vec<Vec<WriteJob>> = keys.iter().map(|_| Vec::new()).collect();
    let mut keep = Vec::new();
    for job in held.drain(..).chain(fresh) {
        let k = key(&job);
        match keys
            .iter()
            .position(|g| *g == k)
            .and_then(|i| groups.get_mut(i))
        {
            Some(group) => group.push(job),
            None => keep.push(job),
        }
    }
    *held = keep;
    groups
}

/// What became of a partition write's jobs.
enum Written {
    /// On disk. `model` when more points of the partition are to come (worth preparing the
    /// next requests file); `waiting`: resends whose rows are still on their way.
    Done {
        model: Option<String>,
        waiting: Vec<WriteJob>,
    },
    /// Not written: the jobs, records and all, to retry.
    Failed(Vec<WriteJob>),
    /// The sweep is gone: nothing to write.
    Dropped,
}

/// A write of `group` failed with `error`: its points show it (`State::write_failed`) and
/// the jobs go back to the writer to retry.
fn failed(ctl: &Controller, sweep_id: &str, group: Vec<WriteJob>, error: &str) -> Written {
    let keys: Vec<(String, u32)> = group
        .iter()
        .filter_map(|j| j.rows.as_ref())
        .map(PointRows::key)
        .collect();
    ctl.state().write_failed(sweep_id, &keys, error);
    Written::Failed(group)
}

/// Writes one partition for the jobs of `group` (same sweep and GPU count), reports each
/// job done and acknowledges their points once the files are on disk. `next` is the
/// partition's prepared next requests file, if any.
async fn write_group(
    ctl: &Arc<Controller>,
    group: Vec<WriteJob>,
    next: Option<NextRequests>,
) -> Written {
    let Some(first) = group.first() else {
        return Written::Dropped;
    };
    let (sweep_id, gpus) = (first.sweep_id.clone(), first.gpus);
    let span = info_span!("partition_write", sweep_id = %sweep_id, gpus, jobs = group.len());
    let started = std::time::Instant::now();
    let snap = ctl.state().partition_snapshot(&sweep_id, gpus);
    let Some(snap) = snap else {
        let mut st = ctl.state();
        for job in &group {
            st.write_done(&job.sweep_id, [], &[]);
        }
        return Written::Dropped;
    };
    let root = ctl.config.results_dir.clone();
    let (model, more_to_come) = (snap.metadata.model.clone(), snap.more_to_come);
    let n_rows: usize = group
        .iter()
        .filter_map(|j| j.rows.as_ref())
        .map(|r| r.records.len())
        .sum();
    // Shared with the blocking task, which only reads the records: the jobs come back
    // here whatever becomes of the write.
    let group = Arc::new(group);
    let (jobs, id) = (Arc::clone(&group), sweep_id.clone());
    let written = tokio::task::spawn_blocking(move || {
        // Points without records add no request rows; their summaries are in `snap`.
        let rows: Vec<(PointSummary, &[RequestRecord])> = jobs
            .iter()
            .filter_map(|j| j.rows.as_ref())
            .filter(|r| !r.records.is_empty())
            .map(|r| (r.summary.clone(), r.records.as_slice()))
            .collect();
        let update = PartitionUpdate {
            rows: &rows,
            summaries: &snap.summaries,
            metrics: &snap.metrics,
            metadata: &snap.metadata,
        };
        update_partition(&root, &id, &snap.metadata.model, gpus, &update, next)
    })
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    // The task has ended, so its handle on the jobs is gone.
    let Some(group) = Arc::into_inner(group) else {
        error!("write jobs still shared after their write; dropped");
        return Written::Dropped;
    };
    ctl.metrics
        .partition_written(matches!(written, Ok(Ok(_))), started.elapsed());
    let files = match written {
        Ok(Ok(files)) => files,
        // Not acknowledged: the writer keeps the jobs and retries them; the agents keep
        // the results meanwhile (and resend them after a reconnect). The points show
        // `write-failed` with the error until a write lands.
        Ok(Err(e)) => {
            error!(error = %e, "writing results failed");
            return failed(ctl, &sweep_id, group, &e.to_string());
        }
        Err(e) => {
            error!(error = %e, "results writer task failed");
            return failed(ctl, &sweep_id, group, &format!("writer task: {e}"));
        }
    };
    info!(requests = %files.requests.display(), rows = n_rows, secs = started.elapsed().as_secs_f64(), "results written");
    ctl.mirror(
        &sweep_id,
        [&files.requests, &files.points, &files.metrics].map(|p| p.as_path()),
    );
    let files = [
        files.requests.display().to_string(),
        files.points.display().to_string(),
    ];
    let written: BTreeSet<(String, u32)> = group
        .iter()
        .filter_map(|j| j.rows.as_ref())
        .map(PointRows::key)
        .collect();
    let mut acks = Vec::new();
    let mut waiting = Vec::new();
    // Freed once the lock is released.
    let mut done = Vec::new();
    {
        let mut st = ctl.state();
        for mut job in group {
            // A resend's job acknowledges a point whose rows this write or an earlier one
            // put on disk; otherwise they are still on their way and it waits for them.
            let on_disk = job.acks.iter().all(|(_, a)| {
                let k = (a.point_id.clone(), a.attempt);
                written.contains(&k) || !st.awaits_write(&k)
            });
            if !on_disk {
                waiting.push(job);
                continue;
            }
            let durable: Vec<(String, u32)> = job.rows.iter().map(PointRows::key).collect();
            st.write_done(&job.sweep_id, files.clone(), &durable);
            acks.append(&mut job.acks);
            done.push(job);
        }
    }
    drop(done);
    let acks = acks
        .into_iter()
        .map(|(agent, ack)| {
            (
                agent,
                pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::PointAck(ack)),
                },
            )
        })
        .collect();
    ctl.dispatch(acks);
    Written::Done {
        model: more_to_come.then_some(model),
        waiting,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fleetbench_proto::pb::{self, controller_message::Msg as CMsg};
    use fleetbench_proto::spec::SweepSpec;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::{WriteJob, plan};
    use crate::service::{Controller, ControllerConfig};

    const SPEC: &str = r#"
name = "t"
model = "m/x"
[engine]
kind = "vllm"
runtime = "process"
[matrix]
gpus = [1]
batch_sizes = [1, 2]
workloads = [{ input = 8, output = 4 }]
"#;

    fn job(sweep_id: &str, gpus: u32, point_id: &str) -> WriteJob {
        WriteJob {
            sweep_id: sweep_id.into(),
            gpus,
            rows: None,
            acks: vec![(
                "a".into(),
                pb::PointAck {
                    point_id: point_id.into(),
                    attempt: 1,
                },
            )],
        }
    }

    fn ids(groups: &[Vec<WriteJob>]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.iter().map(|j| j.acks[0].1.point_id.clone()).collect())
            .collect()
    }

    #[test]
    fn held_jobs_join_the_next_write_of_their_partition() {
        let mut held = vec![job("s", 1, "held1"), job("s", 2, "held2")];
        let groups = plan(
            &mut held,
            vec![job("s", 1, "new1"), job("t", 1, "t1")],
            false,
        );
        assert_eq!(
            ids(&groups),
            vec![vec!["held1".to_string(), "new1".into()], vec!["t1".into()]]
        );
        // The other partition's held job waits for its own write (or a retry round).
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].gpus, 2);
        // A retry round writes only partitions with rows to retry.
        assert!(plan(&mut held, Vec::new(), true).is_empty());
        assert_eq!(held.len(), 1);
    }

    /// A write that fails keeps its job, records and all, and is retried: the point is
    /// acknowledged (and the sweep stops `writing`) only once its rows are on disk.
    #[tokio::test]
    async fn a_failed_write_is_retried_from_its_job() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the results tree should be: every write fails until it is gone.
        let results_dir = dir.path().join("results");
        std::fs::write(&results_dir, b"in the way").unwrap();
        let (writes, jobs) = mpsc::channel(8);
        let config = ControllerConfig {
            results_dir: results_dir.clone(),
            ..Default::default()
        };
        let ctl = Controller::new(config, writes);
        let (tx, mut rx) = mpsc::channel(16);
        let job = {
            let mut st = ctl.state();
            st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
            let generation = st.register(
                pb::Inventory {
                    agent_name: "a".into(),
                    ..Default::default()
                },
                &[],
            );
            ctl.attach_session("a", generation, tx);
            st.schedule();
            st.record_batch(
                "a",
                pb::RecordBatch {
                    point_id: "s/p000".into(),
                    attempt: 1,
                    seq: 0,
                    records: vec![pb::RequestRecord {
                        success: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            let (job, _) = st.point_finished(
                "a",
                pb::PointFinished {
                    point_id: "s/p000".into(),
                    attempt: 1,
                    batches: 1,
                    ok: true,
                    ..Default::default()
                },
            );
            job.unwrap()
        };
        assert_eq!(job.rows.as_ref().map(|r| r.records.len()), Some(1));
        assert!(
            ctl.state().sweep("s").unwrap().points[0].batches.is_empty(),
            "the records left the state with the job"
        );
        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(super::run(ctl.clone(), jobs, shutdown.clone()));
        ctl.queue_write(job);
        let acked = |m: Option<Result<pb::ControllerMessage, tonic::Status>>| matches!(m, Some(Ok(pb::ControllerMessage { msg: Some(CMsg::PointAck(a)) })) if a.point_id == "s/p000");
        // The first write fails: no acknowledgement, the write is still pending, and the
        // point shows why.
        let first = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(first.is_err(), "acknowledged before on disk: {first:?}");
        {
            let st = ctl.state();
            let s = st.sweep("s").unwrap();
            assert_eq!(s.pending_writes, 1);
            let status = s.status(true);
            let p = &status.points[0];
            assert_eq!(p.state, crate::state::WRITE_FAILED, "{p:?}");
            assert!(
                p.error.starts_with("results write failed: "),
                "{:?}",
                p.error
            );
            assert_eq!(status.points_done, 0, "{status:?}");
            // Another point is still pending: the sweep runs on.
            assert_eq!(status.state, "running");
        }
        // Once the way is clear, the retry writes the records the job kept.
        std::fs::remove_file(&results_dir).unwrap();
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap();
        assert!(acked(m), "the retried write acknowledges the point");
        {
            let st = ctl.state();
            let s = st.sweep("s").unwrap();
            assert_eq!(s.pending_writes, 0);
            let status = s.status(true);
            assert_eq!(status.points[0].state, "done", "{status:?}");
            assert_eq!(status.points[0].error, "");
            assert_eq!(status.points_done, 1);
            assert_eq!(s.result_files.len(), 2, "{:?}", s.result_files);
            assert!(
                s.result_files
                    .iter()
                    .all(|f| std::path::Path::new(f).exists())
            );
        }
        shutdown.cancel();
        writer.await.unwrap();
    }
}
