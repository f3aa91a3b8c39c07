//! The report as one self-contained HTML file: plots as inline SVG, the summary table of
//! every point, the sweeps' metadata, validity verdicts and engine crash forensics. The
//! markup is well-formed XML (XHTML syntax), so any XML parser reads it.

use std::fmt::Write as _;

use crate::capacity::{answer, capacity_rows};
use crate::charts::Section;
use crate::data::{ReportData, output_speed};
use crate::markup::escape;
use crate::plots::format_number;
use fleetbench_results::summary::PointSummary;

const STYLE: &str = "body{font-family:'DejaVu Sans',sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}\
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}\
th{background:#f0f0f0}td.t{text-align:left}tr.bad td{background:#fde8e8}\
figure{margin:0.5em 0 1.5em}svg{max-width:100%;height:auto}\
pre{background:#f6f6f6;padding:0.5em;font-size:0.8em;overflow-x:auto}\
.links{font-size:0.85em}";

/// What the page is for: files next to it (links to the PNG/SVG/CSV files) or served
/// over HTTP (no files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    Files,
    None,
}

fn opt(v: Option<f64>, scale: f64) -> String {
    v.map(|v| format_number(v * scale))
        .unwrap_or_else(|| "–".into())
}

fn cell(out: &mut String, text: &str, left: bool) {
    let _ = write!(
        out,
        "<td{}>{}</td>",
        if left { " class=\"t\"" } else { "" },
        escape(text)
    );
}

