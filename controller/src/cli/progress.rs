//! Following a sweep: one line per point as it changes state, then a closing summary.

use std::collections::HashMap;
use std::fmt::Write;

use fleetbench_proto::pb::{self, control_service_client::ControlServiceClient};
use tonic::transport::Channel;

use crate::error::ControllerError;

fn point_line(s: &pb::SweepStatus, p: &pb::PointStatus) -> String {
    let w = p.workload.unwrap_or_default();
    let finished = s.points_done + s.points_failed;
    let load = if p.request_rate > 0.0 {
        format!("rate={}/s", p.request_rate)
    } else {
        format!("batch={:<4}", p.batch_size)
    };
    let mut line = format!(
        "[{finished:>3}/{}] {:<9} gpus={} {load} {}/{} tokens",
        s.points_total, p.state, p.gpus, w.input_tokens, w.output_tokens
    );
    if !p.agent.is_empty() {
        let _ = write!(line, " on {}", p.agent);
    }
    if p.state == "done" || p.state == "failed" {
        let _ = write!(line, " ({} ok, {} failed requests)", p.completed, p.failed);
    }
    if !p.error.is_empty() {
        let _ = write!(line, " error: {}", p.error);
    }
    line
}

/// Streams a sweep's status until it ends, printing point transitions to stderr.
pub async fn watch(
    client: &mut ControlServiceClient<Channel>,
    sweep_id: &str,
) -> Result<pb::SweepStatus, ControllerError> {
    let mut stream = client
        .watch_sweep(pb::WatchSweepRequest {
            sweep_id: sweep_id.to_string(),
        })
        .await?
        .into_inner();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut last = None;
    while let Some(status) = stream.message().await? {
        for p in &status.points {
            if seen.get(&p.point_id) != Some(&p.state) {
                seen.insert(p.point_id.clone(), p.state.clone());
                if p.state != "pending" {
                    eprintln!("{}", point_line(&status, p));
                }
            }
        }
        last = Some(status);
    }
    let status = last.ok_or_else(|| ControllerError::Usage(format!("no status for {sweep_id}")))?;
    eprintln!(
        "sweep {} {}: {} done, {} failed of {} points",
        status.sweep_id,
        status.state,
        status.points_done,
        status.points_failed,
        status.points_total
    );
    Ok(status)
}

/// `controllerctl status ID`.
pub fn status_text(s: &pb::SweepStatus) -> String {
    let mut out = format!(
        "{} ({}) {}: {}/{} done, {} failed\n",
        s.sweep_id, s.model, s.state, s.points_done, s.points_total, s.points_failed
    );
    for p in &s.points {
        out.push_str(&point_line(s, p));
        out.push('\n');
    }
    for f in &s.result_files {
        out.push_str(f);
        out.push('\n');
    }
    out
}
