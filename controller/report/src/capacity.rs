//! Capacity at the SLO: for every sweep, GPU count and workload whose points were judged
//! against an `[slo]`, the largest load that met it and the smallest load above that
//! did not (a search sweep's answer, and the same question asked of a grid sweep's
//! points).

use std::collections::BTreeMap;

use fleetbench_proto::spec::{Probe, slo_bracket};
use fleetbench_results::summary::PointSummary;

/// One group's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityRow {
    pub sweep_id: String,
    pub model: String,
    pub gpus: u32,
    pub workload: String,
    /// `burst`, `concurrency` or `rate`: what the loads are.
    pub mode: String,
    /// The SLO described, e.g. `p99 ttft <= 2000 ms`.
    pub slo: String,
    /// The largest load that met the SLO (`None`: none did) and its goodput.
    pub best: Option<(f64, f64)>,
    /// The smallest load above `best` that missed it (`None`: none did).
    pub above: Option<f64>,
    /// Points judged in the group.
    pub points: usize,
}

/// The load of a point on its sweep's axis: the rate in rate mode, else the batch size.
pub fn load_of(p: &PointSummary) -> f64 {
    if p.meta.mode == "rate" {
        p.meta.request_rate
    } else {
        f64::from(p.meta.batch_size)
    }
}

/// The capacity rows of `points`, ordered by sweep, GPU count and workload. A point that
/// did not end `done` missed the SLO.
pub fn capacity_rows(points: &[PointSummary]) -> Vec<CapacityRow> {
    let mut groups: BTreeMap<(String, u32, String), Vec<&PointSummary>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.meta.slo.is_some()) {
        let workload = if p.meta.workload.is_empty() {
            format!("{}/{}", p.meta.input_tokens, p.meta.output_tokens)
        } else {
            p.meta.workload.clone()
        };
        groups
            .entry((p.meta.sweep_id.clone(), p.meta.gpus, workload))
            .or_default()
            .push(p);
    }
    groups
        .into_iter()
        .filter_map(|((sweep_id, gpus, workload), group)| {
            let first = group.first()?;
            // The search rule's bracket: a point that did not end `done` missed.
            let probes: Vec<Probe> = group
                .iter()
                .map(|p| Probe {
                    load: load_of(p),
                    met: p.meta.state == "done" && p.slo_met() == Some(true),
                    output_throughput: p.output_throughput,
                })
                .collect();
            let (best_load, above) = slo_bracket(&probes);
            let best = best_load.map(|b| {
                let goodput = group
                    .iter()
                    .find(|p| {
                        load_of(p) == b && p.meta.state == "done" && p.slo_met() == Some(true)
                    })
                    .and_then(|p| p.goodput);
                (b, goodput.unwrap_or(0.0))
            });
            Some(CapacityRow {
                sweep_id,
                model: first.meta.model.clone(),
                gpus,
                workload,
                mode: first.meta.mode.clone(),
                slo: first
                    .meta
                    .slo
                    .as_ref()
                    .map(|s| s.describe())
                    .unwrap_or_default(),
                best,
                above,
                points: group.len(),
            })
        })
        .collect()
}

/// `max 24 concurrent requests` / `max batch 8` / `max 3.5 req/s`, or why there is none.
pub fn answer(row: &CapacityRow) -> String {
    let load = |v: f64| match row.mode.as_str() {
        "rate" => format!("{v} req/s"),
        "concurrency" => format!("{v} concurrent requests"),
        _ => format!("batch {v}"),
    };
    match (row.best, row.above) {
        (Some((best, _)), Some(above)) => format!("max {} ({} missed)", load(best), load(above)),
        (Some((best, _)), None) => format!("max {} (every point met it)", load(best)),
        (None, Some(above)) => format!("none: even {} missed", load(above)),
        (None, None) => "no point judged".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetbench_proto::spec::{Objective, Slo};
    use fleetbench_results::summary::{PointMeta, summarize};

    fn point(batch: u32, met: bool) -> PointSummary {
        let meta = PointMeta {
            sweep_id: "s".into(),
            model: "m".into(),
            gpus: 2,
            batch_size: batch,
            mode: "concurrency".into(),
            state: "done".into(),
            workload: "128/32".into(),
            slo: Some(Slo {
                ttft: Some(Objective {
                    threshold_s: 2.0,
                    percentile: 99.0,
                }),
                ..Slo::default()
            }),
            ..PointMeta::default()
        };
        let mut p = summarize(meta, &[], &[]);
        p.slo_verdict = if met {
            "met".into()
        } else {
            "missed: x".into()
        };
        p.goodput = Some(f64::from(batch) / 2.0);
        p
    }

    #[test]
    fn the_largest_load_below_the_first_miss_is_the_capacity() {
        let points = vec![
            point(8, true),
            point(16, true),
            point(32, false),
            point(24, true),
            point(28, false),
            // Noise above the first miss does not count.
            point(64, true),
        ];
        let rows = capacity_rows(&points);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].best, Some((24.0, 12.0)));
        assert_eq!(rows[0].above, Some(28.0));
        assert_eq!(
            answer(&rows[0]),
            "max 24 concurrent requests (28 concurrent requests missed)"
        );
        assert_eq!(rows[0].slo, "p99 ttft <= 2000 ms");
    }

    #[test]
    fn points_without_an_slo_have_no_capacity() {
        let mut p = point(8, true);
        p.meta.slo = None;
        assert!(capacity_rows(&[p]).is_empty());
    }
}
