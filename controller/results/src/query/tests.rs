//! Tests of filtering, sorting, grouping and listing points.

use super::*;
use crate::summary::{ClientStats, Percentiles, PointMeta, ServerStats};

#[test]
fn sweep_id_narrows_the_filter_unless_sweep_excludes_it() {
    let mut f = Filter::default();
    f.narrow_to_sweep(None).unwrap();
    assert!(f.sweep.is_empty());
    f.narrow_to_sweep(Some("a".into())).unwrap();
    assert_eq!(f.sweep, ["a"]);
    let mut f = Filter {
        sweep: vec!["a".into(), "b".into()],
        ..Filter::default()
    };
    f.narrow_to_sweep(Some("b".into())).unwrap();
    assert_eq!(f.sweep, ["b"]);
    let err = f.narrow_to_sweep(Some("c".into())).unwrap_err();
    assert!(
        matches!(&err, ResultsError::Query(m) if m == "SWEEP_ID c is not among --sweep b"),
        "{err}"
    );
}

fn point(sweep: &str, host: &str, gpus: u32, batch: u32, tput: f64) -> PointSummary {
    PointSummary {
        meta: PointMeta {
            sweep_id: sweep.into(),
            point_id: format!("{sweep}/b{batch}"),
            point_index: batch,
            attempt: 1,
            model: "meta-llama/Llama-3.2-1B".into(),
            gpus,
            host: host.into(),
            agent: format!("{host}-agent"),
            batch_size: batch,
            input_tokens: 128,
            output_tokens: 32,
            state: "done".into(),
            error: String::new(),
            endpoint: "completions".into(),
            started_unix_us: 1_000,
            finished_unix_us: 2_000,
            mode: "burst".into(),
            request_rate: 0.0,
            client: ClientStats::default(),
            fallbacks: Vec::new(),
            warmup: Default::default(),
            gpu_model: String::new(),
            gpu_driver: String::new(),
            hardware: Default::default(),
            slo: None,
            workload: String::new(),
            data_sha256: String::new(),
            data_skipped: 0,
            stage_durations_s: Vec::new(),
            stage_loads: Vec::new(),
        },
        completed: batch,
        failed: 0,
        duration_s: 1.0,
        request_throughput: f64::from(batch),
        output_throughput: tput,
        total_token_throughput: tput * 5.0,
        output_speed: Percentiles::default(),
        ttft_s: Percentiles {
            mean: Some(0.1),
            p50: Some(0.1),
            p90: Some(0.1),
            p99: Some(0.1),
        },
        tpot_s: Percentiles {
            p50: Some(0.02),
            ..Percentiles::default()
        },
        itl_s: Percentiles::default(),
        e2el_s: Percentiles::default(),
        server: ServerStats::default(),
        input_len_mismatches: 0,
        output_len_mismatches: 0,
        achieved_rate: 0.0,
        achieved_concurrency: 0.0,
        send_lag_s: Percentiles::default(),
        in_flight: None,
        verdict: "valid".into(),
        goodput: None,
        slo_attainment: None,
        slo_verdict: String::new(),
    }
}

fn fleet() -> Vec<PointSummary> {
    let mut points = vec![
        point("sw-b", "beta", 1, 8, 800.0),
        point("sw-a", "alpha", 1, 8, 400.0),
        point("sw-a", "alpha", 2, 1, 60.0),
        point("sw-b", "beta", 1, 1, 110.0),
        point("sw-a", "alpha", 1, 1, 100.0),
    ];
    points[2].meta.state = "failed".into();
    points
}

#[test]
fn filters_match_every_given_dimension() {
    let points = fleet();
    let count = |f: &Filter| points.iter().filter(|p| f.matches(p)).count();
    assert_eq!(count(&Filter::default()), 5);
    let by_host = Filter {
        host: vec!["beta".into()],
        ..Filter::default()
    };
    assert_eq!(count(&by_host), 2);
    let by_slug = Filter {
        model: vec!["meta-llama--Llama-3.2-1B".into()],
        gpus: vec![2],
        ..Filter::default()
    };
    assert_eq!(count(&by_slug), 1);
    let by_name_and_state = Filter {
        model: vec!["meta-llama/Llama-3.2-1B".into()],
        state: vec!["done".into()],
        sweep: vec!["sw-a".into(), "sw-b".into()],
        ..Filter::default()
    };
    assert_eq!(count(&by_name_and_state), 4);
    let nothing = Filter {
        model: vec!["other/model".into()],
        ..Filter::default()
    };
    assert_eq!(count(&nothing), 0);
}

#[test]
fn points_sort_by_model_gpus_host_workload_and_load() {
    let mut points = fleet();
    sort_points(&mut points);
    let order: Vec<(u32, &str, u32)> = points
        .iter()
        .map(|p| (p.meta.gpus, p.meta.host.as_str(), p.meta.batch_size))
        .collect();
    assert_eq!(
        order,
        [
            (1, "alpha", 1),
            (1, "alpha", 8),
            (1, "beta", 1),
            (1, "beta", 8),
            (2, "alpha", 1)
        ]
    );
}

