//! Following a sweep: one line per point as it changes state, then a closing summary.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use fleetbench_proto::pb;

use crate::connect::Client;

use crate::error::CliError;

/// A point's state while its results could not be written (the controller retries).
pub const WRITE_FAILED: &str = "write-failed";
/// A sweep's state when it has ended with results that could not be written.
pub const SWEEP_WRITE_FAILED: &str = "failed";

/// Points whose results the controller could not write (yet): they ran, but their rows
/// are not in the results folder.
pub fn points_write_failed(s: &pb::SweepStatus) -> u32 {
    let n = s.points.iter().filter(|p| p.state == WRITE_FAILED).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Points that will not run any more: done, failed, skipped, cancelled and write-failed
/// ones.
pub fn points_finished(s: &pb::SweepStatus) -> u32 {
    let cancelled = s.points.iter().filter(|p| p.state == "cancelled").count();
    s.points_done
        + s.points_failed
        + s.points_skipped
        + u32::try_from(cancelled).unwrap_or(0)
        + points_write_failed(s)
}

/// The exit code of `watch`, `submit --watch` and `local` for a sweep's last status:
/// results not written ([`crate::EXIT_WRITE_FAILED`]) before cancelled
/// ([`crate::EXIT_CANCELLED`]) before failed points ([`crate::EXIT_POINTS_FAILED`]).
pub fn exit_code(status: &pb::SweepStatus) -> u8 {
    if status.state == SWEEP_WRITE_FAILED || points_write_failed(status) > 0 {
        crate::EXIT_WRITE_FAILED
    } else if status.state == "cancelled" {
        crate::EXIT_CANCELLED
    } else if status.points_failed > 0 {
        crate::EXIT_POINTS_FAILED
    } else {
        0
    }
}

/// Time left at the pace of the points finished so far (`None` before the first).
pub fn eta(s: &pb::SweepStatus, now_ms: i64) -> Option<Duration> {
    let finished = points_finished(s);
    let ran = s.points_done + s.points_failed;
    if ran == 0 || finished >= s.points_total || s.submitted_unix_ms <= 0 {
        return None;
    }
    let elapsed_ms = u64::try_from(now_ms - s.submitted_unix_ms).ok()?;
    let left = u64::from(s.points_total - finished);
    Some(Duration::from_millis(elapsed_ms / u64::from(ran) * left))
}

fn point_line(s: &pb::SweepStatus, p: &pb::PointStatus) -> String {
    let w = p.workload.clone().unwrap_or_default();
    let finished = points_finished(s);
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
    if p.state == "done" || p.state == "failed" || p.state == WRITE_FAILED {
        let _ = write!(line, " ({} ok, {} failed requests)", p.completed, p.failed);
    }
    if !p.error.is_empty() {
        let _ = write!(line, " error: {}", p.error);
    }
    line
}

/// Errors after which `watch` waits for the controller rather than giving up: the
/// controller is down or restarting.
fn retriable(e: &tonic::Status) -> bool {
    matches!(
        e.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::DeadlineExceeded
    )
}

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Streams a sweep's status until it ends, printing point transitions to stderr. While
/// the controller is unreachable (restarting) it retries with backoff, says so once per
/// outage, and carries on where it was when the controller is back.
pub async fn watch(client: &mut Client, sweep_id: &str) -> Result<pb::SweepStatus, CliError> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut last: Option<pb::SweepStatus> = None;
    let mut backoff = RETRY_MIN;
    let mut outage = false;
    loop {
        let opened = client
            .watch_sweep(pb::WatchSweepRequest {
                sweep_id: sweep_id.to_string(),
            })
            .await;
        let broke = match opened {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(status)) => {
                            if outage {
                                eprintln!("controller reachable again; following {sweep_id}");
                                outage = false;
                            }
                            backoff = RETRY_MIN;
                            print_changes(&mut seen, &status);
                            last = Some(status);
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                }
            }
            Err(e) => Some(e),
        };
        let Some(e) = broke else { break };
        if !retriable(&e) {
            return Err(e.into());
        }
        if !outage {
            eprintln!("controller unreachable ({}), retrying", e.message());
            outage = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
    let status = last.ok_or_else(|| CliError::Usage(format!("no status for {sweep_id}")))?;
    eprintln!("{}", closing_line(&status));
    Ok(status)
}

