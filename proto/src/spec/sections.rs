//! The sections of a sweep file as serde reads them (`[engine]`, `[matrix]`, `[load]`,
//! `[placement]`, `[policy]`), the enums their fields take and their defaults, plus the
//! questions a section answers on its own: placement matching, crash retries, the served
//! model name and the model's partition slug.
//!
//! Deserializing checks types and field names only; `validate.rs` checks the values.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::search::{Search, SearchSection};
use super::slo::{Slo, SloSection};
use super::workload::WorkloadEntry;
use crate::pb;

/// A parsed, validated sweep file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Human name of the sweep; part of the sweep id.
    pub name: Spanned<String>,
    /// Model to serve, as the engine knows it (e.g. a Hugging Face id or a local folder).
    pub model: Spanned<String>,
    pub engine: EngineSection,
    pub matrix: MatrixSection,
    #[serde(default)]
    pub load: LoadSection,
    #[serde(default)]
    pub placement: PlacementSection,
    #[serde(default)]
    pub policy: PolicySection,
    /// `[slo]`: the objectives each point is judged against (goodput, SLO verdict).
    pub slo: Option<SloSection>,
    /// `[search]`: the sweep finds its load levels itself (no `batch_sizes`/`rates`).
    pub search: Option<SearchSection>,
    /// What parsing changed in the file's values, one line each (e.g. a batch size listed
    /// twice, measured once), for `controllerctl validate` to print.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// Which server the engine is: it decides the engine's command line (see
/// [`engine_args`](super::engine_args)), how readiness and prompt lengths are learned and
/// which metric names mean requests running and waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// vLLM (`vllm serve`), or the simulator that mimics it.
    Vllm,
    /// Hugging Face `transformers serve --continuous-batching`: one GPU, served under the
    /// model path, no `/tokenize`, no `/metrics`, refuses `ignore_eos`.
    Transformers,
    /// llama.cpp's `llama-server` (continuous batching with `--parallel`).
    LlamaCpp,
    /// SGLang (`python -m sglang.launch_server`).
    Sglang,
    /// Hugging Face text-generation-inference (`text-generation-launcher`).
    Tgi,
}

impl EngineKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [EngineKind; 5] = [
        EngineKind::Vllm,
        EngineKind::Transformers,
        EngineKind::LlamaCpp,
        EngineKind::Sglang,
        EngineKind::Tgi,
    ];

    /// The name used in sweep files, agent configs and the results' `engine_kind` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Vllm => "vllm",
            EngineKind::Transformers => "transformers",
            EngineKind::LlamaCpp => "llama-cpp",
            EngineKind::Sglang => "sglang",
            EngineKind::Tgi => "tgi",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// The agent spawns the engine as a local process (its process group is stopped after).
    Process,
    /// An engine that already runs at `url`; no lifecycle.
    External,
    /// The agent runs the engine as a Docker container of `image` (labelled as
    /// fleetbench's, stopped and removed after).
    Docker,
}

impl Runtime {
    /// The name used in sweep files, displays and the results' `engine_runtime` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::External => "external",
            Runtime::Docker => "docker",
        }
    }
}

/// `[engine]`: the vLLM settings of the seed workflow. Tensor parallel size is not set
/// here: it always equals the point's GPU count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    pub kind: EngineKind,
    pub runtime: Runtime,
    /// Base URL of an `external` engine, e.g. `http://10.0.0.5:8000`.
    pub url: Option<Spanned<String>>,
    /// Container image of a `docker` engine, e.g. `intel/vllm:0.10.2-xpu` or
    /// `vllm/vllm-openai@sha256:…`; the digest the host resolved is recorded with results.
    pub image: Option<Spanned<String>>,
    /// `docker`: the container's command before `--model <model>` and the vLLM flags
    /// (e.g. `["vllm", "serve"]` for an image whose entrypoint is a shell); empty: the
    /// image's entrypoint receives the flags.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Name the engine serves the model under (`--served-model-name`); defaults to `model`.
    pub served_model_name: Option<String>,
    #[serde(default = "default_max_model_len")]
    pub max_model_len: Spanned<u32>,
    #[serde(default = "default_gpu_memory_utilization")]
    pub gpu_memory_utilization: Spanned<f64>,
    #[serde(default = "default_block_size")]
    pub block_size: Spanned<u32>,
    #[serde(default = "default_max_num_batched_tokens")]
    pub max_num_batched_tokens: Spanned<u32>,
    #[serde(default = "default_max_num_seqs")]
    pub max_num_seqs: Spanned<u32>,
    #[serde(default)]
    pub enforce_eager: bool,
    #[serde(default)]
    pub prefix_caching: bool,
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// How long the engine may take to become ready, in seconds (first starts download
    /// weights).
    #[serde(default = "default_startup_timeout_s")]
    pub startup_timeout_s: Spanned<u32>,
}

