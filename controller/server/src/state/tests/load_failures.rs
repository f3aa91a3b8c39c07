//! Load failures: a point whose load ran to its end (the agent says `ok`) but whose
//! requests failed (all of them, or a share above `[policy] max_failed_share`) is failed
//! with the most common error kinds as its reason, and the failure policy (retry,
//! skip-larger) applies to it as to an engine crash.

use super::*;

const LOAD_SPEC: &str = r#"
name = "t"
model = "m/x"
[engine]
kind = "vllm"
runtime = "process"
[matrix]
gpus = [1, 2]
batch_sizes = [1, 4, 16, 32, 64]
workloads = [{ input = 8, output = 4 }, { input = 16, output = 4 }]
[policy]
"#;

/// A sweep of [`LOAD_SPEC`] with `policy` appended to its `[policy]` section, one
/// agent `a` with one GPU, and the first point (`s/p000`, 1 GPU, batch 1) assigned.
fn sweep_with(policy: &str) -> State {
    let spec = format!("{LOAD_SPEC}{policy}\n");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    st.register(agent("a", 1), &[]);
    assert_eq!(
        assignments(&st.schedule()),
        vec![("a".into(), "s/p000".into())]
    );
    st
}

/// One wire record: `None` succeeded, `Some(kind)` failed with that kind.
fn record(kind: Option<pb::ErrorKind>) -> pb::RequestRecord {
    pb::RequestRecord {
        success: kind.is_none(),
        failure_kind: kind.map_or(pb::ErrorKind::Unspecified, |k| k).into(),
        error: kind.map_or(String::new(), |k| format!("{k:?}")),
        ..Default::default()
    }
}

/// The point the agent is running now and its attempt.
fn current(st: &State, agent: &str) -> (String, u32) {
    let (sid, idx) = st.agents[agent].running[0].clone();
    let p = &st.sweep(&sid).unwrap().points[idx];
    (p.point_id.clone(), p.attempt)
}

/// Runs the agent's current point to its end: one record batch with a record per entry
/// of `kinds`, then a PointFinished that says `ok` (the load ran to its end).
fn run_load(
    st: &mut State,
    agent: &str,
    kinds: &[Option<pb::ErrorKind>],
) -> (Option<WriteJob>, Outgoing) {
    let (pid, attempt) = current(st, agent);
    st.record_batch(
        agent,
        pb::RecordBatch {
            point_id: pid.clone(),
            attempt,
            seq: 0,
            records: kinds.iter().map(|k| record(*k)).collect(),
            ..Default::default()
        },
    );
    st.point_finished(
        agent,
        pb::PointFinished {
            point_id: pid,
            attempt,
            batches: 1,
            ok: true,
            ..Default::default()
        },
    )
}

const OK: Option<pb::ErrorKind> = None;
const STALLED: Option<pb::ErrorKind> = Some(pb::ErrorKind::Stalled);
const TRUNCATED: Option<pb::ErrorKind> = Some(pb::ErrorKind::Truncated);
const CONNECT: Option<pb::ErrorKind> = Some(pb::ErrorKind::Connect);

fn point(st: &State, idx: usize) -> &PointEntry {
    &st.sweep("s").unwrap().points[idx]
}

/// (batch size, state) of the first workload's 1-GPU points (p000..p004).
fn first_row(st: &State) -> Vec<(u32, &'static str)> {
    st.sweep("s").unwrap().points[..5]
        .iter()
        .map(|p| (p.planned.batch_size, p.state.as_str()))
        .collect()
}

#[test]
fn a_failed_share_at_the_limit_is_done_and_one_above_it_is_failed() {
    // 2 of 4 failed: 50% is not over max_failed_share = 0.5.
    let mut st = sweep_with("max_failed_share = 0.5");
    let (job, out) = run_load(&mut st, "a", &[OK, STALLED, OK, STALLED]);
    let job = job.expect("a write for the finished point");
    let rows = job.rows.expect("the point's rows");
    assert_eq!(rows.records.len(), 4);
    assert_eq!(rows.summary.meta.state, "done");
    assert_eq!(rows.summary.meta.error, "");
    let p = point(&st, 0);
    assert_eq!((p.state.as_str(), p.error.as_str()), ("done", ""));
    // The agent moves on to the next batch size.
    assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);

    // 3 of 4 failed: 75% > 50%, failed; the reason names the kinds, most common first.
    let (job, out) = run_load(&mut st, "a", &[STALLED, TRUNCATED, OK, STALLED]);
    let why = "3 of 4 requests failed (75.0% > 50%): stalled ×2, truncated ×1";
    let p = point(&st, 1);
    assert_eq!((p.state.as_str(), p.error.as_str()), ("failed", why));
    // The failed attempt is still written, records and all, with the reason.
    let rows = job.expect("a write for the failed point").rows.unwrap();
    assert_eq!(rows.records.len(), 4);
    assert_eq!(
        (
            rows.summary.meta.state.as_str(),
            rows.summary.meta.error.as_str()
        ),
        ("failed", why)
    );
    assert_eq!(p.summary.as_ref().unwrap().meta.error, why);
    // The default policy (continue) skips nothing: the next batch size runs.
    assert_eq!(assignments(&out), vec![("a".into(), "s/p002".into())]);
    let status = st.sweep("s").unwrap().status(false);
    assert_eq!(
        (
            status.points_done,
            status.points_failed,
            status.points_skipped
        ),
        (1, 1, 0)
    );
}

