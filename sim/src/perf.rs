//! The performance model: how long one engine step takes on a given GPU for a given model,
//! how many KV-cache blocks fit, and when memory runs out, from data files
//! (`sim/profiles/gpus.toml`, `sim/profiles/models.toml`, compiled in) rather than code.
//! docs/sim.md derives and calibrates every equation here.
//!
//! Per GPU of a tensor-parallel group of `tp`, with `P` parameters of `b` bytes, a step that
//! processes `T` tokens (one per decoding sequence plus the prompt tokens prefilled in the
//! step) reading `C` tokens of KV cache:
//!
//! ```text
//! compute = (2·P·T + 4·L·H·A) / tp / (FLOPS · compute_efficiency)     A: attention pairs
//! memory  = (P·b / tp + kv_bytes_per_token · C / tp) / (BW · bandwidth_efficiency)
//! comm    = tp > 1: 2·L · (2·(tp−1)/tp · H · T · 2 bytes / IC_BW + IC_latency)
//! step    = max(compute, memory) + comm + step_overhead · (enforce_eager ? eager_factor : 1)
//! ```
//!
//! KV blocks: `(memory · gpu_memory_utilization − P·b/tp − activation_reserve) · tp /
//! (kv_bytes_per_token · block_size)`; none left means vLLM's start-up error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::SimError;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One accelerator's numbers (a table of `gpus.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GpuProfile {
    pub name: String,
    pub vendor: String,
    pub memory_gib: f64,
    pub memory_bandwidth_gbps: f64,
    pub bf16_tflops: f64,
    #[serde(default)]
    pub interconnect: String,
    pub interconnect_bandwidth_gbps: f64,
    pub interconnect_latency_us: f64,
    pub compute_efficiency: f64,
    pub bandwidth_efficiency: f64,
    pub step_overhead_ms: f64,
    pub eager_overhead_factor: f64,
    pub activation_reserve_gib: f64,
    /// Transient memory per token of context in a step's attention (backends that
    /// materialize attention intermediates; 0 for flash attention), for the opt-in
    /// out-of-memory crash.
    #[serde(default)]
    pub attention_workspace_bytes_per_context_token: f64,
    #[serde(default)]
    pub source: Vec<String>,
}

/// One model's architecture (a table of `models.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelProfile {
    pub name: String,
    #[serde(default)]
    pub hf_names: Vec<String>,
    pub params_b: f64,
    pub layers: u32,
    pub hidden_size: u32,
    #[serde(default)]
    pub intermediate_size: u32,
    #[serde(default)]
    pub attention_heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    #[serde(default)]
    pub vocab_size: u32,
    pub bytes_per_param: f64,
    #[serde(default)]
    pub source: Vec<String>,
}

/// The built-in profiles.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub gpus: BTreeMap<String, GpuProfile>,
    pub models: BTreeMap<String, ModelProfile>,
}

/// `sim/profiles/gpus.toml`, compiled in (the image has no files).
pub const GPUS_TOML: &str = include_str!("../profiles/gpus.toml");
/// `sim/profiles/models.toml`, compiled in.
pub const MODELS_TOML: &str = include_str!("../profiles/models.toml");

impl Profiles {
    /// The compiled-in profiles.
    pub fn builtin() -> Result<Profiles, SimError> {
        Self::parse(GPUS_TOML, MODELS_TOML)
    }

    pub fn parse(gpus: &str, models: &str) -> Result<Profiles, SimError> {
        let gpus = toml::from_str(gpus).map_err(|e| SimError::Config(format!("gpus.toml: {e}")))?;
        let models =
            toml::from_str(models).map_err(|e| SimError::Config(format!("models.toml: {e}")))?;
        Ok(Profiles { gpus, models })
    }