fn default_max_model_len() -> Spanned<u32> {
    Spanned::new(0..0, 4096)
}
fn default_gpu_memory_utilization() -> Spanned<f64> {
    Spanned::new(0..0, 0.9)
}
fn default_block_size() -> Spanned<u32> {
    Spanned::new(0..0, 16)
}
fn default_max_num_batched_tokens() -> Spanned<u32> {
    Spanned::new(0..0, 8192)
}
fn default_max_num_seqs() -> Spanned<u32> {
    Spanned::new(0..0, 256)
}
fn default_startup_timeout_s() -> Spanned<u32> {
    Spanned::new(0..0, 900)
}

/// `[matrix]`: what the sweep varies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixSection {
    /// GPU counts; each is also the tensor-parallel size.
    pub gpus: Spanned<Vec<Spanned<u32>>>,
    /// A list (`[1, 4, 16]`) or `"powers-of-2"` (1, 2, 4, … up to `max_batch_size`).
    /// Burst mode: requests sent together; concurrency mode: requests kept in flight.
    pub batch_sizes: Option<Spanned<BatchSizes>>,
    pub max_batch_size: Option<Spanned<u32>>,
    /// Rate mode: request rates to sweep, in requests per second.
    pub rates: Option<Spanned<Vec<Spanned<f64>>>>,
    pub workloads: Spanned<Vec<Spanned<WorkloadEntry>>>,
}

/// Batch sizes as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchSizes {
    List(Vec<Spanned<u32>>),
    PowersOf2,
}

impl<'de> Deserialize<'de> for BatchSizes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = BatchSizes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of batch sizes or \"powers-of-2\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BatchSizes, E> {
                match v {
                    "powers-of-2" => Ok(BatchSizes::PowersOf2),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchSizes, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Spanned<u32>>()? {
                    out.push(v);
                }
                Ok(BatchSizes::List(out))
            }
        }
        deserializer.deserialize_any(BatchVisitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMode {
    /// The seed's batch: N requests sent together, repeated for `waves` waves.
    #[default]
    Burst,
    /// Closed loop: N requests kept in flight (a new one leaves when one finishes) for
    /// `duration_s` or `requests`.
    Concurrency,
    /// Open loop: requests leave on an absolute timeline at `matrix.rates`, whatever the
    /// server does, for `duration_s` or `requests`.
    Rate,
    /// Open loop replay of a trace workload (`{ trace = "file" }`): each request leaves
    /// at its arrival offset in the trace (divided by the workload's `time_scale`) with
    /// the trace's input and output lengths; `requests` / `duration_s` cut it short.
    Trace,
}

impl LoadMode {
    /// The name used in sweep files, error messages and the results' `mode` column.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadMode::Burst => "burst",
            LoadMode::Concurrency => "concurrency",
            LoadMode::Rate => "rate",
            LoadMode::Trace => "trace",
        }
    }
}

/// Rate mode's inter-arrival distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    /// Exactly 1/rate apart.
    Constant,
    /// Exponential gaps (a Poisson process), as vLLM's `--request-rate` with burstiness 1.
    #[default]
    Poisson,
    /// Gamma-distributed gaps with shape `burstiness` and mean 1/rate (vLLM's
    /// `--burstiness`): below 1 burstier than Poisson, above 1 more regular.
    Gamma,
}

/// How prompts are counted to their exact length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TokenizerSource {
    /// A local `tokenizer.json` when the agent finds one for the model, else the server.
    #[default]
    Auto,
    /// The engine's `/tokenize` endpoint.
    Server,
    /// A local `tokenizer.json` (an error when the agent has none for the model).
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Endpoint {
    #[default]
    Chat,
    Completions,
    /// Probe `/v1/completions`, fall back to chat when the engine refuses it.
    Auto,
}

impl Endpoint {
    /// The name used in sweep files and in each record's `endpoint` (the Parquet column).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Auto => "auto",
        }
    }
}

