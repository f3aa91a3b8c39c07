//! Engine telemetry: the engine's Prometheus `/metrics`, scraped while a point runs, so a
//! reader can see what the server saw (running and waiting requests, KV-cache use,
//! preemptions, token counters) next to what the client measured.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// vLLM metrics kept from each scrape. Series of one name (e.g. one per engine) are
/// summed. `vllm:gpu_cache_usage_perc` is the pre-V1 name of `vllm:kv_cache_usage_perc`.
pub const KEPT_METRICS: &[&str] = &[
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
];

/// Other engines' names for the kept quantities, stored under vLLM's name so the summaries
/// and the verdict's in-flight check read every engine kind the same way: llama.cpp
/// (`llama-server --metrics`), SGLang (`--enable-metrics`) and TGI. `transformers serve`
/// has no `/metrics`.
pub const METRIC_ALIASES: &[(&str, &str)] = &[
    ("llamacpp:requests_processing", "vllm:num_requests_running"),
    ("llamacpp:requests_deferred", "vllm:num_requests_waiting"),
    ("llamacpp:kv_cache_usage_ratio", "vllm:kv_cache_usage_perc"),
    ("llamacpp:prompt_tokens_total", "vllm:prompt_tokens_total"),
    (
        "llamacpp:tokens_predicted_total",
        "vllm:generation_tokens_total",
    ),
    ("sglang:num_running_reqs", "vllm:num_requests_running"),
    ("sglang:num_queue_reqs", "vllm:num_requests_waiting"),
    ("sglang:token_usage", "vllm:kv_cache_usage_perc"),
    ("sglang:prompt_tokens_total", "vllm:prompt_tokens_total"),
    (
        "sglang:generation_tokens_total",
        "vllm:generation_tokens_total",
    ),
    ("tgi_batch_current_size", "vllm:num_requests_running"),
    ("tgi_queue_size", "vllm:num_requests_waiting"),
];

/// The name a scraped metric is kept under, if it is kept.
fn kept_name(name: &str) -> Option<&'static str> {
    KEPT_METRICS
        .iter()
        .find(|k| **k == name)
        .or_else(|| {
            METRIC_ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .map(|(_, kept)| kept)
        })
        .copied()
}

/// One value of one metric at one moment of a point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// Seconds since the scraper started (the start of the measured load).
    pub offset_s: f64,
    pub unix_ms: i64,
    pub name: String,
    pub value: f64,
}

/// Parses Prometheus text exposition, returning (metric name, value) for the kept names,
/// with series of the same name summed. Malformed lines are skipped.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let Some(name) = kept_name(&line[..name_end]) else {
            continue;
        };
        // The value follows the labels (which may contain spaces inside quotes).
        let rest = match line[name_end..].strip_prefix('{') {
            Some(labels) => match labels.rfind('}') {
                Some(close) => &labels[close + 1..],
                None => continue,
            },
            None => &line[name_end..],
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v += value,
            None => out.push((name.to_string(), value)),
        }
    }
    out
}

/// What one scrape of `/metrics` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Scrape {
    Values(Vec<(String, f64)>),
    /// 404: the engine has no `/metrics` (`transformers serve`, llama.cpp without
    /// `--metrics`).
    NoEndpoint,
    /// Unreachable, another error status, or an unreadable body.
    Failed,
}

/// Fetches and parses `/metrics` once.
pub async fn scrape(client: &reqwest::Client, base_url: &str) -> Scrape {
    let url = format!("{base_url}/metrics");
    let resp =
        crate::load::retry::send_idempotent(|| client.get(&url).timeout(Duration::from_secs(5)))
            .await;
    let Ok(resp) = resp else {
        return Scrape::Failed;
    };
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Scrape::NoEndpoint;
    }
    if !resp.status().is_success() {
        return Scrape::Failed;
    }
    match resp.text().await {
        Ok(text) => Scrape::Values(parse_metrics(&text)),
        Err(_) => Scrape::Failed,
    }
}

