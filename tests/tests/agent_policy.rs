//! The agent's host policy against the attacks of issue 17, end to end: a real agent
//! process (its stdout and stderr captured at debug level), an in-process controller with a
//! durable state store and its report pages, real gRPC.
//!
//! - The `$HF_TOKEN` entrypoint sweep (`runtime = "docker"`, `entrypoint = ["/bin/sh", "-c",
//!   "echo $HF_TOKEN; exit 3"]`) against an agent with a secret in `engine_env` and the
//!   default policy: the point fails before anything starts, with the rule
//!   (`allow_entrypoint_override`) named; no container is created; the agent keeps running
//!   other sweeps; and the secret appears nowhere: not in a byte of the results folder
//!   (Parquet), the controller's state store, the agent's spool or its log, the report pages
//!   or the controller's answers.
//! - An engine that prints the secret and crashes (`process` runtime): the log tail the
//!   controller stores shows `[redacted:HF_TOKEN]`, never the secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fleetbench_controller::ControllerConfig;
use fleetbench_proto::pb;
use fleetbench_proto::pb::control_service_client::ControlServiceClient;
use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::read_point_summaries;
use fleetbench_tests::{
    TINY_SIM_ARGS, containers_labelled, parquet_metadata, submit, tiny_sweep, watch_to_end,
    workspace_bin,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Follows a sweep to its end (a stuck sweep fails the test instead of hanging it).
async fn watch(client: &mut ControlServiceClient<Channel>, id: &str) -> pb::SweepStatus {
    tokio::time::timeout(Duration::from_secs(120), watch_to_end(client, id))
        .await
        .unwrap_or_else(|_| panic!("sweep {id} did not end within 120 s"))
}

/// A secret no one could guess, different on every run.
fn canary() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("hf_canary_{nanos:x}{:x}", std::process::id())
}

/// Model names the test engine crashes on (printing the token first); any other model is
/// served by vllm-sim.
const CRASH_MODEL: &str = "crash-org/leaky-model";

/// One controller (in process: durable state in `state`, report pages on `http`) and one
/// agent process whose config holds the canary in `engine_env`.
struct Rig {
    tmp: tempfile::TempDir,
    /// The agent config lives apart: it is the one place the secret belongs.
    _config_dir: tempfile::TempDir,
    agent_name: String,
    addr: String,
    http: String,
    results: PathBuf,
    agent_log: PathBuf,
    shutdown: CancellationToken,
    controller: tokio::task::JoinHandle<Result<(), fleetbench_controller::ControllerError>>,
    agent: tokio::process::Child,
}

impl Rig {
    async fn start(agent_name: &str, canary: &str) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let config_dir = tempfile::tempdir().unwrap();
        let results = tmp.path().join("results");
        let http_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let controller = tokio::spawn(fleetbench_controller::run(
            ControllerConfig {
                results_dir: results.clone(),
                agent_grace: Duration::from_secs(30),
                state_dir: Some(tmp.path().join("controller-state")),
                http: Some(http_addr),
                ..ControllerConfig::default()
            },
            listener,
            shutdown.clone(),
        ));

        // The engine command: vllm-sim, except for CRASH_MODEL, which prints the token to
        // both streams and dies during start-up.
        let sim = workspace_bin("vllm-sim").display().to_string();
        let script = format!(
            "case \"$1\" in {CRASH_MODEL}) echo \"loading weights with token $HF_TOKEN\"; \
             echo \"RuntimeError: HF_TOKEN=$HF_TOKEN rejected\" >&2; exit 3;; \
             *) exec {sim} serve {} \"$@\";; esac",
            TINY_SIM_ARGS.join(" ")
        );
        let config = config_dir.path().join("agent.toml");
        let toml_str = |s: &str| format!("{s:?}");
        std::fs::write(
            &config,
            format!(
                "name = {name}\ncontroller = {addr}\nheartbeat_s = 1\nmetrics_interval_ms = 50\n\
                 spool_dir = {spool}\nvllm_command = [\"sh\", \"-c\", {script}, \"sh\"]\n\
                 [[gpus]]\nvendor = \"sim\"\nmodel = \"vllm-sim\"\n\
                 [engine_env]\nHF_TOKEN = {canary}\n\
                 [docker]\nhf_cache = \"none\"\nstop_timeout_s = 5\n",
                name = toml_str(agent_name),
                addr = toml_str(&addr),
                spool = toml_str(&tmp.path().join("spool").display().to_string()),
                script = toml_str(&script),
                canary = toml_str(canary),
            ),
        )
        .unwrap();
        let agent_log = tmp.path().join("agent.log");
        let log = std::fs::File::create(&agent_log).unwrap();
        let agent = tokio::process::Command::new(workspace_bin("agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let rig = Rig {
            tmp,
            _config_dir: config_dir,
            agent_name: agent_name.into(),
            addr,
            http: format!("http://{http_addr}"),
            results,
            agent_log,
            shutdown,
            controller,
            agent,
        };
        rig.wait_agent().await;
        rig
    }

