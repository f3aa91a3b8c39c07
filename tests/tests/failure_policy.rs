//! End to end: the sweep's `[policy]` against a vllm-sim that dies once 4 requests run at
//! once (`--sim-crash-at-running 4`, exit code 1; the agent starts a fresh engine for the
//! next point). `skip-larger` skips the larger batches after the crash; `retry` runs the
//! crashed point again and fails it once its retries are used up. The points Parquet file
//! is read back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_results::summary::PointSummary;
use fleetbench_tests::{AgentSpec, Cluster, submit, watch_to_end};

const SIM_ARGS: &[&str] = &[
    "--sim-step-ms",
    "8",
    "--sim-step-ms-per-seq",
    "1",
    "--sim-prefill-us-per-token",
    "20",
    "--sim-crash-at-running",
    "4",
];

fn sweep(name: &str, batch_sizes: &str, policy: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
max_num_seqs = 64
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = {batch_sizes}
workloads = [{{ input = 32, output = 8 }}]

[load]
endpoint = "chat"
timeout_s = 600

[policy]
{policy}
point_timeout_s = 60
"#
    )
}

fn points_file(cluster: &Cluster, id: &str) -> PathBuf {
    cluster
        .results
        .join("model=test-org--tiny-model")
        .join("gpus=1")
        .join(format!("{id}.points.parquet"))
}

fn read_points(cluster: &Cluster, id: &str) -> Vec<PointSummary> {
    let mut points = read_point_summaries(&points_file(cluster, id)).unwrap();
    points.sort_by_key(|p| p.meta.point_index);
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_larger_skips_the_batches_above_the_one_that_crashed_the_engine() {
    let cluster = Cluster::start(vec![AgentSpec::sim("crashy", 1, SIM_ARGS)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(
        &mut client,
        &sweep("skip", "[1, 2, 4, 8]", "on_engine_crash = \"skip-larger\""),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(
        (
            status.points_done,
            status.points_failed,
            status.points_skipped
        ),
        (2, 1, 1),
        "{status:?}"
    );

    let points = read_points(&cluster, &id);
    let got: Vec<(u32, &str)> = points
        .iter()
        .map(|p| (p.meta.batch_size, p.meta.state.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(1, "done"), (2, "done"), (4, "failed"), (8, "skipped")],
        "{points:?}"
    );
    let crashed = &points[2];
    assert!(
        crashed
            .meta
            .error
            .contains("engine exited during the point with code 1"),
        "{}",
        crashed.meta.error
    );
    let skipped = &points[3];
    assert_eq!(
        skipped.meta.error,
        "skipped: engine crashed at batch 4 (policy skip-larger)"
    );
    assert_eq!((skipped.completed, skipped.failed), (0, 0));
    assert!(skipped.meta.agent.is_empty(), "{skipped:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_a_crashed_point_on_a_fresh_engine_then_fails_it() {
    let cluster = Cluster::start(vec![AgentSpec::sim("crashy", 1, SIM_ARGS)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(
        &mut client,
        &sweep("retry", "[4]", "on_engine_crash = \"retry\"\nretries = 1"),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!((status.points_done, status.points_failed), (0, 1));
    let point = &status.points[0];
    assert_eq!(
        (point.state.as_str(), point.attempt),
        ("failed", 2),
        "{point:?}"
    );

    let points = read_points(&cluster, &id);
    assert_eq!(points.len(), 1, "{points:?}");
    let p = &points[0];
    assert_eq!(
        (p.meta.state.as_str(), p.meta.attempt),
        ("failed", 2),
        "{p:?}"
    );
    assert!(
        p.meta
            .error
            .starts_with("engine crashed; retry 1 of 1 failed: engine exited during the point"),
        "{}",
        p.meta.error
    );
    // Only the last attempt's requests are stored: all 4 of them, none of attempt 1.
    let requests =
        read_requests(&points_file(&cluster, &id).with_file_name(format!("{id}.requests.parquet")))
            .unwrap();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(requests.iter().all(|(_, attempt, _)| *attempt == 2));
    assert_eq!((p.completed, p.failed), (0, 4));
    cluster.stop().await;
}
