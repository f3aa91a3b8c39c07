//! Test harness for fleetbench's end-to-end tests: an in-process controller and agents on
//! real `127.0.0.1:0` sockets (real gRPC), engines as real `vllm-sim` processes, each test
//! in its own temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod http_proxy;
pub mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetbench_agent::config::{AgentConfig, DockerConfig, GpuConfig};
use fleetbench_agent::policy::Policy;
use fleetbench_controller::ControllerConfig;
use fleetbench_controller::mirror::MirrorConfig;
use fleetbench_proto::pb::control_service_client::ControlServiceClient;
use fleetbench_proto::spec::EngineKind;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A workspace binary built by `cargo build --workspace --bins` (the README's test command
/// builds them first). Panics with instructions when it is missing: a test that needs it
/// must not silently skip.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` before the tests (the README's test command does)",
        path.display()
    );
    path
}

pub struct Cluster {
    pub addr: String,
    /// The controller's report pages (`http://127.0.0.1:<port>`), when started with them.
    pub http: Option<String>,
    /// The controller's metrics (`http://127.0.0.1:<port>/metrics`), when started with them.
    pub metrics: Option<String>,
    pub results: PathBuf,
    pub shutdown: CancellationToken,
    controller: Option<JoinHandle<Result<(), fleetbench_controller::ControllerError>>>,
    agents: Vec<JoinHandle<Result<(), fleetbench_agent::AgentError>>>,
    _tmp: tempfile::TempDir,
}

/// A free loopback address (a port bound, then let go) for a listener that the code under
/// test binds itself.
pub fn free_local_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One agent of a test cluster.
pub struct AgentSpec {
    pub name: String,
    pub gpus: usize,
    pub labels: Vec<(String, String)>,
    /// The command that starts vLLM (model and flags are appended).
    pub vllm_command: Vec<String>,
    pub engine_env: BTreeMap<String, String>,
    pub model_paths: BTreeMap<String, String>,
    pub metrics_interval_ms: u64,
    /// Engines the agent runs side by side (its `max_engines`).
    pub max_engines: u32,
    /// Commands of engine kinds other than vLLM (its `[engine_commands]`).
    pub engine_commands: BTreeMap<EngineKind, Vec<String>>,
    /// The model every one of its GPUs declares (`[[gpus]] model`).
    pub gpu_model: String,
    /// Where it serves its own metrics (`metrics_addr`), if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Folders its sweeps may read dataset and trace files from (`dataset_dirs`).
    pub dataset_dirs: Vec<PathBuf>,
}

impl AgentSpec {
    /// An agent whose engines are `vllm-sim serve <sim_args…>`.
    pub fn sim(name: &str, gpus: usize, sim_args: &[&str]) -> AgentSpec {
        let mut vllm_command = vec![
            workspace_bin("vllm-sim").display().to_string(),
            "serve".into(),
        ];
        vllm_command.extend(sim_args.iter().map(|s| s.to_string()));
        AgentSpec {
            name: name.into(),
            gpus,
            labels: Vec::new(),
            vllm_command,
            engine_env: BTreeMap::new(),
            model_paths: BTreeMap::new(),
            metrics_interval_ms: 20,
            max_engines: 1,
            engine_commands: BTreeMap::new(),
            gpu_model: "vllm-sim".into(),
            metrics_addr: None,
            dataset_dirs: Vec::new(),
        }
    }
}

/// The `[docker]` settings of test agents: no Hugging Face cache mount (the simulator
/// downloads nothing) and a short stop timeout.
pub fn test_docker_config() -> DockerConfig {
    DockerConfig {
        hf_cache: "none".into(),
        stop_timeout_s: 5,
        ..DockerConfig::default()
    }
}

/// The `[policy]` of test agents: the default policy, plus the made-up vLLM flag that
/// `docker_engine`'s start-up failure test passes on purpose and a simulator image named
/// by `FLEETBENCH_SIM_IMAGE` (the default one, `fleetbench/vllm-sim:dev`, is allowed by
/// default).
pub fn test_policy() -> Policy {
    let mut policy = Policy::default();
    policy.extra_args.push("--no-such-vllm-flag".into());
    if let Ok(image) = std::env::var("FLEETBENCH_SIM_IMAGE") {
        policy.images.push(image);
    }
    policy
}

/// The vllm-sim image the Docker tests run (`deploy/docker/build-sim-image.sh` builds it;
/// the README's test command runs that first). Panics with instructions when the local
/// engine does not have it: a Docker test must not silently skip.
pub fn sim_image() -> String {
    let image =
        std::env::var("FLEETBENCH_SIM_IMAGE").unwrap_or_else(|_| "fleetbench/vllm-sim:dev".into());
    let out = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &image])
        .output()
        .expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "image {image} not found in the local Docker engine: run deploy/docker/build-sim-image.sh (the README's test set-up does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Names of the containers (running or not) whose labels include all of `labels`
