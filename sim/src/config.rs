//! Validated configuration of one simulated vLLM server.
//!
//! [`SimConfig`] is what [`crate::run`] consumes; `cli.rs` builds it from `vllm serve`-style
//! flags, tests build it directly with [`SimConfig::new`] and struct update syntax.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::SimError;

/// Version string reported by `/version` (vLLM answers `{"version":"0.32.0"}`; the `+sim`
/// local version label keeps results recorded against the simulator distinguishable).
pub const VLLM_VERSION: &str = "0.32.0+sim";

/// The vLLM release the simulator imitates: in the start-up banner and `system_fingerprint`.
pub const VLLM_RELEASE: &str = "0.32.0";

/// Everything [`crate::run`] needs to serve one model.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The model path or Hugging Face id (`vllm serve MODEL`); reported as `root` in `/v1/models`.
    pub model: String,
    /// Names accepted in the `model` field of requests (`--served-model-name`); the first one is
    /// the `model_name` label in `/metrics` and the `model` of every response, like vLLM.
    /// Never empty after [`SimConfig::validate`].
    pub served_model_names: Vec<String>,
    /// `--max-model-len`: the context length. A longer prompt is refused; generation stops
    /// when prompt + completion reach it (vLLM 0.32 clamps `max_tokens`, see `api.rs`).
    pub max_model_len: u32,
    /// Answer `/v1/completions` with FastAPI's 404 (some vLLM images lacked the route).
    pub disable_completions: bool,
    /// `--enable-log-requests`: one log line per received and finished request.
    pub enable_log_requests: bool,
    /// Periodic "Engine 000: Avg prompt throughput ..." lines (off with `--disable-log-stats`).
    pub log_stats: bool,
    /// `--seed`: mixed into the synthetic output so two seeds give different texts.
    pub seed: u64,
    /// Settings only echoed back (logs, `vllm:cache_config_info`); they do not change timing.
    pub echo: EchoedArgs,
    /// Scheduler and timing model.
    pub engine: EngineConfig,
    /// `--sim-timing`: the performance model, or one of the zero-cost schedules that measure
    /// the client instead of the engine.
    pub timing_mode: TimingMode,
    /// `--sim-stall-after-tokens` / `--sim-disconnect-after-tokens`: an opt-in failure of
    /// every response (none by default).
    pub faults: StreamFaults,
    /// `--sim-trace-requests`: how many finished direct streams [`crate::trace`] keeps (0:
    /// no tracing).
    pub trace_requests: usize,
}

/// How tokens are timed (`--sim-timing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimingMode {
    /// The continuous-batching performance model of `scheduler.rs` (`model`).
    #[default]
    Model,
    /// Every request on its own fixed schedule (`exact`), bypassing the engine, the KV cache
    /// and `--max-num-seqs`; `--sim-speedup` does not apply.
    Exact(ExactSchedule),
    /// Every request streams as fast as the server can write (`fast`), bypassing the engine;
    /// up to `chunks_per_frame` token events share one body frame.
    Fast { chunks_per_frame: usize },
}

impl TimingMode {
    /// Whether requests bypass the engine loop (`exact` and `fast`).
    pub fn is_direct(&self) -> bool {
        !matches!(self, Self::Model)
    }
}

/// The `exact` schedule: token `k` (0-based) of a request is due at
/// `t0 + ttft + k × itl`, where `t0` is when the server parsed the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactSchedule {
    /// `--sim-ttft-ms`.
    pub ttft: Duration,
    /// `--sim-itl-ms`.
    pub itl: Duration,
    /// Which timer sleeps until the deadlines.
    pub pacing: Pacing,
}

/// The timer of the `exact` schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pacing {
    /// [`crate::precise_timer`]: microsecond precision on the real clock (the default).
    #[default]
    Precise,
    /// tokio's timer: deadlines rounded up to its 1 ms tick, but on tokio's clock, so that
    /// tests can run the schedule on the paused clock.
    Tokio,
}

