//! Point lifecycle tests: acknowledgements, duplicate and stale batches, lost agents,
//! cancellation, and the engine-crash policy.

use super::*;

#[test]
fn a_resent_finish_is_acknowledged_only_once_its_rows_are_on_disk() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    st.register(agent("a", 2), &[]);
    st.schedule();
    let acks = |out: &Outgoing| {
        out.iter()
            .filter(|(_, m)| matches!(m.msg, Some(CMsg::PointAck(_))))
            .count()
    };
    let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
    assert!(job.is_some());
    assert_eq!(acks(&out), 0);
    // The agent reconnects and resends before the write is done: no ack, but a
    // write (retried if the first failed) that will acknowledge it.
    let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
    let job = job.expect("a write for the resent point");
    assert_eq!(job.acks.len(), 1);
    assert_eq!(acks(&out), 0);
    st.write_done("s", [], &[("s/p000".to_string(), 1)]);
    st.write_done("s", [], &[]);
    // Once on disk, a resend is acknowledged at once.
    let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
    assert!(job.is_none());
    assert_eq!(acks(&out), 1);
}

#[test]
fn duplicate_batches_and_stale_attempts_are_ignored() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    st.register(agent("a", 2), &[]);
    st.schedule();
    let rec = pb::RecordBatch {
        point_id: "s/p000".into(),
        attempt: 1,
        seq: 0,
        records: vec![pb::RequestRecord {
            success: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    st.record_batch("a", rec.clone());
    st.record_batch("a", rec.clone());
    st.record_batch(
        "a",
        pb::RecordBatch {
            attempt: 7,
            seq: 1,
            ..rec
        },
    );
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.records().len(), 1);
    // Finishing with 2 batches announced but 1 held waits for the resend.
    let (job, _) = st.point_finished(
        "a",
        pb::PointFinished {
            point_id: "s/p000".into(),
            attempt: 1,
            batches: 2,
            ok: true,
            ..Default::default()
        },
    );
    assert!(job.is_none());
    assert_eq!(st.sweep("s").unwrap().points[0].state.as_str(), "running");
}

#[test]
fn lost_agent_points_are_requeued_after_grace() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    let g = st.register(agent("a", 2), &[]);
    st.schedule();
    st.disconnect("a", g);
    assert!(st.reap(Duration::from_secs(3600)).is_empty());
    assert_eq!(st.sweep("s").unwrap().points[0].state.as_str(), "running");
    let out = st.reap(Duration::ZERO);
    assert!(
        assignments(&out).is_empty(),
        "disconnected agent gets nothing"
    );
    assert_eq!(st.sweep("s").unwrap().points[0].state.as_str(), "pending");
    st.register(agent("b", 2), &[]);
    let a = assignments(&st.schedule());
    assert_eq!(a, vec![("b".into(), "s/p000".into())]);
    assert_eq!(st.sweep("s").unwrap().points[0].attempt, 2);
}

/// A point that goes back to pending behind points already handed out is found again:
/// the scheduler's search starts at the first pending point, and a re-queue moves that
/// start back.
#[test]
fn a_requeued_point_before_the_search_start_runs_again() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    let g = st.register(agent("a", 1), &[]);
    assert_eq!(
        assignments(&st.schedule()),
        vec![("a".into(), "s/p000".into())]
    );
    st.register(agent("b", 1), &[]);
    assert_eq!(
        assignments(&st.schedule()),
        vec![("b".into(), "s/p001".into())]
    );
    // The search now starts past p001; p000 goes back to pending.
    assert!(st.schedule().is_empty());
    st.disconnect("a", g);
    st.reap(Duration::ZERO);
    assert_eq!(st.sweep("s").unwrap().points[0].state.as_str(), "pending");
    st.register(agent("c", 1), &[]);
    assert_eq!(
        assignments(&st.schedule()),
        vec![("c".into(), "s/p000".into())]
    );
}

#[test]
fn cancel_keeps_finished_points_and_releases_engines() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    st.register(agent("a", 2), &[]);
    st.schedule();
    finish(&mut st, "a", "s/p000", 1, true);
    let out = st.cancel("s").unwrap();
    assert!(
        out.iter()
            .any(|(_, m)| matches!(m.msg, Some(CMsg::CancelPoint(_))))
    );
    let (_, out) = st.point_finished(
        "a",
        pb::PointFinished {
            point_id: "s/p001".into(),
            attempt: 1,
            ok: false,
            error: "cancelled".into(),
            ..Default::default()
        },
    );
    assert!(
        out.iter()
            .any(|(_, m)| matches!(m.msg, Some(CMsg::ReleaseEngine(_))))
    );
    let s = st.sweep("s").unwrap();
    assert_eq!(s.state, SweepState::Cancelled);
    let states: Vec<&str> = s.points.iter().map(|p| p.state.as_str()).collect();
    assert_eq!(states, vec!["done", "cancelled", "cancelled", "cancelled"]);
    assert!(s.finished_ms > 0);
}

