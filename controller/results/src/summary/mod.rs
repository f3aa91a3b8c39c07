//! Per-point summaries: the numbers a sweep reports for one load level, computed from the
//! point's request records with vLLM `benchmark_serving`'s definitions.
//!
//! - `completed`: records that succeeded; `failed`: all other records (counted, never dropped).
//! - `duration_s`: first send (earliest `send_time_unix_us` of any record) → last completion
//!   (latest `send_time_unix_us + e2el_s` of any record that has an E2EL); 0 when nothing
//!   completed.
//! - `request_throughput` = completed / duration; `output_throughput` = Σ output tokens of the
//!   completed requests / duration; `total_token_throughput` = Σ (input + output tokens) of the
//!   completed requests / duration. All three are 0 when the duration is 0.
//! - Latency distributions cover completed requests only: TTFT, E2EL and per-request output
//!   speed (output tokens / E2EL) over those that have them, TPOT over those with more than
//!   one output token, ITL pooled over every completed request's inter-chunk gaps.
//!
//! Submodules: the summary types (re-exported here), [`percentiles`] (means and
//! quantiles), [`verdict`] (the validity checks) and [`slo`] (goodput and the SLO verdict).

pub mod outcome;
pub mod percentiles;
mod point;
pub mod slo;
pub mod verdict;

use fleetbench_proto::pb;
use fleetbench_proto::record::RequestRecord;

pub use crate::summary::outcome::load_failure;
pub use crate::summary::percentiles::Percentiles;
use crate::summary::percentiles::percentiles_of;
pub use crate::summary::point::{
    ClientStats, Hardware, InFlight, PointMeta, PointSummary, ServerStats, WarmupStats,
};
use crate::summary::verdict::{Checks, IN_FLIGHT_MIN_SCRAPES, verdict};

/// Compares the client's and the engine's in-flight counts at each scrape (see
/// [`InFlight`]). Sample offsets and record send offsets share one origin: the start of
/// the measured load on the agent's clock.
pub fn in_flight(records: &[RequestRecord], samples: &[pb::MetricSample]) -> Option<InFlight> {
    let waiting_at = |offset: f64| {
        samples
            .iter()
            .find(|s| s.name == "vllm:num_requests_waiting" && s.offset_s == offset)
            .map_or(0.0, |s| s.value)
    };
    let (mut scrapes, mut client_peak, mut server_peak) = (0usize, 0.0_f64, 0.0_f64);
    for s in samples
        .iter()
        .filter(|s| s.name == "vllm:num_requests_running")
    {
        let t = s.offset_s;
        let client = records
            .iter()
            .filter(|r| {
                r.e2el_s
                    .is_some_and(|e2el| r.send_offset_s <= t && t < r.send_offset_s + e2el)
            })
            .count();
        if client == 0 {
            continue;
        }
        scrapes += 1;
        client_peak = client_peak.max(client as f64);
        server_peak = server_peak.max(s.value + waiting_at(t));
    }
    (scrapes >= IN_FLIGHT_MIN_SCRAPES).then_some(InFlight {
        scrapes,
        client_peak,
        server_peak,
    })
}

/// Computes [`ServerStats`] from the samples an agent scraped during a point.
pub fn server_stats(samples: &[pb::MetricSample]) -> ServerStats {
    let values = |name: &'static str| {
        samples
            .iter()
            .filter(move |s| s.name == name)
            .map(|s| s.value)
    };
    let max = |name: &'static str| values(name).reduce(f64::max);
    let increase = |name: &'static str| {
        let first = values(name).next()?;
        let last = values(name).next_back()?;
        Some((last - first).max(0.0))
    };
    ServerStats {
        running_max: max("vllm:num_requests_running"),
        waiting_max: max("vllm:num_requests_waiting"),
        kv_cache_usage_max: max("vllm:kv_cache_usage_perc")
            .or_else(|| max("vllm:gpu_cache_usage_perc")),
        preemptions: increase("vllm:num_preemptions_total"),
        prefix_cache_queries: increase("vllm:prefix_cache_queries_total"),
        prefix_cache_hits: increase("vllm:prefix_cache_hits_total"),
    }
}

