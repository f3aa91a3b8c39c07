//! The GPU performance model through the real engine loop (tokio's paused clock: simulated
//! time, no waiting): a batch sweep on the H100 profile has the shape a vLLM user knows, and
//! the Battlemage profile with the seed's flags crashes at batch 32 and not at 16.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/burst.rs"]
mod burst;

use burst::{burst, engine, perf};
use fleetbench_sim::config::CrashAction;

#[tokio::test(start_paused = true)]
async fn h100_batch_sweep_has_the_shape_vllm_users_know() {
    // Llama-3.1-8B on one H100, 1024 in / 512 out, gpu_memory_utilization 0.35 so that the
    // KV cache (≈ 8 GiB, 60k tokens) runs out within the sweep.
    let model = perf(
        "h100-sxm",
        "meta-llama/Llama-3.1-8B-Instruct",
        1,
        0.35,
        false,
    );
    let (input, output) = (1024, 512);
    let mut rows = Vec::new();
    for batch in [1usize, 2, 4, 8, 16, 32, 64, 128, 256] {
        let b = burst(engine(model.clone(), 16, None), batch, input, output).await;
        assert_eq!(
            b.e2e.len(),
            batch,
            "every request finishes at batch {batch}"
        );
        rows.push((
            batch,
            b.output_throughput(output),
            b.per_request_speed(output),
            b.mean_ttft(),
            b.preemptions,
            b.ttft_spread(),
        ));
    }
    for r in &rows {
        eprintln!(
            "batch {:>3}: {:>8.0} tok/s total, {:>6.1} tok/s per request, TTFT {:>7.3} s (last/first {:.2}), {} preemptions",
            r.0, r.1, r.2, r.3, r.5, r.4
        );
    }
    let at = |batch: usize| rows.iter().find(|r| r.0 == batch).unwrap();
    // Total throughput rises steeply at small batches, then saturates.
    assert!(at(8).1 > 5.0 * at(1).1, "{rows:?}");
    assert!(at(64).1 > at(16).1, "{rows:?}");
    assert!(at(256).1 < 1.3 * at(128).1, "saturates: {rows:?}");
    // Per-request speed falls as the batch grows.
    for w in rows.windows(2) {
        assert!(w[1].2 < w[0].2 * 1.001, "{rows:?}");
    }
    // TTFT grows with the batch; once the burst's prompts exceed one prefill step (8192
    // tokens = 8 × 1024) the later requests wait for later steps: up to batch 8 every
    // request gets its first token in the same step, from 16 on the last waits ≥ 2 steps.
    for w in rows.windows(2) {
        assert!(w[1].3 > w[0].3, "{rows:?}");
    }
    for r in rows.iter().filter(|r| r.0 <= 8) {
        assert!((r.5 - 1.0).abs() < 1e-9, "{rows:?}");
    }
    for r in rows.iter().filter(|r| r.0 >= 16) {
        assert!(r.5 > 1.8, "{rows:?}");
    }
    // The KV cache runs out at the largest batches: preemptions, and only there.
    assert_eq!(at(16).4, 0, "{rows:?}");
    assert!(at(256).4 > 0, "{rows:?}");
}

#[tokio::test(start_paused = true)]
async fn battlemage_with_the_seed_flags_crashes_at_batch_32_not_16() {
    // The seed: DeepSeek-R1-Distill-Llama-8B on Arc Pro B60, --gpu-memory-utilization 0.9
    // --block-size 64 --max-num-batched-tokens 8192, 1024 in / 512 out.
    for gpus in [1u32, 2] {
        let model = perf(
            "b60",
            "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            gpus,
            0.9,
            false,
        );
        for batch in [1usize, 2, 4, 8, 16, 32, 64] {
            let b = burst(
                engine(model.clone(), 64, Some(CrashAction::Exit)),
                batch,
                1024,
                512,
            )
            .await;
            if batch <= 16 {
                assert!(!b.crashed, "batch {batch} on {gpus} GPU(s) crashed");
                assert_eq!(b.e2e.len(), batch);
            } else {
                assert!(b.crashed, "batch {batch} on {gpus} GPU(s) did not crash");
            }
        }
    }
}

#[test]
fn an_8b_model_does_not_fit_a_b580_at_low_utilization() {
    let m = perf("b580", "meta-llama/Llama-3.1-8B-Instruct", 1, 0.9, false);
    let err = m.kv_cache_blocks(16).unwrap_err();
    assert!(err.vllm_message().contains("out of memory"), "{err:?}");
    // Two B580s hold it.
    perf("b580", "meta-llama/Llama-3.1-8B-Instruct", 2, 0.9, false)
        .kv_cache_blocks(16)
        .unwrap();
}
