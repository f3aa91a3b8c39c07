//! The `docker` runtime: the engine runs as a container of the sweep's image, created,
//! watched and removed through the Docker Engine API (bollard).
//!
//! What goes into a container is decided by [`ContainerPlan::create_body`], a pure function
//! of the engine spec, the GPUs the engine holds and the host's [`DockerConfig`], so the body
//! for Intel XPU and NVIDIA hosts is unit-tested without those GPUs. Every container carries
//! [`LABEL_MANAGED`] and [`LABEL_AGENT`]: the agent only ever stops or removes containers
//! that carry both with its own name ([`remove_own_containers`]).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, DeviceMapping, DeviceRequest, HostConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptions,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use fleetbench_proto::pb;
use fleetbench_proto::spec::vllm_flags;
use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{AgentConfig, DockerConfig};
use crate::engine::LogTail;
use crate::error::AgentError;

/// Set to `true` on every container fleetbench creates.
pub const LABEL_MANAGED: &str = "io.fleetbench.managed";
/// The name of the agent that created the container.
pub const LABEL_AGENT: &str = "io.fleetbench.agent";
/// The sweep the container was started for.
pub const LABEL_SWEEP: &str = "io.fleetbench.sweep";
/// The host GPU indices the container holds, comma-separated.
pub const LABEL_GPUS: &str = "io.fleetbench.gpus";

/// Environment variables handed from the agent's own environment to engines, unless the
/// agent config's `engine_env` sets them: proxies (both spellings, as tools read either).
const PASSED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Which devices a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// Intel XPU: `/dev/dri` passed through, GPUs picked with `ZE_AFFINITY_MASK`.
    Intel,
    /// NVIDIA: a device request for the GPU ids (the NVIDIA container runtime).
    Nvidia,
    /// CPU engines (and the simulator): no devices.
    None,
}

impl Accelerator {
    /// From the `[docker] accelerator` setting, else the inventory's GPU vendor.
    pub fn resolve(setting: &str, inventory_vendor: Option<&str>) -> Result<Self, AgentError> {
        let name = if setting.is_empty() {
            inventory_vendor.unwrap_or("none")
        } else {
            setting
        };
        match name {
            "intel" | "xpu" => Ok(Accelerator::Intel),
            "nvidia" | "cuda" => Ok(Accelerator::Nvidia),
            "none" | "sim" | "cpu" | "" => Ok(Accelerator::None),
            other => Err(AgentError::Config {
                path: "docker.accelerator".into(),
                message: format!("{other:?} is not intel, nvidia or none"),
            }),
        }
    }
}

/// Everything that decides the container of one engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    pub agent: String,
    pub sweep_id: String,
    pub image: String,
    /// The command: the spec's entrypoint, `--model <model>`, the vLLM flags, host and port.
    pub cmd: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    pub accelerator: Accelerator,
    /// Host GPU indices the engine holds.
    pub gpu_ids: Vec<u32>,
    /// `(host folder, container folder)` of the Hugging Face cache.
    pub hf_cache: Option<(String, String)>,
    pub container_port: u16,
    /// Host address the container port is published on (Docker picks the host port).
    pub publish_ip: String,
    pub ipc: String,
    pub shm_size_bytes: Option<i64>,
}

