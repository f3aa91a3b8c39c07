//! The sweep file: what a user submits with `controllerctl submit sweep.toml`.
//!
//! Parsing is strict: unknown fields and impossible values are errors that name the line,
//! the column and the field ([`SpecError`]). [`SweepSpec::expand`] turns a valid sweep into
//! the ordered list of points (GPU count × workload × batch size) the controller schedules.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::SpecError;
use crate::pb;

/// Largest batch size a sweep may ask for.
pub const MAX_BATCH_SIZE: u32 = 65_536;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Vllm,
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
    /// The name used in sweep files and on the wire.
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

/// One input/output token pair.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntry {
    pub input: u32,
    pub output: u32,
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
}

impl LoadMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadMode::Burst => "burst",
            LoadMode::Concurrency => "concurrency",
            LoadMode::Rate => "rate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "burst" | "" => Some(LoadMode::Burst),
            "concurrency" => Some(LoadMode::Concurrency),
            "rate" => Some(LoadMode::Rate),
            _ => None,
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

impl Arrival {
    pub fn as_str(self) -> &'static str {
        match self {
            Arrival::Constant => "constant",
            Arrival::Poisson => "poisson",
            Arrival::Gamma => "gamma",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "constant" => Some(Arrival::Constant),
            "poisson" | "" => Some(Arrival::Poisson),
            "gamma" => Some(Arrival::Gamma),
            _ => None,
        }
    }
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

impl TokenizerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenizerSource::Auto => "auto",
            TokenizerSource::Server => "server",
            TokenizerSource::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" | "" => Some(TokenizerSource::Auto),
            "server" => Some(TokenizerSource::Server),
            "local" => Some(TokenizerSource::Local),
            _ => None,
        }
    }
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
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "chat" => Some(Endpoint::Chat),
            "completions" => Some(Endpoint::Completions),
            "auto" => Some(Endpoint::Auto),
            _ => None,
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
}

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

/// One point of the expanded plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPoint {
    pub index: u32,
    pub gpus: u32,
    pub workload: WorkloadEntry,
    /// Burst: requests per wave; concurrency: requests in flight; rate mode: 0.
    pub batch_size: u32,
    /// Rate mode: requests per second; otherwise 0.
    pub request_rate: f64,
}

