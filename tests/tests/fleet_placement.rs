//! Fleet placement end to end: three agents (each starting its own vllm-sim processes), a
//! `strategy = "replicate"` sweep submitted, watched and read back through the real
//! `controllerctl` binary; `controllerctl results --group-by host` shows the three hosts
//! side by side with every batch size, and `--group-by gpu_model` the GPU models they
//! declare.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use fleetbench_proto::pb;
use fleetbench_tests::{AgentSpec, Cluster, workspace_bin};

const SIM_ARGS: &[&str] = &["--sim-step-ms", "2", "--sim-step-ms-per-seq", "0"];

const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];
/// The GPU model each host declares: two of one model, one of another.
const GPU_MODELS: [&str; 3] = [
    "NVIDIA H100 80GB HBM3",
    "Intel Arc Pro B60",
    "Intel Arc Pro B60",
];
const BATCHES: [u32; 3] = [1, 2, 4];

const SWEEP: &str = r#"
name = "fleet"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 512
max_num_seqs = 16
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = [1, 2, 4]
workloads = [{ input = 32, output = 8 }]

[load]
mode = "burst"
endpoint = "chat"
timeout_s = 60

[placement]
strategy = "replicate"
labels = { pool = "bench" }
"#;

async fn ctl(addr: &str, dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(workspace_bin("controllerctl"))
        .current_dir(dir)
        .env_remove("FLEETBENCH_RESULTS")
        .args(["--controller", addr])
        .args(args)
        .output()
        .await
        .unwrap()
}