/// Scrapes once before returning (so counters have their value from before the load that
/// follows: a point's counter increases, such as prefix-cache hits, count all of it),
/// then every `interval` until `stop`, and once at the end. An engine without `/metrics`
/// (404) yields no samples and is not asked again: on a Python engine every request,
/// even a 404, takes time from the generation loop.
pub async fn spawn_scraper(
    client: reqwest::Client,
    base_url: String,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<Vec<MetricSample>> {
    let mut samples = Vec::new();
    // The first scrape counts as taken at the load's start (offset 0), which follows it.
    let first = scrape_into(&client, &base_url, None, &mut samples).await;
    let started = Instant::now();
    tokio::spawn(async move {
        if !first {
            return samples;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once: that sample was taken above.
        tick.tick().await;
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                () = stop.cancelled() => true,
            };
            if !scrape_into(&client, &base_url, Some(started), &mut samples).await || last {
                break;
            }
        }
        samples
    })
}

/// One scrape's values appended to `samples` at the offset since `started` (`None`: 0);
/// false when the engine has no `/metrics`.
async fn scrape_into(
    client: &reqwest::Client,
    base_url: &str,
    started: Option<Instant>,
    samples: &mut Vec<MetricSample>,
) -> bool {
    let at = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let unix_ms = fleetbench_proto::unix_millis_now();
    match scrape(client, base_url).await {
        Scrape::Values(values) => {
            samples.extend(values.into_iter().map(|(name, value)| MetricSample {
                offset_s: at,
                unix_ms,
                name,
                value,
            }));
            true
        }
        Scrape::NoEndpoint => {
            debug!("engine has no /metrics: not scraped again");
            false
        }
        Scrape::Failed => {
            debug!("engine /metrics not available");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/vllm-0.32-cpu/metrics.prom"
    ));

    #[test]
    fn parses_the_real_vllm_exposition() {
        let m = parse_metrics(REAL);
        let get = |n: &str| m.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("vllm:num_requests_running"), Some(0.0));
        assert_eq!(get("vllm:num_requests_waiting"), Some(0.0));
        assert_eq!(get("vllm:kv_cache_usage_perc"), Some(0.0));
        assert!(get("vllm:generation_tokens_total").unwrap() > 0.0);
        // `_created` gauges and histograms are not kept.
        assert!(m.iter().all(|(k, _)| KEPT_METRICS.contains(&k.as_str())));
    }

    #[test]
    fn other_engines_metrics_are_kept_under_vllm_names() {
        // llama-server --metrics and SGLang's exposition, as they print them.
        let text = "# HELP llamacpp:requests_processing Number of requests processing.\n\
                    # TYPE llamacpp:requests_processing gauge\n\
                    llamacpp:requests_processing 4\n\
                    llamacpp:requests_deferred 2\n\
                    llamacpp:tokens_predicted_total 1234\n\
                    sglang:num_running_reqs{model_name=\"m\"} 3\n\
                    llamacpp:n_busy_slots_per_decode 1\n";
        let m = parse_metrics(text);
        let get = |n: &str| m.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("vllm:num_requests_running"), Some(7.0), "{m:?}");
        assert_eq!(get("vllm:num_requests_waiting"), Some(2.0));
        assert_eq!(get("vllm:generation_tokens_total"), Some(1234.0));
        assert_eq!(m.len(), 3, "unmapped names are dropped: {m:?}");
    }

    #[test]
    fn sums_series_and_survives_odd_lines() {
        let text = "vllm:num_requests_running{engine=\"0\",model_name=\"a b\"} 3\n\
                    vllm:num_requests_running{engine=\"1\",model_name=\"a b\"} 4.0\n\
                    vllm:num_requests_waiting 2 1700000000\n\
                    vllm:num_requests_waiting{broken 9\n\
                    vllm:kv_cache_usage_perc{engine=\"0\"} NaN-ish\n";
        let m = parse_metrics(text);
        assert_eq!(
            m,
            vec![
                ("vllm:num_requests_running".to_string(), 7.0),
                ("vllm:num_requests_waiting".to_string(), 2.0)
            ]
        );
    }
}