impl ContainerPlan {
    /// The plan for `spec` with `gpu_ids` on this host. Secrets and proxies come from the
    /// agent's config and environment, never from the spec.
    ///
    /// `gpus` is the tensor-parallel size; `gpu_ids` the host GPUs the engine holds (empty
    /// for a CPU engine, which may still run several "GPUs" of the simulator).
    pub fn new(
        spec: &pb::EngineSpec,
        gpus: u32,
        gpu_ids: &[u32],
        cfg: &AgentConfig,
        accelerator: Accelerator,
        sweep_id: &str,
        name: &str,
    ) -> ContainerPlan {
        let d = &cfg.docker;
        let gpus = gpus.max(1);
        let mut cmd = spec.entrypoint.clone();
        cmd.extend(["--model".to_string(), spec.model.clone()]);
        cmd.extend(vllm_flags(spec, gpus));
        cmd.extend([
            "--host".to_string(),
            "0.0.0.0".into(),
            "--port".into(),
            d.container_port.to_string(),
        ]);
        let mut env: Vec<String> = cfg
            .engine_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for key in PASSED_ENV {
            if !cfg.engine_env.contains_key(*key) {
                if let Ok(value) = std::env::var(key) {
                    env.push(format!("{key}={value}"));
                }
            }
        }
        let ids = join_ids(gpu_ids.iter().copied());
        match accelerator {
            // Level Zero enumerates the cards of /dev/dri in PCI order: the host indices.
            Accelerator::Intel => env.push(format!("ZE_AFFINITY_MASK={ids}")),
            // The NVIDIA runtime shows only the requested GPUs, renumbered from 0.
            Accelerator::Nvidia => env.push(format!("CUDA_VISIBLE_DEVICES={}", join_ids(0..gpus))),
            Accelerator::None => {}
        }
        let hf_cache = host_hf_cache(&d.hf_cache).map(|host| (host, d.container_hf_home.clone()));
        if hf_cache.is_some() && !cfg.engine_env.contains_key("HF_HOME") {
            env.push(format!("HF_HOME={}", d.container_hf_home));
        }
        let publish_ip = if cfg.engine_host == "0.0.0.0" {
            "127.0.0.1".to_string()
        } else {
            cfg.engine_host.clone()
        };
        ContainerPlan {
            name: name.to_string(),
            agent: cfg.name.clone(),
            sweep_id: sweep_id.to_string(),
            image: spec.image.clone(),
            cmd,
            env,
            accelerator,
            gpu_ids: gpu_ids.to_vec(),
            hf_cache,
            container_port: d.container_port,
            publish_ip,
            ipc: d.ipc.clone(),
            shm_size_bytes: d
                .shm_size_gib
                .map(|gib| (gib * 1024.0 * 1024.0 * 1024.0).round() as i64),
        }
    }

    /// The body of `POST /containers/create`.
    pub fn create_body(&self) -> ContainerCreateBody {
        let port = format!("{}/tcp", self.container_port);
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_AGENT.to_string(), self.agent.clone()),
            (LABEL_SWEEP.to_string(), self.sweep_id.clone()),
            (
                LABEL_GPUS.to_string(),
                join_ids(self.gpu_ids.iter().copied()),
            ),
        ]);
        let (devices, device_requests) = match self.accelerator {
            Accelerator::Intel => (
                Some(vec![DeviceMapping {
                    path_on_host: Some("/dev/dri".into()),
                    path_in_container: Some("/dev/dri".into()),
                    cgroup_permissions: Some("rwm".into()),
                }]),
                None,
            ),
            Accelerator::Nvidia => (
                None,
                Some(vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    device_ids: Some(self.gpu_ids.iter().map(u32::to_string).collect()),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]),
            ),
            Accelerator::None => (None, None),
        };
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(self.publish_ip.clone()),
                    // Empty: Docker picks a free host port (read back by inspecting).
                    host_port: Some(String::new()),
                }]),
            )])),
            binds: self
                .hf_cache
                .as_ref()
                .map(|(host, container)| vec![format!("{host}:{container}")]),
            ipc_mode: (!self.ipc.is_empty()).then(|| self.ipc.clone()),
            shm_size: self.shm_size_bytes,
            devices,
            device_requests,
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.cmd.clone()),
            env: Some(self.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(vec![port]),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

fn join_ids(ids: impl Iterator<Item = u32>) -> String {
    ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// The host folder of the Hugging Face cache (`None` for `"none"`), created if missing so
/// Docker does not create it as root-owned on first use.
fn host_hf_cache(setting: &str) -> Option<String> {
    let path = match setting {
        "none" => return None,
        "" => std::env::var("HF_HOME").ok().or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| format!("{h}/.cache/huggingface"))
        })?,
        path => path.to_string(),
    };
    if let Err(e) = std::fs::create_dir_all(&path) {
        warn!(path, error = %e, "cannot create the Hugging Face cache folder");
    }
    Some(path)
}

