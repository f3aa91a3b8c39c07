//! Means and percentiles of a point's distributions: exact, with numpy's default linear
//! interpolation (what `np.percentile` returns in vLLM's `benchmark_serving`), the quantiles
//! found by selection rather than by sorting.

/// Mean and percentiles of one metric; all `None` when there were no values.
///
/// Percentiles are exact and use numpy's default linear interpolation (what `np.percentile`
/// returns in vLLM's `benchmark_serving`).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// Mean, p50, p90 and p99 of `values`, ignoring NaNs; all `None` when nothing is left.
///
/// Percentiles are exact, with numpy's default (`linear`) method: for quantile q over the n
/// sorted values, index h = (n − 1)·q, result = v[⌊h⌋] + (h − ⌊h⌋)·(v[⌊h⌋+1] − v[⌊h⌋]),
/// evaluated the way numpy's `_lerp` does so results match `np.percentile` bit for bit.
pub fn percentiles(values: &[f64]) -> Percentiles {
    percentiles_of(values.iter().copied().filter(|v| !v.is_nan()).collect())
}

/// [`percentiles`] of values the caller collected (NaNs are dropped here), reordered in
/// place: the quantiles come from selections (`select_nth_unstable`, linear time), not a
/// full sort. Under the total order (`f64::total_cmp`) a rank's value is unique, so the
/// result is bit for bit the sorted-slice answer; a point's pooled ITLs are millions of
/// values, and sorting them was the most expensive step of finishing a point.
pub(crate) fn percentiles_of(mut values: Vec<f64>) -> Percentiles {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return Percentiles::default();
    }
    // Summed in the given order (before any reordering), as `np.mean` does for short inputs.
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let [p50, p90, p99] = quantiles(&mut values, [0.5, 0.9, 0.99]);
    Percentiles {
        mean: Some(mean),
        p50: Some(p50),
        p90: Some(p90),
        p99: Some(p99),
    }
}

/// Linear-interpolated quantiles (ascending `qs` in 0..=1) of a non-empty slice without
/// NaNs, as [`quantile_of_sorted`] computes them on the sorted slice. Reorders `values`.
fn quantiles<const N: usize>(values: &mut [f64], qs: [f64; N]) -> [f64; N] {
    let last = values.len().saturating_sub(1);
    // Every rank selected so far is at its sorted place, the last one is `settled`, and
    // the values right of it are at least as large (in the total order). With ascending
    // `qs` a rank asked for again is always one selected before (⌊h⌋ or ⌊h⌋ + 1 of an
    // earlier q), and later selections only reorder the values right of `settled`.
    let mut settled: Option<usize> = None;
    let mut rank = |values: &mut [f64], r: usize| -> f64 {
        match settled {
            Some(s) if r <= s => values[r],
            _ => {
                let from = settled.map_or(0, |s| s + 1);
                let (_, v, _) = values[from..].select_nth_unstable_by(r - from, f64::total_cmp);
                let v = *v;
                settled = Some(r);
                v
            }
        }
    };
    qs.map(|q| {
        let h = last as f64 * q;
        let below = h.floor();
        let gamma = h - below;
        let lo = (below as usize).min(last);
        let hi = (lo + 1).min(last);
        let a = rank(values, lo);
        let b = rank(values, hi);
        lerp(a, b, gamma)
    })
}

/// Linear-interpolated quantile `q` (0..=1) of a non-empty ascending slice.
#[cfg(test)]
fn quantile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let h = last as f64 * q;
    let below = h.floor();
    let gamma = h - below;
    let lo = (below as usize).min(last);
    let hi = (lo + 1).min(last);
    lerp(sorted[lo], sorted[hi], gamma)
}

/// numpy's `_lerp`: interpolates from the nearer end to keep monotonicity and exactness.
fn lerp(a: f64, b: f64, gamma: f64) -> f64 {
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy 2.4.6: np.percentile([0.1, 0.2, 0.4, 0.8], 99) == 0.7879999999999999
        let p = percentiles(&[0.8, 0.1, 0.4, 0.2]);
        assert_eq!(p.p99, Some(0.7879999999999999));
        // numpy: np.percentile([3, 1, 4, 1, 5, 9, 2, 6], [50, 90, 99])
        //   == [3.5, 6.8999999999999995, 8.79]
        let p = percentiles(&[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]);
        assert_eq!(p.p50, Some(3.5));
        assert_eq!(p.p90, Some(6.8999999999999995));
        assert_eq!(p.p99, Some(8.79));
        assert_eq!(p.mean, Some(31.0 / 8.0));
    }

    #[test]
    fn selected_quantiles_equal_the_sorted_ones() {
        // Duplicates, signed zeros, infinities and every length from 1 to 300.
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in 1..=300 {
            let values: Vec<f64> = (0..n)
                .map(|_| match next() % 10 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f64::INFINITY,
                    3 => 1.5,
                    _ => (next() % 1000) as f64 / 7.0 - 50.0,
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let want = [0.0, 0.01, 0.5, 0.9, 0.99, 1.0].map(|q| quantile_of_sorted(&sorted, q));
            let mut scratch = values.clone();
            let got = quantiles(&mut scratch, [0.0, 0.01, 0.5, 0.9, 0.99, 1.0]);
            assert_eq!(want.map(f64::to_bits), got.map(f64::to_bits), "{values:?}");
        }
    }

    #[test]
    fn percentiles_of_nothing_are_none_and_nans_are_ignored() {
        assert_eq!(percentiles(&[]), Percentiles::default());
        assert_eq!(percentiles(&[f64::NAN]), Percentiles::default());
        let p = percentiles(&[f64::NAN, 2.0, f64::NAN]);
        assert_eq!(
            p,
            Percentiles {
                mean: Some(2.0),
                p50: Some(2.0),
                p90: Some(2.0),
                p99: Some(2.0)
            }
        );
    }
}