    async fn client(&self) -> ControlServiceClient<Channel> {
        for _ in 0..100 {
            if let Ok(c) = ControlServiceClient::connect(self.addr.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("controller at {} never answered", self.addr);
    }

    async fn wait_agent(&self) {
        let mut client = self.client().await;
        for _ in 0..600 {
            let agents = client
                .list_agents(pb::ListAgentsRequest {})
                .await
                .unwrap()
                .into_inner()
                .agents;
            if agents
                .iter()
                .any(|a| a.connected && a.agent_id == self.agent_name)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the agent never connected; its log:\n{}",
            std::fs::read_to_string(&self.agent_log).unwrap_or_default()
        );
    }

    /// The points of sweep `id` in the partition of `model` at 1 GPU.
    fn points(
        &self,
        model: &str,
        id: &str,
    ) -> (PathBuf, Vec<fleetbench_results::summary::PointSummary>) {
        let file = partition_dir(&self.results, model, 1).join(format!("{id}.points.parquet"));
        let points = read_point_summaries(&file).unwrap();
        (file, points)
    }

    /// Everything the controller shows about the sweeps and agents, as text: its gRPC
    /// answers and its report pages.
    async fn shown(&self, sweep_ids: &[&str]) -> String {
        let mut client = self.client().await;
        let mut shown = String::new();
        let sweeps = client
            .list_sweeps(pb::ListSweepsRequest {})
            .await
            .unwrap()
            .into_inner();
        shown += &format!("{sweeps:?}\n");
        let agents = client
            .list_agents(pb::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner();
        shown += &format!("{agents:?}\n");
        let http = reqwest::Client::new();
        let mut pages = vec![format!("{}/", self.http)];
        for id in sweep_ids {
            let status = client
                .get_sweep(pb::GetSweepRequest {
                    sweep_id: (*id).to_string(),
                })
                .await
                .unwrap()
                .into_inner();
            shown += &format!("{status:?}\n");
            pages.push(format!("{}/sweeps/{id}/report", self.http));
        }
        for page in pages {
            let resp = http.get(&page).send().await.unwrap();
            assert!(resp.status().is_success(), "{page}: {}", resp.status());
            shown += &resp.text().await.unwrap();
        }
        shown
    }

    /// Stops the agent (SIGTERM, so it stops its engines) and the controller.
    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(pid) = self.agent.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.agent.wait()).await;
        self.shutdown.cancel();
        self.controller.await.unwrap().unwrap();
        self.tmp
    }
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(path);
                }
            }
        }
    }
    assert!(files > 0, "nothing to search under {}", dir.display());
    hits
}

