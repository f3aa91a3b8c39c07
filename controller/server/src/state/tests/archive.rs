//! Archiving tests: a finished, written and stored sweep leaves memory, keeps its counts,
//! and reads back from the store in full.

use super::*;

/// Runs every point of sweep "s" on agent "a" to done with its write landed, committing
/// to `store` as the controller does after each event.
fn finished_and_stored(store: &crate::store::Store) -> State {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t.toml").unwrap());
    st.set_source("s", SPEC.into(), "t.toml".into());
    st.register(agent("a", 2), &[]);
    let mut queue = assignments(&st.schedule());
    store.apply(&st.store_ops()).unwrap();
    while let Some((agent, pid)) = queue.first().cloned() {
        queue.remove(0);
        let (job, out) = finish(&mut st, &agent, &pid, 1, pid != "s/p001");
        queue.extend(assignments(&out));
        let durable: Vec<(String, u32)> = job
            .unwrap()
            .acks
            .iter()
            .map(|(_, a)| (a.point_id.clone(), a.attempt))
            .collect();
        st.write_done("s", ["f.parquet".to_string()], &durable);
        store.apply(&st.store_ops()).unwrap();
    }
    st
}

#[test]
fn a_finished_sweep_leaves_memory_and_reads_back_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut st = finished_and_stored(&store);
    let before = st.sweep("s").unwrap().status(true);
    assert_eq!(before.state, "done");
    assert_eq!((before.points_done, before.points_failed), (3, 1));

    // Not before its time is up.
    assert!(st.archive_finished(Duration::from_secs(3600)).is_empty());
    assert_eq!(st.archive_finished(Duration::ZERO), ["s"]);
    let s = st.sweep("s").unwrap();
    assert!(s.points.is_empty());
    // The counts stay, without points.
    let after = s.status(true);
    assert_eq!(
        (
            after.points_total,
            after.points_done,
            after.points_failed,
            after.state.as_str()
        ),
        (4, 3, 1, "done")
    );
    assert!(after.points.is_empty());
    let (points, _) = st.counts_by_state();
    assert!(
        points.contains(&("done", 3)) && points.contains(&("failed", 1)),
        "{points:?}"
    );
    // Archived once; nothing more to store.
    assert!(st.archive_finished(Duration::ZERO).is_empty());
    assert!(st.store_ops().is_empty());
    // A late resend of one of its points is acknowledged, not an error.
    let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
    assert!(job.is_none());
    assert!(
        out.iter()
            .any(|(a, m)| a == "a" && matches!(m.msg, Some(CMsg::PointAck(_))))
    );

    // Read back from the store, it is the sweep it was: every point with its summary.
    let mut view = State::default();
    let problems = view.restore(crate::store::Loaded {
        sweeps: store.load_sweeps(&["s".to_string()]).unwrap(),
        agents: Vec::new(),
    });
    assert!(problems.is_empty(), "{problems:?}");
    let back = view.sweep("s").unwrap().status(true);
    assert_eq!(back.points, before.points);
    assert_eq!(back.result_files, before.result_files);
}

/// A sweep still writing, or whose last state is not in the store, stays.
#[test]
fn an_unwritten_or_unstored_sweep_is_not_archived() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t.toml").unwrap());
    st.set_source("s", SPEC.into(), "t.toml".into());
    st.register(agent("a", 2), &[]);
    let queue = assignments(&st.schedule());
    run_from(&mut st, queue);
    // Every point ended, but no write has landed.
    assert_eq!(st.sweep("s").unwrap().state, SweepState::Done);
    store.apply(&st.store_ops()).unwrap();
    assert!(st.archive_finished(Duration::ZERO).is_empty());

    let mut st = finished_and_stored(&store);
    // A change the store does not hold yet.
    st.sweep_mut("s").unwrap().bump_sweep();
    assert!(st.archive_finished(Duration::ZERO).is_empty());
    store.apply(&st.store_ops()).unwrap();
    assert_eq!(st.archive_finished(Duration::ZERO), ["s"]);
}
