//! Partition write tests: a failed results write shows on its points and, once the sweep
//! has ended and the writes kept failing, on the sweep; a write that lands clears it.

use super::*;

#[test]
fn failed_writes_show_until_a_write_lands() {
    let mut st = State::default();
    st.add_sweep("s".into(), spec_with("[1]", "[1, 2]", ""));
    st.register(agent("a", 1), &[]);
    st.schedule();
    let (first, _) = finish(&mut st, "a", "s/p000", 1, true);
    let first = first.unwrap().rows.unwrap().key();
    st.write_failed(
        "s",
        std::slice::from_ref(&first),
        "Not a directory (os error 20)",
    );
    let status = st.group_status("s", true).unwrap();
    assert_eq!(status.points[0].state, WRITE_FAILED);
    assert_eq!(
        status.points[0].error,
        "results write failed: Not a directory (os error 20) (1 tries, retrying)"
    );
    assert_eq!((status.points_done, status.points_failed), (0, 0));
    // The other point still runs: so does the sweep.
    assert_eq!(status.state, "running");
    let once = std::slice::from_ref(&first);
    st.write_failed("s", once, "Not a directory (os error 20)");
    st.write_failed("s", once, "Not a directory (os error 20)");
    assert_eq!(st.group_status("s", false).unwrap().state, "running");
    let (second, _) = finish(&mut st, "a", "s/p001", 1, false);
    let second = second.unwrap().rows.unwrap().key();
    let keys = [first.clone(), second.clone()];
    // Every point has ended and the first point's write failed three times, but the last
    // point's write has not been tried yet: writing, not failed.
    assert_eq!(
        st.group_status("s", true).unwrap().points[1].state,
        "failed"
    );
    assert_eq!(st.group_status("s", false).unwrap().state, "writing");
    // Once every pending write has failed (one of them three times): failed.
    st.write_failed("s", &keys, "Not a directory (os error 20)");
    let status = st.group_status("s", true).unwrap();
    assert_eq!(status.state, SWEEP_WRITE_FAILED, "{status:?}");
    assert!(status.points.iter().all(|p| p.state == WRITE_FAILED));
    // The failed point keeps its own error behind the write's.
    assert!(
        status.points[1]
            .error
            .ends_with("(1 tries, retrying); boom"),
        "{status:?}"
    );
    // A retry lands: the points are what their attempts made of them again.
    st.write_done("s", ["f".to_string()], &keys);
    st.write_done("s", [], &[]);
    let status = st.group_status("s", true).unwrap();
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(
        status
            .points
            .iter()
            .map(|p| (p.state.as_str(), p.error.as_str()))
            .collect::<Vec<_>>(),
        vec![("done", ""), ("failed", "boom")]
    );
    assert_eq!((status.points_done, status.points_failed), (1, 1));
}

#[test]
fn a_write_failure_of_another_attempt_or_sweep_changes_nothing() {
    let mut st = State::default();
    st.add_sweep("s".into(), spec_with("[1]", "[1]", ""));
    st.register(agent("a", 1), &[]);
    st.schedule();
    let _ = finish(&mut st, "a", "s/p000", 1, true);
    st.write_failed("s", &[("s/p000".to_string(), 2)], "x");
    st.write_failed("nope", &[("s/p000".to_string(), 1)], "x");
    let status = st.group_status("s", true).unwrap();
    assert_eq!(status.points[0].state, "done");
}