#[test]
fn the_default_max_failed_share_is_one_half() {
    // No max_failed_share in the spec: 2 of 4 failed is done, 3 of 4 failed.
    let mut st = sweep_with("");
    run_load(&mut st, "a", &[OK, CONNECT, CONNECT, OK]);
    assert_eq!(point(&st, 0).state.as_str(), "done");
    run_load(&mut st, "a", &[CONNECT, CONNECT, CONNECT, OK]);
    let p = point(&st, 1);
    assert_eq!(
        (p.state.as_str(), p.error.as_str()),
        ("failed", "3 of 4 requests failed (75.0% > 50%): connect ×3")
    );
}

#[test]
fn a_stricter_or_looser_limit_moves_the_line() {
    // max_failed_share = 0.25: 2 of 4 failed is over it.
    let mut st = sweep_with("max_failed_share = 0.25");
    run_load(&mut st, "a", &[OK, STALLED, OK, STALLED]);
    let p = point(&st, 0);
    assert_eq!(
        (p.state.as_str(), p.error.as_str()),
        ("failed", "2 of 4 requests failed (50.0% > 25%): stalled ×2")
    );
    // max_failed_share = 1: any share short of all of them is done.
    let mut st = sweep_with("max_failed_share = 1.0");
    run_load(&mut st, "a", &[STALLED, STALLED, STALLED, OK]);
    assert_eq!(point(&st, 0).state.as_str(), "done");
}

#[test]
fn a_point_with_no_successful_request_is_failed_whatever_the_limit() {
    let mut st = sweep_with("max_failed_share = 1.0");
    let (job, _) = run_load(&mut st, "a", &[CONNECT, CONNECT, CONNECT, CONNECT]);
    let why = "all 4 requests failed: connect ×4";
    let p = point(&st, 0);
    assert_eq!((p.state.as_str(), p.error.as_str()), ("failed", why));
    let rows = job.unwrap().rows.unwrap();
    assert_eq!(
        (
            rows.summary.meta.state.as_str(),
            rows.summary.meta.error.as_str()
        ),
        ("failed", why)
    );
    // Mixed kinds: most common first, ties by name.
    run_load(
        &mut st,
        "a",
        &[TRUNCATED, STALLED, STALLED, CONNECT, TRUNCATED, STALLED],
    );
    let p = point(&st, 1);
    assert_eq!(
        (p.state.as_str(), p.error.as_str()),
        (
            "failed",
            "all 6 requests failed: stalled ×3, truncated ×2, connect ×1"
        )
    );
}

#[test]
fn a_point_without_records_or_failures_is_left_done() {
    let mut st = sweep_with("");
    // No records at all: nothing to judge.
    let (pid, attempt) = current(&st, "a");
    finish(&mut st, "a", &pid, attempt, true);
    assert_eq!(
        (point(&st, 0).state.as_str(), point(&st, 0).error.as_str()),
        ("done", "")
    );
    // Every request succeeded.
    run_load(&mut st, "a", &[OK, OK, OK]);
    assert_eq!(point(&st, 1).state.as_str(), "done");
}

#[test]
fn a_point_the_agent_failed_keeps_the_agents_reason() {
    // The agent says the point failed: its error stands, not a load-failure reason.
    let mut st = sweep_with("");
    let (pid, attempt) = current(&st, "a");
    st.record_batch(
        "a",
        pb::RecordBatch {
            point_id: pid.clone(),
            attempt,
            seq: 0,
            records: vec![record(STALLED), record(STALLED)],
            ..Default::default()
        },
    );
    st.point_finished(
        "a",
        pb::PointFinished {
            point_id: pid,
            attempt,
            batches: 1,
            ok: false,
            error: "load generator gave up".into(),
            ..Default::default()
        },
    );
    let p = point(&st, 0);
    assert_eq!(
        (p.state.as_str(), p.error.as_str()),
        ("failed", "load generator gave up")
    );
}

