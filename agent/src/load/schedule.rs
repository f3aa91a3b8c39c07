//! Rate mode's arrival schedule: when each request is meant to leave, as offsets from the
//! start of the measured load.
//!
//! The schedule is computed up front from the seed, so the same spec yields the same
//! timeline, and it is absolute: request i leaves at `origin + offset[i]` whatever happened
//! to request i − 1 (a late send does not shift the ones after it, so coordinated omission
//! cannot hide). Gaps follow vLLM's `benchmark_serving`: the first request leaves at 0, then
//! each gap is drawn from a gamma distribution with shape `burstiness` and scale
//! `1 / (rate × burstiness)` (mean `1 / rate`); burstiness 1 is a Poisson process. The
//! samplers are implemented here (SplitMix64 uniforms, Marsaglia–Tsang gamma) rather than
//! taken from a crate, so a schedule never changes under a dependency upgrade.

use std::time::Duration;

use fleetbench_proto::spec::Arrival;

use crate::load::prompt::SplitMix64;

/// Which requests a rate-mode point sends and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSchedule {
    /// Requests per second.
    pub rate: f64,
    pub arrival: Arrival,
    /// Gamma shape (only for [`Arrival::Gamma`]).
    pub burstiness: f64,
    pub seed: u64,
    /// Requests are scheduled strictly before this offset (`None`: no time limit).
    pub duration: Option<Duration>,
    /// At most this many requests (`None`: no count limit).
    pub max_requests: Option<u32>,
}

/// Upper bound on a schedule's length, whatever the spec says (memory guard).
pub const MAX_SCHEDULED_REQUESTS: usize = 10_000_000;

impl RateSchedule {
    /// The send offsets, ascending. Empty when neither limit is set.
    pub fn offsets(&self) -> Vec<Duration> {
        if self.duration.is_none() && self.max_requests.is_none() {
            return Vec::new();
        }
        let limit = self
            .max_requests
            .map_or(MAX_SCHEDULED_REQUESTS, |n| {
                usize::try_from(n).unwrap_or(MAX_SCHEDULED_REQUESTS)
            })
            .min(MAX_SCHEDULED_REQUESTS);
        let end = self.duration.map(|d| d.as_secs_f64());
        let mut rng = SplitMix64::new(self.seed);
        let mut out = Vec::new();
        let mut t = 0.0_f64;
        while out.len() < limit {
            if end.is_some_and(|end| t >= end) {
                break;
            }
            out.push(Duration::from_secs_f64(t));
            t = match self.arrival {
                // k / rate, not a running sum: 10,000 sums of 1/500 land a hair under
                // 20 s and would add a 10,001st request to a 20 s schedule.
                Arrival::Constant => out.len() as f64 / self.rate,
                Arrival::Poisson | Arrival::Gamma => t + self.gap(&mut rng),
            };
        }
        out
    }

    /// One inter-arrival gap in seconds.
    fn gap(&self, rng: &mut SplitMix64) -> f64 {
        let mean = 1.0 / self.rate;
        match self.arrival {
            Arrival::Constant => mean,
            Arrival::Poisson => -open_unit(rng).ln() * mean,
            Arrival::Gamma => {
                let shape = self.burstiness;
                gamma(rng, shape) * mean / shape
            }
        }
    }
}

/// A uniform sample in (0, 1): never 0, so its logarithm is finite.
fn open_unit(rng: &mut SplitMix64) -> f64 {
    // 53 random bits, shifted by half a step away from 0.
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = open_unit(rng);
    let u2 = open_unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Gamma(shape, 1) sample: Marsaglia and Tsang's method; shapes below 1 use the boost
/// `Gamma(k) = Gamma(k + 1) · U^(1/k)`.
fn gamma(rng: &mut SplitMix64, shape: f64) -> f64 {
    if shape < 1.0 {
        let boost = open_unit(rng).powf(1.0 / shape);
        return gamma(rng, shape + 1.0) * boost;
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = open_unit(rng);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

#[cfg(test)]
mod tests;