const POLICY_SPEC: &str = r#"
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

fn exited(point_id: &str) -> pb::EngineEvent {
    pb::EngineEvent {
        point_id: point_id.into(),
        kind: "exited".into(),
        exit_code: Some(1),
        message: "engine exited during the point with code 1".into(),
        ..Default::default()
    }
}

/// Runs the point the agent was just given to its end; returns the next assignment.
fn run_current(st: &mut State, agent: &str, ok: bool, crash: bool) -> Outgoing {
    let (sid, idx) = st.agents[agent].running[0].clone();
    let p = &st.sweep(&sid).unwrap().points[idx];
    let (pid, attempt) = (p.point_id.clone(), p.attempt);
    if crash {
        st.engine_event(agent, exited(&pid));
    }
    finish(st, agent, &pid, attempt, ok).1
}

fn states(st: &State) -> Vec<(u32, u32, u32, &'static str)> {
    st.sweep("s")
        .unwrap()
        .points
        .iter()
        .map(|p| {
            (
                p.planned.gpus,
                p.planned.workload.input,
                p.planned.batch_size,
                p.state.as_str(),
            )
        })
        .collect()
}

#[test]
fn a_crash_reported_only_in_the_point_finished_counts_for_the_policy() {
    // After a controller restart mid-point the engine's `exited` event may be gone;
    // the agent's PointFinished still says the engine crashed.
    let spec = format!("{POLICY_SPEC}on_engine_crash = \"skip-larger\"\n");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    st.register(agent("a", 1), &[]);
    st.schedule();
    run_current(&mut st, "a", true, false);
    run_current(&mut st, "a", true, false);
    let (sid, idx) = st.agents["a"].running[0].clone();
    let p = &st.sweep(&sid).unwrap().points[idx];
    let (pid, attempt) = (p.point_id.clone(), p.attempt);
    st.point_finished(
        "a",
        pb::PointFinished {
            point_id: pid,
            attempt,
            ok: false,
            error: "engine exited during the point with code 1".into(),
            engine_crashed: true,
            ..Default::default()
        },
    );
    let got: Vec<_> = states(&st)[..5].iter().map(|t| (t.2, t.3)).collect();
    assert_eq!(
        got,
        vec![
            (1, "done"),
            (4, "done"),
            (16, "failed"),
            (32, "skipped"),
            (64, "skipped")
        ]
    );
}

#[test]
fn skip_larger_skips_larger_batches_of_the_same_gpus_and_workload() {
    let spec = format!("{POLICY_SPEC}on_engine_crash = \"skip-larger\"\n");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    st.register(agent("a", 1), &[]);
    st.schedule();
    // Batches 1 and 4 pass, 16 crashes the engine.
    run_current(&mut st, "a", true, false);
    run_current(&mut st, "a", true, false);
    let out = run_current(&mut st, "a", false, true);
    // The agent moves on to the other workload, not to batch 32.
    assert_eq!(assignments(&out), vec![("a".into(), "s/p005".into())]);
    let s = st.sweep("s").unwrap();
    let got = states(&st);
    let first: Vec<_> = got[..5].iter().map(|t| (t.2, t.3)).collect();
    assert_eq!(
        first,
        vec![
            (1, "done"),
            (4, "done"),
            (16, "failed"),
            (32, "skipped"),
            (64, "skipped")
        ]
    );
    // Other workloads and GPU counts are untouched.
    assert_eq!(got[5].3, "running");
    assert!(got[6..].iter().all(|t| t.3 == "pending"), "{got:?}");
    assert_eq!(
        s.points[3].error,
        "skipped: engine crashed at batch 16 (policy skip-larger)"
    );
    assert_eq!(s.points[2].error, "boom");
    // Skipped points carry a summary, so the partition write includes them.
    let sk = s.points[4].summary.as_ref().unwrap();
    assert_eq!(
        (sk.meta.state.as_str(), sk.meta.batch_size, sk.completed),
        ("skipped", 64, 0)
    );
    assert_eq!(sk.meta.error, s.points[4].error);
    let status = s.status(false);
    assert_eq!(
        (
            status.points_done,
            status.points_failed,
            status.points_skipped
        ),
        (2, 1, 2)
    );
}

