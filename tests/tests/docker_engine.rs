//! The `docker` runtime against the machine's real Docker engine, with the FROM-scratch
//! vllm-sim image (`deploy/docker/build-sim-image.sh`): engines with 1 and 2 "GPUs",
//! readiness, one restart between two engine configurations and none within one, a crash
//! mid-point recorded with its exit code and log tail before a fresh container serves the
//! next point, two containers side by side on disjoint GPU sets (`max_engines = 2`), and no
//! container left behind, also after the agent is killed with SIGKILL and started again.
//! Containers the agent did not create are never touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::read_point_summaries;
use fleetbench_tests::{
    AgentSpec, Cluster, containers_labelled, overlapping_pairs, parquet_metadata, sim_image,
    submit, watch_to_end, workspace_bin,
};

const AGENT_LABEL: &str = "io.fleetbench.agent";

fn sweep(name: &str, image: &str, engine_extra: &str, matrix: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test/docker"
[engine]
kind = "vllm"
runtime = "docker"
image = "{image}"
max_model_len = 1024
startup_timeout_s = 60
{engine_extra}
[matrix]
{matrix}
workloads = [{{ input = 24, output = 8 }}]
[load]
seed = 5
"#
    )
}

/// The engine events stored with a results file.
fn engine_events(points_file: &Path) -> Vec<serde_json::Value> {
    let meta = parquet_metadata(points_file);
    serde_json::from_str::<Vec<serde_json::Value>>(&meta["fleetbench.engine_events"]).unwrap()
}