fn print_changes(seen: &mut HashMap<String, String>, status: &pb::SweepStatus) {
    let mut changed = false;
    for p in &status.points {
        if seen.get(&p.point_id) != Some(&p.state) {
            seen.insert(p.point_id.clone(), p.state.clone());
            if p.state != "pending" {
                eprintln!("{}", point_line(status, p));
                changed = true;
            }
        }
    }
    if changed {
        if let Some(eta) = eta(status, fleetbench_proto::unix_millis_now()) {
            let secs = eta.as_secs();
            eprintln!(
                "      {} failed so far, about {}m{:02}s left",
                status.points_failed,
                secs / 60,
                secs % 60
            );
        }
    }
}

/// The line `watch` ends with.
pub fn closing_line(status: &pb::SweepStatus) -> String {
    let mut line = format!(
        "sweep {} {}: {} done, {} failed, {} skipped of {} points",
        status.sweep_id,
        status.state,
        status.points_done,
        status.points_failed,
        status.points_skipped,
        status.points_total
    );
    let unwritten = points_write_failed(status);
    if unwritten > 0 {
        let _ = write!(
            line,
            "; results of {unwritten} not written (the controller keeps retrying; \
             `controllerctl status {}` shows when they land)",
            status.sweep_id
        );
    }
    for search in &status.search {
        line.push('\n');
        line.push_str(&search_line(search));
    }
    line
}

/// One search group's answer as a sentence, e.g. `gpus=2 512/128: max 24 concurrent
/// requests at p99 ttft <= 2000 ms (25 missed; 10 probes)`.
pub fn search_line(r: &pb::SearchResult) -> String {
    let load = |v: f64| match r.axis.as_str() {
        "rate" => format!("{v} req/s"),
        "concurrency" => format!("{v} concurrent requests"),
        _ => format!("batch {v}"),
    };
    let group = if r.workload.is_empty() {
        format!("gpus={} {}/{}", r.gpus, r.input_tokens, r.output_tokens)
    } else {
        format!("gpus={} {}", r.gpus, r.workload)
    };
    let probes = format!("{} probe{}", r.probes, if r.probes == 1 { "" } else { "s" });
    let state = if r.finished { "" } else { " so far" };
    let cap = if r.capped { ", probe cap reached" } else { "" };
    let body = match (r.goal.as_str(), r.best, r.above) {
        ("throughput", Some(best), Some(above)) => format!(
            "output throughput stops rising after {} ({} did not raise it enough; {probes})",
            load(best),
            load(above)
        ),
        ("throughput", Some(best), None) => format!(
            "output throughput still rose at {}{state} ({probes}{cap})",
            load(best)
        ),
        ("throughput", None, _) => format!("no answer{state} ({probes})"),
        (_, Some(best), Some(above)) => format!(
            "max {} at {}{state} ({} missed; {probes}{cap})",
            load(best),
            r.slo,
            load(above)
        ),
        (_, Some(best), None) => format!(
            "max {} at {}{state}: every probe met it ({probes}{cap})",
            load(best),
            r.slo
        ),
        (_, None, Some(above)) => {
            format!("even {} misses {}{state} ({probes})", load(above), r.slo)
        }
        (_, None, None) => format!("no probe has ended yet ({probes})"),
    };
    format!("search {group}: {body}")
}