impl SweepSpec {
    /// Parses and validates a sweep file. `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, SpecError> {
        let spec: SweepSpec = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
        spec.validate(text, file)?;
        Ok(spec)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        if self.name.get_ref().trim().is_empty() {
            return err(self.name.span(), "name", "must not be empty".into());
        }
        if !self
            .name
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return err(
                self.name.span(),
                "name",
                "may hold only ASCII letters, digits, '-', '_' and '.'".into(),
            );
        }
        if self.model.get_ref().trim().is_empty() {
            return err(self.model.span(), "model", "must not be empty".into());
        }
        let e = &self.engine;
        match (e.runtime, &e.url) {
            (Runtime::External, None) => {
                return err(
                    0..0,
                    "engine.url",
                    "runtime \"external\" needs `url`".into(),
                );
            }
            (Runtime::External, Some(url))
                if !(url.get_ref().starts_with("http://")
                    || url.get_ref().starts_with("https://")) =>
            {
                return err(
                    url.span(),
                    "engine.url",
                    "must start with http:// or https://".into(),
                );
            }
            (Runtime::Process | Runtime::Docker, Some(url)) => {
                return err(
                    url.span(),
                    "engine.url",
                    "only runtime \"external\" takes a url".into(),
                );
            }
            _ => {}
        }
        match (e.runtime, &e.image) {
            (Runtime::Docker, None) => {
                return err(
                    0..0,
                    "engine.image",
                    "runtime \"docker\" needs `image`".into(),
                );
            }
            (Runtime::Docker, Some(image)) if image.get_ref().trim().is_empty() => {
                return err(image.span(), "engine.image", "must not be empty".into());
            }
            (Runtime::Process | Runtime::External, Some(image)) => {
                return err(
                    image.span(),
                    "engine.image",
                    "only runtime \"docker\" takes an image".into(),
                );
            }
            _ => {}
        }
        let util = *e.gpu_memory_utilization.get_ref();
        if !(util > 0.0 && util <= 1.0) {
            return err(
                e.gpu_memory_utilization.span(),
                "engine.gpu_memory_utilization",
                format!("{util} is not in (0, 1]"),
            );
        }
        for (field, v) in [
            ("engine.max_model_len", &e.max_model_len),
            ("engine.block_size", &e.block_size),
            ("engine.max_num_batched_tokens", &e.max_num_batched_tokens),
            ("engine.max_num_seqs", &e.max_num_seqs),
            ("engine.startup_timeout_s", &e.startup_timeout_s),
        ] {
            if *v.get_ref() == 0 {
                return err(v.span(), field, "must be at least 1".into());
            }
        }
        if self.matrix.gpus.get_ref().is_empty() {
            return err(
                self.matrix.gpus.span(),
                "matrix.gpus",
                "must not be empty".into(),
            );
        }
        for (i, g) in self.matrix.gpus.get_ref().iter().enumerate() {
            if *g.get_ref() == 0 {
                return err(
                    g.span(),
                    &format!("matrix.gpus[{i}]"),
                    "GPU count must be at least 1".into(),
                );
            }
        }
        self.validate_load_axis(text, file)?;
        match self
            .matrix
            .batch_sizes
            .as_ref()
            .map(|b| (b.get_ref(), b.span()))
        {
            None => {}
            Some((BatchSizes::List(list), span)) => {
                if list.is_empty() {
                    return err(span, "matrix.batch_sizes", "must not be empty".into());
                }
                for (i, b) in list.iter().enumerate() {
                    let v = *b.get_ref();
                    if v == 0 || v > MAX_BATCH_SIZE {
                        return err(
                            b.span(),
                            &format!("matrix.batch_sizes[{i}]"),
                            format!("batch size {v} is not in 1..={MAX_BATCH_SIZE}"),
                        );
                    }
                }
                if let Some(max) = &self.matrix.max_batch_size {
                    return err(
                        max.span(),
                        "matrix.max_batch_size",
                        "only applies with batch_sizes = \"powers-of-2\"".into(),
                    );
                }
            }
            Some((BatchSizes::PowersOf2, span)) => match &self.matrix.max_batch_size {
                None => {
                    return err(
                        span,
                        "matrix.max_batch_size",
                        "batch_sizes = \"powers-of-2\" needs max_batch_size".into(),
                    );
                }
                Some(max) if *max.get_ref() == 0 || *max.get_ref() > MAX_BATCH_SIZE => {
                    return err(
                        max.span(),
                        "matrix.max_batch_size",
                        format!("{} is not in 1..={MAX_BATCH_SIZE}", max.get_ref()),
                    );
                }
                Some(_) => {}
            },
        }
        if self.matrix.workloads.get_ref().is_empty() {
            return err(
                self.matrix.workloads.span(),
                "matrix.workloads",
                "must not be empty".into(),
            );
        }
        let max_len = *e.max_model_len.get_ref();
        for (i, w) in self.matrix.workloads.get_ref().iter().enumerate() {
            let wl = w.get_ref();
            if wl.input == 0 {
                return err(
                    w.span(),
                    &format!("matrix.workloads[{i}].input"),
                    "must be at least 1 token".into(),
                );
            }
            if wl.output == 0 {
                return err(
                    w.span(),
                    &format!("matrix.workloads[{i}].output"),
                    "must be at least 1 token".into(),
                );
            }
            if u64::from(wl.input) + u64::from(wl.output) > u64::from(max_len) {
                return err(
                    w.span(),
                    &format!("matrix.workloads[{i}].output"),
                    format!(
                        "input {} + output {} tokens exceed engine.max_model_len {max_len}",
                        wl.input, wl.output
                    ),
                );
            }
        }
        if *self.load.timeout_s.get_ref() == 0 {
            return err(
                self.load.timeout_s.span(),
                "load.timeout_s",
                "must be at least 1".into(),
            );
        }
        if *self.load.waves.get_ref() == 0 {
            return err(
                self.load.waves.span(),
                "load.waves",
                "must be at least 1".into(),
            );
        }
        let idle = *self.load.idle_timeout_s.get_ref();
        if !(idle.is_finite() && idle > 0.0) {
            return err(
                self.load.idle_timeout_s.span(),
                "load.idle_timeout_s",
                format!("{idle} is not a positive number of seconds"),
            );
        }
        let placement = &self.placement;
        if let Some(v) = &placement.gpu_vendor {
            let lower = v.get_ref().to_lowercase();
            if !GPU_VENDORS.contains(&lower.as_str()) {
                return err(
                    v.span(),
                    "placement.gpu_vendor",
                    format!(
                        "\"{}\" is not one of {}",
                        v.get_ref(),
                        GPU_VENDORS.join(", ")
                    ),
                );
            }
        }
        if let Some(m) = &placement.gpu_model
            && m.get_ref().trim().is_empty()
        {
            return err(m.span(), "placement.gpu_model", "must not be empty".into());
        }
        if placement.agents.iter().any(|a| a.trim().is_empty()) {
            return err(0..0, "placement.agents", "holds an empty name".into());
        }
        let policy = &self.policy;
        if let Some(r) = &policy.retries {
            if policy.on_engine_crash != OnEngineCrash::Retry {
                return err(
                    r.span(),
                    "policy.retries",
                    format!(
                        "only applies with on_engine_crash = \"retry\" (it is \"{}\")",
                        policy.on_engine_crash.as_str()
                    ),
                );
            }
            if *r.get_ref() == 0 {
                return err(
                    r.span(),
                    "policy.retries",
                    "must be at least 1 with on_engine_crash = \"retry\"".into(),
                );
            }
        }
        if let Some(t) = &policy.point_timeout_s
            && *t.get_ref() == 0
        {
            return err(
                t.span(),
                "policy.point_timeout_s",
                "must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// Checks that the matrix varies what the load mode needs (batch sizes for burst and
    /// concurrency, rates for rate mode) and that the mode's own settings make sense.
    fn validate_load_axis(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        let load = &self.load;
        let mode = load.mode;
        match (mode, &self.matrix.batch_sizes, &self.matrix.rates) {
            (LoadMode::Rate, Some(b), _) => {
                return err(
                    b.span(),
                    "matrix.batch_sizes",
                    "rate mode sweeps matrix.rates (requests per second), not batch sizes".into(),
                );
            }
            (LoadMode::Rate, None, None) => {
                return err(
                    0..0,
                    "matrix.rates",
                    "rate mode needs `rates` (requests per second)".into(),
                );
            }
            (LoadMode::Rate, None, Some(rates)) => {
                if rates.get_ref().is_empty() {
                    return err(rates.span(), "matrix.rates", "must not be empty".into());
                }
                for (i, r) in rates.get_ref().iter().enumerate() {
                    let v = *r.get_ref();
                    if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                        return err(
                            r.span(),
                            &format!("matrix.rates[{i}]"),
                            format!("rate {v} is not in (0, 1000000] requests/s"),
                        );
                    }
                }
            }
            (_, _, Some(rates)) => {
                return err(
                    rates.span(),
                    "matrix.rates",
                    format!(
                        "only applies with load.mode = \"rate\" (mode is \"{}\")",
                        mode.as_str()
                    ),
                );
            }
            (_, None, None) => {
                return err(
                    0..0,
                    "matrix.batch_sizes",
                    format!("{} mode needs `batch_sizes`", mode.as_str()),
                );
            }
            (_, Some(_), None) => {}
        }
        let waves_set = load.waves.span() != (0..0);
        match mode {
            LoadMode::Burst => {
                for (field, span) in [
                    (
                        "load.duration_s",
                        load.duration_s.as_ref().map(Spanned::span),
                    ),
                    ("load.requests", load.requests.as_ref().map(Spanned::span)),
                ] {
                    if let Some(span) = span {
                        return err(
                            span,
                            field,
                            "burst mode sends batch_size x waves requests; use waves".into(),
                        );
                    }
                }
            }
            LoadMode::Concurrency | LoadMode::Rate => {
                if waves_set {
                    return err(
                        load.waves.span(),
                        "load.waves",
                        "only applies with load.mode = \"burst\"".into(),
                    );
                }
                if load.duration_s.is_none() && load.requests.is_none() {
                    return err(
                        0..0,
                        "load.duration_s",
                        format!(
                            "{} mode needs `duration_s` or `requests` (or both)",
                            mode.as_str()
                        ),
                    );
                }
                if let Some(d) = &load.duration_s {
                    let v = *d.get_ref();
                    if !(v.is_finite() && v > 0.0) {
                        return err(
                            d.span(),
                            "load.duration_s",
                            format!("{v} is not a positive number of seconds"),
                        );
                    }
                }
                if let Some(r) = &load.requests
                    && *r.get_ref() == 0
                {
                    return err(r.span(), "load.requests", "must be at least 1".into());
                }
            }
        }
        let shape = *load.burstiness.get_ref();
        if !(shape.is_finite() && shape > 0.0) {
            return err(
                load.burstiness.span(),
                "load.burstiness",
                format!("{shape} is not a positive gamma shape"),
            );
        }
        if load.burstiness.span() != (0..0) && load.arrival != Arrival::Gamma {
            return err(
                load.burstiness.span(),
                "load.burstiness",
                "only applies with arrival = \"gamma\"".into(),
            );
        }
        Ok(())
    }

    /// Batch sizes in the order they run (empty in rate mode).
    pub fn batch_sizes(&self) -> Vec<u32> {
        let Some(sizes) = &self.matrix.batch_sizes else {
            return Vec::new();
        };
        match sizes.get_ref() {
            BatchSizes::List(list) => list.iter().map(|b| *b.get_ref()).collect(),
            BatchSizes::PowersOf2 => {
                let max = self
                    .matrix
                    .max_batch_size
                    .as_ref()
                    .map_or(1, |m| *m.get_ref());
                std::iter::successors(Some(1u32), |b| b.checked_mul(2))
                    .take_while(|b| *b <= max)
                    .collect()
            }
        }
    }

    /// Expands the matrix into points, ordered so the engine restarts as rarely as
    /// possible: grouped by GPU count (the only engine setting the matrix varies), then
    /// workload, then ascending batch size.
    pub fn expand(&self) -> Vec<PlannedPoint> {
        // (batch size, rate): one axis or the other, by mode.
        let loads: Vec<(u32, f64)> = match &self.matrix.rates {
            Some(rates) if self.load.mode == LoadMode::Rate => {
                rates.get_ref().iter().map(|r| (0, *r.get_ref())).collect()
            }
            _ => self.batch_sizes().into_iter().map(|b| (b, 0.0)).collect(),
        };
        let mut points = Vec::new();
        let mut index = 0u32;
        for gpus in self.matrix.gpus.get_ref() {
            for w in self.matrix.workloads.get_ref() {
                for &(batch_size, request_rate) in &loads {
                    points.push(PlannedPoint {
                        index,
                        gpus: *gpus.get_ref(),
                        workload: *w.get_ref(),
                        batch_size,
                        request_rate,
                    });
                    index += 1;
                }
            }
        }
        points
    }

    /// Name the engine serves the model under.
    pub fn served_model_name(&self) -> String {
        self.engine
            .served_model_name
            .clone()
            .unwrap_or_else(|| self.model.get_ref().clone())
    }

    /// The engine configuration as sent to agents.
    pub fn engine_wire(&self) -> pb::EngineSpec {
        let e = &self.engine;
        pb::EngineSpec {
            kind: "vllm".into(),
            runtime: e.runtime.as_str().into(),
            model: self.model.get_ref().clone(),
            served_model_name: self.served_model_name(),
            max_model_len: *e.max_model_len.get_ref(),
            gpu_memory_utilization: *e.gpu_memory_utilization.get_ref(),
            block_size: *e.block_size.get_ref(),
            max_num_batched_tokens: *e.max_num_batched_tokens.get_ref(),
            max_num_seqs: *e.max_num_seqs.get_ref(),
            enforce_eager: e.enforce_eager,
            enable_prefix_caching: e.prefix_caching,
            extra_args: e.extra_args.clone(),
            external_url: e
                .url
                .as_ref()
                .map(|u| u.get_ref().clone())
                .unwrap_or_default(),
            startup_timeout_s: *e.startup_timeout_s.get_ref(),
            image: e
                .image
                .as_ref()
                .map(|i| i.get_ref().clone())
                .unwrap_or_default(),
            entrypoint: e.entrypoint.clone(),
        }
    }

    /// The load settings as sent to agents.
    pub fn load_wire(&self) -> pb::LoadSpec {
        let l = &self.load;
        pb::LoadSpec {
            mode: l.mode.as_str().into(),
            endpoint: l.endpoint.as_str().into(),
            // [policy] point_timeout_s, when set, is the point timeout agents enforce.
            timeout_s: self
                .policy
                .point_timeout_s
                .as_ref()
                .map_or(*l.timeout_s.get_ref(), |t| *t.get_ref()),
            warmup_requests: l.warmup_requests,
            waves: *l.waves.get_ref(),
            seed: l.seed,
            duration_s: l.duration_s.as_ref().map_or(0.0, |d| *d.get_ref()),
            requests: l.requests.as_ref().map_or(0, |r| *r.get_ref()),
            arrival: l.arrival.as_str().into(),
            burstiness: *l.burstiness.get_ref(),
            idle_timeout_s: *l.idle_timeout_s.get_ref(),
            tokenizer: l.tokenizer.as_str().into(),
        }
    }
}

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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = text
        .get(line_start..offset)
        .map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

