//! `[search]`: a sweep that finds its load levels itself, and the search rule.
//!
//! A search sweep has no `batch_sizes` or `rates`: per GPU count and workload (a *group*)
//! the controller runs one probe point at a time on the sweep's load axis (burst or
//! concurrency mode: the batch size / requests in flight; rate mode: the request rate)
//! and picks the next from the probes so far ([`next_probe`]):
//!
//! - `goal = "slo"` (needs `[slo]`): the largest load whose point meets the SLO. The
//!   first probe is `min`; while probes meet it the load doubles (capped at `max`), which
//!   brackets the limit between the largest load that met it and the smallest that did
//!   not; then bisection halves that bracket until it is at most `resolution` wide. A
//!   point that failed, or was skipped or cancelled, did not meet it.
//! - `goal = "throughput"`: the load where output throughput stops rising. The load
//!   doubles from `min` while each doubling raises output throughput by at least
//!   `min_gain` (a share); the answer is the last load whose doubling still paid, or
//!   `max`. No bisection: between two doublings throughput is not monotone enough to
//!   bisect on.
//!
//! Every probe is a normal stored point; `max_points` caps the probes per group (the
//! answer is then the bracket reached so far). The rule is a pure function of the probes,
//! so a controller that restarts from its store resumes a search where it was.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::locate::located;
use crate::error::SpecError;

/// What a search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SearchGoal {
    /// The largest load whose point meets `[slo]`.
    #[default]
    Slo,
    /// The load after which output throughput stops rising.
    Throughput,
}

impl SearchGoal {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchGoal::Slo => "slo",
            SearchGoal::Throughput => "throughput",
        }
    }
}

/// `[search]` as written in the sweep file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSection {
    #[serde(default)]
    pub goal: SearchGoal,
    /// The first and smallest load probed (default 1).
    pub min: Option<Spanned<f64>>,
    /// The largest load probed.
    pub max: Spanned<f64>,
    /// Probes per GPU count and workload, at most (default [`DEFAULT_SEARCH_POINTS`]).
    pub max_points: Option<Spanned<u32>>,
    /// Bisection stops once the bracket is at most this wide (default: 1 for batch sizes,
    /// `min` for rates).
    pub resolution: Option<Spanned<f64>>,
    /// `goal = "throughput"`: the least rise of output throughput, as a share, that a
    /// doubling of the load must bring (default 0.05).
    pub min_gain: Option<Spanned<f64>>,
}

/// Default `[search] max_points`.
pub const DEFAULT_SEARCH_POINTS: u32 = 12;
/// Default `[search] min_gain`.
pub const DEFAULT_MIN_GAIN: f64 = 0.05;
/// The most `[search] max_points` may be.
pub const MAX_SEARCH_POINTS: u32 = 64;

/// A search in plain form: what the controller runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub goal: SearchGoal,
    pub min: f64,
    pub max: f64,
    pub max_points: u32,
    pub resolution: f64,
    pub min_gain: f64,
    /// Loads are batch sizes (whole numbers), not rates.
    pub integer: bool,
}

/// One probe's outcome, as the search rule reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub load: f64,
    /// The point ended `done` and met the SLO (goal `slo`).
    pub met: bool,
    /// Output tokens per second (goal `throughput`); 0 for a point that failed.
    pub output_throughput: f64,
}

/// What a group does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Run a point at this load.
    Probe(f64),
    /// The search of this group is over.
    Done(Answer),
}

/// A finished search: the largest load that met the goal (`None`: not even `min`) and
/// the smallest probed load above it that did not (`None`: none did, up to `max`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub best: Option<f64>,
    pub above: Option<f64>,
    /// The probe cap ended the search before the bracket reached the resolution.
    pub capped: bool,
}

impl SearchSection {
    /// The plain form for a sweep whose loads are batch sizes (`integer`) or rates (call
    /// after validation).
    pub fn to_search(&self, integer: bool) -> Search {
        let min = self.min.as_ref().map_or(1.0, |m| *m.get_ref());
        Search {
            goal: self.goal,
            min,
            max: *self.max.get_ref(),
            max_points: self
                .max_points
                .as_ref()
                .map_or(DEFAULT_SEARCH_POINTS, |m| *m.get_ref()),
            resolution: self
                .resolution
                .as_ref()
                .map_or(if integer { 1.0 } else { min }, |r| *r.get_ref()),
            min_gain: self
                .min_gain
                .as_ref()
                .map_or(DEFAULT_MIN_GAIN, |g| *g.get_ref()),
            integer,
        }
    }