/// `controllerctl results --dir <results> --group-by <by> --format csv`, which must succeed.
async fn grouped_csv(addr: &str, dir: &Path, results: &str, by: &str) -> String {
    let out = ctl(
        addr,
        dir,
        &[
            "results",
            "--dir",
            results,
            "--group-by",
            by,
            "--format",
            "csv",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The position of column `name` in a CSV header.
fn column(header: &[&str], name: &str) -> usize {
    header
        .iter()
        .position(|h| *h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_sweep_runs_in_full_on_every_host_and_compares_them() {
    let agents = HOSTS
        .iter()
        .zip(GPU_MODELS)
        .map(|(n, gpu)| AgentSpec {
            labels: vec![("pool".into(), "bench".into())],
            gpu_model: gpu.into(),
            ..AgentSpec::sim(n, 1, SIM_ARGS)
        })
        // A fourth agent without the label: it must get nothing.
        .chain([AgentSpec::sim("outsider", 1, SIM_ARGS)])
        .collect();
    let cluster = Cluster::start(agents).await;
    cluster.wait_agents(4).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("fleet.toml");
    std::fs::write(&file, SWEEP).unwrap();

    let out = ctl(
        &cluster.addr,
        tmp.path(),
        &["submit", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let first = stdout.lines().next().unwrap();
    // "submitted <id> (9 points)", then one "  replica <id>.<agent>" per host.
    let parent = first
        .strip_prefix("submitted ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(first.ends_with("(9 points)"), "{stdout}");
    let children: BTreeSet<String> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("replica "))
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = HOSTS.iter().map(|h| format!("{parent}.{h}")).collect();
    assert_eq!(children, want, "{stdout}");

    // The parent id covers the whole group.
    let out = ctl(&cluster.addr, tmp.path(), &["watch", &parent]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut client = cluster.client().await;
    let status = client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: parent.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            status.state.as_str(),
            status.points_total,
            status.points_done
        ),
        ("done", 9, 9),
        "{status:?}"
    );
    // Every child ran only on its own agent; the outsider ran nothing.
    for p in &status.points {
        let child = p.point_id.split('/').next().unwrap();
        assert_eq!(child, format!("{parent}.{}", p.agent), "{p:?}");
    }
    assert!(status.points.iter().all(|p| p.agent != "outsider"));
    // One set of Parquet files per host.
    let files: BTreeSet<&str> = status
        .result_files
        .iter()
        .filter(|f| f.ends_with(".points.parquet"))
        .map(String::as_str)
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");

    let unknown = ctl(&cluster.addr, tmp.path(), &["status", "no-such-sweep"]).await;
    assert_eq!(unknown.status.code(), Some(64), "{}", text(&unknown));

    let results = cluster.results.to_str().unwrap().to_string();
    let csv = grouped_csv(&cluster.addr, tmp.path(), &results, "host").await;
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let header = &lines[0];
    let col = |name: &str| column(header, name);
    let batches: Vec<&str> = lines[1..].iter().map(|r| r[col("batch_size")]).collect();
    assert_eq!(batches, ["1", "2", "4"], "{csv}");
    for (row, batch) in lines[1..].iter().zip(BATCHES) {
        for host in HOSTS {
            let h = format!("{host}-host");
            assert_eq!(
                row[col(&format!("host={h}:state"))],
                "done",
                "{h} batch {batch}: {csv}"
            );
            assert_eq!(
                row[col(&format!("host={h}:completed"))],
                batch.to_string(),
                "{h} batch {batch}: {csv}"
            );
            assert_eq!(
                row[col(&format!("host={h}:sweep_id"))],
                format!("{parent}.{host}"),
                "{csv}"
            );
            let tput: f64 = row[col(&format!("host={h}:total_token_throughput"))]
                .parse()
                .unwrap();
            assert!(tput > 0.0, "{h} batch {batch}: {csv}");
        }
    }
    assert!(!header.iter().any(|h| h.contains("outsider")), "{header:?}");

    // GPU models side by side: the H100 host against the B60 hosts (the later of those
    // two is shown per batch size, the other counted as hidden).
    let csv = grouped_csv(&cluster.addr, tmp.path(), &results, "gpu_model").await;
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let header = &lines[0];
    let col = |name: &str| column(header, name);
    assert!(
        !header.contains(&"host"),
        "hosts are compared, not fixed: {header:?}"
    );
    assert_eq!(lines.len(), 1 + BATCHES.len(), "{csv}");
    for (row, batch) in lines[1..].iter().zip(BATCHES) {
        assert_eq!(row[col("batch_size")], batch.to_string(), "{csv}");
        for gpu in ["NVIDIA H100 80GB HBM3", "Intel Arc Pro B60"] {
            assert_eq!(row[col(&format!("gpu_model={gpu}:state"))], "done", "{csv}");
        }
        assert_eq!(
            row[col("gpu_model=NVIDIA H100 80GB HBM3:sweep_id")],
            format!("{parent}.alpha"),
            "{csv}"
        );
    }

    // --gpu-model filters by a part of the name, ignoring case.
    let b60 = ctl(
        &cluster.addr,
        tmp.path(),
        &[
            "results",
            "--dir",
            &results,
            "--gpu-model",
            "b60",
            "--format",
            "json",
        ],
    )
    .await;
    assert_eq!(b60.status.code(), Some(0), "{}", text(&b60));
    let points: serde_json::Value = serde_json::from_slice(&b60.stdout).unwrap();
    let hosts: BTreeSet<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["beta-host", "gamma-host"]),
        "{points}"
    );
    // The rest of the hardware: the declared memory, and the host's CPU from /proc/cpuinfo.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    for p in points.as_array().unwrap() {
        assert_eq!(p["gpu_memory_gib"], 24.0, "{p}");
        assert_eq!(
            p["gpu_vendor"], "none",
            "a simulated GPU has no vendor: {p}"
        );
        if cpuinfo.contains("model name") {
            assert!(!p["cpu_model"].as_str().unwrap().is_empty(), "{p}");
        }
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_without_a_matching_agent_is_rejected() {
    let cluster = Cluster::start(vec![AgentSpec::sim("loner", 1, SIM_ARGS)]).await;
    cluster.wait_agents(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("fleet.toml");
    std::fs::write(&file, SWEEP).unwrap();
    let out = ctl(
        &cluster.addr,
        tmp.path(),
        &["submit", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no connected agent matches"),
        "{}",
        text(&out)
    );
    let mut client = cluster.client().await;
    let sweeps = client
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sweeps;
    assert!(sweeps.is_empty(), "{sweeps:?}");
    cluster.stop().await;
}
