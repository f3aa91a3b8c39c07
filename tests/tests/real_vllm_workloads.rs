//! Workloads against real `vllm serve` (vLLM 0.32's CPU build, SmolLM2-135M-Instruct):
//! a ShareGPT-style dataset shipped in the repo is sent verbatim (vLLM's own counts match
//! the agent's), and a shared-prefix workload shows vLLM's own prefix-cache counters
//! hitting with `prefix_caching = true` and not with `false`.
//!
//! Needs `tests/engines/setup-vllm.sh` to have run (the README's test command runs it):
//! without it the test fails with that instruction; it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{AgentSpec, Cluster, submit, vllm_install, watch_to_end};

const MODEL: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

/// `caching`: the engine's prefix caching; `endpoint`, `workload`: the load.
fn sweep(name: &str, caching: bool, endpoint: &str, workload: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "{MODEL}"

[engine]
kind = "vllm"
runtime = "process"
served_model_name = "smol"
max_model_len = 1024
max_num_batched_tokens = 2048
max_num_seqs = 16
block_size = 32
enforce_eager = true
prefix_caching = {caching}
startup_timeout_s = 900

[matrix]
gpus = [1]
batch_sizes = [8]
workloads = [{workload}]

[load]
mode = "burst"
endpoint = "{endpoint}"
timeout_s = 600
seed = 7
"#
    )
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/datasets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_vllm_serves_a_dataset_verbatim_and_counts_prefix_cache_hits() {
    let (bin, model_dir) = vllm_install();
    let agent = AgentSpec {
        vllm_command: vec![bin, "serve".into()],
        model_paths: BTreeMap::from([(MODEL.to_string(), model_dir)]),
        metrics_interval_ms: 250,
        gpu_model: "cpu".into(),
        dataset_dirs: vec![fixtures()],
        ..AgentSpec::sim("cpu-host", 1, &[])
    };
    let cluster = Cluster::start(vec![agent]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let dir = partition_dir(&cluster.results, MODEL, 1);

    // The dataset: 8 of the 12 conversations, chat endpoint, output lengths from the
    // replies as vLLM's ShareGPT sampling does.
    let id = submit(
        &mut client,
        &sweep(
            "real-vllm-sharegpt",
            false,
            "chat",
            "{ dataset = \"sharegpt-small.json\" }",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    let p = &points[0];
    assert_eq!((p.completed, p.failed), (8, 0), "{p:?}");
    // vLLM counted every prompt as the agent did, and generated every reply's length.
    assert_eq!(
        (p.input_len_mismatches, p.output_len_mismatches),
        (0, 0),
        "{p:?}"
    );
    assert_eq!(p.meta.data_skipped, 1, "the single-turn conversation");
    assert_eq!(p.meta.data_sha256.len(), 64);
    let rows = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    assert_eq!(rows.len(), 8);
    for (_, _, r) in &rows {
        assert_eq!(r.input_tokens, Some(r.target_input_tokens), "{r:?}");
        assert_eq!(r.output_tokens, Some(r.target_output_tokens), "{r:?}");
    }
    // The questions are 36 to 43 tokens with the chat template: several lengths, not
    // one synthetic length.
    let lengths: std::collections::BTreeSet<u32> =
        rows.iter().map(|(_, _, r)| r.target_input_tokens).collect();
    assert!(lengths.len() >= 4, "distinct questions: {lengths:?}");

    // Shared prefixes: 2 groups x 128 tokens in 160-token prompts, a burst of 8, blocks
    // of 32. With caching, the six requests that follow their group's first find at
    // least the prefix's 4 blocks cached: 6 x 128 tokens (more where the chat template's
    // own tokens before the prefix complete a further block).
    let workload = "{ input = 160, output = 4, prefix_groups = 2, prefix_tokens = 128 }";
    let mut seen = Vec::new();
    for caching in [true, false] {
        let id = submit(
            &mut client,
            &sweep(
                &format!("real-vllm-prefix-{caching}"),
                caching,
                "completions",
                workload,
            ),
        )
        .await;
        let status = watch_to_end(&mut client, &id).await;
        assert_eq!(status.state, "done", "{status:?}");
        let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
        let p = &points[0];
        assert_eq!((p.completed, p.input_len_mismatches), (8, 0), "{p:?}");
        eprintln!(
            "prefix caching {caching}: queries {:?}, hits {:?}, TTFT p50 {:?} s",
            p.server.prefix_cache_queries, p.server.prefix_cache_hits, p.ttft_s.p50
        );
        seen.push((
            p.server
                .prefix_cache_queries
                .expect("vLLM reports prefix cache queries"),
            p.server
                .prefix_cache_hits
                .expect("vLLM reports prefix cache hits"),
        ));
    }
    // With caching vLLM looked up every prompt token (8 x 160) and found exactly the six
    // followers' 4-block prefixes (6 x 128; SmolLM2 adds no BOS token to completions, so
    // the prefix starts the first block). Without, it looks nothing up (seen here: TTFT
    // p50 6.2 s with caching, 15.0 s without).
    let (on, off) = (seen[0], seen[1]);
    assert_eq!(on, (8.0 * 160.0, 6.0 * 128.0), "with caching");
    assert_eq!(off, (0.0, 0.0), "without caching");
    cluster.stop().await;
}