fn located(text: &str, file: &str, span: Range<usize>, field: &str, message: String) -> SpecError {
    // Defaulted fields carry the empty span 0..0: locate them at their section instead.
    let (line, column) = if span == (0..0) {
        section_line(text, field).unwrap_or((0, 0))
    } else {
        line_col(text, span.start)
    };
    SpecError {
        file: file.to_string(),
        line,
        column,
        field: field.to_string(),
        message,
    }
}

/// Line of the `[section]` header a dotted field lives in, for values that were defaulted.
fn section_line(text: &str, field: &str) -> Option<(usize, usize)> {
    let section = field.split('.').next()?;
    let header = format!("[{section}]");
    text.lines()
        .position(|l| l.trim() == header)
        .map(|i| (i + 1, 1))
}

fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> SpecError {
    let span = e.span().unwrap_or(0..0);
    let (line, column) = if e.span().is_some() {
        line_col(text, span.start)
    } else {
        (0, 0)
    };
    // For unknown fields the span covers the offending key; name it.
    // For a bad value it covers the value; name its key (`section.key`).
    let message = e.message().trim().to_string();
    let field = key_at(text, &span)
        .or_else(|| key_of_value(text, &span))
        .unwrap_or_default();
    SpecError {
        file: file.to_string(),
        line,
        column,
        field,
        message,
    }
}

