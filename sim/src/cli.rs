//! Command line: `vllm-sim serve MODEL [flags]`, `vllm-sim MODEL [flags]` or
//! `vllm-sim --model MODEL [flags]`, with `vllm serve`'s flag names.
//!
//! Like vLLM's `FlexibleArgumentParser`, `--flag_name` is read as `--flag-name`, and `-tp`/`-pp`
//! are short for `--tensor-parallel-size`/`--pipeline-parallel-size`. Boolean engine flags
//! accept their `--no-` form (argparse's `BooleanOptionalAction`). Unknown flags are errors.
//! `--sim-*` flags control the simulator itself (see `scheduler.rs` for the timing model).

use std::ffi::OsString;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, Parser, ValueEnum};

use crate::config::{
    CrashAction, CrashAt, EchoedArgs, EngineConfig, ExactSchedule, MAX_EXACT_MS, MIN_SPEEDUP,
    SimConfig, StreamFaults, TimingMode, TimingModel, scaled,
};
use crate::error::SimError;
use crate::perf::{PerfModel, Profiles};

/// A vLLM stand-in: vLLM's CLI and HTTP API, with a continuous-batching timing model.
#[derive(Debug, Clone, Parser)]
#[command(name = "vllm-sim", version = crate::config::VLLM_VERSION)]
pub struct Args {
    /// Model to serve (`vllm serve MODEL`).
    #[arg(value_name = "MODEL")]
    pub model_tag: Option<String>,

    /// Model to serve (used when no positional MODEL is given).
    #[arg(long)]
    pub model: Option<String>,

    /// Host name to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "VLLM_SIM_HOST")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, default_value_t = 8000, env = "VLLM_SIM_PORT")]
    pub port: u16,

    /// Model names accepted in requests (default: the model).
    #[arg(long, num_args = 1..)]
    pub served_model_name: Vec<String>,

    /// Tensor parallel size (`-tp`); accepted, not modelled yet.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub tensor_parallel_size: u32,

    /// Pipeline parallel size (`-pp`); accepted, not modelled.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub pipeline_parallel_size: u32,

    /// Model context length (prompt + completion).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_model_len: u32,

    /// Fraction of GPU memory for the engine; accepted, reported only.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,

    /// KV-cache block size in tokens.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub block_size: u32,

    /// Prompt-token budget of one engine step.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_num_batched_tokens: u64,

    /// Maximum number of sequences in one step.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_num_seqs: u64,

    /// Disable CUDA graphs; accepted, no effect.
    #[arg(long, overrides_with = "no_enforce_eager")]
    pub enforce_eager: bool,
    #[arg(long, hide = true, overrides_with = "enforce_eager")]
    pub no_enforce_eager: bool,

    /// Automatic prefix caching (on by default): prompts that start with the same full
    /// KV-cache blocks as an earlier one skip prefilling them.
    #[arg(long, overrides_with = "no_enable_prefix_caching")]
    pub enable_prefix_caching: bool,
    #[arg(long, overrides_with = "enable_prefix_caching")]
    pub no_enable_prefix_caching: bool,

    /// Chunked prefill; accepted, not modelled.
    #[arg(long, overrides_with = "no_enable_chunked_prefill")]
    pub enable_chunked_prefill: bool,
    #[arg(long, overrides_with = "enable_chunked_prefill")]
    pub no_enable_chunked_prefill: bool,

    /// KV-cache data type; reported only.
    #[arg(long, default_value = "auto")]
    pub kv_cache_dtype: String,

    /// Model data type; reported only.
    #[arg(long, default_value = "auto")]
    pub dtype: String,

    /// Quantization method; accepted, no effect.
    #[arg(long, short = 'q')]
    pub quantization: Option<String>,

    /// Tokenizer name or path; accepted, the synthetic tokenizer is always used.
    #[arg(long)]
    pub tokenizer: Option<String>,

