//! Engine statistics and their Prometheus text exposition at `GET /metrics`.
//!
//! Every `vllm:` family of a real vLLM 0.32 `/metrics` (`fixtures/vllm-0.32-cpu/metrics.prom`)
//! is emitted in vLLM's order with its HELP text, type, label names (sorted, as vLLM's
//! multiprocess registry prints them: `engine="0"`, `model_name` = first served name,
//! `finished_reason`, …), histogram buckets (token-count buckets are the 1-2-5 series up to
//! `--max-model-len`) and the `*_created` gauges of counters and histograms. Values are
//! printed like prometheus_client (`778.0`, `1.7958202668070712e+09`). What the simulator
//! does not model (prefix-cache hits, preemptions, multi-modal caches, FLOP estimates) stays
//! at zero. vLLM's `python_*`, `process_*` and `http_*` families are not emitted.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::SimConfig;
use crate::scheduler::FinishReason;

/// `Content-Type` of the exposition (what prometheus_client sends).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const ITERATION_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
const PARAMS_N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];
const PREEMPTION_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0];

/// vLLM's `build_1_2_5_buckets(max_value)`: 1, 2, 5, 10, 20, 50, … up to `max_value`.
pub fn buckets_1_2_5(max_value: u32) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let v = m * scale;
            if v > u64::from(max_value) {
                return out;
            }
            out.push(v as f64);
        }
        scale *= 10;
    }
}

/// A Prometheus histogram with fixed upper bounds (the `+Inf` bucket is implicit).
#[derive(Debug, Clone)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        self.observe_n(v, 1);
    }

    /// `n` observations of the same value.
    fn observe_n(&mut self, v: f64, n: u64) {
        if n == 0 {
            return;
        }
        let bucket = self.bounds.iter().position(|b| v <= *b);
        if let Some(c) = bucket.and_then(|i| self.counts.get_mut(i)) {
            *c += n;
        }
        self.sum += v * n as f64;
        self.count += n;
    }
}

/// vLLM's request histograms, in exposition order.
#[derive(Debug)]
struct Histograms {
    prompt_tokens: Histogram,
    generation_tokens: Histogram,
    iteration_tokens: Histogram,
    max_num_generation_tokens: Histogram,
    params_n: Histogram,
    params_max_tokens: Histogram,
    ttft: Histogram,
    itl: Histogram,
    time_per_output_token: Histogram,
    e2e: Histogram,
    queue: Histogram,
    inference: Histogram,
    prefill: Histogram,
    decode: Histogram,
    num_preemptions: Histogram,
    prefill_kv_computed: Histogram,
}

impl Histograms {
    fn new(max_model_len: u32) -> Self {
        let tokens = buckets_1_2_5(max_model_len);
        Self {
            prompt_tokens: Histogram::new(&tokens),
            generation_tokens: Histogram::new(&tokens),
            iteration_tokens: Histogram::new(ITERATION_BUCKETS),
            max_num_generation_tokens: Histogram::new(&tokens),
            params_n: Histogram::new(PARAMS_N_BUCKETS),
            params_max_tokens: Histogram::new(&tokens),
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            time_per_output_token: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(LATENCY_BUCKETS),
            queue: Histogram::new(LATENCY_BUCKETS),
            inference: Histogram::new(LATENCY_BUCKETS),
            prefill: Histogram::new(LATENCY_BUCKETS),
            decode: Histogram::new(LATENCY_BUCKETS),
            num_preemptions: Histogram::new(PREEMPTION_BUCKETS),
            prefill_kv_computed: Histogram::new(&tokens),
        }
    }

    /// The per-request histograms of a request that finished (not aborted).
    fn observe_finished(&mut self, f: &FinishedRecord) {
        let decode = f.decode.as_secs_f64();
        self.e2e.observe(f.e2e.as_secs_f64());
        self.queue.observe(f.queued.as_secs_f64());
        self.prefill.observe(f.prefill.as_secs_f64());
        self.inference.observe((f.prefill + f.decode).as_secs_f64());
        self.decode.observe(decode);
        self.num_preemptions.observe(f64::from(f.preemptions));
        self.prefill_kv_computed.observe(f64::from(f.prompt_tokens));
        self.prompt_tokens.observe(f64::from(f.prompt_tokens));
        self.generation_tokens
            .observe(f64::from(f.generation_tokens));
        let tpot = if f.generation_tokens > 1 {
            decode / f64::from(f.generation_tokens - 1)
        } else {
            0.0
        };
        self.time_per_output_token.observe(tpot);
        if f.max_tokens > 0 {
            self.params_max_tokens.observe(f64::from(f.max_tokens));
        }
        self.max_num_generation_tokens
            .observe(f64::from(f.generation_tokens));
        self.params_n.observe(1.0);
    }

