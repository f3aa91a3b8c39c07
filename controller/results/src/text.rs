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
    f.push(("warmup_waves".into(), json!(s.warmup_waves)));
    f.push(("warmup_converged".into(), json!(s.warmup_converged)));
    f.push((
        "warmup_last_output_tps".into(),
        json!(s.warmup_last_output_tps),
    ));
    f.push(("gpu_model".into(), json!(s.gpu_model)));
    f.push(("gpu_driver".into(), json!(s.gpu_driver)));
    f.push(("gpu_vendor".into(), json!(s.gpu_vendor)));
    f.push(("gpu_memory_gib".into(), json!(s.gpu_memory_gib)));
    f.push(("gpu_pci_bus_ids".into(), json!(s.gpu_pci_bus_ids)));
    f.push(("cpu_model".into(), json!(s.cpu_model)));
    f.push(("verdict".into(), json!(s.verdict)));
    f.push(("slo".into(), json!(s.slo)));
    f.push(("goodput".into(), json!(s.goodput)));
    f.push(("slo_attainment".into(), json!(s.slo_attainment)));
    f.push(("slo_verdict".into(), json!(s.slo_verdict)));
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
    // The host column only where it tells points apart (or many sweeps are listed).
    let with_host = with_ids
        || points
            .iter()
            .any(|p| points.first().is_some_and(|f| f.host != p.host));
    let mut header: Vec<&str> = if with_ids {
        vec!["model", "sweep"]
    } else {
        Vec::new()
    };
    header.extend(["gpus", "load", "in/out"]);
    if with_host {
        header.push("host");
    }
    header.extend([
        "state", "ok", "fail", "req/s", "out/s", "tok/s", "ttft50", "ttft99", "tpot50", "e2el50",
        "lag99",
    ]);
    // Goodput and the SLO verdict only where a point was judged against an SLO.
    let with_slo = points.iter().any(|p| !p.slo.is_empty());
    if with_slo {
        header.extend(["good/s", "slo"]);
    }
    header.push("verdict");
    // One numbered note per distinct verdict that is not `valid`.
    let mut notes: Vec<&str> = Vec::new();
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|s| {
            let ttft = s.ttft_s.unwrap_or_default();
            let tpot = s.tpot_s.unwrap_or_default();
            let e2el = s.e2el_s.unwrap_or_default();
            let mut cells = if with_ids {
                vec![s.model.clone(), s.sweep_id.clone()]
            } else {
                Vec::new()
            };
            cells.extend([
                s.gpus.to_string(),
                load_label(s),
                format!("{}/{}", s.input_tokens, s.output_tokens),
            ]);
            if with_host {
                cells.push(s.host.clone());
            }
            let verdict = if s.verdict == "valid" || s.verdict.is_empty() {
                s.verdict.clone()
            } else {
                let n = notes
                    .iter()
                    .position(|v| *v == s.verdict)
                    .unwrap_or_else(|| {
                        notes.push(&s.verdict);
                        notes.len() - 1
                    })
                    + 1;
                format!("{} ({n})", verdict_codes(&s.verdict))
            };
            cells.extend([
                s.state.clone(),
                s.completed.to_string(),
                s.failed.to_string(),
                format!("{:.2}", s.request_throughput),
                short(Some(s.output_throughput)),
                short(Some(s.total_token_throughput)),
                short_ms(ttft.p50),
                short_ms(ttft.p99),
                short_ms(tpot.p50),
                short_ms(e2el.p50),
                short_ms(s.send_lag_s.and_then(|p| p.p99)),
            ]);
            if with_slo {
                cells.push(s.goodput.map_or_else(|| "-".into(), |g| format!("{g:.2}")));
                cells.push(match s.slo_verdict.as_str() {
                    "" => "-".into(),
                    "met" => "met".into(),
                    _ => "missed".into(),
                });
            }
            cells.push(verdict);
            cells
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let last = widths.len().saturating_sub(1);
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            // The verdict (last) is left-aligned and not padded: its codes vary in length.
            .map(|(i, (c, w))| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    for (i, v) in notes.iter().enumerate() {
        out.push_str(&wrap(&format!("({}) {v}", i + 1), NOTE_WIDTH, "    "));
    }
    out.push_str(&wrap(
        "latencies in ms (p50, p99); load = burst batch, cN = N in flight, R/s = request rate; \
         out/s, tok/s = output and total tokens per second; lag = actual - scheduled send; \
         good/s = requests/s meeting every [slo] objective; slo = whether the point met it; \
         verdict codes: failed, none, input, output, lag, conc, cpu, inflight, shared, \
         fallback (full text above and in --format csv/json)",
        NOTE_WIDTH,
        "",
    ));
    out
}

/// A table number: one decimal below 1000, none from there on (the table stays narrow);
/// `-` when absent.
fn short(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
    }
}

/// Seconds as [`short`] milliseconds.
fn short_ms(v: Option<f64>) -> String {
    short(v.map(|x| x * 1000.0))
}

/// Width the notes under a table are wrapped to.
const NOTE_WIDTH: usize = 100;

/// `text` wrapped at spaces to lines of at most `width` characters (a longer word stays
/// whole), continuation lines starting with `indent`; ends with a newline.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
        }
        if !line.trim().is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The short code of one verdict reason (the texts of `summary::verdict`): `failed`,