#[test]
fn group_by_host_puts_hosts_side_by_side_per_gpu_count() {
    let mut points = fleet();
    sort_points(&mut points);
    let g = group(&points, GroupBy::Host);
    assert_eq!(g.hidden, 0);
    let hosts: Vec<&str> = g.columns.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(hosts, ["alpha", "beta"]);
    assert_eq!(g.sections.len(), 2, "one per GPU count");
    let one = &g.sections[0];
    assert_eq!(one.key.gpus, Some(1));
    assert_eq!(one.key.host, None);
    assert_eq!(one.rows.len(), 2);
    let b8 = &one.rows[1];
    assert_eq!(b8.batch_size, 8);
    let tput: Vec<f64> = b8.cells.values().map(|p| p.output_throughput).collect();
    assert_eq!(tput, [400.0, 800.0]);
    let two = &g.sections[1];
    assert_eq!(two.columns.len(), 1);

    let t = grouped_table(&g);
    assert!(
        t.contains("meta-llama/Llama-3.2-1B, 1 GPU, 128/32 tokens, burst"),
        "{t}"
    );
    assert!(t.contains("host=alpha"), "{t}");
    assert!(t.contains("800.0"), "{t}");
    assert!(t.contains("60.0*"), "the failed point is flagged: {t}");
    assert!(t.contains("20.0"), "TPOT p50 in ms: {t}");
}

#[test]
fn group_by_gpus_sorts_counts_as_numbers_and_keeps_hosts_apart() {
    let mut points = fleet();
    points.push(point("sw-a", "alpha", 16, 1, 1.0));
    let g = group(&points, GroupBy::Gpus);
    let counts: Vec<&str> = g.columns.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(counts, ["1", "2", "16"]);
    let hosts: Vec<Option<&str>> = g.sections.iter().map(|s| s.key.host.as_deref()).collect();
    assert_eq!(hosts, [Some("alpha"), Some("beta")]);
}

#[test]
fn a_cell_shows_the_point_that_finished_last() {
    let mut old = point("sw-a", "alpha", 1, 1, 100.0);
    old.meta.finished_unix_us = 10;
    let new = point("sw-c", "alpha", 1, 1, 150.0);
    let points = [new, old];
    let g = group(&points, GroupBy::Host);
    assert_eq!(g.hidden, 1);
    let cell = g.sections[0].rows[0].cells.values().next().unwrap();
    assert_eq!(cell.meta.sweep_id, "sw-c");
    assert!(grouped_table(&g).contains("1 older points"));
}

#[test]
fn grouped_csv_has_a_column_group_per_host() {
    let mut points = fleet();
    sort_points(&mut points);
    let g = group(&points, GroupBy::Host);
    let csv = grouped_csv(&g);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 3, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(
        &header[..7],
        [
            "model",
            "gpus",
            "input_tokens",
            "output_tokens",
            "mode",
            "batch_size",
            "request_rate"
        ]
    );
    assert_eq!(header.len(), 7 + 2 * CELL_FIELDS.len());
    assert!(header.contains(&"host=beta:total_token_throughput"));
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(row[col("batch_size")], "8");
    assert_eq!(row[col("host=alpha:total_token_throughput")], "2000.0");
    assert_eq!(row[col("host=beta:total_token_throughput")], "4000.0");
    // 2 GPUs ran on alpha only: beta's cells are empty.
    let row: Vec<&str> = lines[3].split(',').collect();
    assert_eq!(row[col("gpus")], "2");
    assert_eq!(row[col("host=alpha:state")], "failed");
    assert_eq!(row[col("host=beta:state")], "");

    let j: Value = serde_json::from_str(&grouped_json(&g)).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 3);
    assert_eq!(j[1]["host"]["beta"]["output_throughput"], 800.0);
    assert_eq!(j[2]["host"].as_object().unwrap().len(), 1);
}

#[test]
fn flat_csv_and_json_have_every_field_in_a_stable_order() {
    let mut points = fleet();
    sort_points(&mut points);
    let csv = to_csv(&points);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 6);
    let header: Vec<&str> = lines[0].split(',').collect();
    let old: Vec<String> = text::fields(&pb::PointSummary::default())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(header[..old.len()], old);
    assert_eq!(
        header[old.len()..],
        ["attempt", "started_unix_us", "finished_unix_us"]
    );
    for line in &lines[1..] {
        assert_eq!(line.split(',').count(), header.len(), "{line}");
    }
    assert!(lines[1].starts_with("sw-a,sw-a/b1,1,meta-llama/Llama-3.2-1B,1,alpha,"));
    let j: Value = serde_json::from_str(&to_json(&points)).unwrap();
    assert_eq!(j[3]["host"], "beta");
    assert_eq!(j[3]["output_throughput"], 800.0);
    assert_eq!(j[3]["attempt"], 1);
    let t = to_table(&points);
    assert!(
        t.lines().next().unwrap().trim_start().starts_with("model"),
        "{t}"
    );
    assert!(t.contains("sw-b"), "{t}");
}

#[test]
fn group_by_gpu_model_compares_hosts_and_filters_by_part_of_the_name() {
    let mut points = vec![
        point("sw-a", "alpha", 1, 1, 100.0),
        point("sw-b", "beta", 1, 1, 60.0),
        point("sw-c", "gamma", 1, 1, 10.0),
    ];
    points[0].meta.gpu_model = "NVIDIA H100 80GB HBM3".into();
    points[1].meta.gpu_model = "Intel Arc Pro B60".into();
    let g = group(&points, GroupBy::GpuModel);
    assert_eq!(g.sections.len(), 1, "hosts are compared, not held fixed");
    assert_eq!(g.sections[0].key.host, None);
    let columns: Vec<&str> = g.columns.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        columns,
        ["Intel Arc Pro B60", "NVIDIA H100 80GB HBM3", "unknown"]
    );

    let h100 = Filter {
        gpu_model: vec!["h100".into()],
        ..Filter::default()
    };
    let kept: Vec<&str> = points
        .iter()
        .filter(|p| h100.matches(p))
        .map(|p| p.meta.host.as_str())
        .collect();
    assert_eq!(kept, ["alpha"]);
    assert!(!h100.is_empty());
}