/// The bare key written at `span`, when the span covers one (`foo` in `foo = 1`).
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let s = text.get(span.clone())?.trim();
    let rest = text.get(span.end..)?.trim_start();
    let is_key = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && rest.starts_with('=');
    is_key.then(|| s.to_string())
}

/// The dotted key (`policy.on_engine_crash`) of the value that starts at `span`, when it is
/// the whole right-hand side of a `key = value` line (not inside an inline table or array).
fn key_of_value(text: &str, span: &Range<usize>) -> Option<String> {
    let before = text.get(..span.start)?;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let lhs = before
        .get(line_start..)?
        .trim_end()
        .strip_suffix('=')?
        .trim();
    let is_key = !lhs.is_empty()
        && lhs
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !is_key {
        return None;
    }
    let section = before
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(|l| {
            let header = l.split('#').next()?.trim();
            let name = header.strip_prefix('[')?.strip_suffix(']')?.trim();
            // `[[array.of.tables]]` headers are not named here.
            (!name.starts_with('[')).then_some(name)
        });
    Some(match section {
        Some(section) => format!("{section}.{lhs}"),
        None => lhs.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"
model = "meta-llama/Llama-3.2-1B-Instruct"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 4096
block_size = 64
enforce_eager = true

[matrix]
gpus = [1, 2]
batch_sizes = "powers-of-2"
max_batch_size = 8
workloads = [{ input = 1024, output = 512 }, { input = 128, output = 128 }]

[load]
endpoint = "auto"
timeout_s = 600
"#;

    fn rate_spec(load: &str, matrix_extra: &str) -> String {
        GOOD.replace(
            "batch_sizes = \"powers-of-2\"\nmax_batch_size = 8\n",
            matrix_extra,
        )
        .replace("[load]\n", &format!("[load]\n{load}\n"))
    }

    #[test]
    fn rate_mode_sweeps_rates_with_arrival_settings() {
        let text = rate_spec(
            "mode = \"rate\"\narrival = \"gamma\"\nburstiness = 0.5\nduration_s = 20\nidle_timeout_s = 30",
            "rates = [1.5, 10]\n",
        );
        let spec = SweepSpec::parse(&text, "rate.toml").unwrap();
        let points = spec.expand();
        assert_eq!(points.len(), 2 * 2 * 2);
        assert_eq!(points[0].request_rate, 1.5);
        assert_eq!(points[1].request_rate, 10.0);
        assert!(points.iter().all(|p| p.batch_size == 0));
        let wire = spec.load_wire();
        assert_eq!(wire.mode, "rate");
        assert_eq!(wire.arrival, "gamma");
        assert_eq!(wire.burstiness, 0.5);
        assert_eq!(wire.duration_s, 20.0);
        assert_eq!(wire.requests, 0);
        assert_eq!(wire.idle_timeout_s, 30.0);
        assert_eq!(wire.tokenizer, "auto");
    }

    #[test]
    fn concurrency_mode_keeps_batch_sizes_and_needs_an_end() {
        let text = rate_spec(
            "mode = \"concurrency\"\nrequests = 200",
            "batch_sizes = [4, 16]\n",
        );
        let spec = SweepSpec::parse(&text, "c.toml").unwrap();
        assert_eq!(spec.expand()[1].batch_size, 16);
        assert_eq!(spec.load_wire().requests, 200);

        let text = rate_spec("mode = \"concurrency\"", "batch_sizes = [4]\n");
        let err = SweepSpec::parse(&text, "c.toml").unwrap_err();
        assert_eq!(err.field, "load.duration_s");
        assert!(
            err.message.contains("needs `duration_s` or `requests`"),
            "{err}"
        );
    }

    #[test]
    fn mode_and_matrix_axis_mismatches_name_the_field() {
        let cases = [
            // rate mode with batch sizes
            (
                "mode = \"rate\"\nduration_s = 5",
                "batch_sizes = [1]\n",
                "matrix.batch_sizes",
            ),
            // burst with rates
            ("", "batch_sizes = [1]\nrates = [2.0]\n", "matrix.rates"),
            // zero rate
            (
                "mode = \"rate\"\nrequests = 5",
                "rates = [0.0]\n",
                "matrix.rates[0]",
            ),
            // waves outside burst
            (
                "mode = \"rate\"\nrequests = 5\nwaves = 2",
                "rates = [1.0]\n",
                "load.waves",
            ),
            // duration in burst
            ("duration_s = 3", "batch_sizes = [1]\n", "load.duration_s"),
            // burstiness without gamma
            (
                "mode = \"rate\"\nrequests = 5\nburstiness = 2",
                "rates = [1.0]\n",
                "load.burstiness",
            ),
            // non-positive idle timeout
            (
                "idle_timeout_s = 0",
                "batch_sizes = [1]\n",
                "load.idle_timeout_s",
            ),
        ];
        for (load, matrix, field) in cases {
            let text = rate_spec(load, matrix);
            let err = SweepSpec::parse(&text, "x.toml").unwrap_err();
            assert_eq!(err.field, field, "{load} / {matrix}: {err}");
        }
    }

    #[test]
    fn parses_and_expands_in_engine_order() {
        let spec = SweepSpec::parse(GOOD, "good.toml").unwrap();
        assert_eq!(spec.batch_sizes(), vec![1, 2, 4, 8]);
        let points = spec.expand();
        assert_eq!(points.len(), 2 * 2 * 4);
        // Grouped by GPU count first, so one engine start per GPU count.
        assert!(points[..8].iter().all(|p| p.gpus == 1));
        assert!(points[8..].iter().all(|p| p.gpus == 2));
        assert_eq!(points[3].batch_size, 8);
        assert_eq!(
            points[4].workload,
            WorkloadEntry {
                input: 128,
                output: 128
            }
        );
        assert_eq!(spec.load.endpoint, Endpoint::Auto);
        let flags = vllm_flags(&spec.engine_wire(), 2);
        let joined = flags.join(" ");
        assert!(joined.contains("--tensor-parallel-size 2"), "{joined}");
        assert!(joined.contains("--block-size 64"), "{joined}");
        assert!(joined.contains("--enforce-eager"), "{joined}");
        assert!(joined.contains("--no-enable-prefix-caching"), "{joined}");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let bad = GOOD.replace("block_size = 64", "blocksize = 64");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.line, 9, "{err}");
        assert_eq!(err.field, "blocksize", "{err}");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn batch_size_zero_is_rejected_with_location() {
        let bad = GOOD
            .replace("batch_sizes = \"powers-of-2\"", "batch_sizes = [1, 0, 4]")
            .replace("max_batch_size = 8\n", "");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.field, "matrix.batch_sizes[1]", "{err}");
        assert_eq!((err.line, err.column), (14, 19), "{err}");
        assert!(
            err.to_string()
                .starts_with("bad.toml:14:19: field `matrix.batch_sizes[1]`"),
            "{err}"
        );
    }

    #[test]
    fn docker_runtime_needs_an_image_and_only_it_takes_one() {
        let docker = GOOD.replace("runtime = \"process\"", "runtime = \"docker\"");
        let err = SweepSpec::parse(&docker, "d.toml").unwrap_err();
        assert_eq!(err.field, "engine.image", "{err}");
        assert!(err.message.contains("needs `image`"), "{err}");

        let ok = docker.replace(
            "runtime = \"docker\"",
            "runtime = \"docker\"\nimage = \"fleetbench/vllm-sim:dev\"\nentrypoint = [\"/vllm-sim\"]",
        );
        let spec = SweepSpec::parse(&ok, "d.toml").unwrap();
        let wire = spec.engine_wire();
        assert_eq!(
            (wire.runtime.as_str(), wire.image.as_str()),
            ("docker", "fleetbench/vllm-sim:dev")
        );
        assert_eq!(wire.entrypoint, vec!["/vllm-sim"]);

        let process_with_image = GOOD.replace(
            "runtime = \"process\"",
            "runtime = \"process\"\nimage = \"x\"",
        );
        let err = SweepSpec::parse(&process_with_image, "p.toml").unwrap_err();
        assert_eq!((err.field.as_str(), err.line), ("engine.image", 8), "{err}");
    }

    #[test]
    fn output_above_max_model_len_is_rejected() {
        let bad = GOOD.replace(
            "{ input = 128, output = 128 }",
            "{ input = 128, output = 4000 }",
        );
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.field, "matrix.workloads[1].output", "{err}");
        assert_eq!(err.line, 16, "{err}");
        assert!(
            err.message.contains("exceed engine.max_model_len 4096"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_and_bad_enum_name_the_line() {
        let bad = GOOD.replace("runtime = \"process\"", "runtime = \"kubernetes\"");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.line, 7, "{err}");
        assert!(err.message.contains("kubernetes"), "{err}");
        assert_eq!(err.field, "engine.runtime", "{err}");

        let bad = GOOD.replace("timeout_s = 600", "timeout_s = \"ten\"");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.line, 20, "{err}");
    }

    #[test]
    fn powers_of_two_need_a_max() {
        let bad = GOOD.replace("max_batch_size = 8\n", "");
        let err = SweepSpec::parse(&bad, "bad.toml").unwrap_err();
        assert_eq!(err.field, "matrix.max_batch_size", "{err}");
        assert_eq!(err.line, 14, "{err}");
    }

    #[test]
    fn model_slug_is_a_safe_partition_value() {
        assert_eq!(
            model_slug("meta-llama/Llama-3.2-1B"),
            "meta-llama--Llama-3.2-1B"
        );
        assert_eq!(model_slug("/models/x y=z"), "models--x_y_z");
    }

    fn with_policy(policy: &str) -> String {
        format!("{GOOD}\n[policy]\n{policy}\n")
    }

    #[test]
    fn policy_defaults_to_continue_and_load_timeout() {
        let spec = SweepSpec::parse(GOOD, "good.toml").unwrap();
        assert_eq!(spec.policy.on_engine_crash, OnEngineCrash::Continue);
        assert_eq!(spec.policy.crash_retries(), 0);
        assert_eq!(spec.load_wire().timeout_s, 600);
    }

    #[test]
    fn policy_parses_skip_larger_retry_and_point_timeout() {
        let spec = SweepSpec::parse(
            &with_policy("on_engine_crash = \"skip-larger\"\npoint_timeout_s = 90"),
            "p.toml",
        )
        .unwrap();
        assert_eq!(spec.policy.on_engine_crash, OnEngineCrash::SkipLarger);
        assert_eq!(spec.policy.crash_retries(), 0);
        // The policy's point timeout overrides [load] timeout_s on the wire.
        assert_eq!(spec.load_wire().timeout_s, 90);

        let spec = SweepSpec::parse(&with_policy("on_engine_crash = \"retry\""), "p.toml").unwrap();
        assert_eq!(spec.policy.crash_retries(), DEFAULT_CRASH_RETRIES);
        let spec = SweepSpec::parse(
            &with_policy("on_engine_crash = \"retry\"\nretries = 3"),
            "p.toml",
        )
        .unwrap();
        assert_eq!(spec.policy.crash_retries(), 3);
        assert_eq!(spec.load_wire().timeout_s, 600);
    }

    #[test]
    fn policy_errors_name_the_field_and_line() {
        // GOOD ends on line 20; "[policy]" is line 22, its first key line 23.
        let err =
            SweepSpec::parse(&with_policy("on_engine_crash = \"explode\""), "p.toml").unwrap_err();
        assert_eq!(err.field, "policy.on_engine_crash", "{err}");
        assert_eq!((err.line, err.column), (23, 19), "{err}");
        assert!(err.message.contains("explode"), "{err}");
        assert!(err.to_string().starts_with("p.toml:23:19: "), "{err}");

        let err = SweepSpec::parse(
            &with_policy("on_engine_crash = \"retry\"\nretries = 0"),
            "p.toml",
        )
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.line),
            ("policy.retries", 24),
            "{err}"
        );
        assert!(err.message.contains("at least 1"), "{err}");

        let err = SweepSpec::parse(
            &with_policy("on_engine_crash = \"skip-larger\"\nretries = 2"),
            "p.toml",
        )
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.line),
            ("policy.retries", 24),
            "{err}"
        );
        assert!(err.message.contains("only applies with"), "{err}");

        let err = SweepSpec::parse(&with_policy("retries = 2"), "p.toml").unwrap_err();
        assert_eq!(err.field, "policy.retries", "{err}");

        let err = SweepSpec::parse(&with_policy("point_timeout_s = 0"), "p.toml").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.line),
            ("policy.point_timeout_s", 23),
            "{err}"
        );

        let err = SweepSpec::parse(&with_policy("retry_count = 2"), "p.toml").unwrap_err();
        assert_eq!((err.field.as_str(), err.line), ("retry_count", 23), "{err}");
        assert!(err.message.contains("unknown field"), "{err}");

        let err = SweepSpec::parse(&with_policy("retries = -1"), "p.toml").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.line),
            ("policy.retries", 23),
            "{err}"
        );
    }

    fn inventory(name: &str, labels: &[(&str, &str)], gpus: &[(&str, &str)]) -> pb::Inventory {
        pb::Inventory {
            agent_name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, (vendor, model))| pb::Gpu {
                    index: u32::try_from(i).unwrap(),
                    vendor: vendor.to_string(),
                    model: model.to_string(),
                    memory_bytes: 0,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn placement_matches_names_and_labels() {
        let p = PlacementSection {
            labels: [("gpu".to_string(), "b60".to_string())].into(),
            ..Default::default()
        };
        assert!(p.matches(&inventory("a", &[("gpu", "b60")], &[])));
        assert!(!p.matches(&inventory("a", &[("gpu", "h100")], &[])));
        let p = PlacementSection {
            agents: vec!["b".into()],
            ..Default::default()
        };
        assert!(!p.matches(&inventory("a", &[], &[])));
        assert!(p.matches(&inventory("b", &[], &[])));
    }

    fn with_placement(placement: &str) -> String {
        format!("{GOOD}\n[placement]\n{placement}\n")
    }

    #[test]
    fn placement_matches_gpu_vendor_and_model_without_case() {
        let spec = SweepSpec::parse(
            &with_placement(
                "strategy = \"replicate\"\ngpu_vendor = \"Intel\"\ngpu_model = \"b60\"",
            ),
            "p.toml",
        )
        .unwrap();
        let p = &spec.placement;
        assert_eq!(p.strategy, Strategy::Replicate);
        assert!(p.matches(&inventory("a", &[], &[("intel", "Arc Pro B60")])));
        // Vendor and model must hold for the same GPU.
        assert!(!p.matches(&inventory(
            "a",
            &[],
            &[("nvidia", "B60 lookalike"), ("intel", "Arc A770")]
        )));
        assert!(!p.matches(&inventory("a", &[], &[])));
        let spec = SweepSpec::parse(GOOD, "p.toml").unwrap();
        assert_eq!(spec.placement.strategy, Strategy::Spread);
        assert!(spec.placement.matches(&inventory("a", &[], &[])));
    }

    #[test]
    fn placement_errors_name_the_field_and_line() {
        // GOOD ends on line 20; "[placement]" is line 22, its first key line 23.
        let err =
            SweepSpec::parse(&with_placement("strategy = \"scatter\""), "p.toml").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.line),
            ("placement.strategy", 23),
            "{err}"
        );
        assert!(err.message.contains("scatter"), "{err}");

        let err = SweepSpec::parse(
            &with_placement("strategy = \"spread\"\ngpu_vendor = \"intle\""),
            "p.toml",
        )
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.line),
            ("placement.gpu_vendor", 24),
            "{err}"
        );
        assert!(err.message.contains("intle"), "{err}");

        let err = SweepSpec::parse(&with_placement("gpu_model = \" \""), "p.toml").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.line),
            ("placement.gpu_model", 23),
            "{err}"
        );

        let err = SweepSpec::parse(&with_placement("gpu_count = 2"), "p.toml").unwrap_err();
        assert_eq!((err.field.as_str(), err.line), ("gpu_count", 23), "{err}");
    }
}
