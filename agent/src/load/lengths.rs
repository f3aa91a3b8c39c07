//! Per-request input and output lengths drawn from a workload's length distribution
//! (`[matrix] workloads` `dist`), seeded, each clipped to the workload's bounds.
//!
//! - uniform: mean ± spread, every whole length in the range equally likely;
//! - normal: mean and standard deviation `spread` (Box–Muller), rounded to the nearest
//!   token;
//! - log-normal: the lengths have mean `m` and standard deviation `s` (not their logs):
//!   `σ² = ln(1 + s²/m²)`, `μ = ln m − σ²/2`, length = `exp(μ + σ z)`.
//!
//! Clipping moves the realized mean slightly where the bounds cut the tails; the sweep's
//! validation keeps the default bounds 4 standard deviations out, where that is below
//! 0.01 %.

use fleetbench_proto::pb;

use crate::load::prompt::SplitMix64;

/// One request's target lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    pub input: u32,
    pub output: u32,
}

/// A uniform draw in [0, 1) with 53 bits.
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller, one of the pair).
fn standard_normal(rng: &mut SplitMix64) -> f64 {
    // 1 − u is in (0, 1]: the logarithm is finite.
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One length of mean `mean` and spread `spread` under `dist`, clipped to `[min, max]`.
fn draw(
    dist: pb::LengthDist,
    mean: u32,
    spread: u32,
    min: u32,
    max: u32,
    rng: &mut SplitMix64,
) -> u32 {
    let (m, s) = (f64::from(mean), f64::from(spread));
    let value = match dist {
        pb::LengthDist::Unspecified | pb::LengthDist::Fixed => return mean,
        pb::LengthDist::Uniform => {
            let lo = m - s;
            // Whole lengths lo..=lo+2s, each with probability 1/(2s+1).
            (lo + (unit(rng) * (2.0 * s + 1.0)).floor()).round()
        }
        pb::LengthDist::Normal => (m + s * standard_normal(rng)).round(),
        pb::LengthDist::Lognormal => {
            let sigma2 = (1.0 + (s * s) / (m * m)).ln();
            let mu = m.ln() - sigma2 / 2.0;
            (mu + sigma2.sqrt() * standard_normal(rng)).exp().round()
        }
    };
    let clipped = value.clamp(f64::from(min.max(1)), f64::from(max.max(min.max(1))));
    // In range of u32 after the clamp.
    clipped as u32
}

/// The lengths of `count` requests of `workload`, seeded by `seed`; input and output are
/// drawn from independent streams, so changing one distribution leaves the other's
/// draws as they were.
pub fn draw_lengths(workload: &pb::Workload, count: usize, seed: u64) -> Vec<Lengths> {
    let dist = workload.dist();
    let mut inputs = SplitMix64::new(seed ^ 0x1A2B_3C4D_5E6F_7081);
    let mut outputs = SplitMix64::new(seed ^ 0x0F1E_2D3C_4B5A_6978);
    (0..count)
        .map(|_| Lengths {
            input: draw(
                dist,
                workload.input_tokens,
                workload.input_spread,
                workload.input_min,
                workload.input_max,
                &mut inputs,
            ),
            output: draw(
                dist,
                workload.output_tokens,
                workload.output_spread,
                workload.output_min,
                workload.output_max,
                &mut outputs,
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(dist: pb::LengthDist, mean: u32, spread: u32, min: u32, max: u32) -> pb::Workload {
        pb::Workload {
            input_tokens: mean,
            output_tokens: 64,
            dist: dist.into(),
            input_spread: spread,
            output_spread: 8,
            input_min: min,
            input_max: max,
            output_min: 1,
            output_max: 128,
            ..Default::default()
        }
    }

    fn moments(values: &[u32]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (mean, var.sqrt())
    }

    /// Kolmogorov–Smirnov statistic of whole-number `values` against the continuous CDF
    /// `cdf` of the unrounded draws: at each distinct value v, the share of values ≤ v
    /// against cdf(v + 0.5) and the share < v against cdf(v − 0.5) (a value v is every
    /// draw that rounded to it).
    fn ks(values: &[u32], cdf: impl Fn(f64) -> f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let n = sorted.len() as f64;
        let mut d = 0.0_f64;
        let mut i = 0;
        while i < sorted.len() {
            let v = sorted[i];
            let below = i as f64 / n;
            while i < sorted.len() && sorted[i] == v {
                i += 1;
            }
            let at_or_below = i as f64 / n;
            let x = f64::from(v);
            d = d
                .max((cdf(x + 0.5) - at_or_below).abs())
                .max((cdf(x - 0.5) - below).abs());
        }
        d
    }

    fn normal_cdf(x: f64, m: f64, s: f64) -> f64 {
        0.5 * (1.0 + erf((x - m) / (s * std::f64::consts::SQRT_2)))
    }

    /// Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7).
    fn erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
        let y = 1.0
            - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736)
                * t
                + 0.254_829_592)
                * t
                * (-x * x).exp();
        if x >= 0.0 { y } else { -y }
    }

    const N: usize = 20_000;
    /// The KS critical value at α = 0.001 for n = 20,000: 1.95 / √n.
    fn ks_critical() -> f64 {
        1.95 / (N as f64).sqrt()
    }

    #[test]
    fn fixed_lengths_are_the_workload_s_own() {
        let w = workload(pb::LengthDist::Fixed, 512, 0, 512, 512);
        let l = draw_lengths(&w, 10, 1);
        assert!(l.iter().all(|l| *l
            == Lengths {
                input: 512,
                output: 64
            }));
    }

    #[test]
    fn normal_lengths_match_their_mean_stddev_and_shape() {
        let w = workload(pb::LengthDist::Normal, 512, 64, 1, 4096);
        let inputs: Vec<u32> = draw_lengths(&w, N, 42).iter().map(|l| l.input).collect();
        let (mean, sd) = moments(&inputs);
        // Standard errors: 64/√n = 0.45 for the mean, about 0.32 for the deviation.
        assert!((mean - 512.0).abs() < 2.0, "mean {mean}");
        assert!((sd - 64.0).abs() < 1.5, "sd {sd}");
        let d = ks(&inputs, |x| normal_cdf(x, 512.0, 64.0));
        assert!(d < ks_critical(), "KS {d} >= {}", ks_critical());
    }

    #[test]
    fn uniform_lengths_cover_mean_plus_minus_spread_evenly() {
        let w = workload(pb::LengthDist::Uniform, 200, 50, 1, 4096);
        let inputs: Vec<u32> = draw_lengths(&w, N, 7).iter().map(|l| l.input).collect();
        assert_eq!(*inputs.iter().min().unwrap(), 150);
        assert_eq!(*inputs.iter().max().unwrap(), 250);
        let d = ks(&inputs, |x| ((x - 149.5) / 101.0).clamp(0.0, 1.0));
        assert!(d < ks_critical(), "KS {d}");
    }

    #[test]
    fn lognormal_lengths_have_the_asked_mean_and_stddev_of_lengths() {
        let w = workload(pb::LengthDist::Lognormal, 300, 150, 1, 100_000);
        let inputs: Vec<u32> = draw_lengths(&w, N, 3).iter().map(|l| l.input).collect();
        let (mean, sd) = moments(&inputs);
        assert!((mean - 300.0).abs() < 4.0, "mean {mean}");
        assert!((sd - 150.0).abs() < 8.0, "sd {sd}");
        // The logs are normal with σ² = ln(1 + 0.25) and μ = ln 300 − σ²/2.
        let sigma = (1.25f64).ln().sqrt();
        let mu = 300f64.ln() - sigma * sigma / 2.0;
        let d = ks(&inputs, |x| normal_cdf(x.max(1e-9).ln(), mu, sigma));
        assert!(d < ks_critical(), "KS {d}");
    }

    #[test]
    fn draws_are_clipped_seeded_and_independent_per_length() {
        let w = workload(pb::LengthDist::Normal, 100, 80, 40, 160);
        let a = draw_lengths(&w, 2_000, 9);
        assert!(a.iter().all(|l| (40..=160).contains(&l.input)));
        assert!(a.iter().any(|l| l.input == 40) && a.iter().any(|l| l.input == 160));
        assert_eq!(a, draw_lengths(&w, 2_000, 9));
        assert_ne!(a, draw_lengths(&w, 2_000, 10));
        // Another input spread leaves the outputs as they were.
        let other = pb::Workload {
            input_spread: 10,
            ..w.clone()
        };
        let b = draw_lengths(&other, 2_000, 9);
        assert!(a.iter().zip(&b).all(|(x, y)| x.output == y.output));
    }
}