    /// The GPU profile `id`, or an error listing the known ones.
    pub fn gpu(&self, id: &str) -> Result<&GpuProfile, SimError> {
        self.gpus.get(id).ok_or_else(|| {
            SimError::Config(format!(
                "--sim-gpu {id:?} is not a known GPU profile (known: {})",
                self.gpus.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The model profile `id`, else the one whose `hf_names` hold `id` (case-insensitive,
    /// also when `id` is a local path ending in the repository's name).
    pub fn model(&self, id: &str) -> Option<(&str, &ModelProfile)> {
        if let Some((k, m)) = self.models.get_key_value(id) {
            return Some((k.as_str(), m));
        }
        let wanted = id.trim_end_matches('/').to_ascii_lowercase();
        self.models.iter().find_map(|(k, m)| {
            m.hf_names
                .iter()
                .any(|n| {
                    let n = n.to_ascii_lowercase();
                    wanted == n
                        || n.rsplit('/').next().is_some_and(|short| {
                            wanted.ends_with(&format!("/{short}")) || wanted == short
                        })
                })
                .then_some((k.as_str(), m))
        })
    }

    /// Known model profile ids, for error messages.
    pub fn model_ids(&self) -> String {
        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// What one engine step computes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepShape {
    /// Sequences that decode one token in this step.
    pub decode_seqs: u64,
    /// Prompt tokens prefilled in this step (whole prompts or chunks).
    pub prefill_tokens: u64,
    /// KV-cache tokens read by the step: every scheduled sequence's context.
    pub context_tokens: u64,
    /// Attention query × key pairs of the prefilled tokens (causal: a chunk of `c` tokens
    /// after `s` cached ones has `c·s + c·(c+1)/2`).
    pub attention_pairs: f64,
}

impl StepShape {
    pub fn tokens(&self) -> u64 {
        self.decode_seqs + self.prefill_tokens
    }
}

/// A model on a GPU profile with an engine configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfModel {
    pub gpu: GpuProfile,
    pub model: ModelProfile,
    /// Tensor-parallel size (GPUs).
    pub tp: u32,
    pub enforce_eager: bool,
    pub gpu_memory_utilization: f64,
}

impl PerfModel {
    /// Bytes of all weights.
    pub fn weight_bytes(&self) -> f64 {
        self.model.params_b * 1e9 * self.model.bytes_per_param
    }

    /// Bytes of weights each GPU holds.
    pub fn weight_bytes_per_gpu(&self) -> f64 {
        self.weight_bytes() / f64::from(self.tp.max(1))
    }

    /// KV-cache bytes of one token, all layers, keys and values, all GPUs together.
    pub fn kv_bytes_per_token(&self) -> f64 {
        2.0 * f64::from(self.model.layers)
            * f64::from(self.model.kv_heads)
            * f64::from(self.model.head_dim)
            * self.model.bytes_per_param
    }

    /// Memory one GPU gives the KV cache: its share under `gpu_memory_utilization` minus
    /// its weights and the activation reserve vLLM's profiling run sets aside.
    pub fn kv_cache_bytes_per_gpu(&self) -> f64 {
        self.gpu.memory_gib * GIB * self.gpu_memory_utilization
            - self.weight_bytes_per_gpu()
            - self.gpu.activation_reserve_gib * GIB
    }

    /// KV-cache blocks of `block_size` tokens, or vLLM's start-up error when the weights
    /// leave no room.
    pub fn kv_cache_blocks(&self, block_size: u32) -> Result<u64, StartupFailure> {
        let free = self.kv_cache_bytes_per_gpu();
        let per_gpu_block =
            self.kv_bytes_per_token() / f64::from(self.tp.max(1)) * f64::from(block_size.max(1));
        let blocks = (free / per_gpu_block).floor();
        if self.weight_bytes_per_gpu() > self.gpu.memory_gib * GIB * self.gpu_memory_utilization {
            return Err(StartupFailure::WeightsDoNotFit {
                weights_gib: self.weight_bytes_per_gpu() / GIB,
                budget_gib: self.gpu.memory_gib * self.gpu_memory_utilization,
            });
        }
        if blocks < 1.0 {
            return Err(StartupFailure::NoCacheBlocks {
                free_gib: free / GIB,
            });
        }
        Ok(blocks as u64)
    }

    /// Simulated duration of one step (before any speedup).
    pub fn step_time(&self, s: &StepShape) -> Duration {
        let tp = f64::from(self.tp.max(1));
        let m = &self.model;
        let g = &self.gpu;
        let tokens = s.tokens() as f64;
        let flops = 2.0 * m.params_b * 1e9 * tokens
            + 4.0 * f64::from(m.layers) * f64::from(m.hidden_size) * s.attention_pairs;
        let compute_s = flops / tp / (g.bf16_tflops * 1e12 * g.compute_efficiency);
        let bytes =
            self.weight_bytes_per_gpu() + self.kv_bytes_per_token() / tp * s.context_tokens as f64;
        let memory_s = bytes / (g.memory_bandwidth_gbps * 1e9 * g.bandwidth_efficiency);
        let comm_s = if self.tp > 1 {
            2.0 * f64::from(m.layers)
                * (2.0 * (tp - 1.0) / tp * f64::from(m.hidden_size) * tokens * 2.0
                    / (g.interconnect_bandwidth_gbps * 1e9)
                    + g.interconnect_latency_us * 1e-6)
        } else {
            0.0
        };
        let overhead_s = g.step_overhead_ms
            * 1e-3
            * if self.enforce_eager {
                g.eager_overhead_factor
            } else {
                1.0
            };
        Duration::from_secs_f64(compute_s.max(memory_s) + comm_s + overhead_s)
    }

    /// Transient memory of a step on each GPU (see
    /// [`GpuProfile::attention_workspace_bytes_per_context_token`]): proportional to the
    /// context the step reads, on every rank alike (calibrated to the seed's Battlemage
    /// crashes, which did not depend on the GPU count; docs/sim.md).
    pub fn step_workspace_bytes(&self, s: &StepShape) -> f64 {
        self.gpu.attention_workspace_bytes_per_context_token * s.context_tokens as f64
    }

    /// Memory left on one GPU for transient allocations: what `gpu_memory_utilization`
    /// leaves outside vLLM's pool.
    pub fn headroom_bytes(&self) -> f64 {
        self.gpu.memory_gib * GIB * (1.0 - self.gpu_memory_utilization)
    }

    /// Time to load the weights at start-up (each GPU reads its share at
    /// [`LOAD_BANDWIDTH_GBPS`] from a warm cache), before any speedup.
    pub fn load_time(&self) -> Duration {
        Duration::from_secs_f64(self.weight_bytes_per_gpu() / (LOAD_BANDWIDTH_GBPS * 1e9))
    }
}

/// Weight loading speed assumed for start-up (safetensors from a local page cache / NVMe).
pub const LOAD_BANDWIDTH_GBPS: f64 = 2.0;

/// Why a real vLLM would not start with this configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum StartupFailure {
    WeightsDoNotFit { weights_gib: f64, budget_gib: f64 },
    NoCacheBlocks { free_gib: f64 },
}

impl StartupFailure {
    /// The error line vLLM prints.
    pub fn vllm_message(&self) -> String {
        match self {
            StartupFailure::WeightsDoNotFit {
                weights_gib,
                budget_gib,
            } => format!(
                "torch.OutOfMemoryError: XPU out of memory. Tried to allocate {:.2} GiB while \
                 loading the model weights ({weights_gib:.2} GiB per GPU; \
                 gpu_memory_utilization allows {budget_gib:.2} GiB)",
                (weights_gib - budget_gib).max(0.01)
            ),
            StartupFailure::NoCacheBlocks { free_gib } => format!(
                "ValueError: No available memory for the cache blocks ({free_gib:.2} GiB left \
                 after weights and activations). Try increasing `gpu_memory_utilization` when \
                 initializing the engine."
            ),
        }
    }
}

#[cfg(test)]
mod tests;
