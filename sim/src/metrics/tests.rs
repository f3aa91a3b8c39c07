//! Unit tests of [`super`]: number formatting, buckets, the exposition against the vLLM capture and
//! the log line.

use std::time::Duration;

use super::*;
use crate::config::SimConfig;
use crate::finish::FinishReason;

const CAPTURE: &str = include_str!("../../../tests/fixtures/vllm-0.32-cpu/metrics-after-load.prom");

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
            l.starts_with("vllm:") || l.starts_with("# HELP vllm:") || l.starts_with("# TYPE vllm:")
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
        prefix_cache: PrefixCacheStats {
            requests: 1,
            queries: 100,
            hits: 0,
        },
        generation_tokens: 4,
        ttft: vec![Duration::from_millis(61)],
        finished: vec![FinishedRecord {
            reason: FinishReason::Length,
            e2e: Duration::from_millis(900),
            queued: Duration::from_millis(1),
            prefill: Duration::from_millis(60),
            decode: Duration::from_millis(839),
            prompt_tokens: 100,
            cached_tokens: 0,
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
    let log = include_str!("../../../tests/fixtures/vllm-0.32-cpu/serve.log");
    let snap = StatsSnapshot {
        running: 8,
        kv_cache_usage: 0.011,
        ..StatsSnapshot::default()
    };
    let line = stats_line(&snap, 59.2, 133.3, Some(0.0));
    let real = "Engine 000: Avg prompt throughput: 59.2 tokens/s, Avg generation throughput: 133.3 tokens/s, Running: 8 reqs, Waiting: 0 reqs, CPU KV cache usage: 1.1%, Prefix cache hit rate: 0.0%";
    assert!(log.contains(real));
    // The simulator is a GPU server.
    assert_eq!(line, real.replace("CPU KV", "GPU KV"));
}

#[test]
fn prefix_cache_hits_move_vllms_cache_families() {
    let stats = EngineStats::new();
    // Two requests of 100 prompt tokens admitted; the second found 96 cached. Both produce
    // their first token and finish in this step.
    let mut prefix_cache = PrefixCacheStats::default();
    prefix_cache.record(100, 0);
    prefix_cache.record(100, 96);
    let finished = |cached_tokens| FinishedRecord {
        reason: FinishReason::Length,
        e2e: Duration::from_millis(30),
        queued: Duration::ZERO,
        prefill: Duration::from_millis(30),
        decode: Duration::ZERO,
        prompt_tokens: 100,
        cached_tokens,
        generation_tokens: 1,
        max_tokens: 1,
        preemptions: 0,
    };
    stats.record_step(&StepRecord {
        prefill_tokens: 200,
        cached_prompt_tokens: 96,
        prefix_cache,
        generation_tokens: 2,
        finished: vec![finished(0), finished(96)],
        ..StepRecord::default()
    });
    let text = stats.render(&smol_config());
    let labels = r#"engine="0",model_name="smol""#;
    for line in [
        format!("vllm:prefix_cache_queries_total{{{labels}}} 200.0"),
        format!("vllm:prefix_cache_hits_total{{{labels}}} 96.0"),
        format!("vllm:prompt_tokens_total{{{labels}}} 200.0"),
        format!("vllm:prompt_tokens_by_source_total{{{labels},source=\"local_compute\"}} 104.0"),
        format!("vllm:prompt_tokens_by_source_total{{{labels},source=\"local_cache_hit\"}} 96.0"),
        format!("vllm:prompt_tokens_cached_total{{{labels}}} 96.0"),
        format!("vllm:prompt_tokens_cached_by_source_total{{{labels},source=\"device\"}} 96.0"),
        format!("vllm:prompt_tokens_cached_by_source_total{{{labels},source=\"host\"}} 0.0"),
        // 100 + 4 computed prompt tokens.
        format!("vllm:request_prefill_kv_computed_tokens_sum{{{labels}}} 104.0"),
        // One step: 104 computed prompt tokens + 2 generated.
        r#"vllm:iteration_tokens_total_sum{engine="0",model_name="smol"} 106.0"#.to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert_eq!(stats.prefix_cache_hit_rate(), Some(0.48));
}

#[test]
fn the_hit_rate_covers_the_last_1000_requests() {
    let stats = EngineStats::new();
    assert_eq!(stats.prefix_cache_hit_rate(), None);
    let step = |requests: u64, hits_each: u64| {
        let mut prefix_cache = PrefixCacheStats::default();
        for _ in 0..requests {
            prefix_cache.record(10, hits_each);
        }
        stats.record_step(&StepRecord {
            prefix_cache,
            ..StepRecord::default()
        });
    };
    step(600, 0);
    step(400, 10);
    assert_eq!(stats.prefix_cache_hit_rate(), Some(0.4));
    // 1001 requests: the oldest step (600) leaves the window, whole.
    step(1, 10);
    assert_eq!(stats.prefix_cache_hit_rate(), Some(1.0));
    // A step of more than 1000 requests stays alone in it.
    step(2000, 5);
    assert_eq!(stats.prefix_cache_hit_rate(), Some(0.5));
    // The counters keep everything.
    let snap = stats.snapshot();
    assert_eq!(snap.prefix_cache_queries, 30_010);
    assert_eq!(snap.prefix_cache_hits, 4000 + 10 + 10_000);
}

#[test]
fn direct_requests_are_lookups_that_miss_only_with_prefix_caching() {
    let on = EngineStats::new();
    on.direct_started(50);
    assert_eq!(
        (
            on.snapshot().prefix_cache_queries,
            on.prefix_cache_hit_rate()
        ),
        (50, Some(0.0))
    );
    let off = EngineStats::new().with_prefix_caching(false);
    off.direct_started(50);
    assert_eq!(
        (
            off.snapshot().prefix_cache_queries,
            off.prefix_cache_hit_rate()
        ),
        (0, None)
    );
    assert_eq!(off.snapshot().prompt_tokens, 50);
}

#[test]
fn stats_line_shows_the_hit_rate_once_a_request_looked_up() {
    let snap = StatsSnapshot::default();
    let line = stats_line(&snap, 0.0, 0.0, Some(0.4567));
    assert!(line.ends_with(", GPU KV cache usage: 0.0%, Prefix cache hit rate: 45.7%"));
    let line = stats_line(&snap, 0.0, 0.0, None);
    assert!(line.ends_with(", GPU KV cache usage: 0.0%"), "{line}");
}
