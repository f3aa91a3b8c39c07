//! Point summaries as text: an aligned table for people, CSV and JSON for scripts. All
//! three come from one list of fields, so they never disagree. `controllerctl`, `local`
//! and the reports' CSV print through these.

use fleetbench_proto::pb;
use serde_json::{Value, json};

fn pct(prefix: &str, p: Option<&pb::Percentiles>) -> Vec<(String, Value)> {
    let p = p.copied().unwrap_or_default();
    [
        ("mean", p.mean),
        ("p50", p.p50),
        ("p90", p.p90),
        ("p99", p.p99),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{prefix}_{k}"), json!(v)))
    .collect()
}

/// Every field of a point summary, in a stable order.
pub fn fields(s: &pb::PointSummary) -> Vec<(String, Value)> {
    let mut f: Vec<(String, Value)> = vec![
        ("sweep_id".into(), json!(s.sweep_id)),
        ("point_id".into(), json!(s.point_id)),
        ("point_index".into(), json!(s.point_index)),
        ("model".into(), json!(s.model)),
        ("gpus".into(), json!(s.gpus)),
        ("host".into(), json!(s.host)),
        ("agent".into(), json!(s.agent)),
        ("state".into(), json!(s.state)),
        ("mode".into(), json!(s.mode)),
        ("batch_size".into(), json!(s.batch_size)),
        ("request_rate".into(), json!(s.request_rate)),
        ("input_tokens".into(), json!(s.input_tokens)),
        ("output_tokens".into(), json!(s.output_tokens)),
        ("endpoint".into(), json!(s.endpoint)),
        ("completed".into(), json!(s.completed)),
        ("failed".into(), json!(s.failed)),
        ("duration_s".into(), json!(s.duration_s)),
        ("request_throughput".into(), json!(s.request_throughput)),
        ("output_throughput".into(), json!(s.output_throughput)),
        (
            "total_token_throughput".into(),
            json!(s.total_token_throughput),
        ),
        (
            "per_request_output_speed_mean".into(),
            json!(s.per_request_output_speed_mean),
        ),
    ];
    f.extend(pct("ttft_s", s.ttft_s.as_ref()));
    f.extend(pct("tpot_s", s.tpot_s.as_ref()));
    f.extend(pct("itl_s", s.itl_s.as_ref()));
    f.extend(pct("e2el_s", s.e2el_s.as_ref()));
    f.push(("server_running_max".into(), json!(s.server_running_max)));
    f.push(("server_waiting_max".into(), json!(s.server_waiting_max)));
    f.push((
        "server_kv_cache_usage_max".into(),
        json!(s.server_kv_cache_usage_max),
    ));
    f.push(("server_preemptions".into(), json!(s.server_preemptions)));
    f.push(("input_len_mismatches".into(), json!(s.input_len_mismatches)));
    f.push((
        "output_len_mismatches".into(),
        json!(s.output_len_mismatches),
    ));
    f.push(("achieved_rate".into(), json!(s.achieved_rate)));
    f.push(("achieved_concurrency".into(), json!(s.achieved_concurrency)));
    f.extend(pct("send_lag_s", s.send_lag_s.as_ref()));
    f.push(("client_cpu_cores".into(), json!(s.client_cpu_cores)));
    f.push(("client_cores".into(), json!(s.client_cores)));
    f.push(("fallbacks".into(), json!(s.fallbacks.join("; "))));
    f.push(("verdict".into(), json!(s.verdict)));
    f.push(("error".into(), json!(s.error)));
    f
}

pub fn to_json(points: &[pb::PointSummary]) -> String {
    let rows: Vec<Value> = points
        .iter()
        .map(|s| Value::Object(fields(s).into_iter().collect()))
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

/// One CSV cell: null is empty; text with a comma, quote or newline is quoted.
pub fn csv_cell(v: &Value) -> String {
    let raw = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if raw.contains([',', '"', '\n']) {
        format!("\"{}\"", raw.replace('"', "\"\""))
    } else {
        raw
    }
}

pub fn to_csv(points: &[pb::PointSummary]) -> String {
    let mut out = String::new();
    let header: Vec<String> = fields(&pb::PointSummary::default())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    for s in points {
        let row: Vec<String> = fields(s).iter().map(|(_, v)| csv_cell(v)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// Seconds as milliseconds with one decimal; `-` when absent.
pub fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{:.1}", x * 1000.0))
}

pub fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// The load level of a point: `8` (burst batch), `c8` (8 in flight), `12.5/s` (rate).
fn load_label(s: &pb::PointSummary) -> String {
    load_text(&s.mode, s.batch_size, s.request_rate)
}

/// `load_label` from the mode, batch size and request rate.
pub fn load_text(mode: &str, batch_size: u32, request_rate: f64) -> String {
    match mode {
        "rate" => format!("{request_rate}/s"),
        "concurrency" => format!("c{batch_size}"),
        _ => batch_size.to_string(),
    }
}

/// The table people read: one row per point, latencies in milliseconds.
pub fn to_table(points: &[pb::PointSummary]) -> String {
    table(points, false)
}

/// [`to_table`] with the model and sweep of each point in front: points of many sweeps.
pub fn to_fleet_table(points: &[pb::PointSummary]) -> String {
    table(points, true)
}

fn table(points: &[pb::PointSummary], with_ids: bool) -> String {
    let ids: &[&str] = if with_ids { &["model", "sweep"] } else { &[] };
    let columns = [
        "gpus",
        "load",
        "in/out",
        "host",
        "state",
        "ok",
        "fail",
        "dur s",
        "req/s",
        "out tok/s",
        "tot tok/s",
        "tok/s/req",
        "ttft p50",
        "ttft p99",
        "tpot p50",
        "tpot p99",
        "itl p50",
        "e2el p50",
        "srv run",
        "lag p99",
        "cpu",
        "verdict",
    ];
    let header: Vec<&str> = ids.iter().chain(&columns).copied().collect();
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|s| {
            let ttft = s.ttft_s.unwrap_or_default();
            let tpot = s.tpot_s.unwrap_or_default();
            let itl = s.itl_s.unwrap_or_default();
            let e2el = s.e2el_s.unwrap_or_default();
            let ids = if with_ids {
                vec![s.model.clone(), s.sweep_id.clone()]
            } else {
                Vec::new()
            };
            let cells = [
                s.gpus.to_string(),
                load_label(s),
                format!("{}/{}", s.input_tokens, s.output_tokens),
                s.host.clone(),
                s.state.clone(),
                s.completed.to_string(),
                s.failed.to_string(),
                format!("{:.2}", s.duration_s),
                format!("{:.2}", s.request_throughput),
                num(s.output_throughput),
                num(s.total_token_throughput),
                s.per_request_output_speed_mean
                    .map_or_else(|| "-".into(), num),
                ms(ttft.p50),
                ms(ttft.p99),
                ms(tpot.p50),
                ms(tpot.p99),
                ms(itl.p50),
                ms(e2el.p50),
                s.server_running_max
                    .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
                ms(s.send_lag_s.and_then(|p| p.p99)),
                format!("{:.2}", s.client_cpu_cores),
                s.verdict.clone(),
            ];
            ids.into_iter().chain(cells).collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out.push_str(
        "(latencies in ms; load = burst batch, cN = N in flight, R/s = request rate; tok/s/req = mean per-request output speed; srv run = most requests the engine reported running; lag = actual - scheduled send; cpu = load generator cores busy)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> pb::PointSummary {
        pb::PointSummary {
            point_id: "s/p000".into(),
            gpus: 2,
            batch_size: 8,
            input_tokens: 128,
            output_tokens: 32,
            completed: 8,
            output_throughput: 123.456,
            ttft_s: Some(pb::Percentiles {
                mean: Some(0.1),
                p50: Some(0.1),
                p90: Some(0.2),
                p99: Some(0.25),
            }),
            error: "a, \"b\"".into(),
            ..Default::default()
        }
    }

    #[test]
    fn csv_has_a_header_and_escapes() {
        let csv = to_csv(&[summary()]);
        let mut lines = csv.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("sweep_id,point_id"));
        let row = lines.next().unwrap();
        assert_eq!(header.split(',').count(), fields(&summary()).len());
        assert!(row.ends_with("\"a, \"\"b\"\"\""), "{row}");
        assert!(row.contains(",123.456,"), "{row}");
    }

    #[test]
    fn json_and_table_carry_the_numbers() {
        let j: Value = serde_json::from_str(&to_json(&[summary()])).unwrap();
        assert_eq!(j[0]["ttft_s_p99"], 0.25);
        assert_eq!(j[0]["tpot_s_p50"], Value::Null);
        let t = to_table(&[summary()]);
        assert!(t.contains("250.0"), "{t}");
        assert!(t.contains("128/32"), "{t}");
        // Every row cell has a header: nothing is cut off by the column zip.
        let header_cells = t.lines().next().unwrap().split_whitespace().count();
        assert!(t.lines().next().unwrap().ends_with("verdict"), "{t}");
        assert!(header_cells >= 20, "{t}");
    }
}
