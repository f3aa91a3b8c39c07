//! Wire conversion: the engine and load settings of a sweep as the `pb` messages the
//! controller sends to agents, and the sweep-file enums to and from their generated `pb`
//! counterparts.
//!
//! From the wire, `UNSPECIFIED` reads as what an empty string read as before the enums
//! replaced strings: the section's default (burst, chat, poisson, auto), and for the
//! runtime, which has no default, an error. A value this build does not know is not
//! mapped here: a receiver that must refuse it checks `pb::X::try_from(i32)` first (the
//! generated accessors such as `load_mode()` read it as `UNSPECIFIED`).

use super::sections::{
    Arrival, Endpoint, EngineKind, LoadMode, Runtime, SweepSpec, TokenizerSource,
};
use super::workload::{LengthDist, WorkloadEntry};
use crate::{ProtoError, pb};

impl SweepSpec {
    /// The engine configuration as sent to agents.
    pub fn engine_wire(&self) -> pb::EngineSpec {
        let e = &self.engine;
        pb::EngineSpec {
            engine_kind: pb::EngineKind::from(e.kind).into(),
            runtime_kind: pb::Runtime::from(e.runtime).into(),
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
            load_mode: pb::LoadMode::from(l.mode).into(),
            endpoint_kind: pb::Endpoint::from(l.endpoint).into(),
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
            arrival_kind: pb::Arrival::from(l.arrival).into(),
            burstiness: *l.burstiness.get_ref(),
            idle_timeout_s: *l.idle_timeout_s.get_ref(),
            tokenizer_source: pb::TokenizerSource::from(l.tokenizer).into(),
            warmup_max_waves: *l.warmup.max_waves.get_ref(),
            warmup_tolerance: *l.warmup.tolerance.get_ref(),
            stages: l
                .stages
                .as_ref()
                .map(|stages| {
                    stages
                        .get_ref()
                        .iter()
                        .map(|s| {
                            let s = s.get_ref();
                            pb::Stage {
                                duration_s: s.duration_s,
                                rate: s.rate.unwrap_or(0.0),
                                concurrency: s.concurrency.unwrap_or(0),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl WorkloadEntry {
    /// The workload as sent to agents, with its resolved length bounds.
    pub fn to_wire(&self) -> pb::Workload {
        let (input, output) = (self.input_bounds(), self.output_bounds());
        pb::Workload {
            input_tokens: self.input,
            output_tokens: self.output,
            dist: pb::LengthDist::from(self.dist).into(),
            input_spread: self.input_spread,
            output_spread: self.output_spread,
            input_min: input.min,
            input_max: input.max,
            output_min: output.min,
            output_max: output.max,
            prefix_groups: self.prefix_groups,
            prefix_tokens: self.prefix_tokens,
            dataset: self.dataset.clone().unwrap_or_default(),
            trace: self.trace.clone().unwrap_or_default(),
            time_scale: self.time_scale.unwrap_or(1.0),
            turns: self.turns,
            think_time_ms: self.think_time_ms,
            corpus: self.corpus.clone().unwrap_or_default(),
            replacement: self.replacement,
        }
    }
}

impl From<LengthDist> for pb::LengthDist {
    fn from(d: LengthDist) -> Self {
        match d {
            LengthDist::Fixed => pb::LengthDist::Fixed,
            LengthDist::Uniform => pb::LengthDist::Uniform,
            LengthDist::Normal => pb::LengthDist::Normal,
            LengthDist::Lognormal => pb::LengthDist::Lognormal,
        }
    }
}

impl From<pb::LengthDist> for LengthDist {
    /// `UNSPECIFIED` is fixed, the default.
    fn from(d: pb::LengthDist) -> Self {
        match d {
            pb::LengthDist::Unspecified | pb::LengthDist::Fixed => LengthDist::Fixed,
            pb::LengthDist::Uniform => LengthDist::Uniform,
            pb::LengthDist::Normal => LengthDist::Normal,
            pb::LengthDist::Lognormal => LengthDist::Lognormal,
        }
    }
}

impl From<EngineKind> for pb::EngineKind {
    fn from(k: EngineKind) -> Self {
        match k {
            EngineKind::Vllm => pb::EngineKind::Vllm,
            EngineKind::Transformers => pb::EngineKind::Transformers,
            EngineKind::LlamaCpp => pb::EngineKind::LlamaCpp,
            EngineKind::Sglang => pb::EngineKind::Sglang,
            EngineKind::Tgi => pb::EngineKind::Tgi,
        }
    }
}

impl From<pb::EngineKind> for EngineKind {
    /// `UNSPECIFIED` is vLLM: the only kind before kinds were on the wire.
    fn from(k: pb::EngineKind) -> Self {
        match k {
            pb::EngineKind::Unspecified | pb::EngineKind::Vllm => EngineKind::Vllm,
            pb::EngineKind::Transformers => EngineKind::Transformers,
            pb::EngineKind::LlamaCpp => EngineKind::LlamaCpp,
            pb::EngineKind::Sglang => EngineKind::Sglang,
            pb::EngineKind::Tgi => EngineKind::Tgi,
        }
    }
}

impl From<Runtime> for pb::Runtime {
    fn from(r: Runtime) -> Self {
        match r {
            Runtime::Process => pb::Runtime::Process,
            Runtime::External => pb::Runtime::External,
            Runtime::Docker => pb::Runtime::Docker,
        }
    }
}

impl TryFrom<pb::Runtime> for Runtime {
    type Error = ProtoError;

    /// `UNSPECIFIED` is an error: no runtime is assumed.
    fn try_from(r: pb::Runtime) -> Result<Self, ProtoError> {
        match r {
            pb::Runtime::Process => Ok(Runtime::Process),
            pb::Runtime::External => Ok(Runtime::External),
            pb::Runtime::Docker => Ok(Runtime::Docker),
            pb::Runtime::Unspecified => Err(ProtoError::InvalidField {
                message: "EngineSpec",
                field: "runtime_kind",
                reason: "no runtime given".into(),
            }),
        }
    }
}

impl From<LoadMode> for pb::LoadMode {
    fn from(m: LoadMode) -> Self {
        match m {
            LoadMode::Burst => pb::LoadMode::Burst,
            LoadMode::Concurrency => pb::LoadMode::Concurrency,
            LoadMode::Rate => pb::LoadMode::Rate,
            LoadMode::Trace => pb::LoadMode::Trace,
        }
    }
}

impl From<pb::LoadMode> for LoadMode {
    /// `UNSPECIFIED` is burst, the default mode.
    fn from(m: pb::LoadMode) -> Self {
        match m {
            pb::LoadMode::Unspecified => LoadMode::default(),
            pb::LoadMode::Burst => LoadMode::Burst,
            pb::LoadMode::Concurrency => LoadMode::Concurrency,
            pb::LoadMode::Rate => LoadMode::Rate,
            pb::LoadMode::Trace => LoadMode::Trace,
        }
    }
}

impl From<Endpoint> for pb::Endpoint {
    fn from(e: Endpoint) -> Self {
        match e {
            Endpoint::Chat => pb::Endpoint::Chat,
            Endpoint::Completions => pb::Endpoint::Completions,
            Endpoint::Auto => pb::Endpoint::Auto,
        }
    }
}

impl From<pb::Endpoint> for Endpoint {
    /// `UNSPECIFIED` is chat, the default endpoint.
    fn from(e: pb::Endpoint) -> Self {
        match e {
            pb::Endpoint::Unspecified => Endpoint::default(),
            pb::Endpoint::Chat => Endpoint::Chat,
            pb::Endpoint::Completions => Endpoint::Completions,
            pb::Endpoint::Auto => Endpoint::Auto,
        }
    }
}

impl From<Arrival> for pb::Arrival {
    fn from(a: Arrival) -> Self {
        match a {
            Arrival::Constant => pb::Arrival::Constant,
            Arrival::Poisson => pb::Arrival::Poisson,
            Arrival::Gamma => pb::Arrival::Gamma,
        }
    }
}

impl From<pb::Arrival> for Arrival {
    /// `UNSPECIFIED` is poisson, the default arrival.
    fn from(a: pb::Arrival) -> Self {
        match a {
            pb::Arrival::Unspecified => Arrival::default(),
            pb::Arrival::Constant => Arrival::Constant,
            pb::Arrival::Poisson => Arrival::Poisson,
            pb::Arrival::Gamma => Arrival::Gamma,
        }
    }
}

impl From<TokenizerSource> for pb::TokenizerSource {
    fn from(t: TokenizerSource) -> Self {
        match t {
            TokenizerSource::Auto => pb::TokenizerSource::Auto,
            TokenizerSource::Server => pb::TokenizerSource::Server,
            TokenizerSource::Local => pb::TokenizerSource::Local,
        }
    }
}

impl From<pb::TokenizerSource> for TokenizerSource {
    /// `UNSPECIFIED` is auto, the default source.
    fn from(t: pb::TokenizerSource) -> Self {
        match t {
            pb::TokenizerSource::Unspecified => TokenizerSource::default(),
            pb::TokenizerSource::Auto => TokenizerSource::Auto,
            pb::TokenizerSource::Server => TokenizerSource::Server,
            pb::TokenizerSource::Local => TokenizerSource::Local,
        }
    }
}