impl Default for ExactSchedule {
    fn default() -> Self {
        Self::from_ms(20.0, 10.0)
    }
}

/// Longest accepted `--sim-ttft-ms` / `--sim-itl-ms` (one hour), so that no deadline overflows.
pub const MAX_EXACT_MS: f64 = 3_600_000.0;

impl ExactSchedule {
    /// The schedule for `ttft_ms` and `itl_ms` real milliseconds (rounded to the nanosecond).
    pub fn from_ms(ttft_ms: f64, itl_ms: f64) -> Self {
        Self {
            ttft: scaled(ttft_ms, 1.0),
            itl: scaled(itl_ms, 1.0),
            pacing: Pacing::Precise,
        }
    }

    /// The same schedule, slept with `pacing`.
    pub fn with_pacing(self, pacing: Pacing) -> Self {
        Self { pacing, ..self }
    }

    /// Offset of token `k` from `t0`: `ttft + k × itl` (saturating).
    pub fn offset(&self, k: u32) -> Duration {
        self.itl
            .checked_mul(k)
            .and_then(|d| d.checked_add(self.ttft))
            .unwrap_or(Duration::MAX)
    }

    /// Absolute deadline of token `k` of a request parsed at `t0` (saturates at a far future
    /// instant instead of overflowing).
    pub fn deadline(&self, t0: tokio::time::Instant, k: u32) -> tokio::time::Instant {
        let far = Duration::from_secs(86_400 * 365 * 30);
        t0.checked_add(self.offset(k).min(far))
            .unwrap_or_else(|| t0 + Duration::from_secs(86_400))
    }
}

/// vLLM engine arguments the simulator accepts and reports but does not model yet.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoedArgs {
    pub tensor_parallel_size: u32,
    pub pipeline_parallel_size: u32,
    pub gpu_memory_utilization: f64,
    pub kv_cache_dtype: String,
    pub dtype: String,
    pub enable_chunked_prefill: bool,
    pub enforce_eager: bool,
}

impl Default for EchoedArgs {
    fn default() -> Self {
        Self {
            tensor_parallel_size: 1,
            pipeline_parallel_size: 1,
            gpu_memory_utilization: 0.9,
            kv_cache_dtype: "auto".to_owned(),
            dtype: "auto".to_owned(),
            enable_chunked_prefill: true,
            enforce_eager: false,
        }
    }
}

/// Continuous-batching limits and the timing model of the engine loop (see `scheduler.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// `--max-num-seqs`: at most this many requests run in one step.
    pub max_num_seqs: usize,
    /// `--max-num-batched-tokens`: prompt tokens admitted in one step (see `scheduler.rs`).
    pub max_num_batched_tokens: u64,
    /// `--block-size`: KV-cache block size in tokens: the unit of KV allocation (preemption,
    /// `vllm:kv_cache_usage_perc`) and of prefix caching (only full blocks are cached).
    pub block_size: u32,
    /// KV-cache capacity in tokens (`--sim-kv-cache-tokens`, or what the GPU profile leaves):
    /// running sequences and the prefix cache share it.
    pub kv_cache_tokens: u64,
    /// Step-time model.
    pub timing: TimingModel,
    /// `--sim-crash-at-running`: die of a simulated GPU out-of-memory error when a step would
    /// run this many requests (`None`: never).
    pub crash: Option<CrashAt>,
    /// `--enable-chunked-prefill` (vLLM's default): prompts are split across steps to fit
    /// `max_num_batched_tokens`; off, a prompt is prefilled whole or waits.
    pub chunked_prefill: bool,
    /// `--enable-prefix-caching` (vLLM's default; off with `--no-enable-prefix-caching`):
    /// full KV-cache blocks of prompts stay cached, and a prompt that starts with cached
    /// blocks does not prefill them (see `scheduler/prefix_cache.rs`).
    pub prefix_caching: bool,
    /// `--sim-gpu`: the GPU performance model (step times, KV-cache size); `None`: the
    /// flag model ([`TimingModel`]) and `kv_cache_tokens`.
    pub perf: Option<crate::perf::PerfModel>,
    /// `--sim-failure oom`: die like vLLM when a step's attention workspace exceeds the
    /// GPU memory left outside vLLM's pool (needs `perf`).
    pub oom: Option<CrashAction>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            block_size: 16,
            kv_cache_tokens: 262_144,
            timing: TimingModel::default(),
            crash: None,
            chunked_prefill: true,
            prefix_caching: true,
            perf: None,
            oom: None,
        }
    }
}