    /// Trust remote code; accepted, no effect.
    #[arg(long, overrides_with = "no_trust_remote_code")]
    pub trust_remote_code: bool,
    #[arg(long, hide = true, overrides_with = "trust_remote_code")]
    pub no_trust_remote_code: bool,

    /// Seed of the synthetic outputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Log every request.
    #[arg(long, overrides_with_all = ["no_enable_log_requests", "disable_log_requests"])]
    pub enable_log_requests: bool,
    #[arg(long, overrides_with_all = ["enable_log_requests", "disable_log_requests"])]
    pub no_enable_log_requests: bool,
    /// Deprecated alias of --no-enable-log-requests.
    #[arg(long, overrides_with_all = ["enable_log_requests", "no_enable_log_requests"])]
    pub disable_log_requests: bool,

    /// Do not log the periodic engine statistics.
    #[arg(long)]
    pub disable_log_stats: bool,

    /// Log level of the server.
    #[arg(long, default_value = "info", value_parser = ["critical", "error", "warning", "info", "debug", "trace"])]
    pub uvicorn_log_level: String,

    /// Simulated prefill cost per prompt token, in microseconds.
    #[arg(long, default_value_t = 100.0, value_parser = non_negative, env = "VLLM_SIM_PREFILL_US_PER_TOKEN")]
    pub sim_prefill_us_per_token: f64,

    /// Simulated fixed cost of one engine step, in milliseconds.
    #[arg(long, default_value_t = 20.0, value_parser = non_negative, env = "VLLM_SIM_STEP_MS")]
    pub sim_step_ms: f64,

    /// Simulated cost per running sequence in one step, in milliseconds.
    #[arg(long, default_value_t = 0.2, value_parser = non_negative, env = "VLLM_SIM_STEP_MS_PER_SEQ")]
    pub sim_step_ms_per_seq: f64,

    /// Divides every simulated duration of the model (steps and start-up); ≥ 0.001. Does not
    /// apply to `--sim-timing exact`, whose schedule is in real milliseconds.
    #[arg(long, default_value_t = 1.0, value_parser = speedup, env = "VLLM_SIM_SPEEDUP")]
    pub sim_speedup: f64,

    /// Simulated start-up time before the port is bound, in milliseconds (÷ speedup).
    #[arg(long, default_value_t = 0, env = "VLLM_SIM_STARTUP_MS")]
    pub sim_startup_ms: u64,

    /// GPU performance profile (`sim/profiles/gpus.toml`: b580, b60, h100-sxm, h200,
    /// a100-80g, cpu): step times from the GPU's bandwidth and compute, the KV cache from its
    /// memory, vLLM's start-up error when the weights do not fit. Unset: the flag model
    /// (--sim-step-ms …) and --sim-kv-cache-tokens.
    #[arg(long, value_name = "ID", env = "VLLM_SIM_GPU")]
    pub sim_gpu: Option<String>,

    /// Model profile (`sim/profiles/models.toml`) for --sim-gpu; default: the profile whose
    /// Hugging Face names include the served model.
    #[arg(long, value_name = "ID", env = "VLLM_SIM_MODEL_PROFILE")]
    pub sim_model_profile: Option<String>,

    /// With --sim-gpu: crash like vLLM (EngineCore OutOfMemoryError, exit 1) when a step's
    /// attention workspace exceeds the memory --gpu-memory-utilization leaves free.
    #[arg(long, env = "VLLM_SIM_OOM_CRASH")]
    pub sim_oom_crash: bool,

    /// Token timing: `model` = the continuous-batching model (steps, --max-num-seqs, KV cache,
    /// --sim-speedup); `exact` = every request on its own fixed schedule, token k at
    /// parse time + --sim-ttft-ms + k × --sim-itl-ms in real milliseconds (--sim-speedup does
    /// NOT apply); `fast` = tokens as fast as the server can write them. `exact` and `fast`
    /// bypass the engine, its limits and its KV cache: they measure the client, not the engine.
    #[arg(long, value_enum, default_value_t = SimTiming::Model, env = "VLLM_SIM_TIMING")]
    pub sim_timing: SimTiming,

