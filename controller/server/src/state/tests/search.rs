//! Search sweeps: probes added one at a time per group, stored with their place in the
//! matrix, and resumed after a restart.

use super::*;

const SEARCH: &str = r#"
name = "s"
model = "m/x"
[engine]
kind = "vllm"
runtime = "process"
[matrix]
gpus = [1]
workloads = [{ input = 8, output = 4 }, { input = 16, output = 4 }]
[search]
goal = "throughput"
min = 1
max = 8
"#;

fn batch_sizes(st: &State) -> Vec<(u32, u32, String)> {
    st.sweep("s")
        .unwrap()
        .points
        .iter()
        .map(|p| {
            (
                p.planned.workload_index,
                p.planned.batch_size,
                p.state.as_str().to_string(),
            )
        })
        .collect()
}

/// Finishes the one point `agent` runs; returns its id.
fn finish_current(st: &mut State, agent: &str) -> String {
    let (sid, idx) = st.agents[agent].running[0].clone();
    let id = st.sweep(&sid).unwrap().points[idx].point_id.clone();
    let attempt = st.sweep(&sid).unwrap().points[idx].attempt;
    let (job, _) = finish(st, agent, &id, attempt, true);
    let durable: Vec<(String, u32)> = job
        .unwrap()
        .acks
        .iter()
        .map(|(_, a)| (a.point_id.clone(), a.attempt))
        .collect();
    st.write_done(&sid, ["f.parquet".to_string()], &durable);
    id
}

#[test]
fn a_search_adds_each_groups_next_probe_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SEARCH, "s.toml").unwrap());
    st.set_source("s", SEARCH.into(), "s.toml".into());
    // One first probe per workload.
    assert_eq!(
        batch_sizes(&st),
        vec![(0, 1, "pending".into()), (1, 1, "pending".into())]
    );
    st.register(agent("a", 1), &[]);
    st.schedule();
    // A probe without records delivers 0 tok/s, which does not fall below the last:
    // the load doubles.
    finish_current(&mut st, "a");
    let after_one = batch_sizes(&st);
    assert_eq!(after_one.len(), 3, "{after_one:?}");
    assert_eq!(
        after_one[2].1, 2,
        "the finished group's next probe: {after_one:?}"
    );
    store.apply(&st.store_ops()).unwrap();
    drop(store);

    // Restart: the added probe comes back from the store with its workload.
    let store = crate::store::Store::open(dir.path()).unwrap();
    let mut back = State::default();
    let problems = back.restore(store.load().unwrap());
    assert!(problems.is_empty(), "{problems:?}");
    let restored = batch_sizes(&back);
    assert_eq!(restored.len(), 3);
    assert_eq!(
        (restored[2].0, restored[2].1),
        (after_one[2].0, after_one[2].1)
    );
    assert_eq!(
        back.sweep("s").unwrap().points[2].planned.workload,
        back.sweep("s").unwrap().points[usize::try_from(after_one[2].0).unwrap()]
            .planned
            .workload
    );

    // Run it to the end: each group probes 1, 2, 4, 8 and stops at max.
    back.register(agent("a", 1), &[]);
    back.schedule();
    while !back.agents["a"].running.is_empty() {
        finish_current(&mut back, "a");
    }
    let s = back.sweep("s").unwrap();
    assert_eq!(s.state, SweepState::Done);
    let mut per_group: Vec<(u32, u32)> = s
        .points
        .iter()
        .map(|p| (p.planned.workload_index, p.planned.batch_size))
        .collect();
    per_group.sort_unstable();
    assert_eq!(
        per_group,
        vec![
            (0, 1),
            (0, 2),
            (0, 4),
            (0, 8),
            (1, 1),
            (1, 2),
            (1, 4),
            (1, 8)
        ]
    );
    let results = super::super::search::search_results(s);
    assert_eq!(results.len(), 2);
    for r in &results {
        assert_eq!(
            (r.best, r.above, r.finished, r.probes),
            (Some(8.0), None, true, 4)
        );
    }
}

#[test]
fn a_cancelled_search_adds_no_probe() {
    let mut st = State::default();
    st.add_sweep("s".into(), SweepSpec::parse(SEARCH, "s.toml").unwrap());
    st.register(agent("a", 1), &[]);
    st.schedule();
    st.cancel("s");
    let (sid, idx) = st.agents["a"].running[0].clone();
    let id = st.sweep(&sid).unwrap().points[idx].point_id.clone();
    finish(&mut st, "a", &id, 1, true);
    assert_eq!(st.sweep("s").unwrap().points.len(), 2);
}