/// `none`, `input`, `output`, `lag`, `conc`, `cpu`, `inflight`, `shared`, `fallback`, or
/// `other` for a reason this table does not know.
pub fn reason_code(reason: &str) -> &'static str {
    let r = reason.trim();
    if r.starts_with("no requests measured") {
        "none"
    } else if r.contains("requests failed") {
        "failed"
    } else if r.contains("input tokens") {
        "input"
    } else if r.contains("output tokens") {
        "output"
    } else if r.starts_with("send lag") {
        "lag"
    } else if r.starts_with("concurrency") {
        "conc"
    } else if r.starts_with("client CPU") {
        "cpu"
    } else if r.starts_with("engine saw at most") {
        "inflight"
    } else if r.starts_with("engine had up to") {
        "shared"
    } else if r.starts_with("engine fallback") {
        "fallback"
    } else {
        "other"
    }
}

/// The codes of a verdict's reasons (`"; "`-separated), comma-separated, each once:
/// `valid` stays `valid`.
pub fn verdict_codes(verdict: &str) -> String {
    if verdict == "valid" {
        return verdict.to_string();
    }
    let mut codes: Vec<&str> = Vec::new();
    for reason in verdict.split("; ").filter(|r| !r.trim().is_empty()) {
        let code = reason_code(reason);
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes.join(",")
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
        assert!(header_cells >= 14, "{t}");
    }

    fn realistic(verdict: &str) -> pb::PointSummary {
        pb::PointSummary {
            gpus: 1,
            batch_size: 64,
            mode: "burst".into(),
            input_tokens: 1024,
            output_tokens: 512,
            host: "gpu-host-01".into(),
            state: "failed".into(),
            completed: 512,
            failed: 12,
            request_throughput: 12.34,
            output_throughput: 12_345.6,
            total_token_throughput: 23_456.7,
            ttft_s: Some(pb::Percentiles {
                p50: Some(1.2345),
                p99: Some(2.3456),
                ..Default::default()
            }),
            tpot_s: Some(pb::Percentiles {
                p50: Some(0.0123),
                ..Default::default()
            }),
            e2el_s: Some(pb::Percentiles {
                p50: Some(12.3456),
                ..Default::default()
            }),
            server_running_max: Some(256.0),
            send_lag_s: Some(pb::Percentiles {
                p99: Some(0.0136),
                ..Default::default()
            }),
            client_cpu_cores: 1.99,
            verdict: verdict.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_table_with_long_verdicts_fits_a_terminal() {
        let long = "send lag p99 13.6 ms > 10 ms: requests did not leave when scheduled; \
                    client CPU-saturated (1.99 of 2 cores busy): the point measured the load \
                    generator; engine saw at most 9 requests in flight, the client had 62 (40 \
                    scrapes): requests waited before reaching the engine";
        let mut other = realistic("valid");
        other.host = "b".into();
        let points = [
            realistic(long),
            other,
            realistic(long),
            realistic("no requests measured"),
        ];
        let t = to_table(&points);
        for line in t.lines() {
            assert!(
                line.chars().count() <= 120,
                "{} chars: {line}\n{t}",
                line.len()
            );
        }
        let rows: Vec<&str> = t.lines().collect();
        assert!(rows[1].ends_with(" lag,cpu,inflight (1)"), "{t}");
        assert!(rows[2].ends_with(" valid"), "{t}");
        assert!(rows[3].ends_with("(1)"), "{t}");
        assert!(rows[4].ends_with(" none (2)"), "{t}");
        // The full reasons are notes under the table, each once, wrapped.
        assert!(t.contains("(1) send lag p99 13.6 ms > 10 ms"), "{t}");
        assert!(t.contains("(2) no requests measured"), "{t}");
        assert_eq!(t.matches("(1) send lag").count(), 1, "{t}");
        assert!(
            t.contains("requests waited before reaching the engine"),
            "{t}"
        );
        // CSV and JSON keep the whole verdict.
        assert!(to_csv(&points).contains(long), "{t}");
    }

    #[test]
    fn every_reason_of_the_verdict_code_has_a_code() {
        for (reason, code) in [
            ("no requests measured", "none"),
            ("3 of 8 requests failed", "failed"),
            (
                "2 request(s) not at 128 input tokens as the server counted",
                "input",
            ),
            ("2 request(s) not at 32 output tokens", "output"),
            (
                "send lag p99 13.6 ms > 10 ms: requests did not leave when scheduled",
                "lag",
            ),
            ("concurrency 8 not held: 3.1 in flight on average", "conc"),
            (
                "client CPU-saturated (1.90 of 2 cores busy): the point measured the load generator",
                "cpu",
            ),
            (
                "engine saw at most 9 requests in flight, the client had 62 (4 scrapes): x",
                "inflight",
            ),
            (
                "engine had up to 9 requests in flight, the client 2 (4 scrapes): x",
                "shared",
            ),
            ("engine fallback: chat", "fallback"),
            ("something new", "other"),
        ] {
            assert_eq!(reason_code(reason), code, "{reason}");
        }
        assert_eq!(verdict_codes("valid"), "valid");
        assert_eq!(
            verdict_codes("send lag p99 1 ms > 0 ms: x; send lag p99 2 ms > 0 ms: y"),
            "lag"
        );
    }
}