    /// `(name, help, histogram)` in vLLM's exposition order.
    fn families(&self) -> [(&'static str, &'static str, &Histogram); 16] {
        [
            (
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
                &self.prompt_tokens,
            ),
            (
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
                &self.generation_tokens,
            ),
            (
                "vllm:iteration_tokens_total",
                "Histogram of number of tokens per engine_step.",
                &self.iteration_tokens,
            ),
            (
                "vllm:request_max_num_generation_tokens",
                "Histogram of maximum number of requested generation tokens.",
                &self.max_num_generation_tokens,
            ),
            (
                "vllm:request_params_n",
                "Histogram of the n request parameter.",
                &self.params_n,
            ),
            (
                "vllm:request_params_max_tokens",
                "Histogram of the max_tokens request parameter.",
                &self.params_max_tokens,
            ),
            (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                &self.ttft,
            ),
            (
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
                &self.itl,
            ),
            (
                "vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.",
                &self.time_per_output_token,
            ),
            (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                &self.e2e,
            ),
            (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                &self.queue,
            ),
            (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
                &self.inference,
            ),
            (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
                &self.prefill,
            ),
            (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
                &self.decode,
            ),
            (
                "vllm:request_num_preemptions",
                "Histogram of the number of times a request was preempted.",
                &self.num_preemptions,
            ),
            (
                "vllm:request_prefill_kv_computed_tokens",
                "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
                &self.prefill_kv_computed,
            ),
        ]
    }
}

/// One finished (or aborted) request, as recorded at the end of a step. The phases follow
/// vLLM: queued = arrival → scheduled, prefill = scheduled → first token, decode = first →
/// last token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishedRecord {
    pub reason: FinishReason,
    pub e2e: Duration,
    pub queued: Duration,
    pub prefill: Duration,
    pub decode: Duration,
    pub prompt_tokens: u32,
    pub generation_tokens: u32,
    /// The request's `max_tokens` sampling parameter.
    pub max_tokens: u32,
    /// Times the request was preempted.
    pub preemptions: u32,
}

/// What one engine step did; recorded with a single lock.
#[derive(Debug, Default, Clone)]
pub struct StepRecord {
    pub prefill_tokens: u64,
    pub generation_tokens: u64,
    pub ttft: Vec<Duration>,
    pub itl: Vec<Duration>,
    pub finished: Vec<FinishedRecord>,
}

/// Counters and gauges shared by the engine loop (writer) and `/metrics` (reader).
#[derive(Debug)]
pub struct EngineStats {
    /// Unix time of creation: the value of the `*_created` gauges.
    created: f64,
    running: AtomicU64,
    /// Requests streaming outside the engine (`--sim-timing exact|fast`); added to `running`.
    direct_running: AtomicU64,
    waiting: AtomicU64,
    kv_usage_bits: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    success_stop: AtomicU64,
    success_length: AtomicU64,
    success_abort: AtomicU64,
    preemptions: AtomicU64,
    histograms: Mutex<Histograms>,
}

