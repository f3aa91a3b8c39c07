//! Placement tests: GPU fit, engine slots, warm engines, placement filters, spread
//! and round-robin.

use super::*;

#[test]
fn points_go_to_agents_with_enough_gpus_and_engines_stay_warm() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    st.register(agent("a", 1), &[]);
    st.register(agent("b", 2), &[]);
    let a = assignments(&st.schedule());
    // a holds the 1-GPU group; b, free, takes the 2-GPU group nobody holds.
    assert_eq!(
        a,
        vec![("a".into(), "s/p000".into()), ("b".into(), "s/p002".into())]
    );
    // a finishes p000 and keeps its warm 1-GPU engine.
    let (job, out) = finish(&mut st, "a", "s/p000", 1, true);
    assert_eq!(job.unwrap().gpus, 1);
    assert_eq!(assignments(&out), vec![("a".into(), "s/p001".into())]);
    // a finishes p001: only 2-GPU points are left, too big for it; a idles.
    let (_, out) = finish(&mut st, "a", "s/p001", 1, true);
    assert!(assignments(&out).is_empty());
    let (_, out) = finish(&mut st, "b", "s/p002", 1, true);
    assert_eq!(assignments(&out), vec![("b".into(), "s/p003".into())]);
}

#[test]
fn an_agent_with_max_engines_runs_points_side_by_side_within_its_gpus() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SPEC, "t").unwrap());
    st.register(
        pb::Inventory {
            max_engines: 2,
            ..agent("w", 3)
        },
        &[],
    );
    // Two 1-GPU points at once (two engine slots), not a third.
    assert_eq!(
        assignments(&st.schedule()),
        vec![("w".into(), "s/p000".into()), ("w".into(), "s/p001".into())]
    );
    assert_eq!(st.agent_statuses()[0].current_point, "s/p000,s/p001");
    // p000 ends: 2 GPUs free, so a 2-GPU point runs beside p001.
    let (_, out) = finish(&mut st, "w", "s/p000", 1, true);
    assert_eq!(assignments(&out), vec![("w".into(), "s/p002".into())]);
    // p001 ends: 1 GPU free is too few for the last 2-GPU point.
    let (_, out) = finish(&mut st, "w", "s/p001", 1, true);
    assert!(assignments(&out).is_empty());
    let (_, out) = finish(&mut st, "w", "s/p002", 1, true);
    assert_eq!(assignments(&out), vec![("w".into(), "s/p003".into())]);
}

#[test]
fn placement_filters_agents() {
    let spec = SPEC.replace("[matrix]", "[placement]\nagents = [\"b\"]\n[matrix]");
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(&spec, "t").unwrap());
    st.register(agent("a", 2), &[]);
    st.register(agent("b", 2), &[]);
    let a = assignments(&st.schedule());
    assert_eq!(a, vec![("b".into(), "s/p000".into())]);
}

fn gpus_of(st: &State, pid: &str) -> u32 {
    st.sweeps
        .iter()
        .flat_map(|s| s.points.iter())
        .find(|p| p.point_id == pid)
        .unwrap()
        .planned
        .gpus
}

#[test]
fn spread_shares_a_sweep_and_keeps_engine_groups_on_one_agent() {
    let mut st = State::default();
    st.add_sweep("s".into(), spec_with("[1, 2]", "[1, 2, 4, 8]", ""));
    st.register(agent("a", 2), &[]);
    st.register(agent("b", 2), &[]);
    let log = run_to_end(&mut st);
    assert_eq!(log.len(), 8, "{log:?}");
    let groups = |who: &str| -> BTreeSet<u32> {
        log.iter()
            .filter(|(a, _)| a == who)
            .map(|(_, p)| gpus_of(&st, p))
            .collect()
    };
    // Both hosts work, each on one engine configuration: 2 engine starts, not 8.
    assert_eq!(groups("a"), BTreeSet::from([1]), "{log:?}");
    assert_eq!(groups("b"), BTreeSet::from([2]), "{log:?}");
    assert!(
        st.sweep("s")
            .unwrap()
            .points
            .iter()
            .all(|p| p.state == PointState::Done)
    );
}

#[test]
fn spread_splits_one_group_when_no_other_is_free() {
    let mut st = State::default();
    st.add_sweep("s".into(), spec_with("[1]", "[1, 2, 4, 8]", ""));
    st.register(agent("a", 1), &[]);
    st.register(agent("b", 1), &[]);
    let a = assignments(&st.schedule());
    assert_eq!(
        a,
        vec![("a".into(), "s/p000".into()), ("b".into(), "s/p001".into())]
    );
    let log = run_from(&mut st, a);
    assert_eq!(log.len(), 4);
    assert!(log.iter().any(|(w, _)| w == "a") && log.iter().any(|(w, _)| w == "b"));
}

#[test]
fn free_agents_serve_running_sweeps_round_robin() {
    let mut st = State::default();
    st.add_sweep("s1".into(), spec_with("[1, 2]", "[1, 2]", ""));
    st.add_sweep("s2".into(), spec_with("[1]", "[1, 2]", ""));
    st.register(agent("a", 2), &[]);
    st.register(agent("b", 2), &[]);
    st.register(agent("c", 2), &[]);
    // Strict FIFO would give s1 both a and b; round-robin gives s2 the second agent.
    assert_eq!(
        assignments(&st.schedule()),
        vec![
            ("a".into(), "s1/p000".into()),
            ("b".into(), "s2/p000".into()),
            ("c".into(), "s1/p002".into()),
        ]
    );
}

#[test]
fn points_only_go_to_agents_with_enough_gpus() {
    let mut st = State::default();
    st.add_sweep("s".into(), spec_with("[4]", "[1, 2]", ""));
    st.register(agent("one", 1), &[]);
    st.register(agent("none", 0), &[]);
    assert!(assignments(&st.schedule()).is_empty());
    st.register(agent("four", 4), &[]);
    let log = run_to_end(&mut st);
    assert!(log.iter().all(|(a, _)| a == "four"), "{log:?}");
    assert_eq!(log.len(), 2);
    // A GPU-less (simulated) agent counts as one GPU.
    st.add_sweep("t".into(), spec_with("[1]", "[1]", ""));
    let a = assignments(&st.schedule());
    assert_eq!(a.len(), 1, "{a:?}");
}