fn points_table(out: &mut String, points: &[&PointSummary]) {
    out.push_str(
        "<table class=\"points\"><thead><tr><th>point</th><th>sweep</th><th>host</th>\
<th>in/out tok</th><th>mode</th><th>batch</th><th>state</th><th>verdict</th>\
<th>completed</th><th>failed</th><th>output tok/s</th><th>total tok/s</th>\
<th>per-request tok/s</th><th>TTFT p50 ms</th><th>TTFT p99 ms</th><th>TPOT p50 ms</th>\
<th>TPOT p99 ms</th><th>E2EL p50 s</th></tr></thead><tbody>\n",
    );
    for p in points {
        let m = &p.meta;
        let bad = m.state != "done" || p.verdict != "valid";
        let _ = write!(
            out,
            "<tr{} id=\"point-{}\">",
            if bad { " class=\"bad\"" } else { "" },
            escape(&m.point_id.replace('/', "-"))
        );
        cell(out, &m.point_id, true);
        cell(out, &m.sweep_id, true);
        cell(out, &m.host, true);
        cell(
            out,
            &format!("{}/{}", m.input_tokens, m.output_tokens),
            false,
        );
        cell(out, &m.mode, true);
        let load = if m.mode == "rate" {
            format!("{}/s", m.request_rate)
        } else {
            m.batch_size.to_string()
        };
        cell(out, &load, false);
        cell(out, &m.state, true);
        cell(out, &p.verdict, true);
        cell(out, &p.completed.to_string(), false);
        cell(out, &p.failed.to_string(), false);
        cell(out, &format_number(p.output_throughput), false);
        cell(out, &format_number(p.total_token_throughput), false);
        cell(out, &opt(output_speed(p), 1.0), false);
        cell(out, &opt(p.ttft_s.p50, 1000.0), false);
        cell(out, &opt(p.ttft_s.p99, 1000.0), false);
        cell(out, &opt(p.tpot_s.p50, 1000.0), false);
        cell(out, &opt(p.tpot_s.p99, 1000.0), false);
        cell(out, &opt(p.e2el_s.p50, 1.0), false);
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn sweeps_table(out: &mut String, data: &ReportData) {
    out.push_str(
        "<h2 id=\"sweeps\">Sweeps</h2>\n<table class=\"sweeps\"><thead><tr><th>sweep</th>\
<th>name</th><th>model</th><th>GPUs</th><th>hosts</th><th>engine image</th><th>digest</th>\
<th>engine version</th><th>engine kind</th><th>runtime</th><th>engine args</th><th>load</th>\
<th>fleetbench</th></tr></thead><tbody>\n",
    );
    for f in data.sweeps() {
        out.push_str("<tr>");
        cell(out, &f.sweep_id, true);
        cell(out, &f.meta.sweep_name, true);
        cell(out, &f.model, true);
        cell(out, &f.gpus.to_string(), false);
        cell(out, &f.meta.hosts.join(","), true);
        cell(out, &f.meta.engine_image, true);
        cell(out, &f.meta.engine_image_digest, true);
        cell(out, &f.meta.engine_version, true);
        cell(out, &f.meta.engine_kind, true);
        cell(out, &f.meta.engine_runtime, true);
        cell(out, &f.meta.engine_args, true);
        cell(out, &f.meta.load, true);
        cell(out, &f.meta.version, true);
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn settings_table(out: &mut String, data: &ReportData) {
    let settings: std::collections::BTreeSet<String> =
        data.points.iter().map(|p| data.engine_setting(p)).collect();
    if settings.len() < 2 {
        return;
    }
    out.push_str(
        "<h2 id=\"settings\">Engine settings</h2>\n<table class=\"settings\"><thead><tr>\
<th>settings</th><th>engine and arguments</th></tr></thead><tbody>\n",
    );
    for (i, s) in settings.iter().enumerate() {
        out.push_str("<tr>");
        cell(out, &(i + 1).to_string(), false);
        cell(out, s, true);
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

/// "Capacity at the SLO": each judged group's largest load that met its SLO.
fn capacity(out: &mut String, data: &ReportData) {
    let rows = capacity_rows(&data.points);
    if rows.is_empty() {
        return;
    }
    out.push_str(
        "<h2 id=\"capacity\">Capacity at the SLO</h2>\n<p>Per sweep, GPU count and workload: \
         the largest load whose point met the sweep's <code>[slo]</code>, below the smallest \
         that missed it (a <code>[search]</code> sweep's answer).</p>\n<table \
         class=\"capacity\"><thead><tr><th>sweep</th><th>model</th><th>gpus</th>\
         <th>workload</th><th>SLO</th><th>capacity</th><th>goodput there (req/s)</th>\
         <th>points</th></tr></thead><tbody>\n",
    );
    for r in &rows {
        out.push_str("<tr>");
        cell(out, &r.sweep_id, true);
        cell(out, &r.model, true);
        cell(out, &r.gpus.to_string(), false);
        cell(out, &r.workload, true);
        cell(out, &r.slo, true);
        cell(out, &answer(r), true);
        cell(
            out,
            &r.best
                .map_or_else(|| "-".into(), |(_, g)| format!("{g:.2}")),
            false,
        );
        cell(out, &r.points.to_string(), false);
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn verdicts(out: &mut String, data: &ReportData) {
    let bad: Vec<&PointSummary> = data
        .points
        .iter()
        .filter(|p| p.meta.state != "done" || p.verdict != "valid")
        .collect();
    let _ = writeln!(
        out,
        "<h2 id=\"validity\">Validity</h2>\n<p>{} of {} points valid.</p>",
        data.points.len() - bad.len(),
        data.points.len()
    );
    if bad.is_empty() {
        return;
    }
    out.push_str(
        "<p>In the plots, a point that measured but is not valid is a hollow ring on its line \
         (hover over it for its verdict); a point that failed is a cross.</p>\n",
    );
    out.push_str("<ul class=\"verdicts\">\n");
    for p in bad {
        let _ = writeln!(
            out,
            "<li><b>{}</b> ({}, batch {}): {}{}</li>",
            escape(&p.meta.point_id),
            escape(&p.meta.state),
            p.meta.batch_size,
            escape(&p.verdict),
            if p.meta.error.is_empty() {
                String::new()
            } else {
                format!(" — {}", escape(&p.meta.error))
            }
        );
    }
    out.push_str("</ul>\n");
}

fn forensics(out: &mut String, data: &ReportData) {
    let crashes: Vec<_> = data
        .sweeps()
        .into_iter()
        .flat_map(|f| {
            f.meta
                .engine_events
                .iter()
                .filter(|e| e.is_crash())
                .map(move |e| (f, e))
        })
        .collect();
    out.push_str("<h2 id=\"crashes\">Engine crashes</h2>\n");
    if crashes.is_empty() {
        out.push_str("<p>No engine died or failed to start.</p>\n");
        return;
    }
    for (f, e) in crashes {
        let _ = writeln!(
            out,
            "<h3>{} — {} ({})</h3>\n<p>exit code {}, OOM-killed {}, died {} after the point started; container {}, image {}, GPUs {:?}: {}</p>",
            escape(&e.point_id),
            escape(&e.kind),
            escape(&f.sweep_id),
            e.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "–".into()),
            e.oom_killed
                .map(|b| b.to_string())
                .unwrap_or_else(|| "unknown".into()),
            e.died_after_s
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "–".into()),
            escape(if e.container.is_empty() {
                "–"
            } else {
                &e.container
            }),
            escape(if e.image.is_empty() { "–" } else { &e.image }),
            e.gpu_ids,
            escape(&e.message),
        );
        if !e.log_tail.is_empty() {
            let _ = writeln!(out, "<pre>{}</pre>", escape(&e.log_tail.join("\n")));
        }
    }
}

/// The whole page. `svgs` holds each chart's SVG, in section and chart order.
pub fn page(
    data: &ReportData,
    sections: &[Section],
    svgs: &[Vec<String>],
    title: &str,
    links: Links,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\
<meta charset=\"utf-8\"/>\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
<h1>{}</h1>\n<p>{} points from {} points files under <code>{}</code>; generated {}.</p>\n",
        escape(title),
        escape(title),
        data.points.len(),
        data.files.len(),
        escape(&data.dir.display().to_string()),
        escape(
            &chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        ),
    );
    if links == Links::Files {
        out.push_str("<p class=\"links\">Summaries as CSV: <a href=\"points.csv\">points.csv</a> (every point).</p>\n");
    }
    for (path, why) in &data.unreadable {
        let _ = writeln!(
            out,
            "<p class=\"bad\">Not read: {}: {}</p>",
            escape(&path.display().to_string()),
            escape(why)
        );
    }
    out.push_str("<nav><ul>\n");
    for (i, s) in sections.iter().enumerate() {
        let _ = writeln!(out, "<li><a href=\"#s{i}\">{}</a></li>", escape(&s.heading));
    }
    if !capacity_rows(&data.points).is_empty() {
        out.push_str("<li><a href=\"#capacity\">Capacity at the SLO</a></li>");
    }
    out.push_str("<li><a href=\"#sweeps\">Sweeps</a></li><li><a href=\"#validity\">Validity</a></li><li><a href=\"#crashes\">Engine crashes</a></li>\n</ul></nav>\n");
    for (i, s) in sections.iter().enumerate() {
        let _ = writeln!(out, "<h2 id=\"s{i}\">{}</h2>", escape(&s.heading));
        for (c, chart) in s.charts.iter().enumerate() {
            let _ = writeln!(out, "<figure id=\"{}\">", escape(&chart.id));
            if let Some(svg) = svgs.get(i).and_then(|v| v.get(c)) {
                out.push_str(svg);
            }
            if links == Links::Files {
                let id = escape(&chart.id);
                let _ = writeln!(
                    out,
                    "<figcaption class=\"links\">{} — <a href=\"{id}.png\">PNG</a> · <a href=\"{id}.svg\">SVG</a></figcaption>",
                    escape(&chart.title)
                );
            } else {
                let _ = writeln!(out, "<figcaption>{}</figcaption>", escape(&chart.title));
            }
            out.push_str("</figure>\n");
        }
        if let Some(gpus) = s.gpus {
            let pts: Vec<&PointSummary> = data.points_of(&s.model, gpus).collect();
            if links == Links::Files {
                let _ = writeln!(
                    out,
                    "<p class=\"links\">These points as CSV: <a href=\"{0}.csv\">{0}.csv</a></p>",
                    escape(&crate::data::stem(&s.model, Some(gpus)))
                );
            }
            points_table(&mut out, &pts);
        }
    }
    let rate_points = data
        .points
        .iter()
        .filter(|p| !crate::data::has_batch_size(p))
        .count();
    if rate_points > 0 {
        let _ = writeln!(
            out,
            "<p>{rate_points} rate-mode points have no batch size: they are in the tables, not in the plots.</p>"
        );
    }
    sweeps_table(&mut out, data);
    settings_table(&mut out, data);
    capacity(&mut out, data);
    verdicts(&mut out, data);
    forensics(&mut out, data);
    out.push_str("</body>\n</html>\n");
    out
}

/// The list of sweeps under a results folder, for `GET /`.
pub fn index_page(dir: &str, sweeps: &[String]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\
<meta charset=\"utf-8\"/>\n<title>fleetbench sweeps</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
<h1>fleetbench sweeps</h1>\n<p>Results under <code>{}</code>.</p>\n<ul>\n",
        escape(dir)
    );
    for s in sweeps {
        let _ = writeln!(
            out,
            "<li><a href=\"/sweeps/{0}/report\">{0}</a></li>",
            escape(s)
        );
    }
    if sweeps.is_empty() {
        out.push_str("<li>no results yet</li>\n");
    }
    out.push_str("</ul>\n</body>\n</html>\n");
    out
}