/// Summarizes one point attempt from all of its measured records (warm-up excluded upstream).
///
/// Input tokens of a request are `usage.prompt_tokens` when the server reported it, else the
/// exact prompt length the load generator built (`target_input_tokens`); output tokens are
/// `output_tokens` (0 when unknown).
/// `engine_metrics` are the engine's `/metrics` samples scraped during the load.
pub fn summarize(
    meta: PointMeta,
    records: &[RequestRecord],
    engine_metrics: &[pb::MetricSample],
) -> PointSummary {
    let completed_records = || records.iter().filter(|r| r.success());
    let completed = saturating_u32(completed_records().count());
    let failed = saturating_u32(records.len()).saturating_sub(completed);
    let input_len_mismatches = saturating_u32(
        completed_records()
            .filter(|r| r.input_tokens != Some(r.target_input_tokens))
            .count(),
    );
    let output_len_mismatches = saturating_u32(
        completed_records()
            .filter(|r| r.output_tokens != Some(r.target_output_tokens))
            .count(),
    );
    let send_lag_s = percentiles_of(records.iter().map(RequestRecord::send_lag_s).collect());
    let achieved_rate = achieved_rate(records);
    let achieved_concurrency = mean_in_flight(records);
    let in_flight = in_flight(records, engine_metrics);
    let verdict = verdict(&Checks {
        measured: records.len(),
        failed,
        meta: &meta,
        input_mismatches: input_len_mismatches,
        output_mismatches: output_len_mismatches,
        send_lag_p99: send_lag_s.p99,
        achieved_concurrency,
        in_flight,
    });

    let duration_s = if completed == 0 {
        0.0
    } else {
        duration_s(records)
    };
    let output_tokens: u64 = completed_records()
        .map(|r| u64::from(r.output_tokens.unwrap_or(0)))
        .sum();
    let input_tokens: u64 = completed_records()
        .map(|r| u64::from(r.input_tokens.unwrap_or(r.target_input_tokens)))
        .sum();
    let per_second = |count: f64| {
        if duration_s > 0.0 {
            count / duration_s
        } else {
            0.0
        }
    };

    let collect = |f: fn(&RequestRecord) -> Option<f64>| -> Vec<f64> {
        completed_records().filter_map(f).collect()
    };
    let mut itl = Vec::with_capacity(completed_records().map(|r| r.itl_s.len()).sum());
    for r in completed_records() {
        itl.extend_from_slice(&r.itl_s);
    }

    let slo = meta
        .slo
        .as_ref()
        .map(|slo| slo::evaluate(slo, records, duration_s));
    PointSummary {
        meta,
        goodput: slo.as_ref().map(|o| o.goodput),
        slo_attainment: slo.as_ref().map(|o| o.attainment),
        slo_verdict: slo.map(|o| o.verdict).unwrap_or_default(),
        completed,
        failed,
        duration_s,
        request_throughput: per_second(f64::from(completed)),
        output_throughput: per_second(output_tokens as f64),
        total_token_throughput: per_second((input_tokens + output_tokens) as f64),
        output_speed: percentiles_of(collect(RequestRecord::output_speed)),
        ttft_s: percentiles_of(collect(|r| r.ttft_s)),
        tpot_s: percentiles_of(collect(|r| r.tpot_s)),
        itl_s: percentiles_of(itl),
        e2el_s: percentiles_of(collect(|r| r.e2el_s)),
        server: server_stats(engine_metrics),
        input_len_mismatches,
        output_len_mismatches,
        achieved_rate,
        achieved_concurrency,
        send_lag_s,
        in_flight,
        verdict,
    }
}

/// (sent − 1) / (last send − first send), from the records' send offsets.
fn achieved_rate(records: &[RequestRecord]) -> f64 {
    match send_span(records) {
        Some((a, b)) if b > a && records.len() > 1 => (records.len() - 1) as f64 / (b - a),
        _ => 0.0,
    }
}

/// The first and the last send offset of the records (`None` without records).
fn send_span(records: &[RequestRecord]) -> Option<(f64, f64)> {
    let first = records.iter().map(|r| r.send_offset_s).reduce(f64::min)?;
    let last = records.iter().map(|r| r.send_offset_s).reduce(f64::max)?;
    Some((first, last))
}

/// Time-averaged requests in flight between the first and the last send: each request
/// counts from its send to its last content chunk (requests without an E2EL count as
/// not in flight, which only lowers the figure). A burst (no send span) reports the
/// requests that left together.
fn mean_in_flight(records: &[RequestRecord]) -> f64 {
    let Some((start, end)) = send_span(records) else {
        return 0.0;
    };
    if end - start <= 0.0 {
        return records.len() as f64;
    }
    let busy: f64 = records
        .iter()
        .filter_map(|r| {
            let e2el = r.e2el_s?;
            let (from, to) = (r.send_offset_s, r.send_offset_s + e2el);
            Some((to.min(end) - from.max(start)).max(0.0))
        })
        .sum();
    busy / (end - start)
}

