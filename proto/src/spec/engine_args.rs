//! Each engine kind's command line from a wire engine spec: the model, the `[engine]`
//! settings in the kind's own flags, then `extra_args` verbatim, then where to listen.
//!
//! | setting | vLLM | transformers | llama.cpp | SGLang | TGI |
//! |---|---|---|---|---|---|
//! | model | positional / `--model` | positional | `-m` | `--model-path` | `--model-id` |
//! | served name | `--served-model-name` | (the model path) | `--alias` | `--served-model-name` | (ignored) |
//! | GPUs | `--tensor-parallel-size` | (one GPU) | (all granted GPUs) | `--tp-size` | `--num-shard` |
//! | max model len | `--max-model-len` | – | `--ctx-size` × slots | `--context-length` | `--max-total-tokens` |
//! | memory share | `--gpu-memory-utilization` | – | – | `--mem-fraction-static` | `--cuda-memory-fraction` |
//! | max seqs | `--max-num-seqs` | – | `--parallel` | `--max-running-requests` | `--max-concurrent-requests` |
//! | batched tokens | `--max-num-batched-tokens` | – | `--batch-size` | `--chunked-prefill-size` | `--max-batch-prefill-tokens` |
//! | eager | `--enforce-eager` | – | – | `--disable-cuda-graph` | – |
//! | prefix cache off | `--no-enable-prefix-caching` | – | – | `--disable-radix-cache` | – |
//!
//! `–`: the engine has no such setting, or no flag for it; `extra_args` reach it verbatim.
//! llama.cpp's `--ctx-size` is the context of all slots together, so it is the model length
//! times `--parallel`; `--metrics` is always on (the verdict compares its in-flight count).

use crate::pb;

/// Where the engine listens.
#[derive(Debug, Clone, Copy)]
pub struct Listen<'a> {
    pub host: &'a str,
    pub port: u16,
}

/// How vLLM is given the model: `vllm serve MODEL` (the `process` runtime) or
/// `--model MODEL` (a container whose entrypoint may be the API server module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VllmModelArg {
    Positional,
    Flag,
}

/// The engine's arguments after its program (`vllm serve`, `transformers serve`,
/// `llama-server`, …) for `gpus` GPUs. `model` is what the engine loads (a local folder or
/// a hub id). An unspecified kind reads as vLLM, the only kind before kinds existed.
pub fn engine_args(
    engine: &pb::EngineSpec,
    gpus: u32,
    model: &str,
    listen: Listen<'_>,
    vllm_model: VllmModelArg,
) -> Vec<String> {
    let mut args: Vec<String> = match engine.engine_kind() {
        pb::EngineKind::Vllm | pb::EngineKind::Unspecified => {
            let mut a = match vllm_model {
                VllmModelArg::Positional => vec![w(model)],
                VllmModelArg::Flag => vec![w("--model"), w(model)],
            };
            a.extend(vllm_flags(engine, gpus));
            a
        }
        pb::EngineKind::Transformers => vec![w(model), w("--continuous-batching")],
        pb::EngineKind::LlamaCpp => {
            let slots = engine.max_num_seqs.max(1);
            vec![
                w("-m"),
                w(model),
                w("--alias"),
                engine.served_model_name.clone(),
                w("--ctx-size"),
                w(engine.max_model_len.saturating_mul(slots)),
                w("--parallel"),
                w(slots),
                w("--batch-size"),
                w(engine.max_num_batched_tokens),
                w("--n-gpu-layers"),
                w("999"),
                w("--cont-batching"),
                w("--metrics"),
            ]
        }
        pb::EngineKind::Sglang => {
            let mut a = vec![
                w("--model-path"),
                w(model),
                w("--served-model-name"),
                engine.served_model_name.clone(),
                w("--tp-size"),
                w(gpus),
                w("--context-length"),
                w(engine.max_model_len),
                w("--mem-fraction-static"),
                w(engine.gpu_memory_utilization),
                w("--max-running-requests"),
                w(engine.max_num_seqs),
                w("--chunked-prefill-size"),
                w(engine.max_num_batched_tokens),
                w("--enable-metrics"),
            ];
            if engine.enforce_eager {
                a.push(w("--disable-cuda-graph"));
            }
            if !engine.enable_prefix_caching {
                a.push(w("--disable-radix-cache"));
            }
            a
        }
        pb::EngineKind::Tgi => vec![
            w("--model-id"),
            w(model),
            w("--num-shard"),
            w(gpus),
            w("--max-total-tokens"),
            w(engine.max_model_len),
            w("--max-input-tokens"),
            w(engine.max_model_len.saturating_sub(1).max(1)),
            w("--max-batch-prefill-tokens"),
            w(engine.max_num_batched_tokens),
            w("--max-concurrent-requests"),
            w(engine.max_num_seqs),
            w("--cuda-memory-fraction"),
            w(engine.gpu_memory_utilization),
        ],
    };
    if !matches!(
        engine.engine_kind(),
        pb::EngineKind::Vllm | pb::EngineKind::Unspecified
    ) {
        args.extend(engine.extra_args.iter().cloned());
    }
    let host_flag = match engine.engine_kind() {
        pb::EngineKind::Tgi => "--hostname",
        _ => "--host",
    };
    args.extend([
        host_flag.to_string(),
        listen.host.to_string(),
        "--port".into(),
        listen.port.to_string(),
    ]);
    args
}

fn w(v: impl ToString) -> String {
    v.to_string()
}

/// vLLM command-line flags for an engine spec at a GPU count (tensor parallel = GPUs), then
/// `extra_args` verbatim. The model and port are not included.
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
