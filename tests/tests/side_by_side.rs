//! End to end: an agent with 4 GPUs and `max_engines = 2` runs two 2-GPU engines at the
//! same time on disjoint GPUs (points of one sweep overlap in time, each engine keeps its
//! GPU set across points), then stops both to run a 4-GPU engine alone on all four.
//! Engines are `vllm-sim` processes; the GPU sets come from the agent's pool and reach the
//! process as `FLEETBENCH_GPU_IDS`; the engine events stored with the results say which
//! engine held which GPUs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use fleetbench_results::read::read_point_summaries;
use fleetbench_results::summary::PointSummary;
use fleetbench_tests::{
    AgentSpec, Cluster, overlapping_pairs, parquet_metadata, submit, watch_to_end,
};

const SIM_ARGS: &[&str] = &[
    "--sim-step-ms",
    "10",
    "--sim-step-ms-per-seq",
    "1",
    "--sim-prefill-us-per-token",
    "20",
];

const SWEEP: &str = r#"
name = "side-by-side"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
startup_timeout_s = 60

[matrix]
gpus = [2, 4]
batch_sizes = [1, 2, 4, 8]
workloads = [{ input = 32, output = 64 }]

[load]
endpoint = "chat"
timeout_s = 600
"#;

fn partition(cluster: &Cluster, id: &str, gpus: u32) -> std::path::PathBuf {
    cluster
        .results
        .join("model=test-org--tiny-model")
        .join(format!("gpus={gpus}"))
        .join(format!("{id}.points.parquet"))
}

/// GPU sets of the engines that became ready, from the events stored with a points file.
fn ready_gpu_sets(file: &std::path::Path) -> Vec<Vec<u64>> {
    let meta = parquet_metadata(file);
    let events: Vec<serde_json::Value> =
        serde_json::from_str(&meta["fleetbench.engine_events"]).unwrap();
    events
        .iter()
        .filter(|e| e["kind"] == "ready")
        .map(|e| {
            e["gpu_ids"]
                .as_array()
                .map(|ids| ids.iter().map(|i| i.as_u64().unwrap()).collect())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_a_host_on_disjoint_gpus_and_a_wide_one_runs_alone() {
    let agent = AgentSpec {
        max_engines: 2,
        engine_commands: std::collections::BTreeMap::new(),
        ..AgentSpec::sim("wide", 4, SIM_ARGS)
    };
    let cluster = Cluster::start(vec![agent]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, SWEEP).await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!((status.points_done, status.points_failed), (8, 0));

    let two = read_point_summaries(&partition(&cluster, &id, 2)).unwrap();
    let four = read_point_summaries(&partition(&cluster, &id, 4)).unwrap();
    assert_eq!((two.len(), four.len()), (4, 4));
    assert!(
        overlapping_pairs(&two) >= 1,
        "no two 2-GPU points ran at the same time: {:?}",
        two.iter()
            .map(|p| (p.meta.started_unix_us, p.meta.finished_unix_us))
            .collect::<Vec<_>>()
    );
    // The 4-GPU points ran alone: no overlap among all eight points but the 2-GPU ones'.
    let all: Vec<PointSummary> = two.iter().chain(four.iter()).cloned().collect();
    assert_eq!(
        overlapping_pairs(&all),
        overlapping_pairs(&two),
        "a 4-GPU point overlapped another point"
    );

    // Two 2-GPU engines on disjoint GPUs, each kept across its points; one 4-GPU engine.
    let ready = ready_gpu_sets(&partition(&cluster, &id, 2));
    assert_eq!(ready.len(), 2, "{ready:?}");
    let sets: BTreeSet<Vec<u64>> = ready.into_iter().collect();
    assert_eq!(sets, BTreeSet::from([vec![0, 1], vec![2, 3]]));
    assert_eq!(
        ready_gpu_sets(&partition(&cluster, &id, 4)),
        vec![vec![0, 1, 2, 3]]
    );
    cluster.stop().await;
}
