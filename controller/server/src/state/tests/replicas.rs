//! Replicate-strategy tests: one child sweep per matching agent, pinned to it.

use super::*;

fn labelled(name: &str, site: &str) -> pb::Inventory {
    pb::Inventory {
        labels: [("site".to_string(), site.to_string())].into(),
        ..agent(name, 1)
    }
}

#[test]
fn replicate_runs_the_whole_sweep_on_every_matching_agent() {
    let mut st = State::default();
    let spec = spec_with(
        "[1]",
        "[1, 2, 4]",
        "strategy = \"replicate\"\nlabels = { site = \"x\" }",
    );
    // Nobody connected: rejected.
    assert!(matches!(
        st.add_replicas("r", &spec),
        Err(ControllerError::NoMatchingAgent(_))
    ));
    st.register(labelled("a", "x"), &[]);
    st.register(labelled("b", "x"), &[]);
    st.register(labelled("c", "y"), &[]);
    let g = st.register(labelled("d", "x"), &[]);
    st.disconnect("d", g);
    let children = st.add_replicas("r", &spec).unwrap();
    assert_eq!(
        children,
        vec![("r.a".to_string(), 3), ("r.b".to_string(), 3)]
    );
    let status = st.group_status("r", true).unwrap();
    assert_eq!((status.sweep_id.as_str(), status.points_total), ("r", 6));
    assert_eq!(status.state, "running");
    let log = run_to_end(&mut st);
    assert_eq!(log.len(), 6);
    for (agent, pid) in &log {
        assert!(pid.starts_with(&format!("r.{agent}/")), "{agent} ran {pid}");
    }
    assert_eq!(st.group_status("r", false).unwrap().points_done, 6);
    assert!(st.group_status("nope", false).is_none());
    // A child is also addressable by its own id.
    assert_eq!(st.group_status("r.a", false).unwrap().points_total, 3);
}

#[test]
fn cancelling_a_replicate_parent_cancels_every_child() {
    let mut st = State::default();
    let spec = spec_with("[1]", "[1, 2, 4]", "strategy = \"replicate\"");
    st.register(agent("a", 1), &[]);
    st.register(agent("b", 1), &[]);
    st.add_replicas("r", &spec).unwrap();
    assert_eq!(assignments(&st.schedule()).len(), 2);
    assert!(st.cancel_group("nope").is_none());
    let out = st.cancel_group("r").unwrap();
    let stopped: BTreeSet<String> = out
        .iter()
        .filter_map(|(_, m)| match &m.msg {
            Some(CMsg::CancelPoint(c)) => Some(c.point_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        stopped,
        BTreeSet::from(["r.a/p000".to_string(), "r.b/p000".to_string()])
    );
    for child in ["r.a", "r.b"] {
        assert_eq!(st.sweep(child).unwrap().state, SweepState::Cancelled);
    }
    assert!(assignments(&st.schedule()).is_empty());
}

#[test]
fn replica_children_stay_pinned_across_a_store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let text = "name = \"t\"\nmodel = \"m/x\"\n[engine]\nkind = \"vllm\"\nruntime = \"process\"\n\
                [placement]\nstrategy = \"replicate\"\n[matrix]\ngpus = [1]\nbatch_sizes = [1, 2]\n\
                workloads = [{ input = 8, output = 4 }]\n";
    let spec = SweepSpec::parse(text, "r.toml").unwrap();
    let mut st = State::default();
    st.register(agent("a", 1), &[]);
    st.register(agent("b", 1), &[]);
    for (child, _) in st.add_replicas("r", &spec).unwrap() {
        st.set_source(&child, text.into(), "r.toml".into());
    }
    store.apply(&st.store_ops()).unwrap();
    drop(store);
    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut back = State::default();
    let problems = back.restore(store.load().unwrap());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        back.sweep("r.b").unwrap().replica,
        Some(Replica {
            parent: "r".into(),
            agent: "b".into()
        })
    );
    assert_eq!(back.group_status("r", false).unwrap().points_total, 4);
    // Only b is back: it runs its own child, never a's.
    back.register(agent("b", 1), &[]);
    let log = run_to_end(&mut back);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter().all(|(w, p)| w == "b" && p.starts_with("r.b/")),
        "{log:?}"
    );
}
