//! Agent configuration: a TOML file merged with command-line flags.
//!
//! Secrets (HF_TOKEN, proxies) belong in `engine_env` here: they are handed to engines the
//! agent starts and never travel to the controller.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::AgentError;
use crate::policy::Policy;
use fleetbench_proto::channel::ClientTls;
use fleetbench_proto::spec::EngineKind;

/// One GPU of this host as reported at registration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    /// `intel`, `nvidia`, `none` or `sim`.
    pub vendor: String,
    pub model: String,
    #[serde(default)]
    pub memory_gib: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique agent name in the fleet; defaults to the host name.
    #[serde(default)]
    pub name: String,
    /// Controller address, e.g. `http://controller.lab:50051`.
    #[serde(default = "default_controller")]
    pub controller: String,
    /// Host name reported with results; defaults to this machine's.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    /// GPU inventory; empty: discovered at start (sysfs, xpu-smi, nvidia-smi; see
    /// [`crate::engine::gpu`]). Listing GPUs here overrides discovery.
    #[serde(default)]
    pub gpus: Vec<GpuConfig>,
    /// Engines this agent runs at the same time, each on its own (disjoint) GPUs: a host
    /// with 8 GPUs and `max_engines = 2` runs two 4-GPU engines side by side. Default 1:
    /// one point at a time, so a measurement never shares the host's CPU, PCIe or memory
    /// bandwidth with another point's engine and load generator.
    #[serde(default = "default_max_engines")]
    pub max_engines: u32,
    /// Command that starts vLLM with the `process` runtime; the model and vLLM flags are
    /// appended, e.g. `["vllm", "serve"]` or `["/opt/venv/bin/vllm", "serve"]`.
    #[serde(default = "default_vllm_command")]
    pub vllm_command: Vec<String>,
    /// `[engine_commands]`: the command that starts each other engine kind with the
    /// `process` runtime (the kind's arguments are appended, see
    /// [`fleetbench_proto::spec::engine_args`]), e.g.
    /// `transformers = ["/opt/venv/bin/transformers", "serve"]`. A kind not listed runs its
    /// usual program from `PATH`: `transformers serve`, `llama-server`,
    /// `python3 -m sglang.launch_server`, `text-generation-launcher`; `vllm` runs
    /// `vllm_command`.
    #[serde(default)]
    pub engine_commands: BTreeMap<EngineKind, Vec<String>>,
    /// Address engines bind to and the load generator targets.
    #[serde(default = "default_engine_host")]
    pub engine_host: String,
    /// Extra environment for engines the agent starts (secrets stay on this host).
    #[serde(default)]
    pub engine_env: BTreeMap<String, String>,
    /// Local folders for model names, e.g. `"HuggingFaceTB/SmolLM2-135M-Instruct" =
    /// "/models/smollm2"`: the engine loads the folder and serves it under the sweep's
    /// model name, so results stay keyed by the name, not the path.
    #[serde(default)]
    pub model_paths: BTreeMap<String, String>,
    /// Records per batch sent to the controller.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// A partial batch is sent after this many milliseconds.
    #[serde(default = "default_batch_flush_ms")]
    pub batch_flush_ms: u64,
    /// Engine log lines kept for crash forensics.
    #[serde(default = "default_log_tail")]
    pub log_tail_lines: usize,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// Milliseconds between scrapes of the engine's `/metrics` during a point.
    #[serde(default = "default_metrics_interval_ms")]
    pub metrics_interval_ms: u64,
    /// Milliseconds an idle keep-alive connection to an engine stays in the pool. Below
    /// common server defaults (uvicorn closes idle connections after 5 s), so the agent
    /// drops a connection before the server does instead of sending on a dead one.
    #[serde(default = "default_http_idle_timeout_ms")]
    pub http_idle_timeout_ms: u64,
    /// Where the agent serves its own Prometheus metrics (`GET /metrics`, see
    /// [`crate::metrics`]), e.g. `127.0.0.1:9464`; unset: not served. Plain HTTP, so a
    /// non-loopback address also needs `metrics_insecure = true`.
    #[serde(default)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the metrics in plain HTTP on a non-loopback address: the operator accepts
    /// that anyone who reaches it reads them.
    #[serde(default)]
    pub metrics_insecure: bool,
    /// How engines of the `docker` runtime are run on this host.
    #[serde(default)]
    pub docker: DockerConfig,
    /// Folder of the results spool: every record batch and point-finished message stays
    /// here until the controller acknowledges the point (see [`crate::link::spool`]). Empty:
    /// `<state dir>/spool/<name>`, the state dir being `$STATE_DIRECTORY` (systemd's
    /// `StateDirectory=`), else `/var/lib/fleetbench-agent` for root, else
    /// `$XDG_STATE_HOME/fleetbench-agent` (default `~/.local/state/fleetbench-agent`).
    /// One agent per folder (it is locked).
    #[serde(default)]
    pub spool_dir: PathBuf,
    /// What sweeps may make this agent run: runtimes, images, entrypoints, vLLM flags,
    /// external hosts, the HF cache's and IPC's exposure (see [`crate::policy`]).
    #[serde(default)]
    pub policy: Policy,
    /// Folders that dataset workloads (`dataset = "chat.jsonl"` in a sweep's `[matrix]
    /// workloads) are read from, tried in order: a sweep names a file relative to them and
    /// can read only files inside them (symlinks out of them are refused; see
    /// [`crate::load::dataset`]). Absolute paths. Empty (the default): this host runs no
    /// dataset workloads.
    #[serde(default)]
    pub dataset_dirs: Vec<PathBuf>,
    /// The largest dataset file this agent reads, in bytes (default 1 GiB): a file is read
    /// whole into memory, and parsed, before a point's load starts.
    #[serde(default = "default_max_dataset_bytes")]
    pub max_dataset_bytes: u64,
    /// `[tls]`: how to reach an `https://` controller: its CA, and this agent's certificate
    /// and key (SAN URI `fleetbench://agent/<name>`; `controllerctl certs` makes them).
    #[serde(default)]
    pub tls: ClientTls,
}

