//! The vLLM command line of an engine spec: the `[engine]` settings as flags, then
//! `extra_args` verbatim.

use crate::pb;

/// vLLM command-line flags for an engine spec at a GPU count (tensor parallel = GPUs).
/// The model and port are not included.
pub fn vllm_flags(engine: &pb::EngineSpec, gpus: u32) -> Vec<String> {
    let mut args = vec![
        "--served-model-name".to_string(),
        engine.served_model_name.clone(),
        "--tensor-parallel-size".into(),
        gpus.to_string(),
        "--max-model-len".into(),
        engine.max_model_len.to_string(),
        "--gpu-memory-utilization".into(),
        engine.gpu_memory_utilization.to_string(),
        "--block-size".into(),
        engine.block_size.to_string(),
        "--max-num-batched-tokens".into(),
        engine.max_num_batched_tokens.to_string(),
        "--max-num-seqs".into(),
        engine.max_num_seqs.to_string(),
    ];
    if engine.enforce_eager {
        args.push("--enforce-eager".into());
    }
    args.push(if engine.enable_prefix_caching {
        "--enable-prefix-caching".into()
    } else {
        "--no-enable-prefix-caching".into()
    });
    args.extend(engine.extra_args.iter().cloned());
    args
}