/// (`key=value`), via the docker CLI.
pub fn containers_labelled(labels: &[&str]) -> Vec<String> {
    let mut cmd = std::process::Command::new("docker");
    cmd.args(["ps", "-a", "--format", "{{.Names}}"]);
    for l in labels {
        cmd.args(["--filter", &format!("label={l}")]);
    }
    let out = cmd.output().expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The key/value metadata of a Parquet file.
pub fn parquet_metadata(path: &Path) -> BTreeMap<String, String> {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    let file = std::fs::File::open(path).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

impl Cluster {
    /// Starts a controller on 127.0.0.1:0 and the given agents (each starts its own
    /// `vllm-sim` processes for the points it runs).
    pub async fn start(agents: Vec<AgentSpec>) -> Cluster {
        Cluster::start_with(agents, false, false, false, None).await
    }

    /// [`Cluster::start`] with the controller's HTTP report pages on a free port too.
    pub async fn start_with_http(agents: Vec<AgentSpec>) -> Cluster {
        Cluster::start_with(agents, true, false, false, None).await
    }

    /// [`Cluster::start`] with the controller's metrics on a free port too.
    pub async fn start_with_metrics(agents: Vec<AgentSpec>) -> Cluster {
        Cluster::start_with(agents, false, true, false, None).await
    }

    /// [`Cluster::start`] with a state store, and finished sweeps archived at once.
    pub async fn start_archiving(agents: Vec<AgentSpec>) -> Cluster {
        Cluster::start_with(agents, false, false, true, None).await
    }

    /// [`Cluster::start`] with the results folder mirrored to an S3 bucket.
    pub async fn start_mirrored(agents: Vec<AgentSpec>, mirror: MirrorConfig) -> Cluster {
        Cluster::start_with(agents, false, false, false, Some(mirror)).await
    }

    async fn start_with(
        agents: Vec<AgentSpec>,
        http: bool,
        metrics: bool,
        archive: bool,
        results_s3: Option<MirrorConfig>,
    ) -> Cluster {
        // The controller binds its HTTP addresses itself: free ports, let go.
        let http_addr = http.then(free_local_addr);
        let metrics_addr = metrics.then(free_local_addr);
        let tmp = tempfile::tempdir().unwrap();
        let results = tmp.path().join("results");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let controller = tokio::spawn(fleetbench_controller::run(
            ControllerConfig {
                results_dir: results.clone(),
                agent_grace: Duration::from_secs(30),
                state_dir: archive.then(|| tmp.path().join("controller-state")),
                archive_after: Duration::ZERO,
                http: http_addr,
                metrics: metrics_addr,
                results_s3,
                ..ControllerConfig::default()
            },
            listener,
            shutdown.clone(),
        ));
        let handles = agents
            .into_iter()
            .map(|a| {
                let cfg = AgentConfig {
                    name: a.name.clone(),
                    host: format!("{}-host", a.name),
                    controller: addr.clone(),
                    labels: a.labels.into_iter().collect(),
                    gpus: (0..a.gpus)
                        .map(|_| GpuConfig {
                            vendor: "sim".into(),
                            model: a.gpu_model.clone(),
                            memory_gib: 24.0,
                        })
                        .collect(),
                    max_engines: a.max_engines,
                    vllm_command: a.vllm_command,
                    engine_commands: a.engine_commands,
                    engine_env: a.engine_env,
                    model_paths: a.model_paths,
                    heartbeat_s: 1,
                    metrics_interval_ms: a.metrics_interval_ms,
                    docker: test_docker_config(),
                    policy: test_policy(),
                    spool_dir: tmp.path().join("spool").join(&a.name),
                    metrics_addr: a.metrics_addr,
                    dataset_dirs: a.dataset_dirs,
                    ..AgentConfig::default()
                };
                tokio::spawn(fleetbench_agent::run(cfg, shutdown.clone()))
            })
            .collect();
        Cluster {
            addr,
            http: http_addr.map(|a| format!("http://{a}")),
            metrics: metrics_addr.map(|a| format!("http://{a}/metrics")),
            results,
            shutdown,
            controller: Some(controller),
            agents: handles,
            _tmp: tmp,
        }
    }

    pub async fn client(&self) -> ControlServiceClient<Channel> {
        for _ in 0..100 {
            if let Ok(c) = ControlServiceClient::connect(self.addr.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("controller at {} never answered", self.addr);
    }

    /// Waits until `n` agents are connected.
    pub async fn wait_agents(&self, n: usize) {
        let mut client = self.client().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let agents = client
                .list_agents(fleetbench_proto::pb::ListAgentsRequest {})
                .await
                .unwrap()
                .into_inner()
                .agents;
            if agents.iter().filter(|a| a.connected).count() >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agents did not connect: {agents:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops agents (and their engines) and the controller, waiting for both.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for a in self.agents.drain(..) {
            a.await.unwrap().unwrap();
        }
        if let Some(c) = self.controller.take() {
            c.await.unwrap().unwrap();
        }
    }
}

/// Exact percentile with numpy's default linear interpolation, for checking summaries.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = q / 100.0 * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// Follows a sweep's watch stream to its end and returns the last status.
pub async fn watch_to_end(
    client: &mut ControlServiceClient<Channel>,
    sweep_id: &str,
) -> fleetbench_proto::pb::SweepStatus {
    let mut watch = client
        .watch_sweep(fleetbench_proto::pb::WatchSweepRequest {
            sweep_id: sweep_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(s) = watch.message().await.unwrap() {
        last = Some(s);
    }
    last.expect("watch stream sent no status")
}

/// Runs the real `controllerctl --controller <addr> <args…>` (60 s at most); its exit code
/// and its standard output and error together.
pub async fn controllerctl(addr: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(workspace_bin("controllerctl"))
            .args(["--controller", addr])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("controllerctl did not end")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Submits a sweep file's text; returns the sweep id.
pub async fn submit(client: &mut ControlServiceClient<Channel>, toml: &str) -> String {
    client
        .submit_sweep(fleetbench_proto::pb::SubmitSweepRequest {
            spec_toml: toml.to_string(),
            file_name: "test.toml".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .sweep_id
}

/// How many pairs of `points` ran at the same time (their start–finish spans overlap).
pub fn overlapping_pairs(points: &[fleetbench_results::summary::PointSummary]) -> usize {
    let overlap = |a: &fleetbench_results::summary::PointSummary,
                   b: &fleetbench_results::summary::PointSummary| {
        a.meta.started_unix_us < b.meta.finished_unix_us
            && b.meta.started_unix_us < a.meta.finished_unix_us
    };
    points
        .iter()
        .enumerate()
        .map(|(i, a)| points[i + 1..].iter().filter(|b| overlap(a, b)).count())
        .sum()
}

/// vllm-sim's flat step model for sweeps that only need it fast and deterministic: 4 ms + 1 ms
/// per running sequence per step, 10 µs per prefilled token.
pub const TINY_SIM_ARGS: &[&str] = &[
    "--sim-step-ms",
    "4",
    "--sim-step-ms-per-seq",
    "1",
    "--sim-prefill-us-per-token",
    "10",
];

/// A burst sweep of the tiny test model (`test-org/tiny-model`) on vllm-sim as a process
/// engine: 1 and 2 GPUs, workloads 64/16 and 32/8 tokens, chat endpoint, one warm-up
/// request, the given batch sizes (a TOML list such as `[1, 2, 4]`) and seed. Tests add
/// sections (e.g. `[placement]`) by appending to it.
pub fn tiny_sweep(name: &str, batch_sizes: &str, seed: u64) -> String {
    format!(
        r#"
name = "{name}"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
block_size = 16
max_num_seqs = 64
startup_timeout_s = 60

[matrix]
gpus = [1, 2]
batch_sizes = {batch_sizes}
workloads = [{{ input = 64, output = 16 }}, {{ input = 32, output = 8 }}]

[load]
mode = "burst"
endpoint = "chat"
timeout_s = 60
warmup_requests = 1
seed = {seed}
"#
    )
}

/// Where `tests/engines/setup-vllm.sh` installs: `$FLEETBENCH_VLLM_HOME`, else
/// `~/.cache/fleetbench/vllm-0.32-cpu`.
pub fn vllm_home() -> PathBuf {
    std::env::var_os("FLEETBENCH_VLLM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/fleetbench/vllm-0.32-cpu")
        })
}

/// The set-up script's virtual environment (vLLM, and transformers with `transformers
/// serve`): every process it runs has this path in its command line.
pub fn vllm_venv() -> PathBuf {
    vllm_home().join("venv")
}

/// `VLLM_BIN` and `VLLM_MODEL` from the set-up script's `env` file (shell assignments,
/// read by the shell so any quoting it used is undone). Fails with the instruction when the
/// set-up script has not run: tests that need real engines never skip.
pub fn vllm_install() -> (String, String) {
    let env = vllm_home().join("env");
    assert!(
        env.is_file(),
        "{} missing: run tests/engines/setup-vllm.sh first (the README's test command does)",
        env.display()
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"set -e; . "$1"; printf '%s\n%s' "$VLLM_BIN" "$VLLM_MODEL""#)
        .arg("bash")
        .arg(&env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (bin, model) = text.split_once('\n').unwrap();
    assert!(
        !bin.is_empty() && !model.is_empty(),
        "VLLM_BIN/VLLM_MODEL missing in {}",
        env.display()
    );
    (bin.to_string(), model.to_string())
}

/// Command lines of running processes that mention `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}
