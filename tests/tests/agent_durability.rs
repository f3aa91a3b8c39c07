//! No lost or duplicated results when the agent dies or the network drops: real controller
//! and agent processes (the workspace binaries), engines as real `vllm-sim` processes, the
//! agent dialling the controller through a TCP proxy the test can cut.
//!
//! Each test checks the Parquet files at the end: every point's records appear exactly
//! `batch_size × waves` times with unique (wave, request index) pairs, and the points file
//! says which attempt produced them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetbench_agent::link::spool::decode_frames;
use fleetbench_proto::pb::{self, agent_message::Msg};
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::proxy::TcpProxy;
use fleetbench_tests::{submit, workspace_bin};

const WAVES: u32 = 2;

/// A sweep of one GPU count and `batches` batch sizes; each wave lasts about 2 s in the
/// simulator (100 output tokens at ~20 ms a step), so a point runs for ~4 s.
fn sweep(batches: &[u32]) -> String {
    format!(
        r#"
name = "durability"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = {batches:?}
workloads = [{{ input = 32, output = 100 }}]

[load]
mode = "burst"
endpoint = "completions"
timeout_s = 120
waves = {WAVES}
seed = 3
"#
    )
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, like the OOM killer or a power cut of the process; also kills the process
    /// groups of its children (the agent starts each engine in its own group).
    fn kill9(&mut self) {
        let kids = children(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for k in kids {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{k}")])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log tail ---\n{}", self.name, self.log_tail());
        }
        self.kill9();
    }
}