    /// `--sim-timing exact`: time to the first token, in real milliseconds (no speedup).
    #[arg(long, default_value_t = 20.0, value_parser = exact_ms, env = "VLLM_SIM_TTFT_MS")]
    pub sim_ttft_ms: f64,

    /// `--sim-timing exact`: time between tokens, in real milliseconds (no speedup).
    #[arg(long, default_value_t = 10.0, value_parser = exact_ms, env = "VLLM_SIM_ITL_MS")]
    pub sim_itl_ms: f64,

    /// `--sim-timing fast`: at most this many token events per HTTP body frame.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..), env = "VLLM_SIM_FAST_CHUNKS_PER_FRAME")]
    pub sim_fast_chunks_per_frame: u32,

    /// `--sim-timing exact|fast`: keep, for the last N finished streams, when each body frame
    /// was handed to the connection, tagged with the request's `x-request-id`, and answer
    /// them at `GET /sim/trace` (the ground truth of a client's timing error). 0: off.
    #[arg(long, default_value_t = 0, env = "VLLM_SIM_TRACE_REQUESTS")]
    pub sim_trace_requests: usize,

    /// KV-cache capacity in tokens, for vllm:kv_cache_usage_perc.
    #[arg(long, default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1..))]
    pub sim_kv_cache_tokens: u64,

    /// Write a Hugging Face tokenizer.json with the synthetic tokenizer's token counts to
    /// this path at start-up, for clients that count prompts locally.
    #[arg(long, value_name = "PATH")]
    pub sim_tokenizer_json: Option<std::path::PathBuf>,

    /// Answer /v1/completions with 404 like servers that lack it.
    #[arg(long)]
    pub disable_completions: bool,

    /// Simulate a GPU out-of-memory crash: when N requests run in one engine step, log vLLM's
    /// fatal EngineCore error (torch.OutOfMemoryError, EngineDeadError) and exit with code 1,
    /// cutting open streams. `--sim-timing model` only. Default: never.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), env = "VLLM_SIM_CRASH_AT_RUNNING")]
    pub sim_crash_at_running: Option<u32>,

    /// Simulate a hung engine: every response stops after its N-th content token and keeps
    /// the connection open (no more events, no [DONE]) until the client goes away; a
    /// non-streamed request of N tokens or more never gets its answer. Default: never.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), env = "VLLM_SIM_STALL_AFTER_TOKENS")]
    pub sim_stall_after_tokens: Option<u32>,

    /// Simulate a dropped connection: every response is cut abruptly after its N-th content
    /// token (no [DONE], no final zero-length chunk: the client sees a truncated body).
    /// Default: never.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), env = "VLLM_SIM_DISCONNECT_AFTER_TOKENS")]
    pub sim_disconnect_after_tokens: Option<u32>,
}