/// `[docker]`: host-specific settings of the `docker` runtime. What the engine is (image,
/// flags) comes from the sweep; where the weights live and which devices exist is the
/// host's business.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Docker Engine API address: `unix:///var/run/docker.sock`, `tcp://host:2375`;
    /// empty: `DOCKER_HOST` or the local default socket.
    #[serde(default)]
    pub host: String,
    /// `intel`, `nvidia` or `none`; empty: from the GPU inventory's vendor.
    #[serde(default)]
    pub accelerator: String,
    /// Host folder mounted as the container's Hugging Face cache so weights are downloaded
    /// once per host; empty: `$HF_HOME`, else `$HOME/.cache/huggingface`; `"none"`: no
    /// mount.
    #[serde(default)]
    pub hf_cache: String,
    /// Where the cache appears in the container (`HF_HOME` is set to it).
    #[serde(default = "default_container_hf_home")]
    pub container_hf_home: String,
    /// Port the engine listens on inside the container; the agent publishes it on
    /// `engine_host` at a port Docker picks.
    #[serde(default = "default_container_port")]
    pub container_port: u16,
    /// `--ipc` mode other than `host` (e.g. `shareable`); empty: Docker's default.
    /// `--ipc=host` is the policy's to allow (`[policy] ipc_host = true`), so `"host"` here
    /// without it is a config error.
    #[serde(default)]
    pub ipc: String,
    /// Size of `/dev/shm` when the container does not share the host's IPC namespace
    /// (vLLM's workers exchange tensors through it); default [`DEFAULT_SHM_SIZE_GIB`].
    #[serde(default)]
    pub shm_size_gib: Option<f64>,
    /// Seconds `docker stop` waits after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_timeout_s")]
    pub stop_timeout_s: u32,
}

fn default_container_hf_home() -> String {
    "/root/.cache/huggingface".into()
}
fn default_container_port() -> u16 {
    8000
}
/// `/dev/shm` of a container without `--ipc=host`, when `shm_size_gib` is not set: enough
/// for vLLM's tensor-parallel workers (Docker's own default is 64 MiB). A tmpfs, so only
/// what is used takes memory.
pub const DEFAULT_SHM_SIZE_GIB: f64 = 16.0;
fn default_stop_timeout_s() -> u32 {
    20
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: String::new(),
            accelerator: String::new(),
            hf_cache: String::new(),
            container_hf_home: default_container_hf_home(),
            container_port: default_container_port(),
            ipc: String::new(),
            shm_size_gib: None,
            stop_timeout_s: default_stop_timeout_s(),
        }
    }
}

fn default_controller() -> String {
    "http://127.0.0.1:50051".into()
}
impl AgentConfig {
    /// The command (program and its first arguments) that starts an engine of `kind` with
    /// the `process` runtime; never empty once the config is [finished](AgentConfig::finish).
    pub fn engine_command(&self, kind: EngineKind) -> Vec<String> {
        if let Some(command) = self.engine_commands.get(&kind) {
            return command.clone();
        }
        let words: &[&str] = match kind {
            EngineKind::Vllm => return self.vllm_command.clone(),
            EngineKind::Transformers => &["transformers", "serve"],
            EngineKind::LlamaCpp => &["llama-server"],
            EngineKind::Sglang => &["python3", "-m", "sglang.launch_server"],
            EngineKind::Tgi => &["text-generation-launcher"],
        };
        words.iter().map(|w| (*w).to_string()).collect()
    }
}

