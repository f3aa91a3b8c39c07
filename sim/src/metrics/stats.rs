//! What the engine loop and the requests that bypass it record: the counters and gauges behind
//! vLLM's `vllm:` families and vLLM's request histograms, with vLLM's buckets (token-count
//! buckets are the 1-2-5 series up to `--max-model-len`), and the prefix-cache hit rate of the
//! periodic log line. [`super::prometheus`] prints them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::finish::FinishReason;

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
pub(super) struct Histogram {
    pub(super) bounds: Vec<f64>,
    pub(super) counts: Vec<u64>,
    pub(super) sum: f64,
    pub(super) count: u64,
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
pub(super) struct Histograms {
    pub(super) prompt_tokens: Histogram,
    pub(super) generation_tokens: Histogram,
    pub(super) iteration_tokens: Histogram,
    pub(super) max_num_generation_tokens: Histogram,
    pub(super) params_n: Histogram,
    pub(super) params_max_tokens: Histogram,
    pub(super) ttft: Histogram,
    pub(super) itl: Histogram,
    pub(super) time_per_output_token: Histogram,
    pub(super) e2e: Histogram,
    pub(super) queue: Histogram,
    pub(super) inference: Histogram,
    pub(super) prefill: Histogram,
    pub(super) decode: Histogram,
    pub(super) num_preemptions: Histogram,
    pub(super) prefill_kv_computed: Histogram,
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
        // vLLM: `num_prompt_tokens - max(num_cached_tokens, 0)`.
        self.prefill_kv_computed
            .observe(f64::from(f.prompt_tokens.saturating_sub(f.cached_tokens)));
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
    /// Prompt tokens found in the prefix cache when it was first scheduled (vLLM's
    /// `num_cached_tokens`).
    pub cached_tokens: u32,
    pub generation_tokens: u32,
    /// The request's `max_tokens` sampling parameter.
    pub max_tokens: u32,
    /// Times the request was preempted.
    pub preemptions: u32,
}

/// Prefix-cache lookups of the requests a step admitted for the first time (vLLM's
/// `PrefixCacheStats`; lookups of preempted requests coming back are not counted, as in vLLM's
/// counters). Tokens: `queries` are the prompt tokens looked up, `hits` those found cached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub requests: u64,
    pub queries: u64,
    pub hits: u64,
}

impl PrefixCacheStats {
    /// One request of `queries` tokens that found `hits` of them cached.
    pub fn record(&mut self, queries: u64, hits: u64) {
        self.requests += 1;
        self.queries += queries;
        self.hits += hits;
    }

    fn add(&mut self, other: Self) {
        self.requests += other.requests;
        self.queries += other.queries;
        self.hits += other.hits;
    }

    fn sub(&mut self, other: Self) {
        self.requests -= other.requests;
        self.queries -= other.queries;
        self.hits -= other.hits;
    }
}

/// What one engine step did; recorded with a single lock.
#[derive(Debug, Default, Clone)]
pub struct StepRecord {
    /// Prompt tokens of the requests whose first token came in this step (cached ones
    /// included: vLLM's `vllm:prompt_tokens`).
    pub prefill_tokens: u64,
    /// Of those, the tokens found in the prefix cache (vLLM's `cached_tokens`).
    pub cached_prompt_tokens: u64,
    /// Prefix-cache lookups of the requests admitted in this step.
    pub prefix_cache: PrefixCacheStats,
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
    prompt_tokens_cached: AtomicU64,
    /// Whether prefix caching is on: requests that bypass the engine then count as lookups
    /// that missed.
    prefix_caching: bool,
    prefix_cache_queries: AtomicU64,
    prefix_cache_hits: AtomicU64,
    /// The recent lookups behind the log line's hit rate.
    prefix_cache_window: Mutex<HitRateWindow>,
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
    /// Prompt tokens of `prompt_tokens` found in the prefix cache.
    pub prompt_tokens_cached: u64,
    /// `vllm:prefix_cache_queries`: prompt tokens of new requests looked up.
    pub prefix_cache_queries: u64,
    /// `vllm:prefix_cache_hits`: of those, tokens found cached.
    pub prefix_cache_hits: u64,
}

/// vLLM's `CachingMetrics`: the hit rate over the most recent [`HIT_RATE_WINDOW_REQUESTS`]
/// requests, kept as one entry per step that admitted some (the oldest steps leave first; the
/// newest always stays).
#[derive(Debug, Default)]
struct HitRateWindow {
    steps: VecDeque<PrefixCacheStats>,
    sum: PrefixCacheStats,
}

