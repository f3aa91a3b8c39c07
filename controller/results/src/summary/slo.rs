//! A point judged against the sweep's `[slo]` (the rules are in
//! `fleetbench_proto::spec::Slo`'s module): goodput, the share of requests that met every
//! objective, and the point's SLO verdict.

use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::spec::{Objective, Slo};

/// The verdict of a point that met its SLO.
pub const SLO_MET: &str = "met";

/// What a point's requests came to against an SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct SloOutcome {
    /// Good requests (succeeded and met every objective) per second of the point's
    /// duration, as vLLM's `--goodput` (0 when the duration is 0).
    pub goodput: f64,
    /// Good requests / measured requests (0 without requests).
    pub attainment: f64,
    /// [`SLO_MET`], or `missed: ` and each objective missed, e.g.
    /// `missed: ttft 97.0 % within 2000 ms (needs 99 %)`.
    pub verdict: String,
}

/// The latency an objective is about, of one successful request (`None` where the request
/// has none: TPOT with one output token, which meets a TPOT objective as in vLLM).
fn latency(name: &str, r: &RequestRecord) -> Option<f64> {
    match name {
        "ttft" => r.ttft_s,
        "tpot" => r.tpot_s,
        _ => r.e2el_s,
    }
}

/// Whether a request meets one objective: it succeeded and its latency is within the
/// threshold. A successful request without a TTFT or E2EL does not; without a TPOT (one
/// output token) it does.
fn meets(name: &str, o: &Objective, r: &RequestRecord) -> bool {
    if !r.success() {
        return false;
    }
    match latency(name, r) {
        Some(v) => v <= o.threshold_s,
        None => name == "tpot",
    }
}

/// Judges a point's measured records against `slo`; `duration_s` is the point's duration
/// (first send → last completion).
pub fn evaluate(slo: &Slo, records: &[RequestRecord], duration_s: f64) -> SloOutcome {
    let n = records.len();
    let good = records
        .iter()
        .filter(|r| slo.objectives().all(|(name, o)| meets(name, &o, r)))
        .count();
    let mut missed = Vec::new();
    for (name, o) in slo.objectives() {
        let within = records.iter().filter(|r| meets(name, &o, r)).count();
        // At least `percentile` % of the requests, compared in whole requests so that
        // 99 of 100 meets p99 exactly.
        let needed = (o.percentile / 100.0 * n as f64 - 1e-9).ceil();
        if n == 0 || (within as f64) < needed {
            let share = if n == 0 {
                0.0
            } else {
                within as f64 / n as f64 * 100.0
            };
            missed.push(format!(
                "{name} {share:.1} % within {} ms (needs {} %)",
                trim(o.threshold_s * 1e3),
                trim(o.percentile)
            ));
        }
    }
    SloOutcome {
        goodput: if duration_s > 0.0 {
            good as f64 / duration_s
        } else {
            0.0
        },
        attainment: if n == 0 { 0.0 } else { good as f64 / n as f64 },
        verdict: if missed.is_empty() {
            SLO_MET.to_string()
        } else if n == 0 {
            "missed: no requests measured".to_string()
        } else {
            format!("missed: {}", missed.join("; "))
        },
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_proto::record::{ErrorKind, tpot};

    fn ok(ttft: f64, e2el: f64, output: u32) -> RequestRecord {
        RequestRecord {
            ttft_s: Some(ttft),
            e2el_s: Some(e2el),
            tpot_s: tpot(ttft, e2el, output),
            output_tokens: Some(output),
            ..RequestRecord::default()
        }
    }

    fn failed() -> RequestRecord {
        RequestRecord {
            ttft_s: Some(0.01),
            error_kind: Some(ErrorKind::Truncated),
            ..RequestRecord::default()
        }
    }

    fn slo(ttft_ms: f64, pct: f64) -> Slo {
        Slo {
            ttft: Some(Objective {
                threshold_s: ttft_ms / 1e3,
                percentile: pct,
            }),
            ..Slo::default()
        }
    }

    #[test]
    fn ninety_nine_of_a_hundred_meet_p99_and_ninety_eight_do_not() {
        let mut records: Vec<_> = (0..99).map(|_| ok(0.5, 2.0, 10)).collect();
        records.push(ok(3.0, 4.0, 10));
        let met = evaluate(&slo(2000.0, 99.0), &records, 10.0);
        assert_eq!(met.verdict, SLO_MET);
        assert_eq!(met.goodput, 9.9);
        assert_eq!(met.attainment, 0.99);
        records[0] = ok(2.5, 3.0, 10);
        let missed = evaluate(&slo(2000.0, 99.0), &records, 10.0);
        assert_eq!(
            missed.verdict,
            "missed: ttft 98.0 % within 2000 ms (needs 99 %)"
        );
        assert_eq!(missed.goodput, 9.8);
    }

    #[test]
    fn a_failed_request_meets_no_objective_even_with_a_fast_first_token() {
        let records = vec![ok(0.1, 1.0, 10), failed()];
        let out = evaluate(&slo(200.0, 50.0), &records, 2.0);
        assert_eq!(out.verdict, SLO_MET);
        assert_eq!(out.goodput, 0.5);
        let out = evaluate(&slo(200.0, 51.0), &records, 2.0);
        assert!(
            out.verdict.starts_with("missed: ttft 50.0 %"),
            "{}",
            out.verdict
        );
    }

    #[test]
    fn goodput_needs_every_objective_and_one_token_outputs_meet_tpot() {
        let s = Slo {
            tpot: Some(Objective {
                threshold_s: 0.05,
                percentile: 90.0,
            }),
            e2el: Some(Objective {
                threshold_s: 1.0,
                percentile: 90.0,
            }),
            ..slo(500.0, 90.0)
        };
        let records = vec![
            ok(0.1, 0.5, 11), // TPOT 0.04: good
            ok(0.1, 1.1, 11), // TPOT 0.1, E2EL 1.1: neither
            ok(0.6, 0.6, 1),  // one token: no TPOT, but TTFT 0.6 > 0.5
            ok(0.2, 0.2, 1),  // one token, fast: good
        ];
        let out = evaluate(&s, &records, 4.0);
        assert_eq!(out.goodput, 0.5);
        assert_eq!(out.attainment, 0.5);
        assert_eq!(
            out.verdict,
            "missed: ttft 75.0 % within 500 ms (needs 90 %); tpot 75.0 % within 50 ms (needs \
             90 %); e2el 75.0 % within 1000 ms (needs 90 %)"
        );
    }

    #[test]
    fn a_point_without_requests_misses() {
        let out = evaluate(&slo(1000.0, 99.0), &[], 0.0);
        assert_eq!(out.verdict, "missed: no requests measured");
        assert_eq!((out.goodput, out.attainment), (0.0, 0.0));
    }
}
