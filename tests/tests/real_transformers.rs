//! A sweep against a real engine that is not vLLM: Hugging Face `transformers serve
//! --continuous-batching` (transformers 5.19 from the vLLM CPU environment that
//! `tests/engines/setup-vllm.sh` installs) on SmolLM2-135M-Instruct, started and stopped by
//! the agent's `process` runtime as engine kind `transformers`.
//!
//! That server is the one the GPU validation runs (`tests/gpu/`), with the quirks seen on
//! the device: `/v1/models` answers 500, there is no `/tokenize` and no `/metrics`,
//! `ignore_eos` is refused with 422, and the model is served under its path. So this test
//! checks, on the real server: readiness by a 1-token request; chat prompts counted exactly
//! with the model's own chat template rendered locally (the server's `usage` is the ground
//! truth); the `ignore_eos` fallback recorded and named in the verdict; a converging
//! warm-up recorded with each point; the engine kind in the files' metadata.
//!
//! Needs `tests/engines/setup-vllm.sh` (the README's test command runs it); never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use fleetbench_proto::spec::EngineKind;
use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::{read_partition_metadata, read_point_summaries, read_requests};
use fleetbench_tests::{
    AgentSpec, Cluster, processes_mentioning, submit, vllm_install, vllm_venv, watch_to_end,
};

const INPUT: u32 = 48;

fn sweep(model: &str) -> String {
    format!(
        r#"
name = "real-transformers"
model = "{model}"

[engine]
kind = "transformers"
runtime = "process"
startup_timeout_s = 600

[matrix]
gpus = [1]
batch_sizes = [1, 3]
workloads = [{{ input = {INPUT}, output = 6 }}]

[load]
mode = "burst"
endpoint = "chat"
timeout_s = 600
seed = 11

[load.warmup]
max_waves = 3
tolerance = 0.5
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformers_engine_is_measured_with_exact_chat_prompts_and_honest_verdicts() {
    let (vllm_bin, model_dir) = vllm_install();
    // `transformers` is in the set-up script's virtual environment, beside `vllm`.
    let transformers = vllm_venv().join("bin").join("transformers");
    assert!(transformers.is_file(), "{} missing", transformers.display());
    let agent = AgentSpec {
        name: "cpu-host".into(),
        gpus: 1,
        labels: Vec::new(),
        vllm_command: vec![vllm_bin, "serve".into()],
        engine_env: BTreeMap::from([("HF_HUB_OFFLINE".to_string(), "1".to_string())]),
        model_paths: BTreeMap::new(),
        metrics_interval_ms: 250,
        max_engines: 1,
        engine_commands: BTreeMap::from([(
            EngineKind::Transformers,
            // On a CPU the continuous-batching cache would take most of the host's memory
            // (seen: 19 GB, then the OOM killer): capped here.
            vec![
                transformers.display().to_string(),
                "serve".into(),
                "--cb-max-memory-percent".into(),
                "0.05".into(),
            ],
        )]),
        gpu_model: "cpu".into(),
        metrics_addr: None,
        dataset_dirs: Vec::new(),
    };
    let cluster = Cluster::start(vec![agent]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, &sweep(&model_dir)).await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(
        (status.points_done, status.points_failed),
        (2, 0),
        "{status:?}"
    );

    let dir = partition_dir(&cluster.results, &model_dir, 1);
    let metadata = read_partition_metadata(&dir.join(format!("{id}.points.parquet"))).unwrap();
    assert_eq!(metadata.engine_kind, "transformers");
    assert!(
        metadata.engine_args.contains("--continuous-batching"),
        "{}",
        metadata.engine_args
    );
    let rows = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    assert_eq!(
        rows.len(),
        1 + 3,
        "one row per measured request, warm-ups excluded"
    );
    for (_, _, r) in &rows {
        assert!(r.success(), "{r:?}");
        // The server's own count (usage): the chat template rendered here, tokenized
        // here, gave exactly the target.
        assert!(r.usage_reported, "{r:?}");
        assert_eq!(r.input_tokens, Some(INPUT), "{r:?}");
    }
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    for p in &points {
        assert_eq!(p.input_len_mismatches, 0, "{}", p.meta.point_id);
        // transformers refuses ignore_eos: the output length was not forced, and the
        // verdict says so instead of calling the point valid.
        assert!(
            p.meta.fallbacks.iter().any(|f| f.contains("ignore_eos")),
            "{:?}",
            p.meta.fallbacks
        );
        assert!(p.verdict.contains("engine fallback"), "{}", p.verdict);
        // The converging warm-up ran at the point's batch size: 2 or 3 waves, each with
        // a throughput; a capped one is named in the verdict.
        let w = &p.meta.warmup;
        assert!((2..=3).contains(&w.waves()), "{w:?}");
        assert!(w.wave_output_tps.iter().all(|t| *t > 0.0), "{w:?}");
        assert_eq!(w.tolerance, 0.5);
        assert_eq!(
            !w.converged,
            p.verdict.contains("warm-up did not converge"),
            "{w:?}: {}",
            p.verdict
        );
    }
    cluster.stop().await;
    let left: Vec<String> = processes_mentioning(&model_dir)
        .into_iter()
        .filter(|cmdline| cmdline.contains("transformers") && cmdline.contains(" serve "))
        .collect();
    assert!(left.is_empty(), "engine processes left: {left:?}");
}