fn default_vllm_command() -> Vec<String> {
    vec!["vllm".into(), "serve".into()]
}
fn default_engine_host() -> String {
    "127.0.0.1".into()
}
fn default_batch_records() -> usize {
    64
}
fn default_batch_flush_ms() -> u64 {
    250
}
fn default_log_tail() -> usize {
    200
}
fn default_heartbeat_s() -> u64 {
    5
}
/// Default [`AgentConfig::max_dataset_bytes`]: 1 GiB.
pub const DEFAULT_MAX_DATASET_BYTES: u64 = 1 << 30;

fn default_max_dataset_bytes() -> u64 {
    DEFAULT_MAX_DATASET_BYTES
}
fn default_max_engines() -> u32 {
    1
}

fn default_metrics_interval_ms() -> u64 {
    500
}

/// Default [`AgentConfig::http_idle_timeout_ms`].
pub const DEFAULT_HTTP_IDLE_TIMEOUT_MS: u64 = 4_000;

fn default_http_idle_timeout_ms() -> u64 {
    DEFAULT_HTTP_IDLE_TIMEOUT_MS
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: String::new(),
            controller: default_controller(),
            host: String::new(),
            labels: HashMap::new(),
            gpus: Vec::new(),
            max_engines: default_max_engines(),
            vllm_command: default_vllm_command(),
            engine_commands: BTreeMap::new(),
            engine_host: default_engine_host(),
            engine_env: BTreeMap::new(),
            model_paths: BTreeMap::new(),
            batch_records: default_batch_records(),
            batch_flush_ms: default_batch_flush_ms(),
            log_tail_lines: default_log_tail(),
            heartbeat_s: default_heartbeat_s(),
            metrics_interval_ms: default_metrics_interval_ms(),
            http_idle_timeout_ms: default_http_idle_timeout_ms(),
            metrics_addr: None,
            metrics_insecure: false,
            docker: DockerConfig::default(),
            spool_dir: PathBuf::new(),
            policy: Policy::default(),
            dataset_dirs: Vec::new(),
            max_dataset_bytes: default_max_dataset_bytes(),
            tls: ClientTls::default(),
        }
    }
}

impl AgentConfig {
    /// Reads a TOML config file; unknown keys are errors naming the line.
    pub fn from_file(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, AgentError> {
        toml::from_str(text).map_err(|e| AgentError::Config {
            path: origin.to_string(),
            message: e.to_string(),
        })
    }

    /// Fills defaults that depend on the machine and checks what must hold.
    pub fn finish(mut self) -> Result<Self, AgentError> {
        if self.host.is_empty() {
            self.host = local_hostname();
        }
        if self.name.is_empty() {
            self.name = self.host.clone();
        }
        if self.vllm_command.is_empty() {
            return Err(AgentError::Config {
                path: "vllm_command".into(),
                message: "must name a program".into(),
            });
        }
        if let Some((kind, _)) = self.engine_commands.iter().find(|(_, c)| c.is_empty()) {
            return Err(AgentError::Config {
                path: format!("engine_commands.{}", kind.as_str()),
                message: "must name a program".into(),
            });
        }
        if let Some(addr) = self.metrics_addr
            && !addr.ip().is_loopback()
            && !self.metrics_insecure
        {
            return Err(AgentError::Config {
                path: "metrics_addr".into(),
                message: format!(
                    "{addr} is not a loopback address: the metrics are plain HTTP; serve them on 127.0.0.1 (behind a proxy) or set metrics_insecure = true"
                ),
            });
        }
        if self.batch_records == 0 {
            return Err(AgentError::Config {
                path: "batch_records".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some((i, dir)) = self
            .dataset_dirs
            .iter()
            .enumerate()
            .find(|(_, d)| !d.is_absolute())
        {
            return Err(AgentError::Config {
                path: format!("dataset_dirs[{i}]"),
                message: format!("{} is not an absolute path", dir.display()),
            });
        }
        if self.max_dataset_bytes == 0 {
            return Err(AgentError::Config {
                path: "max_dataset_bytes".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Err((key, message)) = self.policy.validate() {
            return Err(AgentError::Config { path: key, message });
        }
        if self.docker.ipc == "host" && !self.policy.ipc_host {
            return Err(AgentError::Config {
                path: "docker.ipc".into(),
                message: "\"host\" needs [policy] ipc_host = true (the policy decides whether containers share the host's IPC namespace)".into(),
            });
        }
        if self.spool_dir.as_os_str().is_empty() {
            self.spool_dir = default_state_dir().join("spool").join(&self.name);
        }
        Ok(self)
    }
}

/// The agent's state folder when the config does not name a spool folder (see
/// [`AgentConfig::spool_dir`]).
pub fn default_state_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| !p.as_os_str().is_empty())
    {
        return dir;
    }
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0) {
        return PathBuf::from("/var/lib/fleetbench-agent");
    }
    let state_home = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state_home.join("fleetbench-agent")
}

/// This machine's host name (from the kernel), or `unknown-host`.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_line() {
        let err = AgentConfig::from_toml("name = \"a\"\ngpuz = []\n", "agent.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("gpuz"), "{msg}");
    }

    #[test]
    fn the_example_agent_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/agent.toml");
        let cfg = AgentConfig::from_file(Path::new(path))
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(cfg.name, "b60-host-1");
        assert_eq!(cfg.docker.ipc, "");
        // The example spells out the default policy.
        assert_eq!(cfg.policy, Policy::default());
        assert_eq!(cfg.docker.container_port, 8000);
        assert_eq!(cfg.gpus.len(), 2);
        assert_eq!(
            cfg.spool_dir,
            Path::new("/var/lib/fleetbench-agent/spool/b60-host-1")
        );
    }

    #[test]
    fn the_policy_section_is_checked() {
        let cfg = AgentConfig::from_toml(
            "[policy]\nimages = [\"myorg/vllm@sha256:abc\"]\nipc_host = true\n",
            "a",
        )
        .unwrap();
        assert_eq!(cfg.policy.images, vec!["myorg/vllm@sha256:abc"]);
        assert!(cfg.policy.ipc_host);
        // Unset keys keep their defaults.
        assert_eq!(cfg.policy.external_hosts, Policy::default().external_hosts);
        let err = AgentConfig::from_toml("[policy]\nimagez = []\n", "a").unwrap_err();
        assert!(err.to_string().contains("imagez"), "{err}");
        let err = AgentConfig::from_toml("[policy]\nruntimes = [\"chroot\"]\n", "a").unwrap_err();
        assert!(err.to_string().contains("chroot"), "{err}");
        let err = AgentConfig::from_toml("[policy]\nextra_args = [\"trust\"]\n", "a")
            .unwrap()
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("policy.extra_args[0]"), "{err}");
        // --ipc=host is the policy's to allow.
        let err = AgentConfig::from_toml("[docker]\nipc = \"host\"\n", "a")
            .unwrap()
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("ipc_host"), "{err}");
        AgentConfig::from_toml("[docker]\nipc = \"host\"\n[policy]\nipc_host = true\n", "a")
            .unwrap()
            .finish()
            .unwrap();
    }

