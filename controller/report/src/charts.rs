//! Which charts a report has and what each line holds, from [`ReportData`]:
//!
//! - per model and GPU count: the seed's dual plot (total output throughput and per-request
//!   output speed vs batch size, one line per workload) and the latency view (TTFT and TPOT
//!   p50 lines with p50–p99 bands);
//! - per model, over its GPU counts: scaling (throughput, per-request speed and throughput
//!   per GPU, one line per GPU count and workload) and the throughput vs TPOT trade-off;
//! - when hosts or engine settings differ at one GPU count: the dual plot with one line
//!   per host (or engine setting) and workload.
//!
//! Failed and crashed points are crosses; when one cell (model, GPU count, workload, batch
//! size, and host or setting for comparisons) was measured more than once, the point that
//! finished last is drawn.

use std::collections::BTreeMap;

use crate::data::{ReportData, Workload, has_batch_size, is_failed, latest, output_speed, stem};
use crate::plots::{Chart, Panel, Series, XAxis};
use fleetbench_results::summary::PointSummary;

/// The charts of one section of the report.
#[derive(Debug, Clone)]
pub struct Section {
    pub heading: String,
    pub model: String,
    /// `None` for the per-model (across GPU counts) section.
    pub gpus: Option<u32>,
    pub charts: Vec<Chart>,
}

fn gpus_label(n: u32) -> String {
    if n == 1 {
        "1 GPU".into()
    } else {
        format!("{n} GPUs")
    }
}

fn join_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.into()
    } else {
        items.join(", ")
    }
}

/// The (low, high) band of a point, if it has one.
type Band = dyn Fn(&PointSummary) -> Option<(f64, f64)>;

/// One line from points (any order): sorted by x; failed points become crosses at what
/// they measured (0 when nothing); points whose verdict is not `valid` stay on the line
/// and are also listed, with their verdict, as hollow markers.
fn series(
    label: String,
    points: &[&PointSummary],
    x: impl Fn(&PointSummary) -> Option<f64>,
    y: impl Fn(&PointSummary) -> Option<f64>,
    band: Option<&Band>,
) -> Series {
    let mut s = Series {
        label,
        ..Series::default()
    };
    let mut sorted: Vec<&PointSummary> = points.to_vec();
    sorted.sort_by(|a, b| x(a).unwrap_or(0.0).total_cmp(&x(b).unwrap_or(0.0)));
    for p in sorted {
        let Some(xv) = x(p) else { continue };
        if is_failed(p) {
            s.failed.push((xv, y(p).unwrap_or(0.0)));
            continue;
        }
        let Some(yv) = y(p) else { continue };
        s.points.push((xv, yv));
        if !p.verdict.is_empty() && p.verdict != "valid" {
            s.invalid.push((xv, yv, p.verdict.clone()));
        }
        if let Some((lo, hi)) = band.and_then(|b| b(p)) {
            s.band.push((xv, lo, hi));
        }
    }
    s
}

fn batch(p: &PointSummary) -> Option<f64> {
    Some(f64::from(p.meta.batch_size))
}

fn throughput(p: &PointSummary) -> Option<f64> {
    Some(p.output_throughput)
}

fn ms(v: Option<f64>) -> Option<f64> {
    v.map(|s| s * 1000.0)
}

/// Groups points into lines by `key`, keeping the latest point per (line, batch size).
fn lines<'a, K: Ord + Clone>(
    points: impl IntoIterator<Item = &'a PointSummary>,
    key: impl Fn(&PointSummary) -> K,
) -> BTreeMap<K, Vec<&'a PointSummary>> {
    let kept = latest(points.into_iter().filter(|p| has_batch_size(p)), |p| {
        (key(p), p.meta.batch_size)
    });
    let mut out: BTreeMap<K, Vec<&PointSummary>> = BTreeMap::new();
    for p in kept {
        out.entry(key(p)).or_default().push(p);
    }
    out
}

/// The seed's two panels for lines of points.
fn dual_panels<K>(
    lines: &BTreeMap<K, Vec<&PointSummary>>,
    label: impl Fn(&K) -> String,
) -> Vec<Panel> {
    let tput = lines
        .iter()
        .map(|(k, pts)| series(label(k), pts, batch, throughput, None))
        .collect();
    let speed = lines
        .iter()
        .map(|(k, pts)| series(label(k), pts, batch, output_speed, None))
        .collect();
    vec![
        Panel {
            title: "Total output throughput".into(),
            x: XAxis::BatchLog2,
            y_label: "output tokens/s (all requests)".into(),
            series: tput,
            legend_left: true,
        },
        Panel {
            title: "Per-request output speed (mean)".into(),
            x: XAxis::BatchLog2,
            y_label: "output tokens/s per request".into(),
            series: speed,
            legend_left: false,
        },
    ]
}

/// Every chart of the report, in order: each model's GPU counts, then its scaling view.
pub fn sections(data: &ReportData) -> Vec<Section> {
    let mut out = Vec::new();
    for model in data.models() {
        let counts = data.gpu_counts(&model);
        for &gpus in &counts {
            out.push(gpu_section(data, &model, gpus));
        }
        if let Some(s) = scaling_section(data, &model, &counts) {
            out.push(s);
        }
    }
    out
}

