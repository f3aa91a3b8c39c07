//! Unit tests of [`super`]: the GPU and model profiles and the step-time and KV-cache model.

use super::*;

fn h100_8b(tp: u32) -> PerfModel {
    let p = Profiles::builtin().unwrap();
    PerfModel {
        gpu: p.gpu("h100-sxm").unwrap().clone(),
        model: p
            .model("meta-llama/Llama-3.1-8B-Instruct")
            .unwrap()
            .1
            .clone(),
        tp,
        enforce_eager: false,
        gpu_memory_utilization: 0.9,
    }
}

#[test]
fn builtin_profiles_parse_and_resolve_hf_names() {
    let p = Profiles::builtin().unwrap();
    for id in ["b580", "b60", "h100-sxm", "h200", "a100-80g", "cpu"] {
        p.gpu(id).unwrap();
    }
    assert!(p.gpu("tpu").unwrap_err().to_string().contains("h100-sxm"));
    let (id, m) = p.model("deepseek-ai/DeepSeek-R1-Distill-Llama-8B").unwrap();
    assert_eq!(id, "deepseek-r1-distill-llama-8b");
    assert_eq!((m.layers, m.kv_heads, m.head_dim), (32, 8, 128));
    assert!(p.model("meta-llama/Llama-3.2-1B-Instruct").is_some());
    assert!(p.model("/models/Llama-3.2-1B-Instruct").is_some());
    assert!(p.model("test/unknown").is_none());
}

#[test]
fn kv_cache_of_llama_8b_on_h100() {
    let m = h100_8b(1);
    // 2 × 32 layers × 8 KV heads × 128 × 2 bytes = 128 KiB per token.
    assert_eq!(m.kv_bytes_per_token(), 131_072.0);
    let blocks = m.kv_cache_blocks(16).unwrap();
    // ~80 GiB × 0.9 − 16 GB − reserve: on the order of 50 GiB → ~25k blocks.
    assert!((15_000..40_000).contains(&blocks), "{blocks}");
    // Two GPUs hold half the weights each and split every token's KV cache.
    assert!(h100_8b(2).kv_cache_blocks(16).unwrap() > 2 * blocks);
}

#[test]
fn decode_is_memory_bound_and_prefill_compute_bound() {
    let m = h100_8b(1);
    let decode = |seqs: u64| {
        m.step_time(&StepShape {
            decode_seqs: seqs,
            context_tokens: seqs * 1024,
            ..StepShape::default()
        })
    };
    let d1 = decode(1).as_secs_f64();
    // ~16 GB of weights at ~3 TB/s effective: a few milliseconds.
    assert!((0.003..0.012).contains(&d1), "{d1}");
    // Decode steps grow slowly with the batch (weights are read once).
    assert!(decode(64).as_secs_f64() < 3.0 * d1);
    let prefill = m.step_time(&StepShape {
        prefill_tokens: 8192,
        context_tokens: 8192,
        attention_pairs: 8.0 * 1024.0 * 1025.0 / 2.0,
        ..StepShape::default()
    });
    // 2 × 8e9 × 8192 flops at several hundred TFLOPS: tens of milliseconds.
    assert!(prefill.as_secs_f64() > 5.0 * d1, "{prefill:?}");
    // Tensor parallelism shortens a decode step, communication included.
    let two = h100_8b(2);
    let d1_tp2 = two
        .step_time(&StepShape {
            decode_seqs: 1,
            context_tokens: 1024,
            ..StepShape::default()
        })
        .as_secs_f64();
    assert!(d1_tp2 < d1, "{d1_tp2} vs {d1}");
}

#[test]
fn eager_mode_multiplies_the_step_overhead() {
    let mut m = h100_8b(1);
    let shape = StepShape {
        decode_seqs: 1,
        context_tokens: 100,
        ..StepShape::default()
    };
    let graphs = m.step_time(&shape);
    m.enforce_eager = true;
    let eager = m.step_time(&shape);
    let extra = (m.gpu.eager_overhead_factor - 1.0) * m.gpu.step_overhead_ms * 1e-3;
    assert!((eager.as_secs_f64() - graphs.as_secs_f64() - extra).abs() < 1e-9);
}

#[test]
fn a_70b_model_does_not_fit_one_b580() {
    let p = Profiles::builtin().unwrap();
    let model = ModelProfile {
        params_b: 70.0,
        ..p.model("llama-3.1-8b").unwrap().1.clone()
    };
    let m = PerfModel {
        gpu: p.gpu("b580").unwrap().clone(),
        model,
        tp: 1,
        enforce_eager: false,
        gpu_memory_utilization: 0.9,
    };
    let err = m.kv_cache_blocks(64).unwrap_err();
    assert!(
        matches!(err, StartupFailure::WeightsDoNotFit { .. }),
        "{err:?}"
    );
    assert!(err.vllm_message().contains("out of memory"));
}
