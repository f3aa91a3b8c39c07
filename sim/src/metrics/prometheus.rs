//! The Prometheus text exposition of the engine's statistics at `GET /metrics`.
//!
//! Every `vllm:` family of a real vLLM 0.32 `/metrics` (`fixtures/vllm-0.32-cpu/metrics.prom`)
//! is emitted in vLLM's order with its HELP text, type, label names (sorted, as vLLM's
//! multiprocess registry prints them: `engine="0"`, `model_name` = first served name,
//! `finished_reason`, …), histogram buckets (token-count buckets are the 1-2-5 series up to
//! `--max-model-len`) and the `*_created` gauges of counters and histograms. Values are
//! printed like prometheus_client (`778.0`, `1.7958202668070712e+09`). What the simulator
//! does not model (external KV-connector caches, multi-modal caches, FLOP estimates) stays
//! at zero. vLLM's `python_*`, `process_*` and `http_*` families are not emitted.
//!
//! The prefix cache (see [`crate::scheduler::prefix_cache`]) moves the families vLLM 0.32's
//! `PrometheusStatLogger` (`vllm/v1/metrics/loggers.py`) feeds from it, all in tokens:
//! `vllm:prefix_cache_queries_total` (prompt tokens of the new requests looked up, at
//! admission) and `vllm:prefix_cache_hits_total` (those found cached), also
//! `vllm:prompt_tokens_cached_by_source_total{source="device"}`; at a request's first token,
//! `vllm:prompt_tokens_cached_total` and `vllm:prompt_tokens_by_source_total` (cached tokens
//! are `local_cache_hit`, the rest `local_compute`), and per finished request
//! `vllm:request_prefill_kv_computed_tokens` (prompt minus cached). `vllm:prompt_tokens_total`
//! counts whole prompts, cached tokens included, as vLLM's does.

use std::fmt::Write as _;

use super::stats::{EngineStats, Histogram, Histograms};
use crate::config::SimConfig;

/// `Content-Type` of the exposition (what prometheus_client sends).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl EngineStats {
    /// The Prometheus text exposition, vLLM names, labels and order.
    pub fn render(&self, config: &SimConfig) -> String {
        let s = self.snapshot();
        let h = self.histograms();
        let mut out = Exposition {
            out: String::with_capacity(32 * 1024),
            model: escape_label(config.primary_name()),
            created: go_float(self.created()),
        };
        let one = |v: u64| [(None, v as f64)];
        out.counter(
            "vllm:estimated_flops_per_gpu",
            "Estimated number of floating point operations per GPU (for Model Flops Utilization calculations).",
            &one(0),
        );
        out.counter(
            "vllm:estimated_read_bytes_per_gpu",
            "Estimated number of bytes read from memory per GPU (for Model Flops Utilization calculations).",
            &one(0),
        );
        out.counter(
            "vllm:estimated_write_bytes_per_gpu",
            "Estimated number of bytes written to memory per GPU (for Model Flops Utilization calculations).",
            &one(0),
        );
        out.gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            &[(None, s.running as f64)],
        );
        out.gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            &[(None, s.waiting as f64)],
        );
        out.gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
            &[
                (Some(("reason", "capacity")), s.waiting as f64),
                (Some(("reason", "deferred")), 0.0),
            ],
        );
        out.gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            &[
                (Some(("sleep_state", "awake")), 1.0),
                (Some(("sleep_state", "weights_offloaded")), 0.0),
                (Some(("sleep_state", "discard_all")), 0.0),
            ],
        );
        out.gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            &[(None, s.kv_cache_usage)],
        );
        out.counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            &one(s.prefix_cache_queries),
        );
        out.counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            &one(s.prefix_cache_hits),
        );
        out.counter(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.",
            &one(0),
        );
        out.counter(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.",
            &one(0),
        );
        out.counter(
            "vllm:mm_cache_queries",
            "Multi-modal cache queries, in terms of number of queried items.",
            &one(0),
        );
        out.counter(
            "vllm:mm_cache_hits",
            "Multi-modal cache hits, in terms of number of cached items.",
            &one(0),
        );
        out.counter(
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            &one(s.preemptions),
        );
        out.counter(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            &one(s.prompt_tokens),
        );
        out.counter(
            "vllm:prompt_tokens_by_source",
            "Number of prompt tokens by source.",
            &[
                (
                    Some(("source", "local_compute")),
                    s.prompt_tokens.saturating_sub(s.prompt_tokens_cached) as f64,
                ),
                (
                    Some(("source", "local_cache_hit")),
                    s.prompt_tokens_cached as f64,
                ),
                (Some(("source", "external_kv_transfer")), 0.0),
            ],
        );
        out.counter(
            "vllm:prompt_tokens_cached",
            "Number of cached prompt tokens (local + external).",
            &one(s.prompt_tokens_cached),
        );
        out.counter(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.",
            &[
                ("device", s.prefix_cache_hits),
                ("host", 0),
                ("p2p", 0),
                ("disk", 0),
                ("external_unspecified", 0),
            ]
            .map(|(source, v)| (Some(("source", source)), v as f64)),
        );
        out.counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            &one(s.generation_tokens),
        );
        out.counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            &[
                ("stop", s.success_stop),
                ("length", s.success_length),
                ("abort", s.success_abort),
                ("error", 0),
                ("repetition", 0),
            ]
            .map(|(reason, v)| (Some(("finished_reason", reason)), v as f64)),
        );
        out.admission_rejections();
        for (name, help, hist) in families(&h) {
            out.histogram(name, help, hist);
        }
        out.cache_config_info(config);
        out.out
    }
}