/// vLLM's `CachingMetrics(max_recent_requests=1000)`.
pub const HIT_RATE_WINDOW_REQUESTS: u64 = 1000;

impl HitRateWindow {
    fn observe(&mut self, step: PrefixCacheStats) {
        if step.requests == 0 {
            return;
        }
        self.steps.push_back(step);
        self.sum.add(step);
        while self.steps.len() > 1 && self.sum.requests > HIT_RATE_WINDOW_REQUESTS {
            if let Some(old) = self.steps.pop_front() {
                self.sum.sub(old);
            }
        }
    }

    /// `None` before any request (vLLM then leaves the hit rate out of the log line).
    fn hit_rate(&self) -> Option<f64> {
        if self.sum.requests == 0 {
            return None;
        }
        Some(if self.sum.queries == 0 {
            0.0
        } else {
            self.sum.hits as f64 / self.sum.queries as f64
        })
    }
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
            prompt_tokens_cached: AtomicU64::new(0),
            prefix_caching: true,
            prefix_cache_queries: AtomicU64::new(0),
            prefix_cache_hits: AtomicU64::new(0),
            prefix_cache_window: Mutex::new(HitRateWindow::default()),
            histograms: Mutex::new(Histograms::new(max_model_len)),
        }
    }

    /// The same statistics for a server with prefix caching on or off (on by default, as in
    /// vLLM). Only the requests that bypass the engine depend on it: the engine loop records
    /// its own lookups, none when caching is off.
    pub fn with_prefix_caching(self, on: bool) -> Self {
        Self {
            prefix_caching: on,
            ..self
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
        self.prompt_tokens_cached
            .fetch_add(step.cached_prompt_tokens, Ordering::Relaxed);
        self.generation_tokens
            .fetch_add(step.generation_tokens, Ordering::Relaxed);
        self.record_prefix_cache(step.prefix_cache);
        for f in &step.finished {
            self.count_finish(f.reason);
        }
        let mut h = self.histograms();
        // vLLM: the prompt tokens computed (not the cached ones) plus the generated ones.
        let computed = step
            .prefill_tokens
            .saturating_sub(step.cached_prompt_tokens);
        let tokens = computed + step.generation_tokens;
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
    /// and its prompt counts as prefilled (and, with prefix caching, as looked up and missed:
    /// these modes have no KV cache).
    pub fn direct_started(&self, prompt_tokens: u32) {
        self.direct_running.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(u64::from(prompt_tokens), Ordering::Relaxed);
        if self.prefix_caching {
            let mut lookup = PrefixCacheStats::default();
            lookup.record(u64::from(prompt_tokens), 0);
            self.record_prefix_cache(lookup);
        }
    }

    /// Counts prefix-cache lookups (`vllm:prefix_cache_queries`, `vllm:prefix_cache_hits`)
    /// and adds them to the log line's hit rate.
    fn record_prefix_cache(&self, lookups: PrefixCacheStats) {
        if lookups.requests == 0 {
            return;
        }
        self.prefix_cache_queries
            .fetch_add(lookups.queries, Ordering::Relaxed);
        self.prefix_cache_hits
            .fetch_add(lookups.hits, Ordering::Relaxed);
        self.prefix_cache_window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(lookups);
    }

    /// The prefix-cache hit rate of the most recent requests (vLLM's log line, over its last
    /// [`HIT_RATE_WINDOW_REQUESTS`] requests); `None` before the first lookup or without
    /// prefix caching.
    pub fn prefix_cache_hit_rate(&self) -> Option<f64> {
        self.prefix_cache_window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .hit_rate()
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
        let mut h = self.histograms();
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
            prompt_tokens_cached: self.prompt_tokens_cached.load(Ordering::Relaxed),
            prefix_cache_queries: self.prefix_cache_queries.load(Ordering::Relaxed),
            prefix_cache_hits: self.prefix_cache_hits.load(Ordering::Relaxed),
        }
    }

    /// Unix time of creation: the value of the `*_created` gauges.
    pub(super) fn created(&self) -> f64 {
        self.created
    }

    /// The request histograms, locked (a poisoned lock is taken over).
    pub(super) fn histograms(&self) -> MutexGuard<'_, Histograms> {
        self.histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