fn gpu_section(data: &ReportData, model: &str, gpus: u32) -> Section {
    let hosts = data.hosts(model, gpus);
    let engines = data.engines(model, gpus);
    let what = format!(
        "{model} · {} · host {} · {}",
        gpus_label(gpus),
        join_or(&hosts, "none"),
        join_or(&engines, "engine unknown")
    );
    let id = stem(model, Some(gpus));
    let by_workload = lines(data.points_of(model, gpus), Workload::of);
    let mut charts = vec![Chart {
        id: format!("{id}_throughput"),
        title: format!("Throughput vs batch size — {what}"),
        panels: dual_panels(&by_workload, Workload::label),
    }];
    let latency =
        |name: &str, pick: fn(&PointSummary) -> &fleetbench_results::summary::Percentiles| {
            let band = move |p: &PointSummary| {
                let pc = pick(p);
                Some((pc.p50? * 1000.0, pc.p99? * 1000.0))
            };
            Panel {
                title: format!("{name}: p50 line, p50–p99 band"),
                x: XAxis::BatchLog2,
                y_label: format!("{name} (ms)"),
                series: by_workload
                    .iter()
                    .map(|(w, pts)| series(w.label(), pts, batch, |p| ms(pick(p).p50), Some(&band)))
                    .collect(),
                legend_left: true,
            }
        };
    charts.push(Chart {
        id: format!("{id}_latency"),
        title: format!("Latency vs batch size — {what}"),
        panels: vec![
            latency("TTFT", |p| &p.ttft_s),
            latency("TPOT", |p| &p.tpot_s),
        ],
    });
    if hosts.len() > 1 {
        let by_host = lines(data.points_of(model, gpus), |p| {
            (p.meta.host.clone(), Workload::of(p))
        });
        charts.push(Chart {
            id: format!("{id}_hosts"),
            title: format!("Hosts compared — {model} · {}", gpus_label(gpus)),
            panels: dual_panels(&by_host, |(h, w)| format!("{h} · {}", w.label())),
        });
    }
    // The same model at the same GPU count on different GPU models (B580 vs B60 vs H100).
    let gpu_models: std::collections::BTreeSet<&str> = data
        .points_of(model, gpus)
        .map(|p| p.meta.gpu_model.as_str())
        .filter(|m| !m.is_empty())
        .collect();
    if gpu_models.len() > 1 {
        let by_gpu = lines(
            data.points_of(model, gpus)
                .filter(|p| !p.meta.gpu_model.is_empty()),
            |p| (p.meta.gpu_model.clone(), Workload::of(p)),
        );
        charts.push(Chart {
            id: format!("{id}_gpu_models"),
            title: format!("GPU models compared — {model} · {}", gpus_label(gpus)),
            panels: dual_panels(&by_gpu, |(g, w)| format!("{g} · {}", w.label())),
        });
    }
    let settings: std::collections::BTreeSet<String> = data
        .points_of(model, gpus)
        .map(|p| data.engine_setting(p))
        .collect();
    if settings.len() > 1 {
        let index: BTreeMap<String, usize> = settings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i + 1))
            .collect();
        let by_setting = lines(data.points_of(model, gpus), |p| {
            (
                index.get(&data.engine_setting(p)).copied().unwrap_or(0),
                Workload::of(p),
            )
        });
        charts.push(Chart {
            id: format!("{id}_engines"),
            title: format!(
                "Engine settings compared (see the settings table) — {model} · {}",
                gpus_label(gpus)
            ),
            panels: dual_panels(&by_setting, |(i, w)| {
                format!("settings {i} · {}", w.label())
            }),
        });
    }
    Section {
        heading: format!("{model} — {}", gpus_label(gpus)),
        model: model.to_owned(),
        gpus: Some(gpus),
        charts,
    }
}

fn scaling_section(data: &ReportData, model: &str, counts: &[u32]) -> Option<Section> {
    let by_gpus = lines(data.points_of_model(model), |p| {
        (p.meta.gpus, Workload::of(p))
    });
    if by_gpus.is_empty() {
        return None;
    }
    let label = |(g, w): &(u32, Workload)| format!("{} · {}", gpus_label(*g), w.label());
    let mut panels = dual_panels(&by_gpus, label);
    panels.push(Panel {
        title: "Output throughput per GPU".into(),
        x: XAxis::BatchLog2,
        y_label: "output tokens/s per GPU".into(),
        series: by_gpus
            .iter()
            .map(|(k, pts)| {
                series(
                    label(k),
                    pts,
                    batch,
                    |p| Some(p.output_throughput / f64::from(p.meta.gpus.max(1))),
                    None,
                )
            })
            .collect(),
        legend_left: true,
    });
    let counts_text: Vec<String> = counts.iter().map(|&n| gpus_label(n)).collect();
    let mut hosts = std::collections::BTreeSet::new();
    let mut engines = std::collections::BTreeSet::new();
    for &n in counts {
        hosts.extend(data.hosts(model, n));
        engines.extend(data.engines(model, n));
    }
    let what = format!(
        "{model} · host {} · {}",
        join_or(&hosts.into_iter().collect::<Vec<_>>(), "none"),
        join_or(&engines.into_iter().collect::<Vec<_>>(), "engine unknown")
    );
    let id = stem(model, None);
    let tradeoff = Panel {
        title: "Throughput vs TPOT (each marker a batch size)".into(),
        x: XAxis::Linear("TPOT p50 (ms per output token)".into()),
        y_label: "output tokens/s (all requests)".into(),
        series: by_gpus
            .iter()
            .map(|(k, pts)| series(label(k), pts, |p| ms(p.tpot_s.p50), throughput, None))
            .collect(),
        legend_left: false,
    };
    Some(Section {
        heading: format!("{model} — scaling across {}", counts_text.join(", ")),
        model: model.to_owned(),
        gpus: None,
        charts: vec![
            Chart {
                id: format!("{id}_scaling"),
                title: format!("Scaling across GPU counts — {what}"),
                panels,
            },
            Chart {
                id: format!("{id}_tradeoff"),
                title: format!("Interactivity vs throughput — {what}"),
                panels: vec![tradeoff],
            },
        ],
    })
}