/// `(name, help, histogram)` in vLLM's exposition order.
fn families(h: &Histograms) -> [(&'static str, &'static str, &Histogram); 16] {
    [
        (
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            &h.prompt_tokens,
        ),
        (
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            &h.generation_tokens,
        ),
        (
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            &h.iteration_tokens,
        ),
        (
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            &h.max_num_generation_tokens,
        ),
        (
            "vllm:request_params_n",
            "Histogram of the n request parameter.",
            &h.params_n,
        ),
        (
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            &h.params_max_tokens,
        ),
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &h.ttft,
        ),
        (
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            &h.itl,
        ),
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            &h.time_per_output_token,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &h.e2e,
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &h.queue,
        ),
        (
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            &h.inference,
        ),
        (
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            &h.prefill,
        ),
        (
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            &h.decode,
        ),
        (
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            &h.num_preemptions,
        ),
        (
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            &h.prefill_kv_computed,
        ),
    ]
}

/// One extra label beside `engine` and `model_name`, and a value.
type Sample<'a> = (Option<(&'a str, &'a str)>, f64);

/// Writer of the exposition text.
struct Exposition {
    out: String,
    model: String,
    created: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// `{engine="0",model_name="…"}` plus `extra`, sorted by label name.
    fn labels(&self, extra: &[(&str, &str)]) -> String {
        let mut labels: Vec<(&str, String)> = vec![
            ("engine", "0".to_owned()),
            ("model_name", self.model.clone()),
        ];
        labels.extend(extra.iter().map(|(k, v)| (*k, escape_label(v))));
        labels.sort_by(|a, b| a.0.cmp(b.0));
        let body: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{{{}}}", body.join(","))
    }