/// A simulated GPU out-of-memory crash (`--sim-crash-at-running N`): when admission makes the
/// running batch reach `running` requests, the engine logs vLLM's fatal `EngineCore` error
/// (`torch.OutOfMemoryError`, then the API server's `EngineDeadError`) and `action` runs.
/// Only the engine loop (`--sim-timing model`) can crash; [`SimConfig::validate`] rejects it
/// with the `exact` and `fast` timings.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashAt {
    /// Number of running requests (newly admitted ones included) that kills the engine (≥ 1).
    pub running: usize,
    /// What happens once the fatal lines are logged.
    pub action: CrashAction,
}

impl CrashAt {
    /// A crash at `running` requests that ends the process ([`CrashAction::Exit`]).
    pub fn exit_at(running: usize) -> Self {
        Self {
            running,
            action: CrashAction::Exit,
        }
    }
}

/// What the engine does after logging its fatal error.
#[derive(Clone, Default)]
pub enum CrashAction {
    /// Flush stdout and stderr and end the process with exit code 1, cutting every open
    /// stream mid-way like a real crash (what the `vllm-sim` binary does).
    #[default]
    Exit,
    /// Call the hook with the number of running requests, then stop the engine loop: open
    /// streams end without `[DONE]` and later requests get 503, while the HTTP server stays
    /// up. For tests that run the simulator inside their own process.
    Hook(Arc<dyn Fn(usize) + Send + Sync>),
}

impl fmt::Debug for CrashAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exit => f.write_str("Exit"),
            Self::Hook(_) => f.write_str("Hook(..)"),
        }
    }
}

