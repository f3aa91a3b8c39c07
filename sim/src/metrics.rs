//! Engine statistics and their Prometheus text exposition at `GET /metrics`.
//!
//! Metric names, HELP texts, label names (`engine="0"`, `model_name` = first served name,
//! `finished_reason`) and histogram buckets are copied from a real vLLM 0.32 `/metrics`
//! (`fixtures/vllm-0.32-cpu/metrics.prom`). Values are printed like Python's `float` repr
//! (`778.0`). vLLM's `*_created` series and `python_*`/`process_*` metrics are not emitted.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];
const ITERATION_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

/// A Prometheus histogram with fixed upper bounds (the `+Inf` bucket is implicit).
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let bucket = self.bounds.iter().position(|b| v <= *b);
        if let Some(c) = bucket.and_then(|i| self.counts.get_mut(i)) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug)]
struct Histograms {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    prompt_tokens: Histogram,
    generation_tokens: Histogram,
    iteration_tokens: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(LATENCY_BUCKETS),
            queue: Histogram::new(LATENCY_BUCKETS),
            prompt_tokens: Histogram::new(TOKEN_BUCKETS),
            generation_tokens: Histogram::new(TOKEN_BUCKETS),
            iteration_tokens: Histogram::new(ITERATION_BUCKETS),
        }
    }
}

/// One finished (or aborted) request, as recorded at the end of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishedRecord {
    pub reason: FinishReason,
    pub e2e: Duration,
    pub prompt_tokens: u32,
    pub generation_tokens: u32,
}

/// What one engine step did; recorded with a single lock.
#[derive(Debug, Default, Clone)]
pub struct StepRecord {
    pub prefill_tokens: u64,
    pub generation_tokens: u64,
    pub ttft: Vec<Duration>,
    pub queue_time: Vec<Duration>,
    pub itl: Vec<Duration>,
    pub finished: Vec<FinishedRecord>,
}

/// Counters and gauges shared by the engine loop (writer) and `/metrics` (reader).
#[derive(Debug, Default)]
pub struct EngineStats {
    running: AtomicU64,
    waiting: AtomicU64,
    kv_usage_bits: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    success_stop: AtomicU64,
    success_length: AtomicU64,
    success_abort: AtomicU64,
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
}