/// Connects to the Docker Engine of `[docker] host` (or `DOCKER_HOST`, or the local
/// socket) and agrees on an API version the engine speaks.
pub async fn connect(cfg: &DockerConfig) -> Result<Docker, AgentError> {
    let docker = if cfg.host.is_empty() {
        Docker::connect_with_defaults()
    } else if cfg.host.starts_with("unix://") || cfg.host.starts_with('/') {
        Docker::connect_with_socket(&cfg.host, 120, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(&cfg.host, 120, bollard::API_DEFAULT_VERSION)
    }
    .map_err(docker_error)?;
    docker.negotiate_version().await.map_err(docker_error)
}

fn docker_error(e: bollard::errors::Error) -> AgentError {
    AgentError::Docker(e.to_string())
}

/// Stops and removes every container this agent created earlier (an agent killed before it
/// could clean up). Containers of other agents and of anyone else are never touched: the
/// listing filters on both labels. Returns the names removed.
pub async fn remove_own_containers(
    docker: &Docker,
    agent: &str,
) -> Result<Vec<String>, AgentError> {
    let filters = HashMap::from([(
        "label",
        vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_AGENT}={agent}"),
        ],
    )]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(docker_error)?;
    let mut removed = Vec::new();
    for c in list {
        let labels = c.labels.unwrap_or_default();
        // Belt and braces: never act on a container whose labels are not ours.
        if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true")
            || labels.get(LABEL_AGENT).map(String::as_str) != Some(agent)
        {
            continue;
        }
        let Some(id) = c.id else { continue };
        let name = c
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_else(|| id.clone());
        info!(container = %name, "removing a container left by an earlier run of this agent");
        docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .map_err(docker_error)?;
        removed.push(name.trim_start_matches('/').to_string());
    }
    Ok(removed)
}

/// The tagged images of the local engine (`repo:tag`, sorted), reported at registration
/// so a user sees which engine images a host can start without pulling.
pub async fn local_images(docker: &Docker) -> Result<Vec<String>, AgentError> {
    let images = docker
        .list_images(None::<ListImagesOptions>)
        .await
        .map_err(docker_error)?;
    let mut tags: Vec<String> = images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .filter(|t| t != "<none>:<none>")
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerExit {
    pub code: Option<i32>,
    pub oom_killed: Option<bool>,
    /// When the container stopped, in Unix microseconds (from Docker's `FinishedAt`).
    pub finished_unix_us: Option<i64>,
}

/// A running engine container.
#[derive(Debug)]
pub struct Container {
    docker: Docker,
    pub name: String,
    pub id: String,
    pub image: String,
    pub image_digest: String,
    pub gpu_ids: Vec<u32>,
    /// `http://<publish ip>:<host port>`.
    pub base_url: String,
    stop_timeout_s: u32,
    removed: bool,
    follower: Option<JoinHandle<()>>,
}

impl Container {
    /// Creates and starts the container of `plan`, follows its logs into `log_tail` and
    /// reads back the host port Docker published.
    pub async fn start(
        docker: &Docker,
        plan: &ContainerPlan,
        stop_timeout_s: u32,
        log_tail: &LogTail,
    ) -> Result<Container, AgentError> {
        let image_digest =
            image_digest(docker, &plan.image)
                .await
                .map_err(|e| AgentError::EngineStart {
                    message: format!("image {}: {e}", plan.image),
                    exit_code: None,
                    log_tail: Vec::new(),
                })?;
        let created = docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::new()
                        .name(&plan.name)
                        .build(),
                ),
                plan.create_body(),
            )
            .await
            .map_err(|e| AgentError::EngineStart {
                message: format!("cannot create container {}: {e}", plan.name),
                exit_code: None,
                log_tail: Vec::new(),
            })?;
        let mut container = Container {
            docker: docker.clone(),
            name: plan.name.clone(),
            id: created.id,
            image: plan.image.clone(),
            image_digest,
            gpu_ids: plan.gpu_ids.clone(),
            base_url: String::new(),
            stop_timeout_s,
            removed: false,
            follower: None,
        };
        info!(container = %container.name, image = %plan.image, digest = %container.image_digest, cmd = %plan.cmd.join(" "), "starting engine container");
        if let Err(e) = docker.start_container(&container.id, None).await {
            container.remove().await;
            return Err(AgentError::EngineStart {
                message: format!("cannot start container {}: {e}", plan.name),
                exit_code: None,
                log_tail: Vec::new(),
            });
        }
        container.follower = Some(tokio::spawn(follow_logs(
            docker.clone(),
            container.id.clone(),
            log_tail.clone(),
        )));
        let port = format!("{}/tcp", plan.container_port);
        let inspect = docker
            .inspect_container(&container.id, None)
            .await
            .map_err(docker_error)?;
        let host_port = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut ports| ports.remove(&port))
            .flatten()
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .filter(|p| !p.is_empty());
        match host_port {
            Some(p) => container.base_url = format!("http://{}:{p}", plan.publish_ip),
            // Exited before Docker published the port: the caller's readiness loop sees
            // the exit and reports it with the log tail.
            None => debug!(container = %container.name, "no published port yet"),
        }
        Ok(container)
    }

    /// `Some` once the container has stopped running (or was removed by someone else).
    pub async fn exited(&self) -> Option<ContainerExit> {
        match self.docker.inspect_container(&self.id, None).await {
            Ok(inspect) => exit_of(&inspect),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Some(ContainerExit {
                code: None,
                oom_killed: None,
                finished_unix_us: None,
            }),
            Err(e) => {
                warn!(container = %self.name, error = %e, "cannot inspect the engine container");
                None
            }
        }
    }

    /// The last `lines` lines the container wrote (stdout and stderr), straight from
    /// Docker: complete even when the follower has not caught up.
    pub async fn log_tail(&self, lines: usize) -> Vec<String> {
        let mut stream = self.docker.logs(
            &self.id,
            Some(
                LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .tail(&lines.to_string())
                    .build(),
            ),
        );
        let mut splitter = LineSplitter::default();
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.extend(splitter.push(&chunk.into_bytes())),
                Err(e) => {
                    out.push(format!("<cannot read the container's log: {e}>"));
                    break;
                }
            }
        }
        out.extend(splitter.finish());
        let skip = out.len().saturating_sub(lines);
        out.split_off(skip)
    }

    /// Stops the container (SIGTERM, SIGKILL after the stop timeout) and removes it.
    pub async fn stop(&mut self) {
        if self.removed {
            return;
        }
        let t = i32::try_from(self.stop_timeout_s).unwrap_or(i32::MAX);
        if let Err(e) = self
            .docker
            .stop_container(
                &self.id,
                Some(StopContainerOptionsBuilder::new().t(t).build()),
            )
            .await
        {
            debug!(container = %self.name, error = %e, "stop");
        }
        self.remove().await;
    }

    async fn remove(&mut self) {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        match self
            .docker
            .remove_container(
                &self.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
        {
            Ok(()) => info!(container = %self.name, "engine container removed"),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                warn!(container = %self.name, error = %e, "cannot remove the engine container")
            }
        }
        self.removed = true;
    }
}