/// `controllerctl status ID`.
pub fn status_text(s: &pb::SweepStatus) -> String {
    let mut out = format!(
        "{} ({}) {}: {}/{} finished ({} done, {} failed, {} skipped{})\n",
        s.sweep_id,
        s.model,
        s.state,
        points_finished(s),
        s.points_total,
        s.points_done,
        s.points_failed,
        s.points_skipped,
        match points_write_failed(s) {
            0 => String::new(),
            n => format!(", {n} write-failed"),
        }
    );
    for p in &s.points {
        out.push_str(&point_line(s, p));
        out.push('\n');
    }
    for r in &s.search {
        out.push_str(&search_line(r));
        out.push('\n');
    }
    for f in &s.result_files {
        out.push_str(f);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(state: &str) -> pb::PointStatus {
        pb::PointStatus {
            point_id: format!("s/{state}"),
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn skipped_and_cancelled_points_count_as_finished() {
        let s = pb::SweepStatus {
            sweep_id: "s".into(),
            state: "done".into(),
            points_total: 5,
            points_done: 2,
            points_failed: 1,
            points_skipped: 1,
            points: ["done", "done", "failed", "skipped", "cancelled"]
                .map(point)
                .to_vec(),
            ..Default::default()
        };
        assert_eq!(points_finished(&s), 5);
        assert!(point_line(&s, &s.points[3]).starts_with("[  5/5]"));
        assert!(status_text(&s).contains("5/5 finished"));
        assert_eq!(eta(&s, 10_000), None, "nothing left");
    }

    #[test]
    fn eta_extrapolates_the_pace_of_points_that_ran() {
        let s = pb::SweepStatus {
            points_total: 10,
            points_done: 2,
            points_skipped: 2,
            submitted_unix_ms: 1_000,
            ..Default::default()
        };
        // 2 points ran in 20 s; 6 are left.
        assert_eq!(eta(&s, 21_000), Some(Duration::from_secs(60)));
        let fresh = pb::SweepStatus {
            points_done: 0,
            ..s
        };
        assert_eq!(eta(&fresh, 21_000), None);
    }

    #[test]
    fn unwritten_results_end_the_watch_with_their_own_exit_code() {
        let mut unwritten = point(WRITE_FAILED);
        unwritten.error = "results write failed: Not a directory (3 tries, retrying)".into();
        let s = pb::SweepStatus {
            sweep_id: "s".into(),
            state: SWEEP_WRITE_FAILED.into(),
            points_total: 3,
            points_done: 1,
            points_failed: 1,
            points: vec![point("done"), point("failed"), unwritten],
            ..Default::default()
        };
        assert_eq!(points_finished(&s), 3);
        assert_eq!(exit_code(&s), crate::EXIT_WRITE_FAILED);
        assert!(closing_line(&s).contains("results of 1 not written"));
        assert!(
            status_text(&s).contains("1 write-failed"),
            "{}",
            status_text(&s)
        );
        assert!(status_text(&s).contains("error: results write failed: Not a directory"));
        // Written after all: failed points, then cancelled, then success.
        let written = pb::SweepStatus {
            state: "done".into(),
            points: vec![point("done"), point("failed"), point("done")],
            ..s.clone()
        };
        assert_eq!(exit_code(&written), crate::EXIT_POINTS_FAILED);
        let cancelled = pb::SweepStatus {
            state: "cancelled".into(),
            ..written.clone()
        };
        assert_eq!(exit_code(&cancelled), crate::EXIT_CANCELLED);
        let ok = pb::SweepStatus {
            points_failed: 0,
            ..written
        };
        assert_eq!(exit_code(&ok), 0);
    }

    #[test]
    fn only_outages_are_retried() {
        assert!(retriable(&tonic::Status::unavailable("down")));
        assert!(retriable(&tonic::Status::unknown("h2 protocol error")));
        assert!(!retriable(&tonic::Status::not_found("no such sweep")));
        assert!(!retriable(&tonic::Status::invalid_argument("bad")));
    }
}
