//! Persistence tests: the round trip through the store and what a restart resumes.

use super::*;

/// Store round trip: a state written op by op, reopened and restored, is the same
/// state; a point finished but not yet on disk comes back as running on its agent.
#[test]
fn state_survives_a_store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t.toml").unwrap());
    st.set_source("s", SPEC.into(), "t.toml".into());
    st.register(agent("a", 2), &[]);
    st.schedule();
    store.apply(&st.store_ops()).unwrap();
    let current = |st: &State| st.agents["a"].running[0].clone();
    // a finishes its first point and the write lands; its second point's finish
    // (a failure) is not written yet when the controller stops.
    let (_, i0) = current(&st);
    let (job, _) = finish(&mut st, "a", &format!("s/p{i0:03}"), 1, true);
    let durable: Vec<(String, u32)> = job
        .unwrap()
        .acks
        .iter()
        .map(|(_, a)| (a.point_id.clone(), a.attempt))
        .collect();
    st.write_done("s", ["f.parquet".to_string()], &durable);
    store.apply(&st.store_ops()).unwrap();
    let (_, i1) = current(&st);
    let (job, _) = finish(&mut st, "a", &format!("s/p{i1:03}"), 1, false);
    assert!(job.is_some());
    let (_, i2) = current(&st);
    store.apply(&st.store_ops()).unwrap();
    // Nothing changed: nothing to write.
    assert!(st.store_ops().is_empty());
    drop(store);

    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut back = State::default();
    let problems = back.restore(store.load().unwrap());
    assert!(problems.is_empty(), "{problems:?}");
    let (orig, s) = (st.sweep("s").unwrap(), back.sweep("s").unwrap());
    assert_eq!(s.submitted_ms, orig.submitted_ms);
    assert_eq!(s.state, SweepState::Running);
    assert_eq!(s.result_files.iter().collect::<Vec<_>>(), vec!["f.parquet"]);
    let p0 = &s.points[i0];
    assert_eq!((p0.state.as_str(), p0.attempt), ("done", 1));
    assert_eq!(p0.summary, orig.points[i0].summary, "summary restored");
    assert_eq!(p0.host, "a-host");
    assert!(p0.finished.is_some());
    // The failure of the second point is not on disk: it waits for a's resend.
    let p1 = &s.points[i1];
    assert_eq!(p1.state, PointState::Running { agent: "a".into() });
    assert_eq!(p1.attempt, 1);
    assert!(p1.summary.is_none());
    assert_eq!(
        s.points[i2].state,
        PointState::Running { agent: "a".into() }
    );
    let pending = s
        .points
        .iter()
        .filter(|p| p.state == PointState::Pending)
        .count();
    assert_eq!(pending, s.points.len() - 3);
    // Agents come back disconnected; a keeps its points.
    assert!(!back.agents["a"].connected);
    assert_eq!(back.agents["a"].inventory.host, "a-host");
    // a reconnects reporting both and resends its finish: it fails for good, once.
    let active = vec![format!("s/p{i1:03}"), format!("s/p{i2:03}")];
    back.register(agent("a", 2), &active);
    let (job, _) = finish(&mut back, "a", &format!("s/p{i1:03}"), 1, false);
    assert!(job.is_some());
    let s = back.sweep("s").unwrap();
    assert_eq!(
        (s.points[i1].state.as_str(), s.points[i1].attempt),
        ("failed", 1)
    );
    assert_eq!(
        s.points[i2].state,
        PointState::Running { agent: "a".into() }
    );
    assert_eq!(s.points[i2].attempt, 1);
}

#[test]
fn restored_points_of_an_agent_that_never_returns_are_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t.toml").unwrap());
    st.set_source("s", SPEC.into(), "t.toml".into());
    st.register(agent("a", 2), &[]);
    st.schedule();
    // p000 finished but not on disk, then a runs p001.
    let (_, out) = finish(&mut st, "a", "s/p000", 1, true);
    assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
    store.apply(&st.store_ops()).unwrap();
    let mut back = State::default();
    back.restore(store.load().unwrap());
    let states: Vec<&str> = back.sweep("s").unwrap().points[..2]
        .iter()
        .map(|p| p.state.as_str())
        .collect();
    assert_eq!(states, vec!["running", "running"]);
    assert!(back.reap(Duration::from_secs(3600)).is_empty());
    back.reap(Duration::ZERO);
    let p = &back.sweep("s").unwrap().points;
    assert_eq!(
        (p[0].state.as_str(), p[1].state.as_str()),
        ("pending", "pending")
    );
}
