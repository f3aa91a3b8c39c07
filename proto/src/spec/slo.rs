//! `[slo]`: the service-level objectives a sweep's points are judged against, and
//! [`Slo`], their plain form that travels with each point's summary.
//!
//! Per request, as vLLM `benchmark_serving`'s `--goodput ttft:<ms> tpot:<ms> e2el:<ms>`
//! defines it: a request is *good* when it succeeded and each configured latency is at
//! most its threshold (a request with one output token has no TPOT and meets a TPOT
//! objective, as vLLM counts its TPOT as 0). Goodput = good requests / the point's
//! duration.
//!
//! Per point, "p99 TTFT ≤ 2 s": for each configured metric, at least `percentile` % of
//! the point's measured requests must meet that metric's threshold, a failed request
//! meeting none. Stated as a share rather than as an interpolated p99, so the verdict
//! does not depend on an interpolation rule and failed requests cannot hide.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::locate::located;
use crate::error::SpecError;

/// `[slo]` as written in the sweep file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSection {
    /// Time to first token, milliseconds.
    pub ttft_ms: Option<Spanned<f64>>,
    /// Time per output token after the first, milliseconds.
    pub tpot_ms: Option<Spanned<f64>>,
    /// End-to-end latency, milliseconds.
    pub e2el_ms: Option<Spanned<f64>>,
    /// The share of requests, in percent, that must meet each threshold for the point
    /// to meet the SLO (default [`DEFAULT_SLO_PERCENTILE`]).
    pub percentile: Option<Spanned<f64>>,
    /// Per-metric percentiles, overriding `percentile`.
    pub ttft_percentile: Option<Spanned<f64>>,
    pub tpot_percentile: Option<Spanned<f64>>,
    pub e2el_percentile: Option<Spanned<f64>>,
}

/// Default `[slo] percentile`.
pub const DEFAULT_SLO_PERCENTILE: f64 = 99.0;

/// One latency objective: a threshold in seconds met by at least `percentile` % of
/// requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub threshold_s: f64,
    pub percentile: f64,
}

/// A sweep's SLO in plain form (no spans): what the controller judges each point by.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Slo {
    pub ttft: Option<Objective>,
    pub tpot: Option<Objective>,
    pub e2el: Option<Objective>,
}

impl Slo {
    /// The configured objectives with their metric names (`ttft`, `tpot`, `e2el`), in
    /// that order.
    pub fn objectives(&self) -> impl Iterator<Item = (&'static str, Objective)> + '_ {
        [
            ("ttft", self.ttft),
            ("tpot", self.tpot),
            ("e2el", self.e2el),
        ]
        .into_iter()
        .filter_map(|(name, o)| o.map(|o| (name, o)))
    }

    /// The SLO as one line, e.g. `p99 ttft <= 2000 ms, p90 tpot <= 50 ms`.
    pub fn describe(&self) -> String {
        self.objectives()
            .map(|(name, o)| {
                format!(
                    "p{} {name} <= {} ms",
                    trim_float(o.percentile),
                    trim_float(o.threshold_s * 1e3)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `2000.0` → `2000`, `99.9` → `99.9`.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl SloSection {
    /// The plain form (call after [`SloSection::validate`]).
    pub fn to_slo(&self) -> Slo {
        let default = self
            .percentile
            .as_ref()
            .map_or(DEFAULT_SLO_PERCENTILE, |p| *p.get_ref());
        let objective = |ms: &Option<Spanned<f64>>, pct: &Option<Spanned<f64>>| {
            ms.as_ref().map(|ms| Objective {
                threshold_s: *ms.get_ref() / 1e3,
                percentile: pct.as_ref().map_or(default, |p| *p.get_ref()),
            })
        };
        Slo {
            ttft: objective(&self.ttft_ms, &self.ttft_percentile),
            tpot: objective(&self.tpot_ms, &self.tpot_percentile),
            e2el: objective(&self.e2el_ms, &self.e2el_percentile),
        }
    }

    /// Checks the values: at least one threshold, thresholds positive and finite,
    /// percentiles in (0, 100], a per-metric percentile only with its threshold.
    pub(super) fn validate(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        let thresholds = [
            (
                "slo.ttft_ms",
                &self.ttft_ms,
                "slo.ttft_percentile",
                &self.ttft_percentile,
            ),
            (
                "slo.tpot_ms",
                &self.tpot_ms,
                "slo.tpot_percentile",
                &self.tpot_percentile,
            ),
            (
                "slo.e2el_ms",
                &self.e2el_ms,
                "slo.e2el_percentile",
                &self.e2el_percentile,
            ),
        ];
        if thresholds.iter().all(|(_, ms, _, _)| ms.is_none()) {
            return err(
                0..0,
                "slo",
                "names no objective: set ttft_ms, tpot_ms or e2el_ms".into(),
            );
        }
        for (field, ms, pct_field, pct) in thresholds {
            if let Some(ms) = ms {
                let v = *ms.get_ref();
                if !(v.is_finite() && v > 0.0) {
                    return err(
                        ms.span(),
                        field,
                        format!("{v} is not a positive time in ms"),
                    );
                }
            } else if let Some(p) = pct {
                return err(p.span(), pct_field, format!("applies only with {field}"));
            }
        }
        let percentiles = [
            ("slo.percentile", &self.percentile),
            ("slo.ttft_percentile", &self.ttft_percentile),
            ("slo.tpot_percentile", &self.tpot_percentile),
            ("slo.e2el_percentile", &self.e2el_percentile),
        ];
        for (field, p) in percentiles {
            if let Some(p) = p {
                let v = *p.get_ref();
                if !(v > 0.0 && v <= 100.0) {
                    return err(p.span(), field, format!("{v} is not in (0, 100]"));
                }
            }
        }
        Ok(())
    }
}
