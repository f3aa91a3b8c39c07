//! What goes into an engine's container: [`ContainerPlan`] (image, command, environment,
//! devices, ports, mounts, labels) and its `POST /containers/create` body
//! ([`ContainerPlan::create_body`]), a pure function of the engine spec, the GPUs the
//! engine holds and the host's [`DockerConfig`](crate::config::DockerConfig), so the body
//! for Intel XPU and NVIDIA hosts is unit-tested without those GPUs; the labels that mark
//! fleetbench's containers, and container names.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, PortBinding};
use fleetbench_proto::pb;
use fleetbench_proto::spec::{Listen, VllmModelArg, engine_args};
use tracing::{info, warn};

use crate::config::{AgentConfig, DEFAULT_SHM_SIZE_GIB};
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
    /// Whether the cache is mounted writable (`[policy] hf_cache_writable`).
    pub hf_cache_writable: bool,
    pub container_port: u16,
    /// Host address the container port is published on (Docker picks the host port).
    pub publish_ip: String,
    pub ipc: String,
    pub shm_size_bytes: Option<i64>,
}

impl ContainerPlan {
    /// The plan for `spec` with `gpu_ids` on this host. Secrets and proxies come from the
    /// agent's config and environment, never from the spec, and only a container the
    /// policy trusts gets them and the Hugging Face cache (an allowed image with its own
    /// or a trusted entrypoint, see
    /// [`Policy::trusts_container`](crate::policy::Policy::trusts_container)); the cache is read-only
    /// and the IPC namespace private unless the policy says otherwise.
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
        cmd.extend(engine_args(
            spec,
            gpus,
            &spec.model,
            Listen {
                host: "0.0.0.0",
                port: d.container_port,
            },
            VllmModelArg::Flag,
        ));
        let trusted = cfg.policy.trusts_container(spec);
        let mut env: Vec<String> = Vec::new();
        if trusted {
            env.extend(cfg.engine_env.iter().map(|(k, v)| format!("{k}={v}")));
            for key in PASSED_ENV {
                if !cfg.engine_env.contains_key(*key) {
                    if let Ok(value) = std::env::var(key) {
                        env.push(format!("{key}={value}"));
                    }
                }
            }
        } else {
            info!(image = %spec.image, "the sweep's entrypoint is not one the policy trusts: the container gets no engine_env, proxies or Hugging Face cache");
        }
        let ids = join_ids(gpu_ids.iter().copied());
        match accelerator {
            // Level Zero enumerates the cards of /dev/dri in PCI order: the host indices.
            Accelerator::Intel => env.push(format!("ZE_AFFINITY_MASK={ids}")),
            // The NVIDIA runtime shows only the requested GPUs, renumbered from 0.
            Accelerator::Nvidia => env.push(format!("CUDA_VISIBLE_DEVICES={}", join_ids(0..gpus))),
            Accelerator::None => {}
        }
        // The cache may hold the host's Hugging Face token (`$HF_HOME/token`).
        let hf_cache = if trusted {
            host_hf_cache(&d.hf_cache).map(|host| (host, d.container_hf_home.clone()))
        } else {
            None
        };
        if hf_cache.is_some() && !cfg.engine_env.contains_key("HF_HOME") {
            env.push(format!("HF_HOME={}", d.container_hf_home));
        }
        // `--ipc=host` only when the policy opts in; otherwise a private namespace with a
        // `/dev/shm` big enough for vLLM's workers.
        let (ipc, shm_size_bytes) = if cfg.policy.ipc_host {
            ("host".to_string(), None)
        } else {
            let ipc = if d.ipc == "host" {
                String::new()
            } else {
                d.ipc.clone()
            };
            let gib = d.shm_size_gib.unwrap_or(DEFAULT_SHM_SIZE_GIB);
            (ipc, Some((gib * 1024.0 * 1024.0 * 1024.0).round() as i64))
        };
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
            hf_cache_writable: cfg.policy.hf_cache_writable,
            container_port: d.container_port,
            publish_ip,
            ipc,
            shm_size_bytes,
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
            binds: self.hf_cache.as_ref().map(|(host, container)| {
                let mode = if self.hf_cache_writable { "" } else { ":ro" };
                vec![format!("{host}:{container}{mode}")]
            }),
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

#[cfg(test)]
mod tests;
