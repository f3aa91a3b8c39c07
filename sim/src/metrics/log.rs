//! vLLM's periodic engine statistics line (`[loggers.py:335]`), from [`EngineStats`]
//! snapshots.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::stats::{EngineStats, StatsSnapshot};

/// Logs vLLM's periodic engine summary every `interval` (`[loggers.py:335]`):
/// "Engine 000: Avg prompt throughput: X tokens/s, Avg generation throughput: Y tokens/s,
/// Running: N reqs, Waiting: M reqs, GPU KV cache usage: Z%, Prefix cache hit rate: H%"
/// (the hit rate, over the last 1000 requests, once a request looked up the prefix cache:
/// never without prefix caching). Like vLLM, an interval whose throughputs and the previous
/// interval's are all zero is logged at debug level only.
pub async fn log_stats_loop(
    stats: Arc<EngineStats>,
    interval: Duration,
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
        let line = stats_line(&now, prompt, generation, stats.prefix_cache_hit_rate());
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

/// The text of one periodic statistics line; `prefix_hit_rate` (0 to 1) is left out when
/// `None`.
pub fn stats_line(
    now: &StatsSnapshot,
    prompt: f64,
    generation: f64,
    prefix_hit_rate: Option<f64>,
) -> String {
    let mut line = format!(
        "Engine 000: Avg prompt throughput: {prompt:.1} tokens/s, Avg generation throughput: {generation:.1} tokens/s, Running: {} reqs, Waiting: {} reqs, GPU KV cache usage: {:.1}%",
        now.running,
        now.waiting,
        now.kv_cache_usage * 100.0
    );
    if let Some(rate) = prefix_hit_rate {
        let _ = write!(line, ", Prefix cache hit rate: {:.1}%", rate * 100.0);
    }
    line
}
