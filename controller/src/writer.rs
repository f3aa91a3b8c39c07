//! Writes a sweep's Parquet partition whenever one of its points finishes, one write at a
//! time (so two points of the same partition never race), then acknowledges the points
//! to their agents: an agent forgets results only once they are on disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetbench_proto::FLEETBENCH_VERSION;
use fleetbench_proto::record::RequestRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::results::{MetricRow, write_partition};
use crate::service::Controller;
use crate::state::WriteJob;
use crate::summary::PointSummary;

/// Everything one partition write needs, copied out of the state.
struct Snapshot {
    model: String,
    points: Vec<(PointSummary, Vec<RequestRecord>)>,
    metrics: Vec<MetricRow>,
    metadata: BTreeMap<String, String>,
}

fn snapshot(ctl: &Controller, job: &WriteJob) -> Option<Snapshot> {
    let st = ctl.state();
    let sweep = st.sweep(&job.sweep_id)?;
    let mut points = Vec::new();
    let mut hosts = std::collections::BTreeSet::new();
    let mut engine_args = None;
    let mut engine_version = None;
    let mut engine_image: Option<(String, String)> = None;
    let mut events = Vec::new();
    let mut metrics = Vec::new();
    for p in sweep.points.iter().filter(|p| p.planned.gpus == job.gpus) {
        if let Some(s) = &p.summary {
            points.push((s.clone(), p.records()));
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
        for ev in &p.engine_events {
            events.push(serde_json::json!({
                "point_id": ev.point_id, "kind": ev.kind, "message": ev.message,
                "exit_code": ev.exit_code, "unix_ms": ev.unix_ms, "log_tail": ev.log_tail,
                "oom_killed": ev.oom_killed, "died_after_s": ev.died_after_s,
                "container": ev.container, "image": ev.image, "image_digest": ev.image_digest,
                "gpu_ids": ev.gpu_ids,
            }));
        }
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("fleetbench.sweep_id".into(), sweep.id.clone());
    metadata.insert(
        "fleetbench.sweep_name".into(),
        sweep.spec.name.get_ref().clone(),
    );
    metadata.insert(
        "fleetbench.model".into(),
        sweep.spec.model.get_ref().clone(),
    );
    metadata.insert("fleetbench.gpus".into(), job.gpus.to_string());
    metadata.insert("fleetbench.version".into(), FLEETBENCH_VERSION.into());
    metadata.insert(
        "fleetbench.hosts".into(),
        hosts.into_iter().collect::<Vec<_>>().join(","),
    );
    metadata.insert(
        "fleetbench.engine_runtime".into(),
        sweep.engine.runtime.clone(),
    );
    metadata.insert(
        "fleetbench.engine_args".into(),
        engine_args.unwrap_or_default(),
    );
    metadata.insert(
        "fleetbench.engine_version".into(),
        engine_version.unwrap_or_default(),
    );
    let (image, digest) = engine_image.unwrap_or_default();
    metadata.insert("fleetbench.engine_image".into(), image);
    metadata.insert("fleetbench.engine_image_digest".into(), digest);
    metadata.insert("fleetbench.load".into(), format!("{:?}", sweep.load));
    metadata.insert(
        "fleetbench.engine_events".into(),
        serde_json::Value::Array(events).to_string(),
    );
    Some(Snapshot {
        model: sweep.spec.model.get_ref().clone(),
        points,
        metrics,
        metadata,
    })
}

/// Runs until `shutdown`, then writes whatever is still queued and stops.
pub async fn run(
    ctl: Arc<Controller>,
    mut jobs: mpsc::Receiver<WriteJob>,
    shutdown: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            biased;
            j = jobs.recv() => j,
            () = shutdown.cancelled() => jobs.try_recv().ok(),
        };
        let Some(job) = job else { break };
        let Some(snap) = snapshot(&ctl, &job) else {
            ctl.state().write_done(&job.sweep_id, []);
            continue;
        };
        let root = ctl.config.results_dir.clone();
        let sweep_id = job.sweep_id.clone();
        let gpus = job.gpus;
        let written = tokio::task::spawn_blocking(move || {
            let refs: Vec<(PointSummary, &[RequestRecord])> = snap
                .points
                .iter()
                .map(|(s, r)| (s.clone(), r.as_slice()))
                .collect();
            write_partition(
                &root,
                &sweep_id,
                &snap.model,
                gpus,
                &refs,
                &snap.metrics,
                &snap.metadata,
            )
        })
        .await;
        match written {
            Ok(Ok(files)) => {
                info!(sweep_id = %job.sweep_id, gpus, requests = %files.requests.display(), "results written");
                ctl.state().write_done(
                    &job.sweep_id,
                    [
                        files.requests.display().to_string(),
                        files.points.display().to_string(),
                    ],
                );
                let acks = job
                    .acks
                    .into_iter()
                    .map(|(agent, ack)| {
                        (
                            agent,
                            fleetbench_proto::pb::ControllerMessage {
                                msg: Some(fleetbench_proto::pb::controller_message::Msg::PointAck(
                                    ack,
                                )),
                            },
                        )
                    })
                    .collect();
                ctl.dispatch(acks);
            }
            // Not acknowledged: the agent keeps the results and resends them.
            Ok(Err(e)) => {
                error!(sweep_id = %job.sweep_id, gpus, error = %e, "writing results failed");
                ctl.state().write_done(&job.sweep_id, []);
            }
            Err(e) => {
                error!(sweep_id = %job.sweep_id, gpus, error = %e, "results writer task failed");
                ctl.state().write_done(&job.sweep_id, []);
            }
        }
    }
}