/// `[load]`: how the agent drives each point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    #[serde(default)]
    pub mode: LoadMode,
    #[serde(default)]
    pub endpoint: Endpoint,
    /// Per-point timeout in seconds (the seed needed 1200 for large batches).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: Spanned<u32>,
    /// Requests sent before the measured ones, excluded from results.
    #[serde(default)]
    pub warmup_requests: u32,
    /// Burst mode: how many bursts of N requests are measured per point.
    #[serde(default = "default_waves")]
    pub waves: Spanned<u32>,
    /// Seed for prompts and arrival times: the same spec yields the same schedule.
    #[serde(default)]
    pub seed: u64,
    /// Concurrency / rate mode: seconds during which new measured requests are sent.
    pub duration_s: Option<Spanned<f64>>,
    /// Concurrency / rate mode: measured requests per point (with `duration_s`, whichever
    /// comes first ends the sending).
    pub requests: Option<Spanned<u32>>,
    /// Rate mode: the inter-arrival distribution.
    #[serde(default)]
    pub arrival: Arrival,
    /// Rate mode with `arrival = "gamma"`: the shape of the gamma distribution.
    #[serde(default = "default_burstiness")]
    pub burstiness: Spanned<f64>,
    /// A stream that stays silent this many seconds is recorded as `stalled`.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: Spanned<f64>,
    #[serde(default)]
    pub tokenizer: TokenizerSource,
    /// `[load.warmup]`: a warm-up that is measured until it converges.
    #[serde(default)]
    pub warmup: WarmupSection,
    /// A multi-stage schedule within each point (rate or concurrency mode), e.g. warm 60 s
    /// at 2 req/s, then 30 s at 8: `[{ duration_s = 60, rate = 2 }, { duration_s = 30,
    /// rate = 8 }]`. Each stage is summarized on its own (`controllerctl results
    /// --by-stage`); the matrix then lists no `rates`/`batch_sizes`.
    pub stages: Option<Spanned<Vec<Spanned<StageEntry>>>>,
}

/// One stage of `[load] stages`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageEntry {
    /// How long the stage sends new requests, in seconds.
    pub duration_s: f64,
    /// Rate mode: requests per second during the stage.
    pub rate: Option<f64>,
    /// Concurrency mode: requests kept in flight during the stage.
    pub concurrency: Option<u32>,
}

/// The most stages a point may have.
pub const MAX_STAGES: usize = 64;

/// `[load.warmup]`: before each point's measured load, waves of the point's own batch size
/// and prompt/output lengths until two consecutive waves' output throughput agree within
/// `tolerance` (a share: 0.03 = 3 %), at most `max_waves` waves. An engine compiles and
/// allocates per new shape; one warm-up request does not cover that. A point whose warm-up
/// hit the cap says so in its verdict. Default: none (`max_waves = 0`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupSection {
    /// The most warm-up waves (at least 2 when set: convergence compares two waves).
    #[serde(default = "default_warmup_max_waves")]
    pub max_waves: Spanned<u32>,
    #[serde(default = "default_warmup_tolerance")]
    pub tolerance: Spanned<f64>,
}

/// Default `[load.warmup] tolerance`.
pub const DEFAULT_WARMUP_TOLERANCE: f64 = 0.03;

fn default_warmup_max_waves() -> Spanned<u32> {
    Spanned::new(0..0, 0)
}

fn default_warmup_tolerance() -> Spanned<f64> {
    Spanned::new(0..0, DEFAULT_WARMUP_TOLERANCE)
}

impl Default for WarmupSection {
    fn default() -> Self {
        WarmupSection {
            max_waves: default_warmup_max_waves(),
            tolerance: default_warmup_tolerance(),
        }
    }
}

fn default_burstiness() -> Spanned<f64> {
    Spanned::new(0..0, 1.0)
}
fn default_idle_timeout_s() -> Spanned<f64> {
    Spanned::new(0..0, 300.0)
}

fn default_timeout_s() -> Spanned<u32> {
    Spanned::new(0..0, 1200)
}
fn default_waves() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

impl Default for LoadSection {
    fn default() -> Self {
        LoadSection {
            mode: LoadMode::Burst,
            endpoint: Endpoint::Chat,
            timeout_s: default_timeout_s(),
            warmup_requests: 0,
            waves: default_waves(),
            seed: 0,
            duration_s: None,
            requests: None,
            arrival: Arrival::default(),
            burstiness: default_burstiness(),
            idle_timeout_s: default_idle_timeout_s(),
            tokenizer: TokenizerSource::default(),
            warmup: WarmupSection::default(),
            stages: None,
        }
    }
}

/// How a sweep's points are placed on the matching agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Each point runs once, on any matching agent; points of one engine configuration
    /// (GPU count) stay on one agent as far as possible.
    #[default]
    Spread,
    /// The whole sweep runs on every matching agent (one child sweep per agent), to
    /// compare hosts.
    Replicate,
}

impl Strategy {
    /// The name used in sweep files.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Spread => "spread",
            Strategy::Replicate => "replicate",
        }
    }
}

/// GPU vendors an agent reports in its inventory.
pub const GPU_VENDORS: [&str; 3] = ["intel", "nvidia", "amd"];

/// `[placement]`: which agents may run the sweep and how points are spread over them.
/// Empty means any agent, spread.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// Agent names; a point may run on any of them.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Labels an agent must carry (all of them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `spread` (default) or `replicate`.
    #[serde(default)]
    pub strategy: Strategy,
    /// The agent must have a GPU of this vendor (`intel`, `nvidia`, `amd`; any case).
    pub gpu_vendor: Option<Spanned<String>>,
    /// The agent must have a GPU whose model contains this text (any case), e.g. `B60`.
    pub gpu_model: Option<Spanned<String>>,
}