/// A command-line value as Python prints it in a dict: numbers bare, text quoted.
fn py_literal(raw: &str) -> String {
    if raw.parse::<i64>().is_ok()
        || (raw.parse::<f64>().is_ok_and(f64::is_finite) && raw.contains('.'))
    {
        raw.to_owned()
    } else {
        format!("'{}'", raw.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a finite number >= 0, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

fn exact_ms(s: &str) -> Result<f64, String> {
    let v = non_negative(s)?;
    if v > MAX_EXACT_MS {
        return Err(format!(
            "must be at most {MAX_EXACT_MS} (one hour), got {v}"
        ));
    }
    Ok(v)
}

/// Values of `--sim-timing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimTiming {
    /// The continuous-batching performance model.
    Model,
    /// A fixed per-request schedule: --sim-ttft-ms, then one token every --sim-itl-ms.
    Exact,
    /// As fast as possible.
    Fast,
}

fn speedup(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= MIN_SPEEDUP => Ok(v),
        Ok(v) => Err(format!("must be >= {MIN_SPEEDUP}, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Where and when `main` binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// `--sim-startup-ms / --sim-speedup`.
    pub startup_delay: Duration,
}

/// Rewrites vLLM spellings clap does not know: drops a leading `serve` subcommand, maps
/// `-tp`/`-pp` to their long forms and `--flag_name` to `--flag-name`.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out: Vec<OsString> = Vec::new();
    for (i, arg) in args.into_iter().map(Into::into).enumerate() {
        if i == 1 && arg == "serve" {
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        let name = match name {
            "-tp" => "--tensor-parallel-size".to_owned(),
            "-pp" => "--pipeline-parallel-size".to_owned(),
            n if n.starts_with("--") => {
                format!("--{}", n.trim_start_matches("--").replace('_', "-"))
            }
            n => n.to_owned(),
        };
        out.push(OsString::from(match value {
            Some(v) => format!("{name}={v}"),
            None => name,
        }));
    }
    out
}

impl Args {
    /// Parses a vLLM-style command line (argv[0] first).
    pub fn try_parse_vllm<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        Self::try_parse_from(normalize_args(args))
    }

    /// vLLM's start-up line `non-default args: {'model_tag': 'm', 'port': 18100, …}`: the flags
    /// given on the command line (or by environment), in the parser's order, as a Python dict.
    pub fn non_default_args<I, T>(args: I) -> String
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let Ok(matches) = Self::command().try_get_matches_from(normalize_args(args)) else {
            return "{}".to_owned();
        };
        let mut entries: Vec<String> = Vec::new();
        for arg in Self::command().get_arguments() {
            let id = arg.get_id().as_str();
            if !matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let takes_value = arg.get_action().takes_values();
            let (name, value) = if !takes_value {
                match id.strip_prefix("no_") {
                    Some(positive) => (positive.to_owned(), "False".to_owned()),
                    None => (id.to_owned(), "True".to_owned()),
                }
            } else {
                let values: Vec<String> = matches
                    .get_raw(id)
                    .into_iter()
                    .flatten()
                    .map(|v| py_literal(&v.to_string_lossy()))
                    .collect();
                let value = if id == "served_model_name" {
                    format!("[{}]", values.join(", "))
                } else {
                    values.join(", ")
                };
                (id.to_owned(), value)
            };
            entries.push(format!("'{name}': {value}"));
            if id == "model_tag" {
                // vLLM copies the positional model into `model`.
                entries.push(format!("'model': {value}"));
            }
        }
        format!("{{{}}}", entries.join(", "))
    }

    /// The tracing level matching `--uvicorn-log-level`.
    pub fn log_level(&self) -> &'static str {
        match self.uvicorn_log_level.as_str() {
            "critical" | "error" => "error",
            "warning" => "warn",
            "debug" => "debug",
            "trace" => "trace",
            _ => "info",
        }
    }

    /// Builds the validated configuration and the bind options; writes the tokenizer.json of
    /// `--sim-tokenizer-json` if given.
    pub fn into_config(self) -> Result<(SimConfig, ServeOptions), SimError> {
        let model = self.model_tag.or(self.model).ok_or_else(|| {
            SimError::Config("a model is required: vllm-sim serve MODEL".to_owned())
        })?;
        let served_model_names = if self.served_model_name.is_empty() {
            vec![model.clone()]
        } else {
            self.served_model_name
        };
        let timing = TimingModel {
            step_ms: self.sim_step_ms,
            step_ms_per_seq: self.sim_step_ms_per_seq,
            prefill_us_per_token: self.sim_prefill_us_per_token,
            speedup: self.sim_speedup,
        };
        let perf = match &self.sim_gpu {
            None => {
                if self.sim_oom_crash || self.sim_model_profile.is_some() {
                    return Err(SimError::Config(
                        "--sim-oom-crash and --sim-model-profile need --sim-gpu".into(),
                    ));
                }
                None
            }
            Some(gpu) => {
                let profiles = Profiles::builtin()?;
                let gpu = profiles.gpu(gpu)?.clone();
                let wanted = self.sim_model_profile.as_deref().unwrap_or(&model);
                let (_, profile) = profiles.model(wanted).ok_or_else(|| {
                    SimError::Config(format!(
                        "no model profile for {wanted:?}: pass --sim-model-profile (known: {})",
                        profiles.model_ids()
                    ))
                })?;
                Some(PerfModel {
                    gpu,
                    model: profile.clone(),
                    tp: self.tensor_parallel_size,
                    enforce_eager: self.enforce_eager,
                    gpu_memory_utilization: self.gpu_memory_utilization,
                })
            }
        };
        // What a real vLLM computes at start-up: the KV cache left after the weights, or the
        // error it dies with.
        let kv_cache_tokens = match &perf {
            Some(p) => {
                p.kv_cache_blocks(self.block_size)
                    .map_err(|f| SimError::EngineStartup(f.vllm_message()))?
                    * u64::from(self.block_size)
            }
            None => self.sim_kv_cache_tokens,
        };
        let startup_ms = match &perf {
            Some(p) if self.sim_startup_ms == 0 => {
                u64::try_from(p.load_time().as_millis()).unwrap_or(u64::MAX)
            }
            _ => self.sim_startup_ms,
        };
        let config = SimConfig {
            model,
            served_model_names,
            max_model_len: self.max_model_len,
            disable_completions: self.disable_completions,
            enable_log_requests: self.enable_log_requests,
            log_stats: !self.disable_log_stats,
            seed: self.seed,
            echo: EchoedArgs {
                tensor_parallel_size: self.tensor_parallel_size,
                pipeline_parallel_size: self.pipeline_parallel_size,
                gpu_memory_utilization: self.gpu_memory_utilization,
                kv_cache_dtype: self.kv_cache_dtype,
                dtype: self.dtype,
                enable_chunked_prefill: !self.no_enable_chunked_prefill,
                enforce_eager: self.enforce_eager,
            },
            engine: EngineConfig {
                max_num_seqs: usize::try_from(self.max_num_seqs).unwrap_or(usize::MAX),
                max_num_batched_tokens: self.max_num_batched_tokens,
                block_size: self.block_size,
                kv_cache_tokens,
                timing,
                crash: self
                    .sim_crash_at_running
                    .map(|n| CrashAt::exit_at(usize::try_from(n).unwrap_or(usize::MAX))),
                chunked_prefill: !self.no_enable_chunked_prefill,
                prefix_caching: !self.no_enable_prefix_caching,
                oom: self.sim_oom_crash.then_some(CrashAction::Exit),
                perf,
            },
            timing_mode: match self.sim_timing {
                SimTiming::Model => TimingMode::Model,
                SimTiming::Exact => {
                    TimingMode::Exact(ExactSchedule::from_ms(self.sim_ttft_ms, self.sim_itl_ms))
                }
                SimTiming::Fast => TimingMode::Fast {
                    chunks_per_frame: usize::try_from(self.sim_fast_chunks_per_frame)
                        .unwrap_or(usize::MAX),
                },
            },
            faults: StreamFaults {
                stall_after_tokens: self.sim_stall_after_tokens,
                disconnect_after_tokens: self.sim_disconnect_after_tokens,
            },
            trace_requests: self.sim_trace_requests,
        };
        config.validate()?;
        if let Some(path) = &self.sim_tokenizer_json {
            crate::tokenizer::write_tokenizer_json(path).map_err(|e| {
                SimError::Config(format!("--sim-tokenizer-json {}: {e}", path.display()))
            })?;
        }
        let serve = ServeOptions {
            host: self.host,
            port: self.port,
            startup_delay: scaled(startup_ms as f64, self.sim_speedup),
        };
        Ok((config, serve))
    }
}

#[cfg(test)]
mod tests;