/// Polls (up to 30 s) until no container carries `label`.
async fn wait_no_containers(label: &str) {
    for _ in 0..300 {
        if containers_labelled(&[label]).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("containers left: {:?}", containers_labelled(&[label]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_restart_only_when_the_configuration_changes_and_leave_nothing_behind() {
    let image = sim_image();
    let agent = "dock-gpus";
    let label = format!("{AGENT_LABEL}={agent}");
    let cluster = Cluster::start(vec![AgentSpec::sim(agent, 2, &[])]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    // The inventory lists the images the host can start without a registry.
    let agents = client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let inventory = agents[0].inventory.clone().unwrap();
    assert!(inventory.engine_images.contains(&image), "{inventory:?}");
    assert_eq!(inventory.gpus.len(), 2);
    // Two engine configurations (1 and 2 GPUs), two points each.
    let id = submit(
        &mut client,
        &sweep("gpus", &image, "", "gpus = [1, 2]\nbatch_sizes = [1, 2]"),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");

    let mut starts = Vec::new();
    for gpus in [1u32, 2] {
        let file = partition_dir(&cluster.results, "test/docker", gpus)
            .join(format!("{id}.points.parquet"));
        let points = read_point_summaries(&file).unwrap();
        assert_eq!(points.len(), 2);
        for p in &points {
            assert_eq!((p.completed, p.failed), (p.meta.batch_size, 0), "{p:?}");
            assert_eq!(p.verdict, "valid", "{p:?}");
        }
        let meta = parquet_metadata(&file);
        assert_eq!(meta["fleetbench.engine_image"], image);
        assert!(
            meta["fleetbench.engine_image_digest"].starts_with("sha256:"),
            "{meta:?}"
        );
        assert!(
            meta["fleetbench.engine_args"].contains(&format!("--tensor-parallel-size {gpus}")),
            "{meta:?}"
        );
        for ev in engine_events(&file) {
            if ev["kind"] == "ready" {
                starts.push((gpus, ev["gpu_ids"].clone(), ev["container"].clone()));
            }
        }
    }
    // One engine per configuration: exactly one restart between them. The 2-GPU engine
    // holds both of the agent's GPUs.
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[0].1, serde_json::json!([0]));
    assert_eq!(starts[1].1, serde_json::json!([0, 1]));
    assert_ne!(starts[0].2, starts[1].2);
    // The sweep ended: the agent stopped and removed its container.
    wait_no_containers(&label).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_containers_run_side_by_side_on_disjoint_gpu_sets() {
    let image = sim_image();
    let agent = "dock-wide";
    let label = format!("{AGENT_LABEL}={agent}");
    let spec = AgentSpec {
        max_engines: 2,
        engine_commands: std::collections::BTreeMap::new(),
        ..AgentSpec::sim(agent, 4, &[])
    };
    let cluster = Cluster::start(vec![spec]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    // Four 2-GPU points; every token takes a 20 ms step so points last long enough to meet.
    let id = submit(
        &mut client,
        &sweep(
            "wide",
            &image,
            r#"extra_args = ["--sim-step-ms", "20"]"#,
            "gpus = [2]\nbatch_sizes = [1, 2, 4, 8]",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let file =
        partition_dir(&cluster.results, "test/docker", 2).join(format!("{id}.points.parquet"));
    let points = read_point_summaries(&file).unwrap();
    assert_eq!(points.len(), 4);
    assert!(
        overlapping_pairs(&points) >= 1,
        "no two points ran at the same time"
    );
    // Two containers, one per GPU set, each kept for its points.
    let mut ready: Vec<(serde_json::Value, serde_json::Value)> = engine_events(&file)
        .into_iter()
        .filter(|ev| ev["kind"] == "ready")
        .map(|ev| (ev["gpu_ids"].clone(), ev["container"].clone()))
        .collect();
    ready.sort_by_key(|r| r.0.to_string());
    assert_eq!(ready.len(), 2, "{ready:?}");
    assert_eq!(ready[0].0, serde_json::json!([0, 1]));
    assert_eq!(ready[1].0, serde_json::json!([2, 3]));
    assert_ne!(ready[0].1, ready[1].1);
    wait_no_containers(&label).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_point_is_recorded_and_the_next_point_runs_on_a_fresh_container() {
    let image = sim_image();
    let agent = "dock-crash";
    let label = format!("{AGENT_LABEL}={agent}");
    let cluster = Cluster::start(vec![AgentSpec::sim(agent, 1, &[])]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    // The engine dies (vLLM's OOM lines, exit code 1) once 4 requests run in one step: the
    // batch-4 point crashes, the batch-2 point after it needs a new container.
    let id = submit(
        &mut client,
        &sweep(
            "crash",
            &image,
            "extra_args = [\"--sim-crash-at-running\", \"4\"]",
            "gpus = [1]\nbatch_sizes = [4, 2]",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    let file =
        partition_dir(&cluster.results, "test/docker", 1).join(format!("{id}.points.parquet"));
    let mut points = read_point_summaries(&file).unwrap();
    points.sort_by_key(|p| p.meta.point_index);
    assert_eq!(points.len(), 2, "{status:?}");
    let (crashed, next) = (&points[0], &points[1]);
    assert_eq!(crashed.meta.batch_size, 4);
    assert_eq!(crashed.meta.state, "failed", "{crashed:?}");
    assert!(
        crashed
            .meta
            .error
            .contains("engine exited during the point with code 1"),
        "{}",
        crashed.meta.error
    );
    // No request is lost: all 4 are recorded, as failures.
    assert_eq!((crashed.completed, crashed.failed), (0, 4), "{crashed:?}");
    assert_eq!(next.meta.state, "done", "{next:?}");
    assert_eq!((next.completed, next.failed), (2, 0), "{next:?}");

    let events = engine_events(&file);
    let exited: Vec<_> = events.iter().filter(|e| e["kind"] == "exited").collect();
    assert_eq!(exited.len(), 1, "{events:?}");
    let death = exited[0];
    assert_eq!(death["exit_code"], 1);
    assert_eq!(death["oom_killed"], false);
    let died_after = death["died_after_s"].as_f64().unwrap();
    assert!((0.0..30.0).contains(&died_after), "{death}");
    let tail: Vec<&str> = death["log_tail"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        tail.iter().any(|l| l.contains("OutOfMemoryError")),
        "{tail:?}"
    );
    let ready: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "ready")
        .map(|e| e["container"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ready.len(), 2, "{events:?}");
    assert_ne!(ready[0], ready[1]);
    assert_eq!(death["container"].as_str(), Some(ready[0].as_str()));
    wait_no_containers(&label).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_dies_at_startup_fails_the_point_fast_with_its_log() {
    let image = sim_image();
    let agent = "dock-startup";
    let label = format!("{AGENT_LABEL}={agent}");
    let cluster = Cluster::start(vec![AgentSpec::sim(agent, 1, &[])]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let started = std::time::Instant::now();
    let id = submit(
        &mut client,
        &sweep(
            "badflag",
            &image,
            "extra_args = [\"--no-such-vllm-flag\"]",
            "gpus = [1]\nbatch_sizes = [1]",
        ),
    )
    .await;
    watch_to_end(&mut client, &id).await;
    // Fails at once, not after the 60 s readiness deadline.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let file =
        partition_dir(&cluster.results, "test/docker", 1).join(format!("{id}.points.parquet"));
    let points = read_point_summaries(&file).unwrap();
    assert_eq!(points[0].meta.state, "failed");
    assert!(
        points[0].meta.error.contains("engine start failed"),
        "{}",
        points[0].meta.error
    );
    let events = engine_events(&file);
    let failed = events
        .iter()
        .find(|e| e["kind"] == "start-failed")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        failed["exit_code"].as_i64().is_some_and(|c| c != 0),
        "{failed}"
    );
    assert!(
        failed["log_tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("no-such-vllm-flag")),
        "{failed}"
    );
    wait_no_containers(&label).await;
    cluster.stop().await;
}

/// A `docker` CLI call that must succeed; returns its trimmed stdout.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts the agent binary with `config`.
fn spawn_agent(config: &Path) -> tokio::process::Child {
    tokio::process::Command::new(workspace_bin("agent"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_removes_its_own_containers_at_restart_and_no_one_elses() {
    let image = sim_image();
    let agent = "dock-killed";
    let label = format!("{AGENT_LABEL}={agent}");
    let cluster = Cluster::start(vec![]).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"{agent}\"\ncontroller = \"{}\"\nheartbeat_s = 1\n[[gpus]]\nvendor = \"sim\"\nmodel = \"vllm-sim\"\n[docker]\nhf_cache = \"none\"\nstop_timeout_s = 5\n",
            cluster.addr
        ),
    )
    .unwrap();
    // Containers that are not this agent's: another agent's, and one without labels.
    let foreign = [
        docker(&[
            "create",
            "--label",
            "io.fleetbench.managed=true",
            "--label",
            "io.fleetbench.agent=someone-else",
            &image,
            "--model",
            "x",
        ]),
        docker(&["create", &image, "--model", "x"]),
    ];

    let mut first = spawn_agent(&config);
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    // A long point (2,000 output tokens at the simulator's real-time pace) keeps the
    // container busy while the agent is killed.
    let id = submit(
        &mut client,
        &sweep("long", &image, "", "gpus = [1]\nbatch_sizes = [1]").replace(
            "{ input = 24, output = 8 }",
            "{ input = 24, output = 1000 }",
        ),
    )
    .await;
    let mut running = Vec::new();
    for _ in 0..600 {
        running = containers_labelled(&[&label, "io.fleetbench.managed=true"]);
        if !running.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        running.len(),
        1,
        "the agent never started its engine container"
    );
    let orphan = running[0].clone();

    // SIGKILL: the agent cannot clean up; its container outlives it.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert_eq!(
        containers_labelled(&[&label]),
        vec![orphan.clone()],
        "the orphan should outlive a SIGKILLed agent"
    );

    // The restarted agent (same name) removes its orphan at start.
    let mut second = spawn_agent(&config);
    for _ in 0..300 {
        if !containers_labelled(&[&label]).contains(&orphan) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !containers_labelled(&[&label]).contains(&orphan),
        "orphan {orphan} was not removed by the restarted agent"
    );
    // Everything else is still there.
    for id in &foreign {
        assert_eq!(docker(&["inspect", "--format", "{{.Id}}", id]), *id);
    }

    // Cancel the sweep and stop the agent gracefully: nothing of this agent's remains.
    client
        .cancel_sweep(pb::CancelSweepRequest {
            sweep_id: id.clone(),
        })
        .await
        .unwrap();
    nix_term(&second);
    let exited = tokio::time::timeout(Duration::from_secs(60), second.wait()).await;
    assert!(exited.is_ok(), "the agent did not stop on SIGTERM");
    wait_no_containers(&label).await;
    for id in &foreign {
        docker(&["rm", "-f", id]);
    }
    cluster.stop().await;
}

/// Sends SIGTERM to a child process.
fn nix_term(child: &tokio::process::Child) {
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