#[test]
fn retry_requeues_a_point_whose_requests_failed() {
    let mut st = sweep_with("on_engine_crash = \"retry\"\nretries = 2");
    let (job, out) = run_load(&mut st, "a", &[CONNECT, CONNECT, CONNECT, CONNECT]);
    // Nothing is written; the attempt is acknowledged and the point runs again.
    assert!(job.is_none());
    assert!(
        out.iter()
            .any(|(a, m)| a == "a" && matches!(m.msg, Some(CMsg::PointAck(_))))
    );
    assert_eq!(assignments(&out), vec![("a".into(), "s/p000".into())]);
    let p = point(&st, 0);
    assert_eq!(p.attempt, 2);
    assert_eq!(p.crash_retries, 1);
    assert!(p.batches.is_empty(), "records of attempt 1 discarded");
    assert!(p.summary.is_none());
    // Attempt 2: over the limit again, retry 2 of 2.
    let (job, out) = run_load(&mut st, "a", &[STALLED, STALLED, STALLED, OK]);
    assert!(job.is_none());
    assert_eq!(assignments(&out), vec![("a".into(), "s/p000".into())]);
    let p = point(&st, 0);
    assert_eq!((p.attempt, p.crash_retries), (3, 2));
    // Attempt 3 measures enough: done, with its own records only and no error.
    let (job, out) = run_load(&mut st, "a", &[OK, OK, STALLED, OK]);
    let rows = job.expect("a write for the finished point").rows.unwrap();
    assert_eq!(rows.records.len(), 4);
    assert_eq!(
        (rows.summary.meta.attempt, rows.summary.meta.state.as_str()),
        (3, "done")
    );
    assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
    let p = point(&st, 0);
    assert_eq!((p.state.as_str(), p.error.as_str()), ("done", ""));
    // Retry skips nothing.
    assert!(first_row(&st).iter().all(|t| t.1 != "skipped"));
}

#[test]
fn retry_names_the_failed_requests_and_fails_the_point_when_retries_run_out() {
    let spec = format!("{LOAD_SPEC}on_engine_crash = \"retry\"\n");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    // The agent disconnects before its report lands, so nothing picks the re-queued
    // point up at once and its pending state is visible.
    let g = st.register(agent("a", 1), &[]);
    st.schedule();
    st.disconnect("a", g);
    run_load(&mut st, "a", &[CONNECT, CONNECT]);
    let p = point(&st, 0);
    assert_eq!((p.state.as_str(), p.attempt), ("pending", 1));
    assert_eq!(
        p.error,
        "requests failed; retry 1 of 1: all 2 requests failed: connect ×2"
    );
    // The retry (default retries = 1) fails too: the point is failed for good.
    st.register(agent("a", 1), &[]);
    assert_eq!(
        assignments(&st.schedule()),
        vec![("a".into(), "s/p000".into())]
    );
    let (job, out) = run_load(&mut st, "a", &[CONNECT, CONNECT]);
    let why = "requests failed; retry 1 of 1 failed: all 2 requests failed: connect ×2";
    let p = point(&st, 0);
    assert_eq!((p.state.as_str(), p.attempt), ("failed", 2));
    assert_eq!(p.error, why);
    let rows = job.expect("the failed attempt is written").rows.unwrap();
    assert_eq!(
        (
            rows.summary.meta.attempt,
            rows.summary.meta.state.as_str(),
            rows.summary.meta.error.as_str()
        ),
        (2, "failed", why)
    );
    assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
}

#[test]
fn skip_larger_skips_larger_batches_after_a_load_failure() {
    let mut st = sweep_with("on_engine_crash = \"skip-larger\"");
    // Batch 1 passes, batch 4 has 3 of 4 requests failed.
    run_load(&mut st, "a", &[OK, OK, OK, OK]);
    let (job, out) = run_load(&mut st, "a", &[STALLED, OK, STALLED, STALLED]);
    assert!(job.is_some(), "the failed point is written");
    // The agent moves on to the other workload, not to batch 16.
    assert_eq!(assignments(&out), vec![("a".into(), "s/p005".into())]);
    assert_eq!(
        first_row(&st),
        vec![
            (1, "done"),
            (4, "failed"),
            (16, "skipped"),
            (32, "skipped"),
            (64, "skipped")
        ]
    );
    let s = st.sweep("s").unwrap();
    assert_eq!(
        s.points[1].error,
        "3 of 4 requests failed (75.0% > 50%): stalled ×3"
    );
    // The skip reason says the requests failed, not that the engine crashed.
    let reason = "skipped: requests failed at batch 4 (policy skip-larger)";
    for p in &s.points[2..5] {
        assert_eq!(p.error, reason);
        let sk = p.summary.as_ref().expect("skipped points carry a summary");
        assert_eq!(
            (sk.meta.state.as_str(), sk.meta.error.as_str()),
            ("skipped", reason)
        );
    }
    // Other workloads and GPU counts are untouched.
    assert_eq!(s.points[5].state.as_str(), "running");
    assert!(
        s.points[6..].iter().all(|p| p.state.as_str() == "pending"),
        "{:?}",
        s.points
            .iter()
            .map(|p| p.state.as_str())
            .collect::<Vec<_>>()
    );
    let status = s.status(false);
    assert_eq!(
        (
            status.points_done,
            status.points_failed,
            status.points_skipped
        ),
        (1, 1, 3)
    );
}

#[test]
fn skip_larger_is_not_triggered_by_a_share_within_the_limit() {
    let mut st = sweep_with("on_engine_crash = \"skip-larger\"");
    run_load(&mut st, "a", &[OK, OK, OK, OK]);
    let (_, out) = run_load(&mut st, "a", &[STALLED, OK, STALLED, OK]);
    assert_eq!(assignments(&out), vec![("a".into(), "s/p002".into())]);
    assert_eq!(
        first_row(&st),
        vec![
            (1, "done"),
            (4, "done"),
            (16, "running"),
            (32, "pending"),
            (64, "pending")
        ]
    );
}
