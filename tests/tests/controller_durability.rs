//! A controller killed with SIGKILL mid-sweep and restarted with the same state and
//! results directories finishes the sweep: points finished before the kill are not run
//! again, the point running during the kill stays with its agent (same attempt), and
//! every point's request records are in the Parquet files exactly once.
//!
//! The controller runs as a real process (`controller` binary); the agent runs in the
//! test process and starts real `vllm-sim` engine processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetbench_agent::config::{AgentConfig, GpuConfig};
use fleetbench_proto::pb;
use fleetbench_proto::pb::control_service_client::ControlServiceClient;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{test_docker_config, watch_to_end, workspace_bin};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Six points of about two seconds each (40 output tokens at 50 ms a step).
const SWEEP: &str = r#"
name = "durable"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = [1, 2, 3, 4, 5, 6]
workloads = [{ input = 32, output = 40 }]

[load]
mode = "burst"
endpoint = "chat"
timeout_s = 60
warmup_requests = 1
seed = 3
"#;

struct ControllerProc {
    child: Child,
}

impl ControllerProc {
    fn start(addr: &str, results: &Path, state: &Path, log: &Path) -> ControllerProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(workspace_bin("controller"))
            .args(["--listen", addr, "--agent-grace-s", "60"])
            .arg("--results")
            .arg(results)
            .arg("--state-dir")
            .arg(state)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        ControllerProc { child }
    }

    /// SIGKILL: no drain, no flush, nothing but what is already on disk survives.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(url: &str) -> ControlServiceClient<Channel> {
    for _ in 0..200 {
        if let Ok(c) = ControlServiceClient::connect(url.to_string()).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("controller at {url} never answered");
}

/// (attempt, started_unix_us) of every point in the partition's points file.
fn points_file(path: &Path) -> BTreeMap<String, (u32, i64, String)> {
    if !path.is_file() {
        return BTreeMap::new();
    }
    read_point_summaries(path)
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                p.meta.point_id.clone(),
                (p.meta.attempt, p.meta.started_unix_us, p.meta.state.clone()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_controller_resumes_the_sweep_without_rerunning_or_duplicating() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let state = tmp.path().join("controller-state");
    let log = tmp.path().join("controller.log");
    // A fixed port, so the agent finds the restarted controller where it left it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let url = format!("http://{addr}");

    let controller = ControllerProc::start(&addr, &results, &state, &log);
    let mut ctl = client(&url).await;

    let stop = CancellationToken::new();
    let mut vllm_command = vec![workspace_bin("vllm-sim").display().to_string()];
    vllm_command
        .extend(["serve", "--sim-step-ms", "50", "--sim-step-ms-per-seq", "0"].map(String::from));
    let agent_cfg = AgentConfig {
        name: "solo".into(),
        host: "solo-host".into(),
        controller: url.clone(),
        gpus: vec![GpuConfig {
            vendor: "sim".into(),
            model: "vllm-sim".into(),
            memory_gib: 24.0,
        }],
        vllm_command,
        heartbeat_s: 1,
        metrics_interval_ms: 100,
        docker: test_docker_config(),
        spool_dir: tmp.path().join("spool"),
        ..AgentConfig::default()
    };
    let agent = tokio::spawn(fleetbench_agent::run(agent_cfg, stop.clone()));

    let sweep_id = fleetbench_tests::submit(&mut ctl, SWEEP).await;
    let points_path: PathBuf = results
        .join("model=test-org--tiny-model")
        .join("gpus=1")
        .join(format!("{sweep_id}.points.parquet"));

    // Wait until two points are done and on disk, and a third one runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let before = loop {
        let on_disk = points_file(&points_path);
        let status = ctl
            .get_sweep(pb::GetSweepRequest {
                sweep_id: sweep_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let running = status.points.iter().any(|p| p.state == "running");
        if on_disk.len() >= 2 && running && status.points_done < 6 {
            break on_disk;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sweep did not progress: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A user follows the sweep with controllerctl across the restart.
    let watch_err = tmp.path().join("watch.stderr");
    let mut watcher = Command::new(workspace_bin("controllerctl"))
        .args(["--controller", &url, "watch", &sweep_id])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&watch_err).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    controller.kill9();
    assert!(
        state.join("controller.redb").is_file(),
        "state store on disk"
    );
    // The agent keeps running its point while the controller is away.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let controller = ControllerProc::start(&addr, &results, &state, &log);
    let mut ctl = client(&url).await;
    // The restarted controller knows the sweep before any agent is back.
    let restored = ctl
        .get_sweep(pb::GetSweepRequest {
            sweep_id: sweep_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        restored.points_done as usize >= before.len(),
        "finished points restored: {restored:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(120), watch_to_end(&mut ctl, &sweep_id))
        .await
        .expect("restarted controller finished the sweep");
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(status.points_done, 6, "{status:?}");

    let after = points_file(&points_path);
    assert_eq!(after.len(), 6, "{after:?}");
    for (pid, (attempt, started, state)) in &before {
        assert_eq!(
            after.get(pid),
            Some(&(*attempt, *started, state.clone())),
            "{pid} finished before the kill was not run again"
        );
    }
    for (pid, (attempt, _, state)) in &after {
        assert_eq!(*attempt, 1, "{pid}: ran once");
        assert_eq!(state, "done", "{pid}");
    }
    let requests = results
        .join("model=test-org--tiny-model")
        .join("gpus=1")
        .join(format!("{sweep_id}.requests.parquet"));
    let rows = read_requests(&requests).unwrap();
    let mut per_point: BTreeMap<String, usize> = BTreeMap::new();
    for (pid, attempt, _) in &rows {
        assert_eq!(*attempt, 1);
        *per_point.entry(pid.clone()).or_default() += 1;
    }
    // Burst mode: one row per request of the batch, exactly once.
    let expected: BTreeMap<String, usize> = (0..6)
        .map(|i| (format!("{sweep_id}/p{i:03}"), i + 1))
        .collect();
    assert_eq!(per_point, expected);

    // controllerctl watch kept going: it said so, then ended with the sweep (exit 0).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(code) = watcher.try_wait().unwrap() {
            break code;
        }
        assert!(tokio::time::Instant::now() < deadline, "watch did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let watched = std::fs::read_to_string(&watch_err).unwrap();
    assert!(exit.success(), "{exit:?}: {watched}");
    assert!(
        watched.contains("controller unreachable") && watched.contains("retrying"),
        "{watched}"
    );
    assert!(
        watched.contains(&format!(
            "sweep {sweep_id} done: 6 done, 0 failed, 0 skipped of 6 points"
        )),
        "{watched}"
    );

    stop.cancel();
    agent.await.unwrap().unwrap();
    drop(controller);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("controller state restored"), "{log}");
}