impl PartialEq for CrashAction {
    /// Hooks are equal when they are the same closure.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exit, Self::Exit) => true,
            (Self::Hook(a), Self::Hook(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl EngineConfig {
    /// Number of KV-cache blocks (at least one).
    pub fn kv_cache_blocks(&self) -> u64 {
        (self.kv_cache_tokens / u64::from(self.block_size.max(1))).max(1)
    }
}

/// The step-time formula of the engine loop:
///
/// `step_ms = step_ms + step_ms_per_seq × seqs + prefill_us_per_token / 1000 × prefill_tokens`,
/// slept as `step_ms / speedup`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingModel {
    /// `--sim-step-ms`: fixed cost of every step (weights read once per step).
    pub step_ms: f64,
    /// `--sim-step-ms-per-seq`: extra cost per running sequence (its KV cache read).
    pub step_ms_per_seq: f64,
    /// `--sim-prefill-us-per-token`: compute cost of one prompt token prefilled in the step.
    pub prefill_us_per_token: f64,
    /// `--sim-speedup`: every simulated duration is divided by it (≥ [`MIN_SPEEDUP`]).
    pub speedup: f64,
}

/// Smallest accepted `--sim-speedup`.
pub const MIN_SPEEDUP: f64 = 1e-3;

impl Default for TimingModel {
    fn default() -> Self {
        Self {
            step_ms: 20.0,
            step_ms_per_seq: 0.2,
            prefill_us_per_token: 100.0,
            speedup: 1.0,
        }
    }
}

impl TimingModel {
    /// Simulated milliseconds of one step with `seqs` running sequences (newly admitted ones
    /// included) that prefills `prefill_tokens` prompt tokens, before the speedup.
    pub fn step_ms(&self, seqs: usize, prefill_tokens: u64) -> f64 {
        self.step_ms
            + self.step_ms_per_seq * seqs as f64
            + self.prefill_us_per_token / 1000.0 * prefill_tokens as f64
    }

    /// Wall-clock duration of that step: `step_ms / speedup`, rounded to whole nanoseconds.
    pub fn step_duration(&self, seqs: usize, prefill_tokens: u64) -> Duration {
        scaled(self.step_ms(seqs, prefill_tokens), self.speedup)
    }
}

/// `ms / speedup` as a [`Duration`], rounded to the nanosecond; negative or NaN gives zero.
pub fn scaled(ms: f64, speedup: f64) -> Duration {
    let nanos = (ms * 1e6 / speedup).round();
    if nanos.is_finite() && nanos > 0.0 {
        Duration::from_nanos(nanos as u64)
    } else {
        Duration::ZERO
    }
}

impl SimConfig {
    /// A configuration with vLLM's defaults serving `model` under its own name.
    pub fn new(model: impl Into<String>) -> Self {
        let model = model.into();
        Self {
            served_model_names: vec![model.clone()],
            model,
            max_model_len: 2048,
            disable_completions: false,
            enable_log_requests: false,
            log_stats: true,
            seed: 0,
            echo: EchoedArgs::default(),
            engine: EngineConfig::default(),
            timing_mode: TimingMode::Model,
            faults: StreamFaults::default(),
            trace_requests: 0,
        }
    }

    /// The name used in `/metrics` labels and responses when a request names no model.
    pub fn primary_name(&self) -> &str {
        self.served_model_names
            .first()
            .map_or(self.model.as_str(), String::as_str)
    }

    /// vLLM's `system_fingerprint` (`--fingerprint-mode full`):
    /// `vllm-<version>[-tp<N>][-pp<N>]-<hash8>`, where vLLM's 8 hex digits hash the engine
    /// configuration; here they hash the model, the context length and the engine settings.
    pub fn system_fingerprint(&self) -> String {
        let e = &self.engine;
        let key = format!(
            "{}|{}|{}|{}|{}|{}|{}",
            self.model,
            self.max_model_len,
            e.max_num_seqs,
            e.max_num_batched_tokens,
            e.block_size,
            self.echo.kv_cache_dtype,
            self.echo.dtype
        );
        let mut parts = vec![format!("vllm-{VLLM_RELEASE}")];
        if self.echo.tensor_parallel_size > 1 {
            parts.push(format!("tp{}", self.echo.tensor_parallel_size));
        }
        if self.echo.pipeline_parallel_size > 1 {
            parts.push(format!("pp{}", self.echo.pipeline_parallel_size));
        }
        parts.push(format!(
            "{:08x}",
            crate::tokenizer::fnv1a(key.as_bytes()) as u32
        ));
        parts.join("-")
    }

    /// Checks the invariants [`crate::run`] relies on.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |msg: String| Err(SimError::Config(msg));
        if self.model.is_empty() {
            return bad("a model is required (vllm-sim serve MODEL)".to_owned());
        }
        if self.served_model_names.iter().any(String::is_empty) {
            return bad("served model names must not be empty".to_owned());
        }
        if self.max_model_len == 0 {
            return bad("--max-model-len must be at least 1".to_owned());
        }
        let engine = &self.engine;
        if engine.max_num_seqs == 0 {
            return bad("--max-num-seqs must be at least 1".to_owned());
        }
        if engine.max_num_batched_tokens == 0 {
            return bad("--max-num-batched-tokens must be at least 1".to_owned());
        }
        if engine.block_size == 0 {
            return bad("--block-size must be at least 1".to_owned());
        }
        let t = &engine.timing;
        for (name, v) in [
            ("--sim-step-ms", t.step_ms),
            ("--sim-step-ms-per-seq", t.step_ms_per_seq),
            ("--sim-prefill-us-per-token", t.prefill_us_per_token),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if !(t.speedup.is_finite() && t.speedup >= MIN_SPEEDUP) {
            return bad(format!(
                "--sim-speedup must be >= {MIN_SPEEDUP}, got {}",
                t.speedup
            ));
        }
        if let Some(crash) = &engine.crash {
            if crash.running == 0 {
                return bad("--sim-crash-at-running must be at least 1".to_owned());
            }
            if self.timing_mode.is_direct() {
                return bad(
                    "--sim-crash-at-running needs --sim-timing model: the exact and fast \
                     timings bypass the engine, which is what crashes"
                        .to_owned(),
                );
            }
        }
        self.faults.validate()?;
        match self.timing_mode {
            TimingMode::Model => {}
            TimingMode::Exact(s) => {
                let max = scaled(MAX_EXACT_MS, 1.0);
                if s.ttft > max || s.itl > max {
                    return bad(format!(
                        "--sim-ttft-ms and --sim-itl-ms must be at most {MAX_EXACT_MS} ms"
                    ));
                }
            }
            TimingMode::Fast { chunks_per_frame } => {
                if chunks_per_frame == 0 {
                    return bad("--sim-fast-chunks-per-frame must be at least 1".to_owned());
                }
            }
        }
        Ok(())
    }
}

/// Opt-in stream failures a benchmark client must survive (`--sim-stall-after-tokens N`,
/// `--sim-disconnect-after-tokens N`), in every timing mode. At most one is armed. A response
/// of fewer than N tokens is unaffected; otherwise, once the chunk carrying its N-th content
/// token is out (the chat role chunk is not a content token; if the N-th token is the last
/// one, its chunk still carries `finish_reason`, but neither the usage chunk nor `[DONE]`
/// follows):
///
/// - **stall**: nothing more is sent and the connection stays open, until the client goes away
///   or the server shuts down (then the stream ends without `[DONE]`). A non-streamed request
///   of N tokens or more never gets its answer.
/// - **disconnect**: the connection is closed abruptly, without `[DONE]` and, in HTTP/1.1
///   chunked encoding, without the terminating zero-length chunk, so that the client sees a
///   truncated body. A non-streamed request of N tokens or more gets its status and headers,
///   then the connection is cut before any body byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamFaults {
    /// `--sim-stall-after-tokens`.
    pub stall_after_tokens: Option<u32>,
    /// `--sim-disconnect-after-tokens`.
    pub disconnect_after_tokens: Option<u32>,
}

/// What happens to a response once its fault's token is out (see [`StreamFaults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Send nothing more, keep the connection open.
    Stall,
    /// Close the connection abruptly.
    Disconnect,
}

