//! A burst of requests through the real engine loop, for tests and the calibration
//! example (shared with `#[path]`): run it on tokio's paused clock and simulated time costs
//! nothing but the engine's own CPU.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetbench_sim::config::{CrashAction, EngineConfig, SimConfig, TimingModel};
use fleetbench_sim::finish::FinishReason;
use fleetbench_sim::metrics::EngineStats;
use fleetbench_sim::perf::{PerfModel, Profiles};
use fleetbench_sim::scheduler::{NewRequest, spawn_engine};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a burst of `batch` requests measured: per-request TTFT and end-to-end latency.
pub struct Burst {
    pub ttft: Vec<Duration>,
    pub e2e: Vec<Duration>,
    pub preemptions: u64,
    pub crashed: bool,
}

impl Burst {
    pub fn output_throughput(&self, output: u32) -> f64 {
        let last = self.e2e.iter().max().unwrap().as_secs_f64();
        self.e2e.len() as f64 * f64::from(output) / last
    }
    pub fn per_request_speed(&self, output: u32) -> f64 {
        let mean = self.e2e.iter().map(Duration::as_secs_f64).sum::<f64>() / self.e2e.len() as f64;
        f64::from(output) / mean
    }
    pub fn mean_ttft(&self) -> f64 {
        self.ttft.iter().map(Duration::as_secs_f64).sum::<f64>() / self.ttft.len() as f64
    }
    /// Last over first time to first token: 1 when every prompt was prefilled in one step.
    pub fn ttft_spread(&self) -> f64 {
        let max = self.ttft.iter().max().unwrap().as_secs_f64();
        let min = self.ttft.iter().min().unwrap().as_secs_f64();
        max / min
    }
}

pub fn perf(gpu: &str, model: &str, tp: u32, util: f64, eager: bool) -> PerfModel {
    let p = Profiles::builtin().unwrap();
    PerfModel {
        gpu: p.gpu(gpu).unwrap().clone(),
        model: p.model(model).unwrap().1.clone(),
        tp,
        enforce_eager: eager,
        gpu_memory_utilization: util,
    }
}

/// The engine as `vllm serve` would size it: KV cache from the model, seed-like flags.
pub fn engine(perf: PerfModel, block_size: u32, oom: Option<CrashAction>) -> EngineConfig {
    let blocks = perf.kv_cache_blocks(block_size).unwrap();
    EngineConfig {
        max_num_seqs: 256,
        max_num_batched_tokens: 8192,
        block_size,
        kv_cache_tokens: blocks * u64::from(block_size),
        timing: TimingModel::default(),
        crash: None,
        chunked_prefill: true,
        // vLLM's default; the burst's prompts share no block anyway.
        prefix_caching: true,
        oom,
        perf: Some(perf),
    }
}

/// Sends `batch` requests of `input`/`output` tokens at once to a fresh engine and waits
/// for every token (or the crash).
pub async fn burst(config: EngineConfig, batch: usize, input: u32, output: u32) -> Burst {
    let crashed = Arc::new(Mutex::new(false));
    let mut config = config;
    if config.oom.is_some() {
        let flag = crashed.clone();
        config.oom = Some(CrashAction::Hook(Arc::new(move |_| {
            *flag.lock().unwrap() = true;
        })));
    }
    let stats = Arc::new(EngineStats::new());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle = spawn_engine(config, stats.clone(), shutdown.clone(), &tracker);
    let t0 = Instant::now();
    let mut receivers = Vec::new();
    for i in 0..batch {
        receivers.push(
            handle
                .submit(NewRequest {
                    request_id: format!("r{i}"),
                    // A prompt of its own: no prefix-cache hits between the requests.
                    prompt_ids: vec![i as u32; input as usize],
                    max_tokens: output,
                    output_tokens: output,
                    finish_reason: FinishReason::Length,
                })
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                let (mut first, mut last, mut n) = (None, None, 0u32);
                while let Some(ev) = rx.recv().await {
                    first.get_or_insert(ev.at);
                    last = Some(ev.at);
                    n += ev.count;
                }
                (first, last, n)
            })
        })
        .collect();
    let mut out = Burst {
        ttft: Vec::new(),
        e2e: Vec::new(),
        preemptions: 0,
        crashed: false,
    };
    for t in tasks {
        let (first, last, n) = t.await.unwrap();
        if n == output {
            out.ttft.push(first.unwrap() - t0);
            out.e2e.push(last.unwrap() - t0);
        }
    }
    // Read the way a user reads it: vLLM's counter in the `/metrics` exposition.
    out.preemptions = metrics_counter(
        &stats.render(&SimConfig::new("burst-model")),
        "vllm:num_preemptions_total",
    );
    out.crashed = *crashed.lock().unwrap();
    shutdown.cancel();
    out
}

/// The value of the Prometheus sample `name{...} value` in an exposition (0 when absent).
pub fn metrics_counter(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
}