impl EngineStats {
    pub fn new() -> Self {
        Self::default()
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
        for d in &step.queue_time {
            h.queue.observe(d.as_secs_f64());
        }
        for d in &step.itl {
            h.itl.observe(d.as_secs_f64());
        }
        for f in step
            .finished
            .iter()
            .filter(|f| f.reason != FinishReason::Abort)
        {
            h.e2e.observe(f.e2e.as_secs_f64());
            h.prompt_tokens.observe(f64::from(f.prompt_tokens));
            h.generation_tokens.observe(f64::from(f.generation_tokens));
        }
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
            running: self.running.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            kv_cache_usage: f64::from_bits(self.kv_usage_bits.load(Ordering::Relaxed)),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            generation_tokens: self.generation_tokens.load(Ordering::Relaxed),
            success_stop: self.success_stop.load(Ordering::Relaxed),
            success_length: self.success_length.load(Ordering::Relaxed),
            success_abort: self.success_abort.load(Ordering::Relaxed),
        }
    }

    /// The Prometheus text exposition, vLLM names and labels.
    pub fn render(&self, config: &SimConfig) -> String {
        let s = self.snapshot();
        let h = self
            .histograms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let model = escape_label(config.primary_name());
        let labels = format!("engine=\"0\",model_name=\"{model}\"");
        let mut out = String::with_capacity(16 * 1024);
        let mut scalar = |name: &str, kind: &str, help: &str, value: f64| {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name}{{{labels}}} {}", py_float(value));
        };
        scalar(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            s.running as f64,
        );
        scalar(
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            s.waiting as f64,
        );
        scalar(
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            s.kv_cache_usage,
        );
        scalar(
            "vllm:num_preemptions_total",
            "counter",
            "Cumulative number of preemption from the engine.",
            0.0,
        );
        scalar(
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            s.prompt_tokens as f64,
        );
        scalar(
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            s.generation_tokens as f64,
        );
        header(
            &mut out,
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
        );
        for (reason, v) in [
            ("stop", s.success_stop),
            ("length", s.success_length),
            ("abort", s.success_abort),
            ("error", 0),
            ("repetition", 0),
        ] {
            let _ = writeln!(
                out,
                "vllm:request_success_total{{engine=\"0\",finished_reason=\"{reason}\",model_name=\"{model}\"}} {}",
                py_float(v as f64)
            );
        }
        let histograms: [(&str, &str, &Histogram); 7] = [
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
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                &h.e2e,
            ),
            (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                &h.queue,
            ),
        ];
        for (name, help, hist) in histograms {
            header(&mut out, name, "histogram", help);
            let mut cumulative = 0;
            for (bound, c) in hist.bounds.iter().zip(&hist.counts) {
                cumulative += c;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{engine=\"0\",le=\"{}\",model_name=\"{model}\"}} {}",
                    py_float(*bound),
                    py_float(cumulative as f64)
                );
            }
            let count = py_float(hist.count as f64);
            let _ = writeln!(
                out,
                "{name}_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"{model}\"}} {count}"
            );
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", py_float(hist.sum));
        }
        let e = &config.echo;
        header(
            &mut out,
            "vllm:cache_config_info",
            "gauge",
            "Information of the LLMEngine CacheConfig",
        );
        let _ = writeln!(
            out,
            "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"{}\",enable_prefix_caching=\"{}\",engine=\"0\",gpu_memory_utilization=\"{}\",kv_cache_size_tokens=\"{}\",num_gpu_blocks=\"{}\"}} 1.0",
            config.engine.block_size,
            escape_label(&e.kv_cache_dtype),
            if e.enable_prefix_caching {
                "True"
            } else {
                "False"
            },
            e.gpu_memory_utilization,
            config.engine.kv_cache_tokens,
            config.engine.kv_cache_blocks(),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Formats like Python's `repr(float)`: integral values keep a `.0`.
fn py_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Logs vLLM's periodic engine summary every `interval` while there is activity:
/// "Engine 000: Avg prompt throughput: X tokens/s, Avg generation throughput: Y tokens/s,
/// Running: N reqs, Waiting: M reqs, GPU KV cache usage: Z%, Prefix cache hit rate: 0.0%".
pub async fn log_stats_loop(
    stats: std::sync::Arc<EngineStats>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = stats.snapshot();
    let mut last_was_idle = true;
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
        let idle = prompt == 0.0 && generation == 0.0 && now.running == 0 && now.waiting == 0;
        if !(idle && last_was_idle) {
            tracing::info!(
                "Engine 000: Avg prompt throughput: {prompt:.1} tokens/s, Avg generation throughput: {generation:.1} tokens/s, Running: {} reqs, Waiting: {} reqs, GPU KV cache usage: {:.1}%, Prefix cache hit rate: 0.0%",
                now.running,
                now.waiting,
                now.kv_cache_usage * 100.0
            );
        }
        last_was_idle = idle;
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        assert_eq!(py_float(778.0), "778.0");
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(0.005), "0.005");
        assert_eq!(py_float(9.241167068481445), "9.241167068481445");
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
                prompt_tokens: 100,
                generation_tokens: 4,
            }],
            ..StepRecord::default()
        });
        let mut config = SimConfig::new("models/smollm2-135m");
        config.served_model_names = vec!["smol".to_owned()];
        let text = stats.render(&config);
        for line in [
            "# TYPE vllm:num_requests_running gauge",
            "vllm:num_requests_running{engine=\"0\",model_name=\"smol\"} 3.0",
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"smol\"} 2.0",
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"smol\"} 0.25",
            "# TYPE vllm:prompt_tokens_total counter",
            "vllm:prompt_tokens_total{engine=\"0\",model_name=\"smol\"} 100.0",
            "vllm:generation_tokens_total{engine=\"0\",model_name=\"smol\"} 4.0",
            "vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"smol\"} 1.0",
            "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"smol\"} 0.0",
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.06\",model_name=\"smol\"} 0.0",
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.08\",model_name=\"smol\"} 1.0",
            "vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"smol\"} 1.0",
            "vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"smol\"} 1.0",
            "vllm:iteration_tokens_total_bucket{engine=\"0\",le=\"128.0\",model_name=\"smol\"} 1.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