/// A point-in-time copy of the counters and gauges.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsSnapshot {
    pub running: u64,
    pub waiting: u64,
    pub kv_cache_usage: f64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    pub success_stop: u64,
    pub success_length: u64,
    pub success_abort: u64,
    pub preemptions: u64,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineStats {
    /// Statistics of a server with vLLM's default `--max-model-len` 2048.
    pub fn new() -> Self {
        Self::with_max_model_len(2048)
    }

    /// Statistics whose token-count histograms go up to `max_model_len`, as vLLM's do.
    pub fn with_max_model_len(max_model_len: u32) -> Self {
        Self {
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            running: AtomicU64::new(0),
            direct_running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            kv_usage_bits: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            success_stop: AtomicU64::new(0),
            success_length: AtomicU64::new(0),
            success_abort: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            histograms: Mutex::new(Histograms::new(max_model_len)),
        }
    }

    /// Sets `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`.
    pub fn set_gauges(&self, running: usize, waiting: usize, kv_cache_usage: f64) {
        self.running.store(running as u64, Ordering::Relaxed);
        self.waiting.store(waiting as u64, Ordering::Relaxed);
        self.kv_usage_bits
            .store(kv_cache_usage.to_bits(), Ordering::Relaxed);
    }

    /// Records the outcome of one engine step.
    pub fn record_step(&self, step: &StepRecord) {
        self.prompt_tokens
            .fetch_add(step.prefill_tokens, Ordering::Relaxed);
        self.generation_tokens
            .fetch_add(step.generation_tokens, Ordering::Relaxed);
        for f in &step.finished {
            self.count_finish(f.reason);
        }
        let mut h = self
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tokens = step.prefill_tokens + step.generation_tokens;
        if tokens > 0 {
            h.iteration_tokens.observe(tokens as f64);
        }
        for d in &step.ttft {
            h.ttft.observe(d.as_secs_f64());
        }
        for d in &step.itl {
            h.itl.observe(d.as_secs_f64());
        }
        for f in step
            .finished
            .iter()
            .filter(|f| f.reason != FinishReason::Abort)
        {
            h.observe_finished(f);
        }
    }

    /// A request that bypasses the engine (`--sim-timing exact|fast`) starts: it runs at once
    /// and its prompt counts as prefilled.
    pub fn direct_started(&self, prompt_tokens: u32) {
        self.direct_running.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
    }

    /// `n` more tokens of a direct request were emitted.
    pub fn direct_tokens(&self, n: u32) {
        self.generation_tokens
            .fetch_add(u64::from(n), Ordering::Relaxed);
    }

    /// A direct request ended. Must follow exactly one [`Self::direct_started`]. A finished
    /// request records its histograms (`ttft`, and its mean inter-token latency once per gap)
    /// under one lock; an aborted one only counts.
    pub fn direct_ended(&self, f: &FinishedRecord, ttft: Duration) {
        self.direct_running.fetch_sub(1, Ordering::Relaxed);
        self.count_finish(f.reason);
        if f.reason == FinishReason::Abort {
            return;
        }
        let mut h = self
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.ttft.observe(ttft.as_secs_f64());
        if f.generation_tokens > 1 {
            let gaps = u64::from(f.generation_tokens - 1);
            h.itl.observe_n(f.decode.as_secs_f64() / gaps as f64, gaps);
        }
        h.observe_finished(f);
    }

    /// Counts preemptions (a running request evicted to free KV-cache blocks).
    pub fn record_preemptions(&self, n: u64) {
        self.preemptions.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts requests that left before finishing (client gone).
    pub fn record_aborts(&self, n: u64) {
        self.success_abort.fetch_add(n, Ordering::Relaxed);
    }

    fn count_finish(&self, reason: FinishReason) {
        let counter = match reason {
            FinishReason::Stop => &self.success_stop,
            FinishReason::Length => &self.success_length,
            FinishReason::Abort => &self.success_abort,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            running: self.running.load(Ordering::Relaxed)
                + self.direct_running.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            kv_cache_usage: f64::from_bits(self.kv_usage_bits.load(Ordering::Relaxed)),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            generation_tokens: self.generation_tokens.load(Ordering::Relaxed),
            success_stop: self.success_stop.load(Ordering::Relaxed),
            success_length: self.success_length.load(Ordering::Relaxed),
            success_abort: self.success_abort.load(Ordering::Relaxed),
            preemptions: self.preemptions.load(Ordering::Relaxed),
        }
    }

    /// The Prometheus text exposition, vLLM names, labels and order.
    pub fn render(&self, config: &SimConfig) -> String {
        let s = self.snapshot();
        let h = self
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Exposition {
            out: String::with_capacity(32 * 1024),
            model: escape_label(config.primary_name()),
            created: go_float(self.created),
        };
        let prefix_queries = if config.echo.enable_prefix_caching {
            s.prompt_tokens
        } else {
            0
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
            &one(prefix_queries),
        );
        out.counter(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            &one(0),
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
                (Some(("source", "local_compute")), s.prompt_tokens as f64),
                (Some(("source", "local_cache_hit")), 0.0),
                (Some(("source", "external_kv_transfer")), 0.0),
            ],
        );
        out.counter(
            "vllm:prompt_tokens_cached",
            "Number of cached prompt tokens (local + external).",
            &one(0),
        );
        out.counter(
            "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.",
            &["device", "host", "p2p", "disk", "external_unspecified"]
                .map(|source| (Some(("source", source)), 0.0)),
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
        for (name, help, hist) in h.families() {
            out.histogram(name, help, hist);
        }
        out.cache_config_info(config);
        out.out
    }
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
            (
                "enable_prefix_caching",
                py_bool(config.echo.enable_prefix_caching),
            ),
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

/// Logs vLLM's periodic engine summary every `interval` (`[loggers.py:335]`):
/// "Engine 000: Avg prompt throughput: X tokens/s, Avg generation throughput: Y tokens/s,
/// Running: N reqs, Waiting: M reqs, GPU KV cache usage: Z%, Prefix cache hit rate: 0.0%"
/// (the hit rate only with prefix caching). Like vLLM, an interval whose throughputs and the
/// previous interval's are all zero is logged at debug level only.
pub async fn log_stats_loop(
    stats: std::sync::Arc<EngineStats>,
    interval: Duration,
    prefix_caching: bool,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = stats.snapshot();
    let (mut last_prompt, mut last_generation) = (0.0, 0.0);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = stats.snapshot();
        let secs = interval.as_secs_f64().max(f64::MIN_POSITIVE);
        let prompt = (now.prompt_tokens - last.prompt_tokens) as f64 / secs;
        let generation = (now.generation_tokens - last.generation_tokens) as f64 / secs;
        let line = stats_line(&now, prompt, generation, prefix_caching);
        let idle = [prompt, generation, last_prompt, last_generation]
            .iter()
            .all(|v| *v == 0.0);
        if idle {
            tracing::debug!(src = "loggers.py:335", "{line}");
        } else {
            tracing::info!(src = "loggers.py:335", "{line}");
        }
        (last_prompt, last_generation) = (prompt, generation);
        last = now;
    }
}

/// The text of one periodic statistics line.
pub fn stats_line(
    now: &StatsSnapshot,
    prompt: f64,
    generation: f64,
    prefix_caching: bool,
) -> String {
    let mut line = format!(
        "Engine 000: Avg prompt throughput: {prompt:.1} tokens/s, Avg generation throughput: {generation:.1} tokens/s, Running: {} reqs, Waiting: {} reqs, GPU KV cache usage: {:.1}%",
        now.running,
        now.waiting,
        now.kv_cache_usage * 100.0
    );
    if prefix_caching {
        line.push_str(", Prefix cache hit rate: 0.0%");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURE: &str =
        include_str!("../../tests/fixtures/vllm-0.32-cpu/metrics-after-load.prom");

    #[test]
    fn floats_print_like_prometheus_client() {
        assert_eq!(go_float(778.0), "778.0");
        assert_eq!(go_float(0.0), "0.0");
        assert_eq!(go_float(0.005), "0.005");
        assert_eq!(go_float(9.241167068481445), "9.241167068481445");
        assert_eq!(go_float(27.669999999999998), "27.669999999999998");
        assert_eq!(go_float(0.00010541699975874508), "0.00010541699975874508");
        assert_eq!(go_float(1.7958202668070712e9), "1.7958202668070712e+09");
        assert_eq!(go_float(1_795_820_266.807_123), "1.795820266807123e+09");
        assert_eq!(go_float(5_000_609_792.0), "5.000609792e+09");
        assert_eq!(go_float(1_240_965_120.0), "1.24096512e+09");
        assert_eq!(go_float(999_999.0), "999999.0");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(2_486_000.0), "2.486e+06");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(py_repr(1e-5), "1e-05");
        assert_eq!(py_repr(1.5e16), "1.5e+16");
        assert_eq!(py_repr(45.5), "45.5");
        assert_eq!(py_repr(0.92), "0.92");
        // Every number in the capture survives a parse and a print.
        for line in CAPTURE.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert_eq!(go_float(value.parse().unwrap()), value, "{line}");
        }
    }

    #[test]
    fn token_buckets_follow_max_model_len() {
        assert_eq!(
            buckets_1_2_5(2048),
            [
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0
            ]
        );
        assert_eq!(buckets_1_2_5(100).last(), Some(&100.0));
    }

    /// A series without its value: `name{labels}`.
    fn series(line: &str) -> &str {
        line.rsplit_once(' ').map_or(line, |(s, _)| s)
    }

    /// The `vllm:` part of an exposition: comments, series, and `cache_config_info`'s label
    /// names (its values describe the engine's cache).
    fn vllm_shape(text: &str) -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.starts_with("vllm:")
                    || l.starts_with("# HELP vllm:")
                    || l.starts_with("# TYPE vllm:")
            })
            .map(|l| {
                if l.starts_with("vllm:cache_config_info{") {
                    let keys: Vec<&str> = series(l)
                        .trim_start_matches("vllm:cache_config_info{")
                        .trim_end_matches('}')
                        .split("\",")
                        .map(|kv| kv.split('=').next().unwrap_or(""))
                        .collect();
                    format!("vllm:cache_config_info{keys:?}")
                } else if l.starts_with('#') {
                    l.to_owned()
                } else {
                    series(l).to_owned()
                }
            })
            .collect()
    }

    fn smol_config() -> SimConfig {
        let mut config = SimConfig::new("models/smollm2-135m");
        config.served_model_names = vec!["smol".to_owned()];
        config
    }

    /// Same families, HELP texts, types, series (labels and label values) and order as the
    /// real vLLM 0.32 `/metrics` of a `--max-model-len 2048` server.
    #[test]
    fn exposition_has_the_shape_of_the_capture() {
        let stats = EngineStats::new();
        let text = stats.render(&smol_config());
        let ours = vllm_shape(&text);
        let theirs = vllm_shape(CAPTURE);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "line {i} differs");
        }
        assert_eq!(ours.len(), theirs.len());
        for line in text.lines() {
            let created = line.contains("_created{");
            if created {
                assert!(line.ends_with("e+09"), "{line}");
            }
        }
    }

    #[test]
    fn renders_vllm_names_and_labels() {
        let stats = EngineStats::new();
        stats.set_gauges(3, 2, 0.25);
        stats.record_step(&StepRecord {
            prefill_tokens: 100,
            generation_tokens: 4,
            ttft: vec![Duration::from_millis(61)],
            finished: vec![FinishedRecord {
                reason: FinishReason::Length,
                e2e: Duration::from_millis(900),
                queued: Duration::from_millis(1),
                prefill: Duration::from_millis(60),
                decode: Duration::from_millis(839),
                prompt_tokens: 100,
                generation_tokens: 4,
                max_tokens: 4,
                preemptions: 0,
            }],
            ..StepRecord::default()
        });
        let text = stats.render(&smol_config());
        for line in [
            "# TYPE vllm:num_requests_running gauge",
            "vllm:num_requests_running{engine=\"0\",model_name=\"smol\"} 3.0",
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"smol\"} 2.0",
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"smol\"} 0.25",
            "# TYPE vllm:num_preemptions_total counter",
            "vllm:num_preemptions_total{engine=\"0\",model_name=\"smol\"} 0.0",
            "# TYPE vllm:prompt_tokens_total counter",
            "vllm:prompt_tokens_total{engine=\"0\",model_name=\"smol\"} 100.0",
            "vllm:prompt_tokens_by_source_total{engine=\"0\",model_name=\"smol\",source=\"local_compute\"} 100.0",
            "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"smol\"} 100.0",
            "# TYPE vllm:generation_tokens_total counter",
            "vllm:generation_tokens_total{engine=\"0\",model_name=\"smol\"} 4.0",
            "# TYPE vllm:request_success_total counter",
            "vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"smol\"} 1.0",
            "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"smol\"} 0.0",
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.06\",model_name=\"smol\"} 0.0",
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.08\",model_name=\"smol\"} 1.0",
            "vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"smol\"} 1.0",
            "vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"1.0\",model_name=\"smol\"} 1.0",
            "vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"smol\"} 1.0",
            "vllm:request_queue_time_seconds_sum{engine=\"0\",model_name=\"smol\"} 0.001",
            "vllm:request_inference_time_seconds_sum{engine=\"0\",model_name=\"smol\"} 0.899",
            "vllm:request_decode_time_seconds_sum{engine=\"0\",model_name=\"smol\"} 0.839",
            "vllm:request_params_max_tokens_sum{engine=\"0\",model_name=\"smol\"} 4.0",
            "vllm:request_params_n_count{engine=\"0\",model_name=\"smol\"} 1.0",
            "vllm:request_prompt_tokens_bucket{engine=\"0\",le=\"100.0\",model_name=\"smol\"} 1.0",
            "vllm:iteration_tokens_total_bucket{engine=\"0\",le=\"128.0\",model_name=\"smol\"} 1.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // A time per output token of 839 ms / 3.
        assert!(text.contains("vllm:request_time_per_output_token_seconds_sum{engine=\"0\",model_name=\"smol\"} 0.2796666666666"));
    }

    #[test]
    fn stats_line_matches_the_capture() {
        let log = include_str!("../../tests/fixtures/vllm-0.32-cpu/serve.log");
        let snap = StatsSnapshot {
            running: 8,
            kv_cache_usage: 0.011,
            ..StatsSnapshot::default()
        };
        let line = stats_line(&snap, 59.2, 133.3, true);
        let real = "Engine 000: Avg prompt throughput: 59.2 tokens/s, Avg generation throughput: 133.3 tokens/s, Running: 8 reqs, Waiting: 0 reqs, CPU KV cache usage: 1.1%, Prefix cache hit rate: 0.0%";
        assert!(log.contains(real));
        // The simulator is a GPU server.
        assert_eq!(line, real.replace("CPU KV", "GPU KV"));
    }
}