/// What the controller does when a point ends in an engine crash (the engine process or
/// container died during the point, or failed to start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnEngineCrash {
    /// Still-pending points of the same GPU count and workload with a larger batch size
    /// (rate mode: a larger rate) are skipped: they would crash the engine too.
    SkipLarger,
    /// The crashed point runs again on a fresh engine, up to `retries` more times.
    Retry,
    /// The point stays failed; the sweep goes on.
    #[default]
    Continue,
}

impl OnEngineCrash {
    pub fn as_str(self) -> &'static str {
        match self {
            OnEngineCrash::SkipLarger => "skip-larger",
            OnEngineCrash::Retry => "retry",
            OnEngineCrash::Continue => "continue",
        }
    }
}

/// `[policy]`: how the controller treats failing points. It decides; agents never see it
/// (except the point timeout, which travels as the load's `timeout_s`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    pub on_engine_crash: OnEngineCrash,
    /// `on_engine_crash = "retry"` only: extra attempts after a crash (default 1).
    pub retries: Option<Spanned<u32>>,
    /// Per-point timeout in seconds; overrides `[load] timeout_s` when set.
    pub point_timeout_s: Option<Spanned<u32>>,
    /// The share of a point's requests (0 to 1) that may fail before the point is `failed`
    /// (default [`DEFAULT_MAX_FAILED_SHARE`]); a point with no successful request is failed
    /// whatever this says.
    pub max_failed_share: Option<Spanned<f64>>,
}

/// Default `[policy] max_failed_share`.
pub const DEFAULT_MAX_FAILED_SHARE: f64 = 0.5;

/// Default extra attempts of `on_engine_crash = "retry"`.
pub const DEFAULT_CRASH_RETRIES: u32 = 1;

impl PolicySection {
    /// Extra attempts a point gets after an engine crash (0 unless the policy is `retry`).
    pub fn crash_retries(&self) -> u32 {
        match self.on_engine_crash {
            OnEngineCrash::Retry => self
                .retries
                .as_ref()
                .map_or(DEFAULT_CRASH_RETRIES, |r| *r.get_ref()),
            OnEngineCrash::SkipLarger | OnEngineCrash::Continue => 0,
        }
    }

    /// The share of failed requests above which a point is failed.
    pub fn max_failed_share(&self) -> f64 {
        self.max_failed_share
            .as_ref()
            .map_or(DEFAULT_MAX_FAILED_SHARE, |s| *s.get_ref())
    }
}

impl PlacementSection {
    /// Whether the agent that registered `inventory` may run the sweep: its name is listed
    /// (or none are), it carries every label, and (when asked for) one of its GPUs has the
    /// vendor and a model containing `gpu_model`, both compared without case.
    pub fn matches(&self, inventory: &pb::Inventory) -> bool {
        let name_ok = self.agents.is_empty() || self.agents.contains(&inventory.agent_name);
        let labels_ok = self
            .labels
            .iter()
            .all(|(k, v)| inventory.labels.get(k).is_some_and(|have| have == v));
        let vendor = self.gpu_vendor.as_ref().map(|v| v.get_ref().to_lowercase());
        let model = self.gpu_model.as_ref().map(|m| m.get_ref().to_lowercase());
        let gpu_ok = (vendor.is_none() && model.is_none())
            || inventory.gpus.iter().any(|g| {
                vendor
                    .as_ref()
                    .is_none_or(|v| g.vendor.to_lowercase() == *v)
                    && model
                        .as_ref()
                        .is_none_or(|m| g.model.to_lowercase().contains(m.as_str()))
            });
        name_ok && labels_ok && gpu_ok
    }
}

impl SweepSpec {
    /// The sweep's SLO in plain form, if it has one.
    pub fn slo(&self) -> Option<Slo> {
        self.slo.as_ref().map(SloSection::to_slo)
    }

    /// The sweep's search in plain form, if it is a search sweep.
    pub fn search(&self) -> Option<Search> {
        self.search
            .as_ref()
            .map(|s| s.to_search(self.load.mode != LoadMode::Rate))
    }

    /// Name the engine serves the model under.
    pub fn served_model_name(&self) -> String {
        self.engine
            .served_model_name
            .clone()
            .unwrap_or_else(|| self.model.get_ref().clone())
    }
}

/// Directory-safe form of a model name for Hive partition values:
/// `meta-llama/Llama-3.2-1B` → `meta-llama--Llama-3.2-1B`.
pub fn model_slug(model: &str) -> String {
    let replaced = model.trim_matches('/').replace('/', "--");
    replaced
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
