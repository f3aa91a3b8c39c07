//! Search sweeps and SLOs end to end (controller, agent, vllm-sim as real processes): a
//! `[search]` sweep finds the largest burst that meets a TTFT objective on a simulator
//! whose capacity is known from its model, every probe is a stored point with goodput and
//! an SLO verdict in the Parquet files, and `controllerctl` prints the answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::read_point_summaries;
use fleetbench_tests::{AgentSpec, Cluster, controllerctl, submit, watch_to_end};

/// The simulator's flag model (no speedup): a step costs 20 ms + 0.2 ms per sequence +
/// 0.1 ms per prompt token computed, and at most `max_num_seqs = 6` sequences run.
const SIM: &[&str] = &[
    "--sim-step-ms",
    "20",
    "--sim-step-ms-per-seq",
    "0.2",
    "--sim-prefill-us-per-token",
    "100",
];

/// A burst of N requests of 32 prompt and 8 output tokens:
/// - N ≤ 6: every request is admitted in the first step (or, arriving a little late, the
///   second): TTFT ≤ 20 + 0.2·N + 0.1·32·N ms ≤ 40.4 ms, plus one step (≈ 21 ms) for a
///   straggler: under 65 ms.
/// - N ≥ 7: the 7th request waits for a slot, i.e. for a whole request of the first six
///   (its prefill step and 7 decode steps of 21.2 ms: about 189 ms) before its own
///   prefill: its TTFT is above 200 ms, and 1 of 7 requests (14 %) misses.
///
/// So with p99 TTFT ≤ 120 ms (3x above the worst admitted TTFT, 1.6x below the first
/// queued one) the largest burst that meets the SLO is exactly `max_num_seqs` = 6. The
/// search doubles 1, 2, 4, 8 (missed), then bisects 6 (met), 7 (missed): 6 probes, and
/// the bracket [6, 7] is one load wide, the search's resolution.
fn search_sweep(name: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test/search"
[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
max_num_seqs = 6
[matrix]
gpus = [1]
workloads = [{{ input = 32, output = 8 }}]
[load]
mode = "burst"
seed = 5
[slo]
ttft_ms = 120
[search]
min = 1
max = 64
max_points = 8
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_finds_the_largest_burst_meeting_the_slo() {
    let cluster = Cluster::start(vec![AgentSpec::sim("searcher", 1, SIM)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;

    let id = submit(&mut client, &search_sweep("capacity")).await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(status.search.len(), 1, "{status:?}");
    let answer = &status.search[0];
    assert_eq!(
        (answer.best, answer.above, answer.finished, answer.capped),
        (Some(6.0), Some(7.0), true, false),
        "{answer:?}"
    );
    assert_eq!(answer.probes, 6);
    assert_eq!(answer.slo, "p99 ttft <= 120 ms");

    // Every probe is a stored point, judged against the SLO, in probing order.
    let dir = partition_dir(&cluster.results, "test/search", 1);
    let mut points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    points.sort_by_key(|p| p.meta.point_index);
    let probed: Vec<(u32, String)> = points
        .iter()
        .map(|p| (p.meta.batch_size, p.slo_verdict.clone()))
        .collect();
    let met = |b: u32| (b, "met".to_string());
    assert_eq!(
        probed.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        vec![1, 2, 4, 8, 6, 7],
        "{probed:?}"
    );
    assert_eq!(&probed[..3], &[met(1), met(2), met(4)]);
    assert_eq!(probed[4], met(6));
    for (b, verdict) in [&probed[3], &probed[5]] {
        assert!(
            verdict.starts_with("missed: ttft") && verdict.ends_with("within 120 ms (needs 99 %)"),
            "batch {b}: {verdict}"
        );
    }
    for p in &points {
        assert_eq!(p.meta.state, "done", "{p:?}");
        let slo = p.meta.slo.expect("the SLO is stored with the point");
        assert_eq!(slo.ttft.map(|o| o.threshold_s), Some(0.12));
        let goodput = p.goodput.expect("goodput");
        // At or under 6, every request is good; at 7 and 8, those that queued are not.
        if p.meta.batch_size <= 6 {
            assert_eq!(p.slo_attainment, Some(1.0), "{p:?}");
            assert!((goodput - p.request_throughput).abs() < 1e-9, "{p:?}");
        } else {
            assert_eq!(
                p.slo_attainment,
                Some(6.0 / f64::from(p.meta.batch_size)),
                "{p:?}"
            );
            assert!(goodput < p.request_throughput, "{p:?}");
        }
    }

    // controllerctl says it in words, and its results table shows goodput and the verdict.
    let addr = cluster.addr.clone();
    let (code, text) = controllerctl(&addr, &["status", &id]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "search gpus=1 32/8: max batch 6 at p99 ttft <= 120 ms (batch 7 missed; 6 probes)"
        ),
        "{text}"
    );
    let results = cluster.results.display().to_string();
    let (code, text) = controllerctl(&addr, &["results", &id, "--dir", &results]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.lines().next().unwrap().contains("good/s"), "{text}");
    assert_eq!(text.matches(" missed ").count(), 2, "{text}");
    cluster.stop().await;
}