/// First send → last completion, in seconds (0 when no record has an E2EL).
///
/// Computed relative to the first send so that microsecond timestamps (~1.7e15) do not eat
/// the precision of the second-scale latencies.
fn duration_s(records: &[RequestRecord]) -> f64 {
    let Some(first_send) = records.iter().map(|r| r.send_time_unix_us).min() else {
        return 0.0;
    };
    records
        .iter()
        .filter_map(|r| {
            let e2el = r.e2el_s?;
            let offset_us = r.send_time_unix_us.saturating_sub(first_send);
            Some(offset_us as f64 / 1e6 + e2el)
        })
        .fold(0.0, f64::max)
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_proto::record::{ErrorKind, tpot};

    const T0: i64 = 1_700_000_000_000_000;

    fn meta() -> PointMeta {
        PointMeta {
            sweep_id: "sw-1".into(),
            point_id: "p-0003".into(),
            point_index: 3,
            attempt: 1,
            model: "meta-llama/Llama-3.2-1B".into(),
            gpus: 2,
            host: "gpu-host-1".into(),
            agent: "agent-a".into(),
            batch_size: 4,
            input_tokens: 100,
            output_tokens: 21,
            state: "done".into(),
            error: String::new(),
            endpoint: "chat".into(),
            started_unix_us: T0 - 1_000_000,
            finished_unix_us: T0 + 3_000_000,
            mode: "burst".into(),
            request_rate: 0.0,
            client: ClientStats::default(),
            fallbacks: Vec::new(),
            warmup: Default::default(),
            gpu_model: String::new(),
            gpu_driver: String::new(),
            hardware: Default::default(),
            slo: None,
            workload: String::new(),
            data_sha256: String::new(),
            data_skipped: 0,
            stage_durations_s: Vec::new(),
            stage_loads: Vec::new(),
        }
    }

    fn ok(send_offset_us: i64, ttft: f64, e2el: f64, output: u32, itl: &[f64]) -> RequestRecord {
        RequestRecord {
            send_time_unix_us: T0 + send_offset_us,
            ttft_s: Some(ttft),
            e2el_s: Some(e2el),
            tpot_s: tpot(ttft, e2el, output),
            itl_s: itl.to_vec(),
            input_tokens: Some(100),
            output_tokens: Some(output),
            target_input_tokens: 100,
            target_output_tokens: output,
            content_chunks: output,
            endpoint: "chat".into(),
            usage_reported: true,
            ..RequestRecord::default()
        }
    }

    fn failed(send_offset_us: i64) -> RequestRecord {
        RequestRecord {
            send_time_unix_us: T0 + send_offset_us,
            // A failed request may have partial timings; they must not reach the stats.
            ttft_s: Some(0.05),
            e2el_s: None,
            itl_s: vec![0.05],
            output_tokens: Some(3),
            input_tokens: Some(100),
            target_input_tokens: 100,
            error_kind: Some(ErrorKind::Truncated),
            error: "stream ended early".into(),
            endpoint: "chat".into(),
            ..RequestRecord::default()
        }
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-12 * expected.abs().max(1.0),
            "{actual} != {expected}"
        );
    }

    #[test]
    fn summary_counts_failures_but_keeps_them_out_of_latency_stats() {
        let records = [
            // 11 tokens in 1.1 s: TPOT (1.1 − 0.1) / 10 = 0.1
            ok(0, 0.1, 1.1, 11, &[0.1, 0.3]),
            // sent at +0.5 s, done at +2.7 s (the last completion)
            ok(500_000, 0.2, 2.2, 21, &[0.2]),
            // one output token: no TPOT
            ok(1_000_000, 0.4, 0.4, 1, &[]),
            // sent first, at −0.5 s: starts the duration although it failed
            failed(-500_000),
        ];
        let s = summarize(meta(), &records, &[]);
        assert_eq!(s.meta, meta());
        assert_eq!((s.completed, s.failed), (3, 1));
        // −0.5 s → +2.7 s
        assert_close(s.duration_s, 3.2);
        assert_close(s.request_throughput, 3.0 / 3.2);
        // 11 + 21 + 1 = 33 output tokens; 3 × 100 input tokens
        assert_close(s.output_throughput, 33.0 / 3.2);
        assert_close(s.total_token_throughput, 333.0 / 3.2);

        // TTFT [0.1, 0.2, 0.4]; numpy: percentile(.., [50, 90, 99]) == [0.2,
        // 0.36000000000000004, 0.396], mean 0.23333333333333336. The failed 0.05 is excluded.
        assert_eq!(
            s.ttft_s,
            Percentiles {
                mean: Some(0.23333333333333336),
                p50: Some(0.2),
                p90: Some(0.36000000000000004),
                p99: Some(0.396)
            }
        );
        // E2EL sorted [0.4, 1.1, 2.2]
        assert_close(s.e2el_s.mean.unwrap(), 3.7 / 3.0);
        assert_eq!(s.e2el_s.p50, Some(1.1));
        // p90: h = 1.8 → 2.2 − 1.1 × 0.2 = 1.98
        assert_close(s.e2el_s.p90.unwrap(), 1.98);
        // TPOT only from the two multi-token requests, both 0.1
        assert_close(s.tpot_s.mean.unwrap(), 0.1);
        assert_close(s.tpot_s.p99.unwrap(), 0.1);
        // ITL pooled [0.1, 0.3, 0.2] (the failed request's 0.05 excluded)
        assert_close(s.itl_s.mean.unwrap(), 0.2);
        assert_eq!(s.itl_s.p50, Some(0.2));
        // output speed: 11/1.1 = 10, 21/2.2 = 9.5454…, 1/0.4 = 2.5
        assert_close(s.output_speed.p50.unwrap(), 21.0 / 2.2);
        assert_close(
            s.output_speed.mean.unwrap(),
            (10.0 + 21.0 / 2.2 + 2.5) / 3.0,
        );
    }

    #[test]
    fn all_failed_point_has_zero_throughput_and_no_latencies() {
        let s = summarize(meta(), &[failed(0), failed(1_000)], &[]);
        assert_eq!((s.completed, s.failed), (0, 2));
        assert_eq!(s.duration_s, 0.0);
        assert_eq!(s.request_throughput, 0.0);
        assert_eq!(s.output_throughput, 0.0);
        assert_eq!(s.total_token_throughput, 0.0);
        for p in [s.output_speed, s.ttft_s, s.tpot_s, s.itl_s, s.e2el_s] {
            assert_eq!(p, Percentiles::default());
        }
    }

    #[test]
    fn empty_point_summarizes_to_zeros() {
        let s = summarize(meta(), &[], &[]);
        assert_eq!((s.completed, s.failed, s.duration_s), (0, 0, 0.0));
        assert_eq!(s.ttft_s, Percentiles::default());
    }

    #[test]
    fn missing_prompt_usage_falls_back_to_the_exact_target() {
        let mut r = ok(0, 0.5, 1.0, 10, &[]);
        r.input_tokens = None;
        r.target_input_tokens = 90;
        let s = summarize(meta(), &[r], &[]);
        assert_close(s.total_token_throughput, 100.0);
    }

    #[test]
    fn wire_summary_carries_meta_and_output_speed_mean() {
        let s = summarize(meta(), &[ok(0, 0.1, 1.1, 11, &[0.1])], &[]);
        let wire = pb::PointSummary::from(&s);
        assert_eq!(wire.state, "done");
        assert_eq!(wire.endpoint, "chat");
        assert_eq!(wire.host, "gpu-host-1");
        assert_eq!(wire.agent, "agent-a");
        assert_eq!(wire.model, "meta-llama/Llama-3.2-1B");
        assert_eq!((wire.gpus, wire.completed, wire.failed), (2, 1, 0));
        assert_eq!(wire.per_request_output_speed_mean, s.output_speed.mean);
        assert_eq!(wire.ttft_s.and_then(|p| p.p50), Some(0.1));
        let empty = pb::PointSummary::from(&summarize(meta(), &[], &[]));
        assert_eq!(empty.tpot_s.and_then(|p| p.mean), None);
    }

    #[test]
    fn server_stats_take_peaks_and_counter_increase() {
        let sample = |offset_s: f64, name: &str, value: f64| pb::MetricSample {
            offset_s,
            unix_ms: 0,
            name: name.into(),
            value,
        };
        let samples = vec![
            sample(0.0, "vllm:num_requests_running", 0.0),
            sample(0.0, "vllm:num_preemptions_total", 5.0),
            sample(0.5, "vllm:num_requests_running", 8.0),
            sample(0.5, "vllm:num_requests_waiting", 2.0),
            sample(0.5, "vllm:kv_cache_usage_perc", 0.25),
            sample(1.0, "vllm:num_requests_running", 3.0),
            sample(1.0, "vllm:num_preemptions_total", 7.0),
        ];
        let s = server_stats(&samples);
        assert_eq!(s.running_max, Some(8.0));
        assert_eq!(s.waiting_max, Some(2.0));
        assert_eq!(s.kv_cache_usage_max, Some(0.25));
        assert_eq!(s.preemptions, Some(2.0));
        assert_eq!(server_stats(&[]), ServerStats::default());
    }

    #[test]
    fn verdict_names_failures_and_wrong_lengths() {
        let good = [ok(0, 0.1, 1.1, 21, &[0.1]), ok(0, 0.1, 1.1, 21, &[0.1])];
        let s = summarize(meta(), &good, &[]);
        assert_eq!((s.input_len_mismatches, s.output_len_mismatches), (0, 0));
        assert_eq!(s.verdict, "valid");

        // One request stopped early (the server generated 8 of 21 tokens), one counted a
        // different prompt length, one failed.
        let mut short = ok(0, 0.1, 1.1, 8, &[0.1]);
        short.target_output_tokens = 21;
        let mut long_prompt = ok(0, 0.1, 1.1, 21, &[0.1]);
        long_prompt.input_tokens = Some(101);
        let s = summarize(meta(), &[short, long_prompt, failed(0)], &[]);
        assert_eq!((s.input_len_mismatches, s.output_len_mismatches), (1, 1));
        assert_eq!(
            s.verdict,
            "1 of 3 requests failed; 1 request(s) not at 100 input tokens as the server counted; \
             1 request(s) not at 21 output tokens"
        );
        assert_eq!(summarize(meta(), &[], &[]).verdict, "no requests measured");
    }

    /// A request sent at `send` s (scheduled at `scheduled`) that took `e2el` s.
    fn timed(scheduled: f64, send: f64, e2el: f64) -> RequestRecord {
        RequestRecord {
            scheduled_offset_s: scheduled,
            send_offset_s: send,
            ..ok((send * 1e6) as i64, e2el / 2.0, e2el, 21, &[e2el / 2.0])
        }
    }

    #[test]
    fn achieved_rate_and_send_lag_come_from_send_offsets() {
        // 11 requests scheduled 0.1 s apart, each sent 1 ms late, the last 30 ms late.
        let mut records: Vec<_> = (0..11)
            .map(|i| timed(f64::from(i) * 0.1, f64::from(i) * 0.1 + 0.001, 0.05))
            .collect();
        records[10].send_offset_s = 1.03;
        let s = summarize(
            PointMeta {
                mode: "rate".into(),
                request_rate: 10.0,
                ..meta()
            },
            &records,
            &[],
        );
        assert_close(s.achieved_rate, 10.0 / (1.03 - 0.001));
        assert_close(s.send_lag_s.p50.unwrap(), 0.001);
        // numpy: np.percentile([0.001]*10 + [0.030], 99) == 0.0271
        assert_close(s.send_lag_s.p99.unwrap(), 0.0271);
        assert!(
            s.verdict.contains("send lag p99 27.1 ms > 10 ms"),
            "{}",
            s.verdict
        );
    }

    #[test]
    fn concurrency_not_held_is_named() {
        // Two slots, but requests ran one after the other: ~1 in flight on average.
        let serial: Vec<_> = (0..10)
            .map(|i| timed(f64::from(i), f64::from(i), 1.0))
            .collect();
        let conc = PointMeta {
            mode: "concurrency".into(),
            batch_size: 2,
            ..meta()
        };
        let s = summarize(conc.clone(), &serial, &[]);
        assert_close(s.achieved_concurrency, 1.0);
        assert!(
            s.verdict
                .contains("concurrency 2 not held: 1.0 in flight on average"),
            "{}",
            s.verdict
        );
        // Two in flight all along: held.
        let paired: Vec<_> = (0..10)
            .map(|i| timed(f64::from(i / 2), f64::from(i / 2), 1.0))
            .collect();
        let s = summarize(conc, &paired, &[]);
        assert_close(s.achieved_concurrency, 2.0);
        assert_eq!(s.verdict, "valid");
    }

    #[test]
    fn saturated_client_and_fallbacks_invalidate_the_point() {
        let records = [timed(0.0, 0.0, 1.0), timed(0.0, 0.0, 1.0)];
        let busy = PointMeta {
            client: ClientStats {
                cpu_s: 1.9,
                wall_s: 1.0,
                cores: 2,
            },
            fallbacks: vec!["ignore_eos, min_tokens refused: output length not forced".into()],
            warmup: Default::default(),
            gpu_model: String::new(),
            gpu_driver: String::new(),
            hardware: Default::default(),
            slo: None,
            workload: String::new(),
            data_sha256: String::new(),
            data_skipped: 0,
            stage_durations_s: Vec::new(),
            stage_loads: Vec::new(),
            ..meta()
        };
        let s = summarize(busy, &records, &[]);
        assert_eq!(
            s.verdict,
            "client CPU-saturated (1.90 of 2 cores busy): the point measured the load generator; \
             engine fallback: ignore_eos, min_tokens refused: output length not forced"
        );
        let calm = PointMeta {
            client: ClientStats {
                cpu_s: 0.2,
                wall_s: 1.0,
                cores: 2,
            },
            ..meta()
        };
        assert_eq!(summarize(calm, &records, &[]).verdict, "valid");
    }

    /// Engine samples every 0.5 s from 0.25 s on: `running` and `waiting` at each.
    fn scrapes(running: f64, waiting: f64, n: u32) -> Vec<pb::MetricSample> {
        (0..n)
            .flat_map(|i| {
                let offset_s = 0.25 + f64::from(i) * 0.5;
                [
                    ("vllm:num_requests_running", running),
                    ("vllm:num_requests_waiting", waiting),
                ]
                .map(|(name, value)| pb::MetricSample {
                    offset_s,
                    unix_ms: 0,
                    name: name.into(),
                    value,
                })
            })
            .collect()
    }

    #[test]
    fn engine_in_flight_is_compared_with_the_client() {
        // 8 requests in flight from 0 to 3 s: the client has 8 out at every scrape.
        let records: Vec<_> = (0..8).map(|_| timed(0.0, 0.0, 3.0)).collect();
        let agree = summarize(meta(), &records, &scrapes(6.0, 2.0, 6));
        assert_eq!(
            agree.in_flight,
            Some(InFlight {
                scrapes: 6,
                client_peak: 8.0,
                server_peak: 8.0
            })
        );
        assert_eq!(agree.verdict, "valid");
        assert_eq!(agree.server.running_max, Some(6.0));

        let starved = summarize(meta(), &records, &scrapes(4.0, 0.0, 6));
        assert!(
            starved
                .verdict
                .contains("engine saw at most 4 requests in flight, the client had 8"),
            "{}",
            starved.verdict
        );
        let shared = summarize(meta(), &records, &scrapes(12.0, 3.0, 6));
        assert!(
            shared.verdict.contains("not of this point"),
            "{}",
            shared.verdict
        );
        // A point with failed requests (an engine crash) is judged by its failures only:
        // the client cannot place a failed request's end, so in flight says nothing.
        let mut crashed = records.clone();
        crashed.push(failed(0));
        let crashed = summarize(meta(), &crashed, &scrapes(12.0, 3.0, 6));
        assert_eq!(
            crashed.verdict, "1 of 9 requests failed",
            "{}",
            crashed.verdict
        );
        // Within 10 % + 1 request: scrape timing, not a finding.
        let close = summarize(meta(), &records, &scrapes(7.0, 0.0, 6));
        assert_eq!(close.verdict, "valid");
        // An engine whose gauges lag (stale until a long step ends) still peaks at 8.
        let mut stale = scrapes(0.0, 0.0, 6);
        stale.extend(scrapes(8.0, 0.0, 1).into_iter().map(|mut s| {
            s.offset_s = 2.9;
            s
        }));
        assert_eq!(summarize(meta(), &records, &stale).verdict, "valid");
        // Scrapes after the load (client idle) do not count; too few scrapes say nothing.
        let late = summarize(meta(), &records, &scrapes(0.0, 0.0, 12));
        assert_eq!(late.in_flight.map(|f| f.scrapes), Some(6));
        assert_eq!(
            summarize(meta(), &records, &scrapes(1.0, 0.0, 2)).in_flight,
            None
        );
    }
}