    fn samples(&mut self, name: &str, samples: &[Sample<'_>], created: bool) {
        for (extra, value) in samples {
            let labels = self.labels(extra.as_slice());
            let value = if created {
                self.created.clone()
            } else {
                go_float(*value)
            };
            let _ = writeln!(self.out, "{name}{labels} {value}");
        }
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[Sample<'_>]) {
        self.header(name, "gauge", help);
        self.samples(name, samples, false);
    }

    /// `{base}_total` and its `{base}_created` gauge.
    fn counter(&mut self, base: &str, help: &str, samples: &[Sample<'_>]) {
        let total = format!("{base}_total");
        self.header(&total, "counter", help);
        self.samples(&total, samples, false);
        let created = format!("{base}_created");
        self.header(&created, "gauge", help);
        self.samples(&created, samples, true);
    }

    /// vLLM's frontend counter, labelled without `engine`.
    fn admission_rejections(&mut self) {
        let help = "Number of admission attempts rejected by a queue limit, by reason.";
        for (suffix, kind) in [("total", "counter"), ("created", "gauge")] {
            let name = format!("vllm:admission_rejections_{suffix}");
            self.header(&name, kind, help);
            for reason in ["max_num_queued_reqs", "max_num_queued_tokens"] {
                let value = if kind == "gauge" {
                    self.created.clone()
                } else {
                    go_float(0.0)
                };
                let _ = writeln!(
                    self.out,
                    "{name}{{model_name=\"{}\",reason=\"{reason}\"}} {value}",
                    self.model
                );
            }
        }
    }

    fn histogram(&mut self, name: &str, help: &str, hist: &Histogram) {
        self.header(name, "histogram", help);
        let mut cumulative = 0;
        for (bound, c) in hist.bounds.iter().zip(&hist.counts) {
            cumulative += c;
            let labels = self.labels(&[("le", &go_float(*bound))]);
            let _ = writeln!(
                self.out,
                "{name}_bucket{labels} {}",
                go_float(cumulative as f64)
            );
        }
        let count = go_float(hist.count as f64);
        let labels = self.labels(&[("le", "+Inf")]);
        let _ = writeln!(self.out, "{name}_bucket{labels} {count}");
        let labels = self.labels(&[]);
        let _ = writeln!(self.out, "{name}_count{labels} {count}");
        let _ = writeln!(self.out, "{name}_sum{labels} {}", go_float(hist.sum));
        let created = format!("{name}_created");
        self.header(&created, "gauge", help);
        let _ = writeln!(self.out, "{created}{labels} {}", self.created);
    }

    /// `vllm:cache_config_info`: vLLM 0.32's label set, with the simulator's cache settings.
    fn cache_config_info(&mut self, config: &SimConfig) {
        let e = &config.engine;
        let py_bool = |b: bool| if b { "True" } else { "False" }.to_owned();
        let block_size = e.block_size.to_string();
        let concurrency = e.kv_cache_tokens as f64 / f64::from(config.max_model_len);
        let values: Vec<(&str, String)> = vec![
            ("_block_size_resolved", "True".to_owned()),
            ("block_size", block_size.clone()),
            ("cache_dtype", config.echo.kv_cache_dtype.clone()),
            ("cache_hit_alignment_tokens", "None".to_owned()),
            ("effective_attention_block_size", block_size),
            ("enable_mamba_shared_prefix_checkpoint", "False".to_owned()),
            ("enable_prefix_caching", py_bool(e.prefix_caching)),
            ("engine", "0".to_owned()),
            (
                "gpu_memory_utilization",
                py_repr(config.echo.gpu_memory_utilization),
            ),
            ("hash_block_size", "None".to_owned()),
            ("is_attention_free", "False".to_owned()),
            ("kv_cache_dtype_skip_layers", "[]".to_owned()),
            ("kv_cache_layout", "None".to_owned()),
            ("kv_cache_max_concurrency", py_repr(concurrency)),
            ("kv_cache_memory_bytes", "None".to_owned()),
            ("kv_cache_size_tokens", e.kv_cache_tokens.to_string()),
            ("kv_offloading_backend", "native".to_owned()),
            ("kv_offloading_size", "None".to_owned()),
            ("kv_sharing_fast_prefill", "False".to_owned()),
            ("mamba_block_size", "None".to_owned()),
            ("mamba_cache_dtype", "auto".to_owned()),
            ("mamba_cache_mode", "none".to_owned()),
            ("mamba_page_size_padded", "None".to_owned()),
            ("mamba_ssm_cache_dtype", "auto".to_owned()),
            ("num_cpu_blocks", "None".to_owned()),
            ("num_gpu_blocks", e.kv_cache_blocks().to_string()),
            ("num_gpu_blocks_override", "None".to_owned()),
            ("prefix_cache_retention_interval", "0".to_owned()),
            ("prefix_caching_hash_algo", "sha256".to_owned()),
            ("prefix_match_unit", "None".to_owned()),
            ("replayssm_buffer_len", "16".to_owned()),
            ("skip_page_size_padded", "None".to_owned()),
            ("sliding_window", "None".to_owned()),
            ("swa_bounded_replay", "True".to_owned()),
            ("use_kda_recoverssm", "False".to_owned()),
            ("use_replayssm", "False".to_owned()),
            ("user_specified_block_size", "False".to_owned()),
        ];
        self.header(
            "vllm:cache_config_info",
            "gauge",
            "Information of the LLMEngine CacheConfig",
        );
        let body: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        let _ = writeln!(self.out, "vllm:cache_config_info{{{}}} 1.0", body.join(","));
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, positional for exponents in
/// `[-4, 16)` (always with a fractional part, `778.0`), scientific otherwise (`1e-05`,
/// `1.5e+16`).
pub fn py_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

/// prometheus_client's `floatToGoString`: `+Inf`/`-Inf`/`NaN`, Python's repr, and for positive
/// values with more than six integer digits Go's exponent form (`1.24096512e+09`).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let s = py_repr(v);
    match s.find('.') {
        Some(dot) if v > 0.0 && dot > 6 => {
            let mantissa = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => s,
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