/// The armed fault of [`StreamFaults`]: `action` after the `after_tokens`-th content token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFault {
    /// N (≥ 1): the fault fires once the N-th content token has been sent.
    pub after_tokens: u32,
    pub action: FaultAction,
}

impl StreamFault {
    /// Whether a response of `tokens` content tokens reaches the fault.
    pub fn fires_within(&self, tokens: u32) -> bool {
        tokens >= self.after_tokens
    }
}

impl StreamFaults {
    /// The armed fault, if any (after [`Self::validate`], at most one is set).
    pub fn armed(&self) -> Option<StreamFault> {
        let stall = self.stall_after_tokens.map(|n| StreamFault {
            after_tokens: n,
            action: FaultAction::Stall,
        });
        let disconnect = self.disconnect_after_tokens.map(|n| StreamFault {
            after_tokens: n,
            action: FaultAction::Disconnect,
        });
        disconnect.or(stall)
    }

    /// At most one fault, each after at least one token.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.stall_after_tokens == Some(0) {
            return Err(SimError::Config(
                "--sim-stall-after-tokens must be at least 1".to_owned(),
            ));
        }
        if self.disconnect_after_tokens == Some(0) {
            return Err(SimError::Config(
                "--sim-disconnect-after-tokens must be at least 1".to_owned(),
            ));
        }
        if self.stall_after_tokens.is_some() && self.disconnect_after_tokens.is_some() {
            return Err(SimError::Config(
                "--sim-stall-after-tokens and --sim-disconnect-after-tokens cannot be combined: \
                 a response fails only once"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