/// Child pids of `pid` (all its threads).
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Env {
    tmp: tempfile::TempDir,
    port: u16,
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            port: free_port(),
        }
    }

    fn results(&self) -> PathBuf {
        self.tmp.path().join("results")
    }

    fn spool(&self) -> PathBuf {
        self.tmp.path().join("spool")
    }

    fn start_controller(&self, grace_s: u64) -> Proc {
        let log = self.tmp.path().join("controller.log");
        let child = Command::new(workspace_bin("controller"))
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--results",
                &self.results().display().to_string(),
                "--agent-grace-s",
                &grace_s.to_string(),
            ])
            .current_dir(self.tmp.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            name: "controller",
            log,
        }
    }

    /// Starts the agent binary dialling `controller` (the proxy), with its spool in this
    /// test's folder; a restart reuses the same config and spool.
    fn start_agent(&self, controller: &str, run: u32) -> Proc {
        let cfg = self.tmp.path().join("agent.toml");
        let sim = workspace_bin("vllm-sim").display().to_string();
        std::fs::write(
            &cfg,
            format!(
                r#"
name = "dur"
host = "dur-host"
controller = "{controller}"
vllm_command = ["{sim}", "serve", "--sim-step-ms", "20", "--sim-step-ms-per-seq", "0.2"]
batch_records = 2
batch_flush_ms = 100
heartbeat_s = 1
metrics_interval_ms = 200
spool_dir = "{}"

[[gpus]]
vendor = "sim"
model = "vllm-sim"
memory_gib = 24
"#,
                self.spool().display()
            ),
        )
        .unwrap();
        let log = self.tmp.path().join(format!("agent-{run}.log"));
        let child = Command::new(workspace_bin("agent"))
            .args(["--config", &cfg.display().to_string()])
            .current_dir(self.tmp.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc {
            child,
            name: "agent",
            log,
        }
    }

    async fn client(
        &self,
    ) -> pb::control_service_client::ControlServiceClient<tonic::transport::Channel> {
        let url = format!("http://127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if let Ok(c) =
                pb::control_service_client::ControlServiceClient::connect(url.clone()).await
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("controller at {url} never answered");
    }

    /// The point's spooled record batches and whether its point-finished message is
    /// spooled too (any attempt).
    fn spooled(&self, point_id: &str) -> (usize, bool) {
        let hex: String = point_id.bytes().map(|b| format!("{b:02x}")).collect();
        let Ok(dir) = std::fs::read_dir(self.spool()) else {
            return (0, false);
        };
        let mut batches = 0;
        let mut done = false;
        for e in dir.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{hex}."))
            {
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            for m in decode_frames(&bytes).0 {
                match m.msg {
                    Some(Msg::RecordBatch(_)) => batches += 1,
                    Some(Msg::PointFinished(_)) => done = true,
                    _ => {}
                }
            }
        }
        (batches, done)
    }

    fn spooled_finished(&self, point_id: &str) -> bool {
        self.spooled(point_id).1
    }
}

type Client = pb::control_service_client::ControlServiceClient<tonic::transport::Channel>;

async fn status(client: &mut Client, id: &str) -> pb::SweepStatus {
    client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until `check` holds for the sweep's status, at most `secs` seconds.
async fn wait_for(
    client: &mut Client,
    id: &str,
    secs: u64,
    what: &str,
    check: impl Fn(&pb::SweepStatus) -> bool,
) -> pb::SweepStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(client, id).await;
        if check(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until point `idx` is running and its spool file holds record batches but no
/// point-finished message yet (mid-point, some records already sent). Returns its id.
async fn wait_mid_point(env: &Env, client: &mut Client, id: &str, idx: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(client, id).await;
        if let Some(p) = s.points.get(idx).filter(|p| p.state == "running") {
            let (batches, done) = env.spooled(&p.point_id);
            if batches > 0 && !done {
                return p.point_id.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "point {idx} never ran with records: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn finished(s: &pb::SweepStatus) -> bool {
    matches!(s.state.as_str(), "done" | "failed" | "cancelled")
}

fn find_files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            find_files(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

/// Reads the sweep's Parquet files and checks every point's records are all there, once
/// each; returns each point's attempt from the points file, by point index.
fn check_results(results: &Path, sweep_id: &str, st: &pb::SweepStatus) -> BTreeMap<u32, u32> {
    let mut req_files = Vec::new();
    find_files(
        results,
        &format!("{sweep_id}.requests.parquet"),
        &mut req_files,
    );
    let mut point_files = Vec::new();
    find_files(
        results,
        &format!("{sweep_id}.points.parquet"),
        &mut point_files,
    );
    assert_eq!(req_files.len(), 1, "{req_files:?}");
    assert_eq!(point_files.len(), 1, "{point_files:?}");
    let rows = read_requests(&req_files[0]).unwrap();
    let points = read_point_summaries(&point_files[0]).unwrap();
    assert_eq!(points.len(), st.points.len(), "one row per point");
    let mut attempts = BTreeMap::new();
    for p in &points {
        assert_eq!(p.meta.state, "done", "{:?}", p.meta);
        let planned = p.meta.batch_size * WAVES;
        let mine: Vec<_> = rows
            .iter()
            .filter(|(pid, _, _)| *pid == p.meta.point_id)
            .collect();
        assert_eq!(
            mine.len() as u32,
            planned,
            "point {} (batch {}) has {} request rows, planned {planned}",
            p.meta.point_id,
            p.meta.batch_size,
            mine.len()
        );
        let unique: BTreeSet<(u32, u32)> = mine
            .iter()
            .map(|(_, _, r)| (r.wave, r.request_index))
            .collect();
        assert_eq!(
            unique.len(),
            mine.len(),
            "duplicate request rows in {}",
            p.meta.point_id
        );
        assert!(
            mine.iter().all(|(_, a, _)| *a == p.meta.attempt),
            "rows of point {} come from another attempt than {}",
            p.meta.point_id,
            p.meta.attempt
        );
        assert_eq!(p.completed, planned, "{:?}", p.meta);
        attempts.insert(p.meta.point_index, p.meta.attempt);
    }
    attempts
}

/// SIGKILL of the agent twice: once after a point finished while the controller could not
/// be reached (the results exist only in the agent's spool), once in the middle of a point.
/// The restarted agent resends the first from its spool (the point keeps attempt 1) and
/// discards the interrupted attempt (the controller re-runs it as attempt 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_point_and_with_unacknowledged_results_loses_and_duplicates_nothing() {
    let env = Env::new();
    let _controller = env.start_controller(20);
    let mut client = env.client().await;
    let target = format!("127.0.0.1:{}", env.port).parse().unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let via_proxy = format!("http://{}", proxy.addr());
    let mut agent = env.start_agent(&via_proxy, 1);
    let id = submit(&mut client, &sweep(&[2, 3, 4])).await;

    // 1. Point 1 runs; the network goes; the point finishes into the spool only.
    let p1 = wait_mid_point(&env, &mut client, &id, 1).await;
    proxy.cut();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !env.spooled_finished(&p1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "point 1 never finished into the spool"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.kill9();
    let mut agent = env.start_agent(&via_proxy, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    // 2. Point 2 runs; the agent is killed in the middle of it.
    let p2 = wait_mid_point(&env, &mut client, &id, 2).await;
    agent.kill9();
    assert!(
        !env.spooled_finished(&p2),
        "point 2 was still running when the agent was killed"
    );
    let _agent = env.start_agent(&via_proxy, 3);

    let st = wait_for(&mut client, &id, 180, "the sweep's end", finished).await;
    assert_eq!(st.state, "done", "{st:#?}");
    let attempts = check_results(&env.results(), &id, &st);
    assert_eq!(
        attempts,
        BTreeMap::from([(0, 1), (1, 1), (2, 2)]),
        "point 1 kept its spooled attempt; point 2 was re-run"
    );
    // Everything acknowledged: the spool is empty.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = std::fs::read_dir(env.spool())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
            .map(|e| e.file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool files left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The network between agent and controller is down for 30 s (real seconds: that is the
/// requirement) while a point runs; the controller's grace is longer. Afterwards every
/// point has all its records once, and no point was re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_network_drop_loses_and_duplicates_nothing() {
    let env = Env::new();
    let _controller = env.start_controller(120);
    let mut client = env.client().await;
    let target = format!("127.0.0.1:{}", env.port).parse().unwrap();
    let proxy = TcpProxy::start(target).await.unwrap();
    let _agent = env.start_agent(&format!("http://{}", proxy.addr()), 1);
    let id = submit(&mut client, &sweep(&[2, 4, 6])).await;

    wait_mid_point(&env, &mut client, &id, 0).await;
    proxy.cut();
    let forwarded = proxy.forwarded();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        proxy.forwarded(),
        forwarded,
        "nothing got through during the drop"
    );
    assert!(
        proxy.refused() > 0,
        "the agent tried to reconnect during the drop"
    );
    let during = status(&mut client, &id).await;
    assert_eq!(during.points[1].state, "pending", "{during:#?}");
    proxy.restore();

    let st = wait_for(&mut client, &id, 180, "the sweep's end", finished).await;
    assert_eq!(st.state, "done", "{st:#?}");
    let attempts = check_results(&env.results(), &id, &st);
    assert_eq!(
        attempts,
        BTreeMap::from([(0, 1), (1, 1), (2, 1)]),
        "no point was re-run"
    );
    assert!(proxy.forwarded() > forwarded, "the agent came back");
}
