//! Workload kinds end to end (controller, agent, vllm-sim as real processes): length
//! distributions reach the server with each request exact to its own drawn length, and
//! shared-prefix prompts hit the simulator's prefix cache when prefix caching is on and
//! never when it is off, with the engine's counters stored in the points file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{AgentSpec, Cluster, submit, watch_to_end};

/// The simulator's performance model, 50x faster than real time.
const SIM: &[&str] = &["--sim-speedup", "50"];

fn sweep(name: &str, engine_extra: &str, load: &str, workload: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test/workloads"
[engine]
kind = "vllm"
runtime = "process"
max_model_len = 2048
block_size = 16
{engine_extra}
[matrix]
gpus = [1]
batch_sizes = [8]
workloads = [{workload}]
[load]
seed = 21
endpoint = "completions"
{load}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_distributions_and_shared_prefixes_reach_the_server() {
    let cluster = Cluster::start(vec![AgentSpec::sim("shaper", 1, SIM)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let dir = partition_dir(&cluster.results, "test/workloads", 1);

    // Normal input lengths (mean 200, sd 40) and uniform-ish outputs: 400 requests, 8 in
    // flight.
    let id = submit(
        &mut client,
        &sweep(
            "dist",
            "",
            "mode = \"concurrency\"\nrequests = 400",
            "{ input = 200, output = 16, dist = \"normal\", input_spread = 40, output_spread = 4 }",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    assert_eq!(points[0].meta.workload, "normal 200±40/16±4");
    assert_eq!(points[0].input_len_mismatches, 0, "{:?}", points[0]);
    assert_eq!(points[0].output_len_mismatches, 0, "{:?}", points[0]);
    let records = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    assert_eq!(records.len(), 400);
    // The server counted each prompt at its own drawn length.
    let inputs: Vec<f64> = records
        .iter()
        .map(|(_, _, r)| {
            assert_eq!(r.input_tokens, Some(r.target_input_tokens), "{r:?}");
            f64::from(r.input_tokens.unwrap())
        })
        .collect();
    let n = inputs.len() as f64;
    let mean = inputs.iter().sum::<f64>() / n;
    let sd = (inputs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // Standard error of the mean 40/√400 = 2; of the deviation about 1.4: 3 of each.
    assert!((mean - 200.0).abs() < 6.0, "mean {mean}");
    assert!((sd - 40.0).abs() < 4.5, "sd {sd}");
    let outputs: std::collections::BTreeSet<u32> = records
        .iter()
        .map(|(_, _, r)| r.output_tokens.unwrap())
        .collect();
    assert!(outputs.len() >= 8, "{outputs:?}");

    // Shared prefixes: 2 groups x 64 tokens, 96-token prompts, one burst of 8. With
    // caching on, the first request of each group computes its prefix and the six others
    // find its 4 full blocks of 16 tokens cached: 6 x 64 = 384 hit tokens of 8 x 96 = 768
    // looked up. (A suffix that happens to start like another's cannot add a fifth
    // block: that needs 80 shared tokens.)
    let workload = "{ input = 96, output = 8, prefix_groups = 2, prefix_tokens = 64 }";
    let mut hits = Vec::new();
    for caching in [true, false] {
        let id = submit(
            &mut client,
            &sweep(
                &format!("prefix-{caching}"),
                &format!("prefix_caching = {caching}"),
                "",
                workload,
            ),
        )
        .await;
        let status = watch_to_end(&mut client, &id).await;
        assert_eq!(status.state, "done", "{status:?}");
        let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
        let p = &points[0];
        assert_eq!(p.meta.workload, "96/8 prefix 2x64");
        assert_eq!(p.input_len_mismatches, 0, "{p:?}");
        hits.push((p.server.prefix_cache_queries, p.server.prefix_cache_hits));
    }
    // Without caching vLLM looks nothing up (and neither does the simulator).
    assert_eq!(
        hits,
        vec![(Some(768.0), Some(384.0)), (Some(0.0), Some(0.0))]
    );
    cluster.stop().await;
}
