//! End to end: the seed's failure, reproduced by a whole sweep. vllm-sim simulates
//! DeepSeek-R1-Distill-Llama-8B on one Arc Pro B60 (`--sim-gpu b60 --sim-oom-crash`) with the
//! seed's vLLM flags (`--gpu-memory-utilization 0.9 --block-size 64
//! --max-num-batched-tokens 8192 --max-model-len 4096`), 1024 in / 512 out, batch 1..64 under
//! policy `continue`: batch ≤ 16 succeed, batch 32 and 64 end in an engine crash (exit code 1,
//! vLLM's EngineCore out-of-memory lines), each on its own fresh engine. Simulated time runs
//! 400× faster than real time (`--sim-speedup`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fleetbench_results::read::read_point_summaries;
use fleetbench_tests::{AgentSpec, Cluster, submit, watch_to_end};

const SIM_ARGS: &[&str] = &[
    "--sim-gpu",
    "b60",
    "--sim-oom-crash",
    "--sim-speedup",
    "400",
];

const MODEL: &str = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B";

const SWEEP: &str = r#"
name = "seed-b60"
model = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 4096
gpu_memory_utilization = 0.9
block_size = 64
max_num_batched_tokens = 8192
enforce_eager = false
startup_timeout_s = 120

[matrix]
gpus = [1]
batch_sizes = [1, 2, 4, 8, 16, 32, 64]
workloads = [{ input = 1024, output = 512 }]

[load]
endpoint = "chat"
timeout_s = 600

[policy]
on_engine_crash = "continue"
point_timeout_s = 300
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn battlemage_sweep_with_the_seed_flags_crashes_from_batch_32_and_not_below() {
    let cluster = Cluster::start(vec![AgentSpec::sim("b60-host", 1, SIM_ARGS)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, SWEEP).await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(
        (status.points_done, status.points_failed),
        (5, 2),
        "{status:?}"
    );

    let file = cluster
        .results
        .join(format!("model={}", MODEL.replace('/', "--")))
        .join("gpus=1")
        .join(format!("{id}.points.parquet"));
    let mut points = read_point_summaries(&file).unwrap();
    points.sort_by_key(|p| p.meta.batch_size);
    let states: Vec<(u32, &str)> = points
        .iter()
        .map(|p| (p.meta.batch_size, p.meta.state.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, "done"),
            (2, "done"),
            (4, "done"),
            (8, "done"),
            (16, "done"),
            (32, "failed"),
            (64, "failed"),
        ],
        "{points:?}"
    );
    for p in &points {
        if p.meta.batch_size <= 16 {
            assert_eq!((p.completed, p.failed), (p.meta.batch_size, 0));
        } else {
            assert!(
                p.meta
                    .error
                    .contains("engine exited during the point with code 1"),
                "batch {}: {}",
                p.meta.batch_size,
                p.meta.error
            );
            assert_eq!(p.completed, 0, "batch {}: {p:?}", p.meta.batch_size);
        }
    }
    cluster.stop().await;
}
