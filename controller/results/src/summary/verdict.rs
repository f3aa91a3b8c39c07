//! The verdict on a point: `valid`, or every reason its numbers do not describe the load it
//! asked for (failed requests, wrong lengths, a load the client did not deliver, a
//! CPU-saturated client, an engine that saw another number of requests, a warm-up that hit
//! its cap before it converged, engine fallbacks),
//! with the limits those checks use. Tested through `summarize`, in the summary's tests.

use crate::summary::point::{InFlight, PointMeta};

/// A point whose p99 send lag exceeds this did not send when it meant to (burst: the
/// requests did not leave together; rate: the timeline slipped).
pub const SEND_LAG_P99_LIMIT_S: f64 = 0.010;
/// A client busier than this share of its cores was measuring itself.
pub const CLIENT_CPU_LIMIT: f64 = 0.9;
/// Concurrency mode must hold at least this share of its slots in flight on average.
pub const CONCURRENCY_HELD_MIN: f64 = 0.9;
/// The engine's peak in-flight count (running + waiting) may differ from the client's by
/// this share plus [`IN_FLIGHT_SLACK`] requests before the verdict names it: a scrape and
/// the requests around it never line up to the microsecond.
pub const IN_FLIGHT_TOLERANCE: f64 = 0.1;
/// See [`IN_FLIGHT_TOLERANCE`].
pub const IN_FLIGHT_SLACK: f64 = 1.0;
/// Fewer scrapes with requests in flight than this say nothing about the engine's view.
pub const IN_FLIGHT_MIN_SCRAPES: usize = 3;

/// What the verdict looks at.
pub(crate) struct Checks<'a> {
    pub(crate) measured: usize,
    pub(crate) failed: u32,
    pub(crate) meta: &'a PointMeta,
    pub(crate) input_mismatches: u32,
    pub(crate) output_mismatches: u32,
    pub(crate) send_lag_p99: Option<f64>,
    pub(crate) achieved_concurrency: f64,
    pub(crate) in_flight: Option<InFlight>,
}

/// Why a point's numbers do not describe the requested load, or `valid`. Failed requests,
/// wrong lengths, a load the client did not deliver (send lag, concurrency not held) and a
/// CPU-saturated client are named, never hidden.
pub(crate) fn verdict(c: &Checks<'_>) -> String {
    let Checks {
        measured,
        failed,
        meta,
        input_mismatches,
        output_mismatches,
        send_lag_p99,
        achieved_concurrency,
        in_flight,
    } = *c;
    let mut reasons = Vec::new();
    if measured == 0 {
        reasons.push("no requests measured".to_string());
    }
    if failed > 0 {
        reasons.push(format!("{failed} of {measured} requests failed"));
    }
    if input_mismatches > 0 {
        reasons.push(format!(
            "{input_mismatches} request(s) not at {} input tokens as the server counted",
            meta.input_tokens
        ));
    }
    if output_mismatches > 0 {
        reasons.push(format!(
            "{output_mismatches} request(s) not at {} output tokens",
            meta.output_tokens
        ));
    }
    if let Some(lag) = send_lag_p99.filter(|l| *l > SEND_LAG_P99_LIMIT_S) {
        reasons.push(format!(
            "send lag p99 {:.1} ms > {:.0} ms: requests did not leave when scheduled",
            lag * 1e3,
            SEND_LAG_P99_LIMIT_S * 1e3
        ));
    }
    if meta.mode == "concurrency"
        && measured > 0
        && achieved_concurrency < CONCURRENCY_HELD_MIN * f64::from(meta.batch_size)
    {
        reasons.push(format!(
            "concurrency {} not held: {achieved_concurrency:.1} in flight on average",
            meta.batch_size
        ));
    }
    let client = meta.client;
    if client.cores > 0 && client.cpu_cores() > CLIENT_CPU_LIMIT * f64::from(client.cores) {
        reasons.push(format!(
            "client CPU-saturated ({:.2} of {} cores busy): the point measured the load generator",
            client.cpu_cores(),
            client.cores
        ));
    }
    // With failed requests the client's count is not what the engine held: a request that
    // failed (an engine crash, a cut stream) has no end the client can place, so the
    // comparison would report a false "served requests not of this point". The failures
    // are named above.
    if let Some(f) = in_flight.filter(|_| failed == 0) {
        let slack = IN_FLIGHT_TOLERANCE * f.client_peak + IN_FLIGHT_SLACK;
        if f.server_peak < f.client_peak - slack {
            reasons.push(format!(
                "engine saw at most {:.0} requests in flight, the client had {:.0} ({} scrapes): requests waited before reaching the engine",
                f.server_peak, f.client_peak, f.scrapes
            ));
        } else if f.server_peak > f.client_peak + slack {
            reasons.push(format!(
                "engine had up to {:.0} requests in flight, the client {:.0} ({} scrapes): the engine also served requests not of this point",
                f.server_peak, f.client_peak, f.scrapes
            ));
        }
    }
    let warmup = &meta.warmup;
    if warmup.waves() > 0 && !warmup.converged {
        let last: Vec<String> = warmup
            .wave_output_tps
            .iter()
            .rev()
            .take(2)
            .rev()
            .map(|t| format!("{t:.1}"))
            .collect();
        reasons.push(format!(
            "warm-up did not converge in {} waves (last waves {} tok/s, tolerance {:.1} %): the engine may still have been warming up",
            warmup.waves(),
            last.join(" and "),
            warmup.tolerance * 100.0
        ));
    }
    for fallback in &meta.fallbacks {
        reasons.push(format!("engine fallback: {fallback}"));
    }
    if reasons.is_empty() {
        "valid".into()
    } else {
        reasons.join("; ")
    }
}
