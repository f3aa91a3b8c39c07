//! Unit tests of the state, by the submodule they exercise, and the helpers they share:
//! a small sweep spec, agents, and running points to their end.

mod archive;
mod lifecycle;
mod limits;
mod load_failures;
mod partition;
mod persistence;
mod placement;
mod replicas;
mod search;

use std::collections::BTreeSet;
use std::time::Duration;

use fleetbench_proto::pb::{self, controller_message::Msg as CMsg};

use super::*;
use crate::error::ControllerError;

const SPEC: &str = r#"
name = "t"
model = "m/x"
[engine]
kind = "vllm"
runtime = "process"
[matrix]
gpus = [1, 2]
batch_sizes = [1, 2]
workloads = [{ input = 8, output = 4 }]
"#;

fn agent(name: &str, gpus: usize) -> pb::Inventory {
    pb::Inventory {
        agent_name: name.into(),
        host: format!("{name}-host"),
        gpus: (0..gpus)
            .map(|i| pb::Gpu {
                index: i as u32,
                vendor: "sim".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn assignments(out: &Outgoing) -> Vec<(String, String)> {
    out.iter()
        .filter_map(|(a, m)| match &m.msg {
            Some(CMsg::Assignment(x)) => {
                Some((a.clone(), x.point.as_ref().unwrap().point_id.clone()))
            }
            _ => None,
        })
        .collect()
}

fn finish(
    st: &mut State,
    agent: &str,
    point_id: &str,
    attempt: u32,
    ok: bool,
) -> (Option<WriteJob>, Outgoing) {
    st.point_finished(
        agent,
        pb::PointFinished {
            point_id: point_id.into(),
            attempt,
            ok,
            error: if ok { String::new() } else { "boom".into() },
            ..Default::default()
        },
    )
}

fn spec_with(matrix_gpus: &str, batches: &str, placement: &str) -> SweepSpec {
    let text = format!(
        "name = \"t\"\nmodel = \"m/x\"\n[engine]\nkind = \"vllm\"\nruntime = \"process\"\n\
         [placement]\n{placement}\n[matrix]\ngpus = {matrix_gpus}\nbatch_sizes = {batches}\n\
         workloads = [{{ input = 8, output = 4 }}]\n"
    );
    SweepSpec::parse(&text, "t").unwrap()
}

/// Runs the state machine until nothing is left: every assignment finishes at once,
/// in the order sent. Returns (agent, point id) in assignment order.
fn run_to_end(st: &mut State) -> Vec<(String, String)> {
    let queue = assignments(&st.schedule());
    run_from(st, queue)
}

/// [`run_to_end`] from assignments already made.
fn run_from(st: &mut State, mut queue: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut log = Vec::new();
    while let Some((agent, pid)) = queue.first().cloned() {
        queue.remove(0);
        log.push((agent.clone(), pid.clone()));
        let (_, out) = finish(st, &agent, &pid, 1, true);
        queue.extend(assignments(&out));
    }
    log
}