    /// Checks the values against the sweep's load axis (`mode`: its load mode's name;
    /// `integer`: batch sizes, not rates), the largest batch size and whether the sweep
    /// has an `[slo]`.
    pub(super) fn validate(
        &self,
        text: &str,
        file: &str,
        (mode, integer): (&str, bool),
        max_batch: u32,
        has_slo: bool,
    ) -> Result<(), SpecError> {
        let err = |span: Range<usize>, field: &str, message: String| {
            Err(located(text, file, span, field, message))
        };
        if self.goal == SearchGoal::Slo && !has_slo {
            return err(
                0..0,
                "search.goal",
                "goal \"slo\" (the default) needs an [slo] section".into(),
            );
        }
        let (ceiling, unit) = if integer {
            (f64::from(max_batch), "requests")
        } else {
            (1e6, "requests/s")
        };
        let max = *self.max.get_ref();
        let min = self.min.as_ref().map_or(1.0, |m| *m.get_ref());
        for (field, v, span) in [
            ("search.min", min, self.min.as_ref().map(Spanned::span)),
            ("search.max", max, Some(self.max.span())),
        ] {
            let span = span.unwrap_or(0..0);
            if !(v.is_finite() && v > 0.0 && v <= ceiling) {
                return err(span, field, format!("{v} is not in (0, {ceiling}] {unit}"));
            }
            if integer && v.fract() != 0.0 {
                return err(
                    span,
                    field,
                    format!("{v} is not a whole number: {mode} mode searches batch sizes"),
                );
            }
        }
        if max < min {
            return err(
                self.max.span(),
                "search.max",
                format!("{max} is below search.min {min}"),
            );
        }
        if let Some(p) = &self.max_points {
            let v = *p.get_ref();
            if !(2..=MAX_SEARCH_POINTS).contains(&v) {
                return err(
                    p.span(),
                    "search.max_points",
                    format!("{v} is not in 2..={MAX_SEARCH_POINTS}"),
                );
            }
        }
        if let Some(r) = &self.resolution {
            let v = *r.get_ref();
            if !(v.is_finite() && v > 0.0) || (integer && v.fract() != 0.0) {
                return err(
                    r.span(),
                    "search.resolution",
                    format!(
                        "{v} is not a positive {}",
                        if integer { "whole number" } else { "rate" }
                    ),
                );
            }
        }
        if let Some(g) = &self.min_gain {
            let v = *g.get_ref();
            if self.goal != SearchGoal::Throughput {
                return err(
                    g.span(),
                    "search.min_gain",
                    "only applies with goal = \"throughput\"".into(),
                );
            }
            if !(v.is_finite() && v > 0.0) {
                return err(
                    g.span(),
                    "search.min_gain",
                    format!("{v} is not a positive share, e.g. 0.05 for 5 %"),
                );
            }
        }
        Ok(())
    }
}

/// The next step of one group's search, from its probes so far (in any order; loads
/// probed twice count once, by their last outcome).
pub fn next_probe(search: &Search, probes: &[Probe]) -> Next {
    if probes.is_empty() {
        return Next::Probe(search.min);
    }
    match search.goal {
        SearchGoal::Slo => next_slo(search, probes),
        SearchGoal::Throughput => next_throughput(search, probes),
    }
}

/// Goal `slo`: the smallest load that missed, and the largest below it that met.
pub fn slo_bracket(probes: &[Probe]) -> (Option<f64>, Option<f64>) {
    let above = probes
        .iter()
        .filter(|p| !p.met)
        .map(|p| p.load)
        .reduce(f64::min);
    let best = probes
        .iter()
        .filter(|p| p.met && above.is_none_or(|a| p.load < a))
        .map(|p| p.load)
        .reduce(f64::max);
    (best, above)
}

fn next_slo(search: &Search, probes: &[Probe]) -> Next {
    let (best, above) = slo_bracket(probes);
    let capped = probes.len() >= search.max_points as usize;
    let done = |capped| {
        Next::Done(Answer {
            best,
            above,
            capped,
        })
    };
    let Some(lo) = best else {
        // Not even the smallest probe met it.
        return done(false);
    };
    let candidate = match above {
        None if lo >= search.max => return done(false),
        None => (lo * 2.0).min(search.max),
        Some(hi) if hi - lo <= search.resolution => return done(false),
        Some(hi) => {
            let mid = (lo + hi) / 2.0;
            if search.integer { mid.floor() } else { mid }
        }
    };
    if candidate <= lo || probes.iter().any(|p| p.load == candidate) {
        return done(false);
    }
    if capped {
        return done(true);
    }
    Next::Probe(candidate)
}