    #[test]
    fn plain_metrics_beyond_loopback_need_the_operators_word() {
        let err = AgentConfig::from_toml("metrics_addr = \"0.0.0.0:9464\"\n", "a")
            .unwrap()
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("metrics_addr"), "{err}");
        AgentConfig::from_toml("metrics_addr = \"127.0.0.1:9464\"\n", "a")
            .unwrap()
            .finish()
            .unwrap();
        AgentConfig::from_toml(
            "metrics_addr = \"0.0.0.0:9464\"\nmetrics_insecure = true\n",
            "a",
        )
        .unwrap()
        .finish()
        .unwrap();
    }

    #[test]
    fn dataset_dirs_must_be_absolute() {
        let cfg = AgentConfig::from_toml("", "a").unwrap().finish().unwrap();
        assert!(cfg.dataset_dirs.is_empty());
        assert_eq!(cfg.max_dataset_bytes, 1 << 30);
        let cfg = AgentConfig::from_toml(
            "dataset_dirs = [\"/srv/datasets\", \"/data/sets\"]\nmax_dataset_bytes = 1000\n",
            "a",
        )
        .unwrap()
        .finish()
        .unwrap();
        assert_eq!(
            cfg.dataset_dirs,
            vec![PathBuf::from("/srv/datasets"), PathBuf::from("/data/sets")]
        );
        assert_eq!(cfg.max_dataset_bytes, 1000);
        let err = AgentConfig::from_toml("dataset_dirs = [\"/srv/a\", \"sets\"]\n", "a")
            .unwrap()
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("dataset_dirs[1]"), "{err}");
        let err = AgentConfig::from_toml("max_dataset_bytes = 0\n", "a")
            .unwrap()
            .finish()
            .unwrap_err();
        assert!(err.to_string().contains("max_dataset_bytes"), "{err}");
    }

    #[test]
    fn defaults_fill_in() {
        let cfg = AgentConfig::from_toml(
            "[[gpus]]\nvendor = \"intel\"\nmodel = \"Arc Pro B60\"\nmemory_gib = 24\n",
            "a",
        )
        .unwrap()
        .finish()
        .unwrap();
        assert!(!cfg.name.is_empty());
        assert_eq!(cfg.name, cfg.host);
        assert_eq!(cfg.gpus.len(), 1);
        assert_eq!(cfg.vllm_command, vec!["vllm", "serve"]);
        assert!(cfg.spool_dir.ends_with(Path::new("spool").join(&cfg.name)));
    }
}