/// The files of the controller's durable state store.
fn state_files(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp.join("controller-state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn docker_sweep(name: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test-org/policy-model"

[engine]
kind = "vllm"
runtime = "docker"
image = "vllm/vllm-openai:v0.10.1"
entrypoint = ["/bin/sh", "-c", "echo $HF_TOKEN; exit 3"]
max_model_len = 1024
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = [1, 2]
workloads = [{{ input = 24, output = 8 }}]

[load]
seed = 3
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hf_token_entrypoint_sweep_fails_by_policy_and_the_token_appears_nowhere() {
    let canary = canary();
    let agent = "policy-host";
    let rig = Rig::start(agent, &canary).await;
    let mut client = rig.client().await;

    let started = std::time::Instant::now();
    let attack = submit(&mut client, &docker_sweep("hf-token-attack")).await;
    let status = watch(&mut client, &attack).await;
    // Refused at once: nothing was pulled, created or waited for.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.points_failed, 2, "{status:?}");
    for p in &status.points {
        assert_eq!(p.state, "failed", "{p:?}");
        assert!(
            p.error.starts_with("agent policy: entrypoint [\"/bin/sh\", \"-c\", \"echo $HF_TOKEN; exit 3\"] replaces the image's and policy.allow_entrypoint_override is false"),
            "{p:?}"
        );
    }
    let (file, points) = rig.points("test-org/policy-model", &attack);
    assert_eq!(points.len(), 2);
    for p in &points {
        assert_eq!(p.meta.state, "failed", "{p:?}");
        assert!(
            p.meta.error.contains("allow_entrypoint_override"),
            "{}",
            p.meta.error
        );
    }
    // No engine was ever started for it: no event, no container.
    let events = parquet_metadata(&file)
        .get("fleetbench.engine_events")
        .cloned()
        .unwrap_or_default();
    assert!(!events.contains("starting"), "{events}");
    assert!(
        containers_labelled(&[&format!("io.fleetbench.agent={agent}")]).is_empty(),
        "a container was created for the refused sweep"
    );

    // The agent is alive and runs what its policy allows.
    let benign = submit(
        &mut client,
        &tiny_sweep("after-attack", "[1]", 9).replace("gpus = [1, 2]", "gpus = [1]"),
    )
    .await;
    let status = watch(&mut client, &benign).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(status.points_failed, 0, "{status:?}");

    // The secret is nowhere the controller shows or stores, nor in what the agent wrote.
    let shown = rig.shown(&[&attack, &benign]).await;
    assert!(shown.contains("allow_entrypoint_override"), "{shown}");
    assert!(!shown.contains(&canary), "the controller shows the secret");
    let tmp = rig.stop().await;
    assert!(!state_files(tmp.path()).is_empty());
    let hits = files_containing(tmp.path(), &canary);
    assert!(hits.is_empty(), "the secret leaked into {hits:?}");
    // The search did cover the Parquet files, the state store and the agent's log.
    assert!(!files_containing(tmp.path(), "allow_entrypoint_override").is_empty());
    let log = std::fs::read_to_string(tmp.path().join("agent.log")).unwrap();
    assert!(log.contains("point refused by the host's policy"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_prints_the_token_and_crashes_shows_only_its_name() {
    let canary = canary();
    let rig = Rig::start("leaky-host", &canary).await;
    let mut client = rig.client().await;
    let sweep = tiny_sweep("leaky-engine", "[1]", 4)
        .replace("test-org/tiny-model", CRASH_MODEL)
        .replace("gpus = [1, 2]", "gpus = [1]");
    let id = submit(&mut client, &sweep).await;
    watch(&mut client, &id).await;

    let (file, points) = rig.points(CRASH_MODEL, &id);
    assert!(!points.is_empty());
    assert!(points.iter().all(|p| p.meta.state != "done"), "{points:?}");
    let failed = points
        .iter()
        .find(|p| p.meta.state == "failed")
        .unwrap_or_else(|| panic!("{points:?}"));
    assert!(
        failed.meta.error.contains("engine start failed"),
        "{}",
        failed.meta.error
    );
    // The crash's forensics reach the results, redacted.
    let events = parquet_metadata(&file)["fleetbench.engine_events"].clone();
    let events: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
    let tails: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "start-failed")
        .flat_map(|e| e["log_tail"].as_array().cloned().unwrap_or_default())
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        tails
            .iter()
            .any(|l| l == "loading weights with token [redacted:HF_TOKEN]"),
        "{tails:?}"
    );
    assert!(
        tails
            .iter()
            .any(|l| l == "RuntimeError: HF_TOKEN=[redacted:HF_TOKEN] rejected"),
        "{tails:?}"
    );

    let shown = rig.shown(&[&id]).await;
    assert!(!shown.contains(&canary), "the controller shows the secret");
    let tmp = rig.stop().await;
    let hits = files_containing(tmp.path(), &canary);
    assert!(hits.is_empty(), "the secret leaked into {hits:?}");
    // The redacted name did reach the Parquet file and the controller's state store.
    assert!(
        files_containing(tmp.path(), "[redacted:HF_TOKEN]")
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parquet")),
        "no Parquet file holds the redacted log tail"
    );
}