fn next_throughput(search: &Search, probes: &[Probe]) -> Next {
    let mut sorted: Vec<Probe> = probes.to_vec();
    sorted.sort_by(|a, b| a.load.total_cmp(&b.load));
    // Walk the doublings: the answer is the last load whose doubling paid.
    let mut best = sorted[0];
    for p in &sorted[1..] {
        if p.output_throughput < best.output_throughput * (1.0 + search.min_gain) {
            return Next::Done(Answer {
                best: Some(best.load),
                above: Some(p.load),
                capped: false,
            });
        }
        best = *p;
    }
    if best.load >= search.max {
        return Next::Done(Answer {
            best: Some(best.load),
            above: None,
            capped: false,
        });
    }
    if probes.len() >= search.max_points as usize {
        return Next::Done(Answer {
            best: Some(best.load),
            above: None,
            capped: true,
        });
    }
    Next::Probe((best.load * 2.0).min(search.max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo_search(min: f64, max: f64, max_points: u32) -> Search {
        Search {
            goal: SearchGoal::Slo,
            min,
            max,
            max_points,
            resolution: 1.0,
            min_gain: DEFAULT_MIN_GAIN,
            integer: true,
        }
    }

    /// Runs a search against a system whose limit is `limit` (loads up to it meet the SLO).
    fn run(search: &Search, limit: f64) -> (Answer, Vec<f64>) {
        let mut probes = Vec::new();
        loop {
            match next_probe(search, &probes) {
                Next::Probe(load) => probes.push(Probe {
                    load,
                    met: load <= limit,
                    output_throughput: 0.0,
                }),
                Next::Done(answer) => return (answer, probes.iter().map(|p| p.load).collect()),
            }
        }
    }

    #[test]
    fn slo_search_doubles_then_bisects_to_the_exact_limit() {
        let s = slo_search(1.0, 256.0, 16);
        let (answer, loads) = run(&s, 24.0);
        assert_eq!(answer.best, Some(24.0));
        assert_eq!(answer.above, Some(25.0));
        assert!(!answer.capped);
        // 1 2 4 8 16 32 (miss), then 24 (met) 28 (miss) 26 (miss) 25 (miss).
        assert_eq!(
            loads,
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 24.0, 28.0, 26.0, 25.0]
        );
    }

    #[test]
    fn every_limit_is_found_exactly_within_the_cap() {
        let s = slo_search(1.0, 256.0, 16);
        for limit in 1..=256 {
            let (answer, loads) = run(&s, f64::from(limit));
            assert_eq!(answer.best, Some(f64::from(limit)), "limit {limit}");
            assert!(loads.len() <= 16, "limit {limit}: {loads:?}");
        }
    }

    #[test]
    fn a_limit_below_min_and_one_above_max_are_said_so() {
        let s = slo_search(4.0, 64.0, 16);
        let (below, loads) = run(&s, 2.0);
        assert_eq!((below.best, below.above), (None, Some(4.0)));
        assert_eq!(loads, vec![4.0]);
        let (above, loads) = run(&s, 1000.0);
        assert_eq!((above.best, above.above), (Some(64.0), None));
        assert_eq!(loads, vec![4.0, 8.0, 16.0, 32.0, 64.0]);
    }

    #[test]
    fn the_cap_ends_a_search_with_its_bracket() {
        let s = slo_search(1.0, 1024.0, 5);
        let (answer, loads) = run(&s, 700.0);
        assert_eq!(loads.len(), 5);
        assert_eq!((answer.best, answer.above), (Some(16.0), None));
        assert!(answer.capped);
    }

    #[test]
    fn rate_searches_stop_at_the_resolution() {
        let s = Search {
            integer: false,
            resolution: 0.5,
            ..slo_search(1.0, 64.0, 20)
        };
        let (answer, _) = run(&s, 10.3);
        let (best, above) = (answer.best.unwrap(), answer.above.unwrap());
        assert!(
            best <= 10.3 && above > 10.3 && above - best <= 0.5,
            "{answer:?}"
        );
    }

    #[test]
    fn throughput_search_stops_where_doubling_stops_paying() {
        let s = Search {
            goal: SearchGoal::Throughput,
            ..slo_search(1.0, 256.0, 16)
        };
        // Throughput rises linearly up to 16 in flight, then stays flat.
        let tp = |load: f64| 100.0 * load.min(16.0);
        let mut probes = Vec::new();
        let answer = loop {
            match next_probe(&s, &probes) {
                Next::Probe(load) => probes.push(Probe {
                    load,
                    met: false,
                    output_throughput: tp(load),
                }),
                Next::Done(a) => break a,
            }
        };
        assert_eq!((answer.best, answer.above), (Some(16.0), Some(32.0)));
    }
}
