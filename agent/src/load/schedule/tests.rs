//! Unit tests of rate mode's arrival schedule: constant, Poisson and gamma arrivals, the
//! duration limit, seeds.

use super::*;

fn schedule(arrival: Arrival, burstiness: f64, n: u32) -> RateSchedule {
    RateSchedule {
        rate: 50.0,
        arrival,
        burstiness,
        seed: 7,
        duration: None,
        max_requests: Some(n),
    }
}

fn gaps(offsets: &[Duration]) -> Vec<f64> {
    offsets
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect()
}

fn mean_and_cv(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt() / mean)
}

#[test]
fn constant_rate_is_exact_and_starts_at_zero() {
    let offs = schedule(Arrival::Constant, 1.0, 5).offsets();
    let ms: Vec<u128> = offs.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, vec![0, 20, 40, 60, 80]);
}

#[test]
fn duration_limit_excludes_the_end() {
    let s = RateSchedule {
        duration: Some(Duration::from_secs(1)),
        max_requests: None,
        ..schedule(Arrival::Constant, 1.0, 0)
    };
    // 50/s for 1 s: offsets 0, 0.02, …, 0.98; exactly 50, also for long schedules.
    let offs = s.offsets();
    assert_eq!(offs.len(), 50);
    let long = RateSchedule {
        rate: 500.0,
        duration: Some(Duration::from_secs(20)),
        max_requests: None,
        ..schedule(Arrival::Constant, 1.0, 0)
    };
    assert_eq!(long.offsets().len(), 10_000);
    assert!(offs.iter().all(|o| o.as_secs_f64() < 1.0));
    let both = RateSchedule {
        max_requests: Some(10),
        ..s
    };
    assert_eq!(both.offsets().len(), 10);
}

#[test]
fn same_seed_same_schedule_other_seed_other_schedule() {
    let a = schedule(Arrival::Poisson, 1.0, 100).offsets();
    assert_eq!(a, schedule(Arrival::Poisson, 1.0, 100).offsets());
    let b = RateSchedule {
        seed: 8,
        ..schedule(Arrival::Poisson, 1.0, 100)
    }
    .offsets();
    assert_ne!(a, b);
}

#[test]
fn poisson_gaps_are_exponential_with_mean_one_over_rate() {
    let (mean, cv) = mean_and_cv(&gaps(&schedule(Arrival::Poisson, 1.0, 50_001).offsets()));
    // 50,000 samples: the mean's standard error is 0.45 %, the CV's about 0.6 %.
    assert!((mean - 0.02).abs() < 0.02 * 0.02, "mean {mean}");
    assert!((cv - 1.0).abs() < 0.03, "cv {cv}");
}

#[test]
fn gamma_burstiness_sets_the_spread_not_the_mean() {
    // Gamma(k) gaps: CV = 1/sqrt(k).
    for (k, want_cv) in [(0.25, 2.0), (4.0, 0.5)] {
        let offs = schedule(Arrival::Gamma, k, 50_001).offsets();
        let (mean, cv) = mean_and_cv(&gaps(&offs));
        assert!((mean - 0.02).abs() < 0.02 * 0.04, "k {k}: mean {mean}");
        assert!((cv - want_cv).abs() < want_cv * 0.06, "k {k}: cv {cv}");
    }
}

#[test]
fn no_limit_means_no_requests() {
    let s = RateSchedule {
        max_requests: None,
        ..schedule(Arrival::Poisson, 1.0, 0)
    };
    assert!(s.offsets().is_empty());
}
