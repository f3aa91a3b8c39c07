//! `controllerctl results` reads the results folder: two sweeps on two hosts, written with
//! the controller's own Parquet writer, compared side by side through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use fleetbench_proto::record::{RequestRecord, tpot};
use fleetbench_results::PartitionMetadata;
use fleetbench_results::summary::{ClientStats, PointMeta, summarize};
use fleetbench_results::write::write_partition;
use fleetbench_tests::workspace_bin;

const MODEL: &str = "meta-llama/Llama-3.2-1B";
const T0: i64 = 1_700_000_000_000_000;
const INPUT: u32 = 128;
const OUTPUT: u32 = 32;

/// `batch` requests sent together at T0, each taking `e2el_s`: the point lasts `e2el_s`,
/// so its total token throughput is batch × (128 + 32) / e2el_s.
fn records(batch: u32, e2el_s: f64) -> Vec<RequestRecord> {
    (0..batch)
        .map(|i| RequestRecord {
            request_index: i,
            wave: 0,
            send_time_unix_us: T0,
            ttft_s: Some(0.05),
            e2el_s: Some(e2el_s),
            tpot_s: tpot(0.05, e2el_s, OUTPUT),
            itl_s: vec![(e2el_s - 0.05) / f64::from(OUTPUT - 1); OUTPUT as usize - 1],
            input_tokens: Some(INPUT),
            output_tokens: Some(OUTPUT),
            target_input_tokens: INPUT,
            target_output_tokens: OUTPUT,
            content_chunks: OUTPUT,
            error_kind: None,
            error: String::new(),
            endpoint: "completions".into(),
            usage_reported: true,
            scheduled_offset_s: 0.0,
            send_offset_s: 0.0,
            retries: 0,
        })
        .collect()
}

fn meta(sweep: &str, host: &str, gpus: u32, index: u32, batch: u32) -> PointMeta {
    PointMeta {
        sweep_id: sweep.into(),
        point_id: format!("{sweep}/p{index:03}"),
        point_index: index,
        attempt: 1,
        model: MODEL.into(),
        gpus,
        host: host.into(),
        agent: format!("{host}-agent"),
        batch_size: batch,
        input_tokens: INPUT,
        output_tokens: OUTPUT,
        state: "done".into(),
        error: String::new(),
        endpoint: "completions".into(),
        started_unix_us: T0,
        finished_unix_us: T0 + 2_000_000,
        mode: "burst".into(),
        request_rate: 0.0,
        client: ClientStats {
            cpu_s: 0.1,
            wall_s: 1.0,
            cores: 4,
        },
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
    }
}

/// One sweep on one host: batch sizes 1 and 4 at each GPU count, every request `e2el_s`.
fn write_sweep(root: &Path, sweep: &str, host: &str, gpu_counts: &[u32], e2el_s: f64) {
    let mut index = 0;
    for &gpus in gpu_counts {
        let recs: Vec<(u32, Vec<RequestRecord>)> = [1, 4].map(|b| (b, records(b, e2el_s))).into();
        let points: Vec<_> = recs
            .iter()
            .map(|(batch, r)| {
                index += 1;
                (
                    summarize(meta(sweep, host, gpus, index, *batch), r, &[]),
                    r.as_slice(),
                )
            })
            .collect();
        let metadata = PartitionMetadata {
            sweep_id: sweep.to_owned(),
            ..PartitionMetadata::default()
        };
        write_partition(root, sweep, MODEL, gpus, &points, &[], &metadata).unwrap();
    }
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(workspace_bin("controllerctl"))
        .current_dir(dir)
        .env_remove("FLEETBENCH_RESULTS")
        .arg("results")
        .args(args)
        .output()
        .unwrap()
}

fn fleet() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    // alpha: 1 and 2 GPUs, requests take 1 s; beta: 1 GPU, twice as fast.
    write_sweep(&results, "sw-alpha-1", "alpha", &[1, 2], 1.0);
    write_sweep(&results, "sw-beta-1", "beta", &[1], 0.5);
    tmp
}

#[test]
fn group_by_host_csv_compares_hosts_side_by_side() {
    let tmp = fleet();
    let dir = tmp.path().join("results");
    let out = ctl(
        tmp.path(),
        &[
            "--dir",
            dir.to_str().unwrap(),
            "--group-by",
            "host",
            "--format",
            "csv",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split(',').collect()).collect();
    let header = &lines[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    // One row per (GPU count, batch size); hosts are column groups.
    let rows: Vec<(&str, &str)> = lines[1..]
        .iter()
        .map(|r| (r[col("gpus")], r[col("batch_size")]))
        .collect();
    assert_eq!(rows, [("1", "1"), ("1", "4"), ("2", "1"), ("2", "4")]);
    assert!(
        !header.contains(&"host"),
        "host is the column group: {header:?}"
    );

    let total = |row: usize, host: &str| -> Option<f64> {
        let cell = lines[row][col(&format!("host={host}:total_token_throughput"))];
        (!cell.is_empty()).then(|| cell.parse().unwrap())
    };
    let per_request = f64::from(INPUT + OUTPUT);
    // 1 GPU, batch 1 and 4: beta finishes in half the time.
    assert_eq!(total(1, "alpha"), Some(per_request));
    assert_eq!(total(1, "beta"), Some(2.0 * per_request));
    assert_eq!(total(2, "alpha"), Some(4.0 * per_request));
    assert_eq!(total(2, "beta"), Some(8.0 * per_request));
    // 2 GPUs ran on alpha only.
    assert_eq!(total(4, "alpha"), Some(4.0 * per_request));
    assert_eq!(total(4, "beta"), None);
    let sum: f64 = (1..lines.len())
        .filter_map(|r| total(r, "alpha").map(|a| a + total(r, "beta").unwrap_or(0.0)))
        .sum();
    assert_eq!(sum, (1.0 + 2.0 + 4.0 + 8.0 + 1.0 + 4.0) * per_request);
    assert_eq!(lines[2][col("host=beta:sweep_id")], "sw-beta-1");
    assert_eq!(lines[2][col("host=alpha:output_throughput")], "128.0");
}

#[test]
fn flat_output_filters_and_reads_the_default_folder() {
    let tmp = fleet();
    // No --dir: ./results.
    let out = ctl(
        tmp.path(),
        &["--host", "alpha", "--gpus", "2", "--format", "csv"],
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("sweep_id,point_id,"), "{stdout}");
    assert!(lines[1].starts_with("sw-alpha-1,"), "{stdout}");

    let out = ctl(tmp.path(), &["sw-beta-1", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["beta", "beta"]);

    let out = ctl(tmp.path(), &["--group-by", "host"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.contains("host=alpha"), "{table}");
    assert!(table.contains("host=beta"), "{table}");
}

#[test]
fn no_match_exits_1_and_usage_errors_exit_64() {
    let tmp = fleet();
    let out = ctl(tmp.path(), &["--state", "failed"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no points match"));

    let out = ctl(tmp.path(), &["--dir", "nowhere"]);
    assert_eq!(out.status.code(), Some(1));

    for bad in [
        &["--format", "xml"][..],
        &["--state", "ok"],
        &["--group-by", "agent"],
        &["sw-alpha-1", "--sweep", "sw-beta-1"],
    ] {
        let out = ctl(tmp.path(), bad);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
