//! Hard limits on what an agent sends: `PointFinished` batch counts, per-point record
//! buffers, engine events of points the agent does not hold, and sweeps no known agent can
//! run.

use super::*;

fn batch(point: &str, seq: u64, records: usize, error_len: usize) -> pb::RecordBatch {
    pb::RecordBatch {
        point_id: point.into(),
        attempt: 1,
        seq,
        records: (0..records)
            .map(|_| pb::RequestRecord {
                success: true,
                error: "e".repeat(error_len),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn running(limits: PointLimits) -> State {
    let mut st = State {
        limits,
        ..State::default()
    };
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    st.register(agent("a", 2), &[]);
    st.register(agent("b", 2), &[]);
    st.schedule();
    st
}

fn holder(st: &State, idx: usize) -> String {
    match &st.sweep("s").unwrap().points[idx].state {
        PointState::Running { agent } => agent.clone(),
        other => panic!("point {idx} is {other:?}"),
    }
}

#[test]
fn a_point_finished_claiming_2_pow_64_batches_allocates_nothing_and_fails_the_point() {
    let mut st = running(PointLimits::default());
    let a = holder(&st, 0);
    st.record_batch(&a, batch("s/p000", 0, 1, 0));
    let (job, out) = st.point_finished(
        &a,
        pb::PointFinished {
            point_id: "s/p000".into(),
            attempt: 1,
            batches: u64::MAX,
            ok: true,
            ..Default::default()
        },
    );
    // Over the batch cap: the point fails with the reason (written, acknowledged).
    let job = job.expect("a write of the failed point");
    assert!(!out.is_empty() || !job.acks.is_empty());
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.state, PointState::Failed);
    assert!(p.error.contains("record batches"), "{}", p.error);
    assert!(p.batches.is_empty());

    // Below the cap but more than were received: it waits for the resend, listing nothing.
    let b = holder(&st, 1);
    st.record_batch(&b, batch("s/p001", 0, 1, 0));
    let (job, out) = st.point_finished(
        &b,
        pb::PointFinished {
            point_id: "s/p001".into(),
            attempt: 1,
            batches: 999_999,
            ok: true,
            ..Default::default()
        },
    );
    assert!(job.is_none() && out.is_empty());
    assert!(matches!(
        st.sweep("s").unwrap().points[1].state,
        PointState::Running { .. }
    ));
}

#[test]
fn records_over_the_per_point_caps_are_dropped_and_the_point_fails() {
    let limits = PointLimits {
        max_bytes: 64 << 10,
        max_records: 100,
        ..PointLimits::default()
    };
    let mut st = running(limits);
    let a = holder(&st, 0);
    // 10 batches of 1 KiB records: the eighth passes 64 KiB.
    for seq in 0..10 {
        st.record_batch(&a, batch("s/p000", seq, 8, 1024));
        let p = &st.sweep("s").unwrap().points[0];
        assert!(p.buffered.bytes <= limits.max_bytes, "{:?}", p.buffered);
    }
    let p = &st.sweep("s").unwrap().points[0];
    assert!(p.batches.is_empty(), "records dropped once over the cap");
    assert!(
        p.overflow
            .as_deref()
            .unwrap_or("")
            .contains("MiB of records")
    );
    let (job, _) = st.point_finished(
        &a,
        pb::PointFinished {
            point_id: "s/p000".into(),
            attempt: 1,
            batches: 10,
            ok: true,
            ..Default::default()
        },
    );
    let rows = job
        .and_then(|j| j.rows)
        .expect("the failed point's summary");
    assert!(rows.records.is_empty());
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.state, PointState::Failed);
    assert!(p.error.starts_with("controller limit:"), "{}", p.error);

    // Record count cap.
    let b = holder(&st, 1);
    st.record_batch(&b, batch("s/p001", 0, 60, 0));
    st.record_batch(&b, batch("s/p001", 1, 60, 0));
    let p = &st.sweep("s").unwrap().points[1];
    assert!(
        p.overflow
            .as_deref()
            .unwrap_or("")
            .contains("more than 100 records")
    );
}

#[test]
fn records_and_events_for_points_the_agent_does_not_hold_are_dropped() {
    let mut st = running(PointLimits::default());
    let a = holder(&st, 0);
    let b = holder(&st, 2);
    assert_ne!(a, b);
    // b writes into a's point: ignored.
    st.record_batch(&b, batch("s/p000", 0, 5, 0));
    assert!(st.sweep("s").unwrap().points[0].batches.is_empty());
    st.engine_event(
        &b,
        pb::EngineEvent {
            point_id: "s/p000".into(),
            kind: "exited".into(),
            message: "forged".into(),
            ..Default::default()
        },
    );
    let p = &st.sweep("s").unwrap().points[0];
    assert!(p.engine_events.is_empty());
    assert!(!p.engine_crashed);
    // b finishing a's point changes nothing.
    let (job, _) = finish(&mut st, &b, "s/p000", 1, true);
    assert!(job.is_none());
    assert!(matches!(
        st.sweep("s").unwrap().points[0].state,
        PointState::Running { .. }
    ));
    // The holder's own events are kept, capped and cut.
    for i in 0..300 {
        st.engine_event(
            &a,
            pb::EngineEvent {
                point_id: "s/p000".into(),
                kind: if i == 0 {
                    "starting".into()
                } else {
                    "ready".into()
                },
                message: "x".repeat(10_000),
                log_tail: vec!["l".into(); 1000],
                ..Default::default()
            },
        );
    }
    let p = &st.sweep("s").unwrap().points[0];
    assert_eq!(p.engine_events.len(), 256);
    assert_eq!(p.engine_events[0].kind, "starting");
    assert!(p.engine_events[1].message.len() < 4200);
    assert_eq!(p.engine_events[1].log_tail.len(), 200);
}

#[test]
fn an_agent_cannot_store_an_unbounded_inventory_or_state() {
    let mut st = State::default();
    let mut inv = agent("big", 5000);
    inv.engine_images = vec!["i".repeat(10_000); 5000];
    inv.labels = (0..1000).map(|i| (format!("k{i}"), "v".into())).collect();
    inv.host = "h".repeat(100_000);
    st.register(inv, &[]);
    st.heartbeat(
        "big",
        &pb::Heartbeat {
            state: "s".repeat(100_000),
            ..Default::default()
        },
    );
    let a = &st.agents["big"];
    assert_eq!(a.inventory.gpus.len(), 256);
    assert_eq!(a.inventory.engine_images.len(), 1024);
    assert!(a.inventory.engine_images[0].len() < 300);
    assert_eq!(a.inventory.labels.len(), 64);
    assert!(a.inventory.host.len() < 300);
    assert!(a.state.len() < 100);
}

#[test]
fn sweeps_no_known_agent_can_run_are_unschedulable() {
    let mut st = State::default();
    // No agent known yet: the sweep may wait for one.
    assert_eq!(st.unschedulable(&spec_with("[1000]", "[1]", "")), None);
    st.register(agent("a", 2), &[]);
    st.register(agent("b", 8), &[]);
    assert_eq!(st.unschedulable(&spec_with("[1, 8]", "[1]", "")), None);
    let why = st.unschedulable(&spec_with("[1000]", "[1]", "")).unwrap();
    assert!(why.contains("1000 GPUs"), "{why}");
    let why = st
        .unschedulable(&spec_with("[1]", "[1]", "agents = [\"nobody\"]"))
        .unwrap();
    assert!(why.contains("no known agent matches"), "{why}");
    // Replicate: each child runs on its own agent, so every target must fit (no target at
    // all is `add_replicas`' NoMatchingAgent).
    assert_eq!(
        st.unschedulable(&spec_with(
            "[1]",
            "[1]",
            "strategy = \"replicate\"\nagents = [\"x\"]"
        )),
        None
    );
    let why = st
        .unschedulable(&spec_with("[4]", "[1]", "strategy = \"replicate\""))
        .unwrap();
    assert!(why.contains("a (2 GPUs)"), "{why}");
}

#[test]
fn status_pages_cover_every_point_once() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    let first = st.group_status_page("s", 0, 3).unwrap();
    assert_eq!(first.points_total, 4);
    assert_eq!(first.points.len(), 3);
    assert_eq!(first.next_page_token, "3");
    let last = st.group_status_page("s", 3, 3).unwrap();
    assert_eq!(last.points.len(), 1);
    assert_eq!(last.points[0].point_id, "s/p003");
    assert!(last.next_page_token.is_empty());
    assert!(st.group_status_page("s", 99, 3).unwrap().points.is_empty());
    assert!(st.group_status_page("nope", 0, 3).is_none());
}