impl Drop for Container {
    /// A container must not outlive its engine handle (an aborted task, a panic): remove it
    /// in the background when a runtime is still there. A killed agent leaves it for
    /// [`remove_own_containers`] at its next start.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let id = self.id.clone();
            handle.spawn(async move {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await;
            });
        }
    }
}

/// The exit of an inspected container, `None` while it runs (or is being created).
fn exit_of(inspect: &ContainerInspectResponse) -> Option<ContainerExit> {
    let state = inspect.state.as_ref()?;
    if state.running.unwrap_or(false) || state.restarting.unwrap_or(false) {
        return None;
    }
    // "created": not started yet; not an exit.
    if state
        .finished_at
        .as_deref()
        .is_none_or(|f| f.starts_with("0001-"))
    {
        return None;
    }
    Some(ContainerExit {
        code: state.exit_code.and_then(|c| i32::try_from(c).ok()),
        oom_killed: state.oom_killed,
        finished_unix_us: state
            .finished_at
            .as_deref()
            .and_then(|f| chrono::DateTime::parse_from_rfc3339(f).ok())
            .map(|t| t.timestamp_micros()),
    })
}

/// The image's repository digest (`name@sha256:…`), else its content id (`sha256:…`), so
/// results say exactly which build of the engine ran.
async fn image_digest(docker: &Docker, image: &str) -> Result<String, bollard::errors::Error> {
    let inspect = docker.inspect_image(image).await?;
    Ok(inspect
        .repo_digests
        .and_then(|d| d.into_iter().next())
        .or(inspect.id)
        .unwrap_or_default())
}

/// Follows the container's output into `tail` (and the agent's debug log) until it ends.
async fn follow_logs(docker: Docker, id: String, tail: LogTail) {
    let mut stream = docker.logs(
        &id,
        Some(
            LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    let mut splitter = LineSplitter::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                for line in splitter.push(&chunk.into_bytes()) {
                    debug!(target: "engine", "{line}");
                    tail.push(line);
                }
            }
            Err(e) => {
                debug!(error = %e, "engine log stream ended");
                break;
            }
        }
    }
    if let Some(line) = splitter.finish() {
        tail.push(line);
    }
}

