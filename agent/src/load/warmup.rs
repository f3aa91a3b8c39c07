//! A warm-up that is measured, not assumed: waves of the point's own batch size and
//! prompt/output lengths until two consecutive waves' output throughput agree within a
//! tolerance, or a cap. An engine compiles kernels, captures graphs and grows its caches
//! per new shape: on a GPU the first waves at a new batch size ran 22–31 % slower than the
//! ones after, and one warm-up request did not cover that.
//!
//! A wave's output throughput is its successful requests' output tokens over the wave's
//! span (first send to last end), the point's own throughput definition applied to one
//! wave. Waves whose requests all failed count as 0 tok/s and never agree.

/// What a converging warm-up did.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupOutcome {
    /// Each wave's output throughput in tokens per second, in order.
    pub wave_output_tps: Vec<f64>,
    /// The last two waves agreed within the tolerance before the cap.
    pub converged: bool,
    pub max_waves: u32,
    pub tolerance: f64,
}

impl WarmupOutcome {
    pub fn new(max_waves: u32, tolerance: f64) -> Self {
        WarmupOutcome {
            wave_output_tps: Vec::new(),
            converged: false,
            max_waves,
            tolerance,
        }
    }

    /// Records one wave's throughput; `true` when the warm-up is over (converged, or the
    /// cap reached).
    pub fn push(&mut self, output_tps: f64) -> bool {
        self.wave_output_tps.push(output_tps);
        if let [.., a, b] = self.wave_output_tps[..] {
            self.converged = agree(a, b, self.tolerance);
        }
        self.converged || self.waves() >= self.max_waves
    }

    pub fn waves(&self) -> u32 {
        u32::try_from(self.wave_output_tps.len()).unwrap_or(u32::MAX)
    }
}

/// Whether two waves' throughputs agree: both positive and finite, and their difference at
/// most `tolerance` of the larger.
pub fn agree(a: f64, b: f64, tolerance: f64) -> bool {
    let ok = |v: f64| v.is_finite() && v > 0.0;
    ok(a) && ok(b) && (a - b).abs() <= tolerance * a.max(b)
}

/// A wave's output throughput from its requests: successful requests' output tokens over
/// the span from the first send to the last end (`send_offset_s + e2el_s`); 0 when no
/// request succeeded.
pub fn wave_output_tps(records: &[fleetbench_proto::record::RequestRecord]) -> f64 {
    let ok: Vec<_> = records.iter().filter(|r| r.success()).collect();
    let tokens: f64 = ok
        .iter()
        .map(|r| f64::from(r.output_tokens.unwrap_or(0)))
        .sum();
    let start = records
        .iter()
        .map(|r| r.send_offset_s)
        .fold(f64::INFINITY, f64::min);
    let end = ok
        .iter()
        .filter_map(|r| r.e2el_s.map(|e| r.send_offset_s + e))
        .fold(f64::NEG_INFINITY, f64::max);
    let span = end - start;
    if tokens > 0.0 && span.is_finite() && span > 0.0 {
        tokens / span
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_proto::record::RequestRecord;

    fn rec(send: f64, e2el: f64, tokens: u32, ok: bool) -> RequestRecord {
        RequestRecord {
            send_offset_s: send,
            e2el_s: Some(e2el),
            ttft_s: Some(0.01),
            output_tokens: Some(tokens),
            error_kind: (!ok).then_some(fleetbench_proto::record::ErrorKind::HttpStatus),
            ..RequestRecord::default()
        }
    }

    #[test]
    fn stops_when_two_consecutive_waves_agree() {
        let mut w = WarmupOutcome::new(6, 0.03);
        assert!(!w.push(700.0), "one wave never converges");
        assert!(!w.push(900.0), "22 % apart");
        assert!(!w.push(960.0), "6.3 % apart");
        assert!(w.push(975.0), "1.5 % apart");
        assert!(w.converged);
        assert_eq!(w.waves(), 4);
    }

    #[test]
    fn the_cap_ends_a_warm_up_that_never_settles() {
        let mut w = WarmupOutcome::new(3, 0.03);
        assert!(!w.push(100.0));
        assert!(!w.push(200.0));
        assert!(w.push(300.0), "third wave is the cap");
        assert!(!w.converged);
    }

    #[test]
    fn failed_waves_never_agree() {
        assert!(!agree(0.0, 0.0, 0.03));
        assert!(!agree(f64::NAN, 1.0, 0.03));
        assert!(agree(100.0, 103.0, 0.03));
        assert!(!agree(100.0, 103.5, 0.03));
    }

    #[test]
    fn wave_throughput_is_tokens_over_first_send_to_last_end() {
        let records = [
            rec(0.0, 1.0, 100, true),
            rec(0.5, 1.5, 100, true),
            rec(0.1, 5.0, 999, false),
        ];
        // 200 tokens over 0.0 .. 2.0 s; the failed request's tokens and end do not count.
        assert!((wave_output_tps(&records) - 100.0).abs() < 1e-9);
        assert_eq!(wave_output_tps(&[rec(0.0, 1.0, 5, false)]), 0.0);
        assert_eq!(wave_output_tps(&[]), 0.0);
    }
}
