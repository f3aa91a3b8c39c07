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

    /// Prefix caching; accepted, not modelled.
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
                enable_prefix_caching: !self.no_enable_prefix_caching,
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
mod tests {
    use super::*;
    use crate::config::Pacing;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<(SimConfig, ServeOptions), String> {
        let mut argv = vec!["vllm-sim"];
        argv.extend_from_slice(args);
        Args::try_parse_vllm(argv)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_vllm_serve() {
        let (c, s) = parse(&["serve", "models/smollm2-135m"]).unwrap();
        assert_eq!(c.model, "models/smollm2-135m");
        assert_eq!(c.served_model_names, ["models/smollm2-135m"]);
        assert_eq!(c.max_model_len, 2048);
        assert_eq!(c.engine.max_num_seqs, 256);
        assert_eq!(c.engine.max_num_batched_tokens, 8192);
        assert_eq!(c.engine.timing, TimingModel::default());
        assert_eq!(c.timing_mode, TimingMode::Model);
        assert!(!c.enable_log_requests);
        assert!(c.echo.enable_prefix_caching);
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 8000));
        assert_eq!(s.startup_delay, Duration::ZERO);
    }

    #[test]
    fn serve_is_optional_and_model_flag_works() {
        assert_eq!(parse(&["m1"]).unwrap().0.model, "m1");
        assert_eq!(parse(&["--model", "m2"]).unwrap().0.model, "m2");
        assert_eq!(parse(&["serve", "--model=m3"]).unwrap().0.model, "m3");
        assert!(parse(&["serve"]).is_err());
    }

    #[test]
    fn vllm_flags_are_accepted() {
        let (c, s) = parse(&[
            "serve",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--host",
            "127.0.0.1",
            "--port",
            "18100",
            "--served-model-name",
            "llama",
            "llama8b",
            "-tp",
            "2",
            "--max-model-len",
            "4096",
            "--gpu-memory-utilization",
            "0.92",
            "--block-size",
            "64",
            "--max_num_batched_tokens",
            "2048",
            "--max-num-seqs=32",
            "--enforce-eager",
            "--no-enable-prefix-caching",
            "--enable-chunked-prefill",
            "--kv-cache-dtype",
            "fp8",
            "--dtype",
            "bfloat16",
            "--trust-remote-code",
            "--seed",
            "7",
            "--enable-log-requests",
            "--uvicorn-log-level",
            "warning",
            "--sim-speedup",
            "10",
            "--sim-startup-ms",
            "500",
            "--disable-completions",
        ])
        .unwrap();
        assert_eq!(c.served_model_names, ["llama", "llama8b"]);
        assert_eq!(c.echo.tensor_parallel_size, 2);
        assert_eq!(c.max_model_len, 4096);
        assert_eq!(c.engine.block_size, 64);
        assert_eq!(c.engine.max_num_batched_tokens, 2048);
        assert_eq!(c.engine.max_num_seqs, 32);
        assert!(c.echo.enforce_eager && !c.echo.enable_prefix_caching);
        assert_eq!(c.echo.kv_cache_dtype, "fp8");
        assert_eq!(c.seed, 7);
        assert!(c.enable_log_requests && c.disable_completions);
        assert_eq!(c.engine.timing.speedup, 10.0);
        assert_eq!(s.startup_delay, Duration::from_millis(50));
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 18100));
    }

    #[test]
    fn non_default_args_look_like_vllms() {
        let line = Args::non_default_args([
            "vllm-sim",
            "serve",
            "models/smollm2-135m",
            "--host",
            "127.0.0.1",
            "--port",
            "18100",
            "--dtype",
            "bfloat16",
            "--max-model-len",
            "2048",
            "--served-model-name",
            "smol",
            "--no-enable-prefix-caching",
            "--enforce-eager",
        ]);
        assert_eq!(
            line,
            "{'model_tag': 'models/smollm2-135m', 'model': 'models/smollm2-135m', 'host': '127.0.0.1', \
             'port': 18100, 'served_model_name': ['smol'], 'max_model_len': 2048, \
             'enforce_eager': True, 'enable_prefix_caching': False, 'dtype': 'bfloat16'}"
        );
    }

    #[test]
    fn sim_timing_modes() {
        let (c, _) = parse(&["m", "--sim-timing", "exact"]).unwrap();
        assert_eq!(
            c.timing_mode,
            TimingMode::Exact(ExactSchedule {
                ttft: Duration::from_millis(20),
                itl: Duration::from_millis(10),
                pacing: Pacing::Precise,
            })
        );
        let (c, s) = parse(&[
            "m",
            "--sim-timing=exact",
            "--sim-ttft-ms",
            "50",
            "--sim_itl_ms",
            "2.5",
            "--sim-speedup",
            "10",
            "--sim-startup-ms",
            "100",
        ])
        .unwrap();
        assert_eq!(
            c.timing_mode,
            TimingMode::Exact(ExactSchedule {
                ttft: Duration::from_millis(50),
                itl: Duration::from_micros(2500),
                pacing: Pacing::Precise,
            })
        );
        // The speedup still divides the start-up, never the exact schedule.
        assert_eq!(s.startup_delay, Duration::from_millis(10));
        let (c, _) = parse(&["m", "--sim-timing", "fast"]).unwrap();
        assert_eq!(
            c.timing_mode,
            TimingMode::Fast {
                chunks_per_frame: 16
            }
        );
        let (c, _) = parse(&[
            "m",
            "--sim-timing",
            "fast",
            "--sim-fast-chunks-per-frame",
            "1",
        ])
        .unwrap();
        assert_eq!(
            c.timing_mode,
            TimingMode::Fast {
                chunks_per_frame: 1
            }
        );
        assert!(parse(&["m", "--sim-timing", "slow"]).is_err());
        assert!(parse(&["m", "--sim-fast-chunks-per-frame", "0"]).is_err());
        assert!(parse(&["m", "--sim-ttft-ms", "-1"]).is_err());
        assert!(parse(&["m", "--sim-itl-ms", "1e9"]).is_err());
        assert!(
            Args::non_default_args(["vllm-sim", "m", "--sim-timing", "exact"])
                .contains("'sim_timing': 'exact'")
        );
    }

    #[test]
    fn crash_at_running_needs_the_model_timing() {
        let (c, _) = parse(&["m"]).unwrap();
        assert_eq!(c.engine.crash, None);
        let (c, _) = parse(&["m", "--sim-crash-at-running", "4"]).unwrap();
        assert_eq!(c.engine.crash, Some(CrashAt::exit_at(4)));
        let (c, _) = parse(&["m", "--sim_crash_at_running=2", "--sim-timing", "model"]).unwrap();
        assert_eq!(c.engine.crash, Some(CrashAt::exit_at(2)));
        assert!(parse(&["m", "--sim-crash-at-running", "0"]).is_err());
        assert!(parse(&["m", "--sim-crash-at-running", "-1"]).is_err());
        for timing in ["exact", "fast"] {
            let err =
                parse(&["m", "--sim-crash-at-running", "4", "--sim-timing", timing]).unwrap_err();
            assert!(
                err.contains("--sim-crash-at-running needs --sim-timing model"),
                "{err}"
            );
        }
        assert!(
            Args::non_default_args(["vllm-sim", "m", "--sim-crash-at-running", "8"])
                .contains("'sim_crash_at_running': 8")
        );
    }

    #[test]
    fn stream_fault_flags_parse_in_every_timing() {
        use crate::config::{FaultAction, StreamFault};
        let (c, _) = parse(&["m"]).unwrap();
        assert_eq!(c.faults, StreamFaults::default());
        assert_eq!(c.faults.armed(), None);
        let (c, _) = parse(&["m", "--sim-stall-after-tokens", "3"]).unwrap();
        assert_eq!(c.faults.stall_after_tokens, Some(3));
        assert_eq!(
            c.faults.armed(),
            Some(StreamFault {
                after_tokens: 3,
                action: FaultAction::Stall
            })
        );
        let (c, _) = parse(&["m", "--sim_disconnect_after_tokens=7"]).unwrap();
        assert_eq!(
            c.faults,
            StreamFaults {
                stall_after_tokens: None,
                disconnect_after_tokens: Some(7),
            }
        );
        for timing in ["model", "exact", "fast"] {
            for flag in ["--sim-stall-after-tokens", "--sim-disconnect-after-tokens"] {
                let (c, _) = parse(&["m", flag, "2", "--sim-timing", timing]).unwrap();
                assert_eq!(c.faults.armed().map(|f| f.after_tokens), Some(2));
            }
        }
        for flag in ["--sim-stall-after-tokens", "--sim-disconnect-after-tokens"] {
            assert!(parse(&["m", flag, "0"]).is_err());
            assert!(parse(&["m", flag, "-1"]).is_err());
            assert!(parse(&["m", flag, "x"]).is_err());
        }
        let err = parse(&[
            "m",
            "--sim-stall-after-tokens",
            "3",
            "--sim-disconnect-after-tokens",
            "3",
        ])
        .unwrap_err();
        assert!(err.contains("cannot be combined"), "{err}");
        assert!(
            Args::non_default_args(["vllm-sim", "m", "--sim-stall-after-tokens", "4"])
                .contains("'sim_stall_after_tokens': 4")
        );
        assert!(
            Args::non_default_args(["vllm-sim", "m", "--sim-disconnect-after-tokens", "5"])
                .contains("'sim_disconnect_after_tokens': 5")
        );
    }

    #[test]
    fn last_boolean_flag_wins() {
        let (c, _) = parse(&["m", "--enable-log-requests", "--disable-log-requests"]).unwrap();
        assert!(!c.enable_log_requests);
        let (c, _) = parse(&["m", "--no-enable-log-requests", "--enable-log-requests"]).unwrap();
        assert!(c.enable_log_requests);
    }

    #[test]
    fn unknown_flags_and_bad_values_are_rejected() {
        let err = Args::try_parse_vllm(["vllm-sim", "serve", "m", "--bogus-flag"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        assert!(err.to_string().contains("--bogus-flag"));
        assert!(parse(&["m", "--sim-speedup", "0"]).is_err());
        assert!(parse(&["m", "--sim-step-ms", "-1"]).is_err());
        assert!(parse(&["m", "--max-num-seqs", "0"]).is_err());
        assert!(parse(&["m", "--uvicorn-log-level", "loud"]).is_err());
    }
}
