//! End to end: controller + two agents over real gRPC on 127.0.0.1, each agent starting
//! its own vllm-sim processes; the sweep's Parquet files are read back and checked
//! against the simulator's timing model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use fleetbench_proto::pb;
use fleetbench_results::read::{read_metadata, read_metrics, read_point_summaries, read_requests};
use fleetbench_tests::{AgentSpec, Cluster, percentile, tiny_sweep, watch_to_end, workspace_bin};

// Simulator timing model used by this test (see sim/src/scheduler.rs): a step takes
// STEP_MS + PER_SEQ_MS × running sequences + PREFILL_US/1000 × prompt tokens prefilled.
const STEP_MS: f64 = 8.0;
const PER_SEQ_MS: f64 = 1.0;
const PREFILL_US: f64 = 20.0;

const SIM_ARGS: &[&str] = &[
    "--sim-step-ms",
    "8",
    "--sim-step-ms-per-seq",
    "1",
    "--sim-prefill-us-per-token",
    "20",
];

fn sweep() -> String {
    tiny_sweep("e2e", "[1, 2, 4]", 7)
        + r#"
[placement]
agents = ["alpha", "beta"]
"#
}

fn step_ms(seqs: u32, prefill_tokens: u32) -> f64 {
    STEP_MS + PER_SEQ_MS * f64::from(seqs) + PREFILL_US / 1000.0 * f64::from(prefill_tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_on_two_agents_lands_in_hive_parquet_and_matches_the_timing_model() {
    let agents = ["alpha", "beta"]
        .into_iter()
        .map(|n| AgentSpec::sim(n, 2, SIM_ARGS))
        .collect();
    let cluster = Cluster::start(agents).await;
    cluster.wait_agents(2).await;
    let mut client = cluster.client().await;
    let submitted = client
        .submit_sweep(pb::SubmitSweepRequest {
            spec_toml: sweep(),
            file_name: "e2e.toml".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.points, 12);
    let id = submitted.sweep_id;

    // Follow the watch stream to the end, as controllerctl does.
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(status.points_done, 12, "{status:?}");
    assert_eq!(status.points_failed, 0);

    let part = |gpus: u32| {
        cluster
            .results
            .join("model=test-org--tiny-model")
            .join(format!("gpus={gpus}"))
    };
    let mut agents_seen = BTreeSet::new();
    for gpus in [1u32, 2] {
        let requests_path = part(gpus).join(format!("{id}.requests.parquet"));
        let points_path = part(gpus).join(format!("{id}.points.parquet"));
        assert!(requests_path.is_file(), "{}", requests_path.display());
        assert!(points_path.is_file(), "{}", points_path.display());

        let meta = read_metadata(&points_path).unwrap();
        assert_eq!(meta.get("fleetbench.sweep_id"), Some(&id));
        assert_eq!(meta.get("fleetbench.gpus"), Some(&gpus.to_string()));
        assert!(
            meta["fleetbench.engine_args"].contains(&format!("--tensor-parallel-size {gpus}")),
            "{meta:?}"
        );
        assert!(!meta["fleetbench.version"].is_empty());

        // The engine's own view, scraped from vllm-sim's /metrics during each point.
        let metrics_path = part(gpus).join(format!("{id}.metrics.parquet"));
        let samples = read_metrics(&metrics_path).unwrap();
        assert!(!samples.is_empty(), "engine metrics stored with the points");

        let rows = read_requests(&requests_path).unwrap();
        let points = read_point_summaries(&points_path).unwrap();
        assert_eq!(points.len(), 6, "3 batch sizes × 2 workloads per GPU count");
        let mut by_point: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for (pid, _attempt, r) in &rows {
            by_point.entry(pid.clone()).or_default().push(r.clone());
        }
        // One row per measured request (the warm-up request is not recorded).
        let expected_rows: u32 = points.iter().map(|p| p.meta.batch_size).sum();
        assert_eq!(rows.len() as u32, expected_rows);
        for p in &points {
            agents_seen.insert(p.meta.agent.clone());
            let running_max = p
                .server
                .running_max
                .expect("server running requests sampled");
            assert!(
                running_max <= f64::from(p.meta.batch_size),
                "{}: server ran {running_max}",
                p.meta.point_id
            );
            if p.meta.batch_size == 4 {
                assert_eq!(
                    running_max, 4.0,
                    "{}: the server saw the whole burst running",
                    p.meta.point_id
                );
            }
            assert!(
                samples
                    .iter()
                    .any(|m| m.point_id == p.meta.point_id
                        && m.metric == "vllm:num_requests_running")
            );
            assert_eq!(p.meta.host, format!("{}-host", p.meta.agent));
            let recs = &by_point[&p.meta.point_id];
            let b = p.meta.batch_size;
            assert_eq!(recs.len() as u32, b, "{}", p.meta.point_id);
            assert_eq!(p.completed, b);
            assert_eq!(p.failed, 0);
            assert_eq!(p.verdict, "valid", "{}", p.meta.point_id);
            let mut indices: Vec<u32> = recs.iter().map(|r| r.request_index).collect();
            indices.sort();
            assert_eq!(indices, (0..b).collect::<Vec<_>>());
            for r in recs {
                assert!(r.success(), "{r:?}");
                assert_eq!(
                    r.input_tokens,
                    Some(p.meta.input_tokens),
                    "exact prompt length as the server counted it"
                );
                assert_eq!(r.output_tokens, Some(p.meta.output_tokens));
                assert!(r.usage_reported);
                assert_eq!(r.itl_s.len() as u32, p.meta.output_tokens - 1);
            }

            // The summary agrees with the rows it summarises.
            let first_send = recs.iter().map(|r| r.send_time_unix_us).min().unwrap();
            let last_end = recs
                .iter()
                .map(|r| (r.send_time_unix_us - first_send) as f64 / 1e6 + r.e2el_s.unwrap())
                .fold(0.0, f64::max);
            assert!(
                (p.duration_s - last_end).abs() < 1e-9,
                "{} vs {last_end}",
                p.duration_s
            );
            let out_tokens: u32 = recs.iter().map(|r| r.output_tokens.unwrap()).sum();
            let expected_tput = f64::from(out_tokens) / last_end;
            assert!(
                (p.output_throughput - expected_tput).abs() <= 1e-9 * expected_tput,
                "{} vs {expected_tput}",
                p.output_throughput
            );
            let ttfts: Vec<f64> = recs.iter().map(|r| r.ttft_s.unwrap()).collect();
            assert!((p.ttft_s.p50.unwrap() - percentile(&ttfts, 50.0)).abs() < 1e-12);
            assert!((p.ttft_s.p99.unwrap() - percentile(&ttfts, 99.0)).abs() < 1e-12);
            let tpots: Vec<f64> = recs.iter().map(|r| r.tpot_s.unwrap()).collect();
            assert!(
                (p.tpot_s.mean.unwrap() - tpots.iter().sum::<f64>() / tpots.len() as f64).abs()
                    < 1e-12
            );

            // Timing model: once all B requests run, every step decodes B sequences.
            // Requests of a burst can land in two consecutive steps, so TTFT lies
            // between one single-request prefill step and two full prefill steps.
            let input = p.meta.input_tokens;
            // Bounds leave room for scheduling jitter on a busy 2-core machine (two agents,
            // two simulators and the controller share it) but not for a wrong model: one
            // more sequence per step is 1 ms of 9-12 ms.
            let decode_ms = step_ms(b, 0);
            let mean_tpot_ms = p.tpot_s.mean.unwrap() * 1000.0;
            assert!(
                mean_tpot_ms >= decode_ms * 0.93 && mean_tpot_ms <= decode_ms * 1.25 + 2.0,
                "{}: mean TPOT {mean_tpot_ms:.2} ms outside model {decode_ms:.2} ms",
                p.meta.point_id
            );
            for r in recs {
                let tpot_ms = r.tpot_s.unwrap() * 1000.0;
                assert!(
                    tpot_ms >= decode_ms * 0.8 && tpot_ms <= decode_ms * 1.5 + 3.0,
                    "{}: TPOT {tpot_ms:.2} ms outside model {decode_ms:.2} ms",
                    p.meta.point_id
                );
                let ttft_ms = r.ttft_s.unwrap() * 1000.0;
                let lo = step_ms(1, input);
                let hi = 2.0 * step_ms(b, b * input) + 25.0;
                assert!(
                    ttft_ms >= lo * 0.9 && ttft_ms <= hi,
                    "{}: TTFT {ttft_ms:.2} ms outside [{lo:.2}, {hi:.2}]",
                    p.meta.point_id
                );
            }
        }
    }
    assert_eq!(
        agents_seen,
        BTreeSet::from(["alpha".to_string(), "beta".to_string()]),
        "the sweep was placed on both agents"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sweeps_are_rejected_with_line_and_field_and_nothing_is_submitted() {
    let cluster = Cluster::start(vec![]).await;
    let mut client = cluster.client().await;
    let tmp = tempfile::tempdir().unwrap();
    let ctl = workspace_bin("controllerctl");
    let cases = [
        (
            sweep().replace("block_size = 16", "block_size = 16\nblok_size = 32"),
            "e2e.toml:10:1: field `engine.blok_size`",
        ),
        (
            sweep().replace("batch_sizes = [1, 2, 4]", "batch_sizes = [1, 0, 4]"),
            "e2e.toml:15:19: field `matrix.batch_sizes[1]`",
        ),
        (
            sweep().replace(
                "{ input = 32, output = 8 }",
                "{ input = 32, output = 2000 }",
            ),
            "e2e.toml:16:43: field `matrix.workloads[1].output`",
        ),
    ];
    for (text, expected) in &cases {
        // Through controllerctl: validated before anything is sent.
        let file = tmp.path().join("e2e.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(&ctl)
            .current_dir(tmp.path())
            .args(["--controller", &cluster.addr, "submit", "e2e.toml"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );

        // Straight to the controller: it validates again and refuses.
        let err = client
            .submit_sweep(pb::SubmitSweepRequest {
                spec_toml: text.clone(),
                file_name: "e2e.toml".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(expected), "{}", err.message());
    }
    let sweeps = client
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sweeps;
    assert!(sweeps.is_empty(), "nothing was submitted: {sweeps:?}");

    // validate prints the plan of a good file.
    let file = tmp.path().join("good.toml");
    std::fs::write(&file, sweep()).unwrap();
    let out = Command::new(&ctl)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("12 points; engine starts per agent: 2"),
        "{plan}"
    );
    cluster.stop().await;
}