#[test]
fn only_engine_crashes_trigger_the_policy() {
    let spec = format!("{POLICY_SPEC}on_engine_crash = \"skip-larger\"\n");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    st.register(agent("a", 1), &[]);
    st.schedule();
    // A failure without an engine death (e.g. requests failed) skips nothing.
    run_current(&mut st, "a", false, false);
    let got = states(&st);
    assert_eq!(got[0].3, "failed");
    assert!(got.iter().all(|t| t.3 != "skipped"), "{got:?}");
    // An exit event for a point that is not running on that agent marks nothing.
    st.engine_event("a", exited("s/p000"));
    st.engine_event("b", exited("s/p001"));
    let points = &st.sweep("s").unwrap().points;
    assert!(!points[0].engine_crashed && !points[1].engine_crashed);
    // With the default policy (continue) a crash fails just the point.
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(POLICY_SPEC, "t").unwrap());
    st.register(agent("a", 1), &[]);
    st.schedule();
    run_current(&mut st, "a", false, true);
    let got = states(&st);
    assert_eq!(got[0].3, "failed");
    assert!(got[1..].iter().all(|t| t.3 != "skipped"), "{got:?}");
}

#[test]
fn retry_requeues_a_crashed_point_then_fails_it() {
    let spec = format!("{POLICY_SPEC}on_engine_crash = \"retry\"\nretries = 2\n");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    st.register(agent("a", 1), &[]);
    st.schedule();
    // Attempt 1 sends a record, then the engine dies.
    st.record_batch(
        "a",
        pb::RecordBatch {
            point_id: "s/p000".into(),
            attempt: 1,
            seq: 0,
            records: vec![pb::RequestRecord::default()],
            ..Default::default()
        },
    );
    st.engine_event("a", exited("s/p000"));
    let (job, out) = st.point_finished(
        "a",
        pb::PointFinished {
            point_id: "s/p000".into(),
            attempt: 1,
            batches: 1,
            ok: false,
            error: "engine exited during the point with code 1".into(),
            ..Default::default()
        },
    );
    // Nothing is written; the attempt is acknowledged and the point runs again.
    assert!(job.is_none());
    assert!(
        out.iter()
            .any(|(a, m)| a == "a" && matches!(m.msg, Some(CMsg::PointAck(_))))
    );
    assert_eq!(assignments(&out), vec![("a".into(), "s/p000".into())]);
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.attempt, 2);
    assert!(p.batches.is_empty(), "records of attempt 1 discarded");
    assert!(p.summary.is_none());
    // Attempt 2 crashes too: retry 2 of 2.
    let out = run_current(&mut st, "a", false, true);
    assert_eq!(assignments(&out), vec![("a".into(), "s/p000".into())]);
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.attempt, 3);
    assert_eq!(p.crash_retries, 2);
    // Attempt 3 crashes: no retries left, the point fails and the sweep moves on.
    let out = run_current(&mut st, "a", false, true);
    assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.state, PointState::Failed);
    assert_eq!(p.error, "engine crashed; retry 2 of 2 failed: boom");
    let summary = p.summary.as_ref().unwrap();
    assert_eq!(
        (summary.meta.attempt, summary.meta.state.as_str()),
        (3, "failed")
    );
    assert_eq!(summary.meta.error, p.error);
    // Other points are not skipped by retry.
    assert!(states(&st).iter().all(|t| t.3 != "skipped"));
}

#[test]
fn retry_pending_error_names_the_retry() {
    let spec = format!("{POLICY_SPEC}on_engine_crash = \"retry\"\n");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    // The agent disconnects before its crash report lands, so nothing picks the
    // re-queued point up at once and its pending state is visible.
    let g = st.register(agent("a", 1), &[]);
    st.schedule();
    st.disconnect("a", g);
    run_current(&mut st, "a", false, true);
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.state, PointState::Pending);
    assert_eq!(p.error, "engine crashed; retry 1 of 1: boom");
    // A crash of the retry fails the point for good (default retries = 1).
    st.register(agent("a", 1), &[]);
    st.schedule();
    run_current(&mut st, "a", false, true);
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!((p.state.as_str(), p.attempt), ("failed", 2));
    assert_eq!(p.error, "engine crashed; retry 1 of 1 failed: boom");
}