/// Turns log chunks into lines: a line split across chunks is joined, invalid UTF-8 is
/// replaced (a crashing engine's output must not break forensics).
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            lines.push(
                String::from_utf8_lossy(&line[..nl])
                    .trim_end_matches('\r')
                    .to_string(),
            );
        }
        lines
    }

    fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.partial);
        Some(String::from_utf8_lossy(&rest).into_owned())
    }
}

/// A container name unique on this host: agent, engine sequence number and the agent's
/// process id (a restarted agent never collides with a container it left behind).
pub fn container_name(agent: &str, seq: u64) -> String {
    let safe: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("fleetbench-{safe}-{}-{seq}", std::process::id())
}

/// How long to wait between readiness polls of a container.
pub const READY_POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> pb::EngineSpec {
        pb::EngineSpec {
            kind: "vllm".into(),
            runtime: "docker".into(),
            model: "deepseek-ai/DeepSeek-R1-Distill-Llama-8B".into(),
            served_model_name: "deepseek-ai/DeepSeek-R1-Distill-Llama-8B".into(),
            max_model_len: 4096,
            gpu_memory_utilization: 0.9,
            block_size: 64,
            max_num_batched_tokens: 8192,
            max_num_seqs: 256,
            image: "intel/vllm:0.10.2-xpu".into(),
            ..Default::default()
        }
    }

    fn cfg() -> AgentConfig {
        let mut cfg = AgentConfig {
            name: "lab-b60".into(),
            ..AgentConfig::default()
        };
        cfg.engine_env.insert("HF_TOKEN".into(), "hf_secret".into());
        cfg.engine_env
            .insert("HTTPS_PROXY".into(), "http://proxy:912".into());
        cfg.docker.hf_cache = "/srv/hf".into();
        cfg
    }

    #[test]
    fn intel_xpu_body_passes_dri_and_masks_the_held_gpus() {
        let plan = ContainerPlan::new(
            &spec(),
            4,
            &[4, 5, 6, 7],
            &cfg(),
            Accelerator::Intel,
            "sw-1",
            "fleetbench-lab-b60-1",
        );
        let body = plan.create_body();
        let host = body.host_config.clone().unwrap();
        assert_eq!(
            host.devices.unwrap(),
            vec![DeviceMapping {
                path_on_host: Some("/dev/dri".into()),
                path_in_container: Some("/dev/dri".into()),
                cgroup_permissions: Some("rwm".into()),
            }]
        );
        assert!(host.device_requests.is_none());
        assert_eq!(host.ipc_mode.as_deref(), Some("host"));
        assert_eq!(
            host.binds.unwrap(),
            vec!["/srv/hf:/root/.cache/huggingface"]
        );
        let env = body.env.clone().unwrap();
        for want in [
            "ZE_AFFINITY_MASK=4,5,6,7",
            "HF_TOKEN=hf_secret",
            "HTTPS_PROXY=http://proxy:912",
            "HF_HOME=/root/.cache/huggingface",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
        }
        let cmd = body.cmd.clone().unwrap();
        let flag = |name: &str| {
            cmd.iter()
                .position(|a| a == name)
                .map(|i| cmd[i + 1].as_str())
        };
        assert_eq!(
            flag("--model"),
            Some("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
        );
        assert_eq!(flag("--tensor-parallel-size"), Some("4"));
        assert_eq!(flag("--block-size"), Some("64"));
        assert_eq!(flag("--port"), Some("8000"));
        assert_eq!(flag("--host"), Some("0.0.0.0"));
        let labels = body.labels.clone().unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_AGENT], "lab-b60");
        assert_eq!(labels[LABEL_SWEEP], "sw-1");
        assert_eq!(labels[LABEL_GPUS], "4,5,6,7");
        assert_eq!(body.image.as_deref(), Some("intel/vllm:0.10.2-xpu"));
        assert_eq!(body.exposed_ports, Some(vec!["8000/tcp".to_string()]));
        let binding = &host.port_bindings.unwrap()["8000/tcp"];
        assert_eq!(
            binding.as_ref().unwrap()[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        // The body as Docker receives it: a map of exposed ports, secrets only in env.
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["ExposedPorts"], serde_json::json!({"8000/tcp": {}}));
        assert_eq!(json["HostConfig"]["IpcMode"], "host");
    }

    #[test]
    fn nvidia_body_requests_the_held_gpus_and_renumbers_them() {
        let mut cfg = cfg();
        cfg.docker.ipc = String::new();
        cfg.docker.shm_size_gib = Some(16.0);
        let mut spec = spec();
        spec.image = "vllm/vllm-openai@sha256:abc".into();
        spec.entrypoint = vec!["vllm".into(), "serve".into()];
        let plan = ContainerPlan::new(&spec, 2, &[2, 3], &cfg, Accelerator::Nvidia, "s", "n");
        let body = plan.create_body();
        let host = body.host_config.clone().unwrap();
        assert!(host.devices.is_none());
        assert_eq!(
            host.device_requests.unwrap(),
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                device_ids: Some(vec!["2".into(), "3".into()]),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        );
        assert_eq!(host.ipc_mode, None);
        assert_eq!(host.shm_size, Some(16 * 1024 * 1024 * 1024));
        let env = body.env.unwrap();
        assert!(
            env.iter().any(|e| e == "CUDA_VISIBLE_DEVICES=0,1"),
            "{env:?}"
        );
        assert!(!env.iter().any(|e| e.starts_with("ZE_AFFINITY_MASK")));
        let cmd = body.cmd.unwrap();
        assert_eq!(&cmd[..4], ["vllm", "serve", "--model", spec.model.as_str()]);
        let json = serde_json::to_value(&body.host_config).unwrap();
        assert_eq!(
            json["DeviceRequests"][0]["Capabilities"],
            serde_json::json!([["gpu"]])
        );
    }

    #[test]
    fn cpu_body_has_no_devices_and_no_cache_when_disabled() {
        let mut cfg = cfg();
        cfg.docker.hf_cache = "none".into();
        let plan = ContainerPlan::new(&spec(), 1, &[], &cfg, Accelerator::None, "s", "n");
        let body = plan.create_body();
        let host = body.host_config.unwrap();
        assert!(host.devices.is_none() && host.device_requests.is_none());
        assert!(host.binds.is_none());
        let env = body.env.unwrap();
        assert!(!env.iter().any(|e| e.starts_with("HF_HOME=")), "{env:?}");
        assert!(
            !env.iter()
                .any(|e| e.contains("VISIBLE_DEVICES") || e.contains("ZE_"))
        );
    }

    #[test]
    fn accelerator_follows_the_setting_then_the_inventory() {
        assert_eq!(
            Accelerator::resolve("", Some("intel")).unwrap(),
            Accelerator::Intel
        );
        assert_eq!(
            Accelerator::resolve("", Some("nvidia")).unwrap(),
            Accelerator::Nvidia
        );
        assert_eq!(Accelerator::resolve("", None).unwrap(), Accelerator::None);
        assert_eq!(
            Accelerator::resolve("none", Some("intel")).unwrap(),
            Accelerator::None
        );
        let err = Accelerator::resolve("tpu", None).unwrap_err().to_string();
        assert!(err.contains("docker.accelerator"), "{err}");
    }

    #[test]
    fn log_lines_survive_chunking_and_bad_bytes() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"INFO start"), Vec::<String>::new());
        assert_eq!(
            s.push(b"ed\r\nERR \xff\n"),
            vec!["INFO started", "ERR \u{fffd}"]
        );
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn exit_is_read_from_docker_state() {
        use bollard::models::ContainerState;
        let state = |running, finished: &str, code, oom| ContainerInspectResponse {
            state: Some(ContainerState {
                running: Some(running),
                finished_at: Some(finished.into()),
                exit_code: Some(code),
                oom_killed: Some(oom),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            exit_of(&state(true, "0001-01-01T00:00:00Z", 0, false)),
            None
        );
        assert_eq!(
            exit_of(&state(false, "0001-01-01T00:00:00Z", 0, false)),
            None
        );
        assert_eq!(
            exit_of(&state(false, "2026-11-28T04:40:01.5Z", 137, true)),
            Some(ContainerExit {
                code: Some(137),
                oom_killed: Some(true),
                finished_unix_us: Some(1_795_840_801_500_000),
            })
        );
    }

    #[test]
    fn container_names_are_docker_safe() {
        let n = container_name("lab host/1", 3);
        assert!(n.starts_with("fleetbench-lab-host-1-"), "{n}");
        assert!(n.ends_with("-3"), "{n}");
    }
}
