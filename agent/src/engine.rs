//! Engine lifecycle: start an engine for a point's engine configuration, gate on
//! readiness, keep its log tail for forensics, stop it (the whole process group: vLLM
//! starts child processes).
//!
//! Runtimes: `process` (spawn `vllm serve …` or `vllm-sim serve …` natively), `docker`
//! (a container of the sweep's image, see [`crate::docker`]) and `external` (an engine
//! that already runs; no lifecycle).

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_proto::spec::vllm_flags;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::docker::{Container, ContainerPlan};
use crate::error::AgentError;
use crate::gpu::GpuGrant;

/// What starting an engine process needs besides its key.
struct ProcessStart<'a> {
    cfg: &'a AgentConfig,
    client: &'a reqwest::Client,
    log_tail: LogTail,
    deadline: Instant,
    grant: &'a GpuGrant,
}

/// What decides whether a running engine can serve the next point.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineKey {
    pub spec: pb::EngineSpec,
    pub gpus: u32,
}

/// How long an engine that stopped answering may take to be reported dead.
const DEATH_GRACE: Duration = Duration::from_secs(10);

/// Bounded ring of the engine's most recent log lines.
#[derive(Debug, Clone)]
pub struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    cap: usize,
}

impl LogTail {
    pub fn new(cap: usize) -> Self {
        LogTail {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(cap.min(1024)))),
            cap: cap.max(1),
        }
    }

    pub fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == self.cap {
                l.pop_front();
            }
            l.push_back(line);
        }
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// How an engine process or container ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub log_tail: Vec<String>,
    /// `docker`: whether the kernel's OOM killer ended the container.
    pub oom_killed: Option<bool>,
    /// `docker`: when the container stopped (Unix microseconds, Docker's clock).
    pub finished_unix_us: Option<i64>,
}

#[derive(Debug)]
enum Runtime {
    Process {
        child: Box<Child>,
        pgid: i32,
        /// Set once [`Engine::stop`] has reaped the group, so `Drop` never signals a
        /// process group id the kernel may have handed out again.
        stopped: bool,
        followers: Vec<tokio::task::JoinHandle<()>>,
    },
    Docker(Box<Container>),
    External,
}

/// A started (or attached) engine.
#[derive(Debug)]
pub struct Engine {
    pub key: EngineKey,
    pub base_url: String,
    pub args: Vec<String>,
    pub version: String,
    pub log_tail: LogTail,
    /// `docker`: the image, the digest it resolved to and the container's name.
    pub image: String,
    pub image_digest: String,
    pub container: String,
    /// Host GPU indices this engine holds (released when it stops).
    pub gpu_ids: Vec<u32>,
    log_tail_lines: usize,
    runtime: Runtime,
}

impl Engine {
    /// Starts (or attaches to) the engine for `key` and waits until it serves the model.
    /// A `process` engine gets the GPUs of `grant` (ignored by the other runtimes).
    pub async fn start(
        key: EngineKey,
        cfg: &AgentConfig,
        client: &reqwest::Client,
        cancel: &CancellationToken,
        grant: &GpuGrant,
    ) -> Result<Engine, AgentError> {
        let log_tail = LogTail::new(cfg.log_tail_lines);
        let deadline = Instant::now() + Duration::from_secs(u64::from(key.spec.startup_timeout_s));
        match key.spec.runtime.as_str() {
            "external" => {
                let base_url = key.spec.external_url.trim_end_matches('/').to_string();
                let mut engine = Engine {
                    base_url,
                    args: Vec::new(),
                    version: String::new(),
                    log_tail,
                    image: String::new(),
                    image_digest: String::new(),
                    container: String::new(),
                    gpu_ids: Vec::new(),
                    log_tail_lines: cfg.log_tail_lines,
                    runtime: Runtime::External,
                    key,
                };
                engine.wait_ready(client, deadline, cancel).await?;
                Ok(engine)
            }
            "process" => {
                let start = ProcessStart {
                    cfg,
                    client,
                    log_tail,
                    deadline,
                    grant,
                };
                Self::start_process(key, start, cancel).await
            }
            other => Err(AgentError::Engine(format!(
                "runtime {other:?} is not supported by this agent"
            ))),
        }
    }

    /// Starts the `docker` engine of `plan` and waits until it serves the model; a
    /// container that dies during start-up fails fast with its exit code and log tail,
    /// and is removed.
    pub async fn start_container(
        key: EngineKey,
        plan: &ContainerPlan,
        docker: &bollard::Docker,
        cfg: &AgentConfig,
        client: &reqwest::Client,
        cancel: &CancellationToken,
    ) -> Result<Engine, AgentError> {
        let log_tail = LogTail::new(cfg.log_tail_lines);
        let deadline = Instant::now() + Duration::from_secs(u64::from(key.spec.startup_timeout_s));
        let container =
            Container::start(docker, plan, cfg.docker.stop_timeout_s, &log_tail).await?;
        let mut engine = Engine {
            base_url: container.base_url.clone(),
            args: plan.cmd.clone(),
            version: String::new(),
            log_tail,
            image: container.image.clone(),
            image_digest: container.image_digest.clone(),
            container: container.name.clone(),
            gpu_ids: container.gpu_ids.clone(),
            log_tail_lines: cfg.log_tail_lines,
            runtime: Runtime::Docker(Box::new(container)),
            key,
        };
        if let Err(e) = engine.wait_ready(client, deadline, cancel).await {
            engine.stop().await;
            return Err(e);
        }
        Ok(engine)
    }

    async fn start_process(
        key: EngineKey,
        start: ProcessStart<'_>,
        cancel: &CancellationToken,
    ) -> Result<Engine, AgentError> {
        let ProcessStart {
            cfg,
            client,
            log_tail,
            deadline,
            grant,
        } = start;
        let port = free_port(&cfg.engine_host)?;
        let mut args: Vec<String> = cfg.vllm_command[1..].to_vec();
        // A local folder for this model, when the agent has one; otherwise the name.
        let model = cfg
            .model_paths
            .get(&key.spec.model)
            .cloned()
            .unwrap_or_else(|| key.spec.model.clone());
        args.push(model);
        args.extend(vllm_flags(&key.spec, key.gpus));
        args.extend([
            "--host".to_string(),
            cfg.engine_host.clone(),
            "--port".into(),
            port.to_string(),
        ]);
        info!(program = %cfg.vllm_command[0], args = %args.join(" "), "starting engine process");
        let mut cmd = Command::new(&cfg.vllm_command[0]);
        cmd.args(&args)
            .envs(&cfg.engine_env)
            .envs(grant.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| AgentError::EngineStart {
            message: format!("cannot run {:?}: {e}", cfg.vllm_command[0]),
            exit_code: None,
            log_tail: Vec::new(),
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| AgentError::Engine("engine process has no pid".into()))?;
        let mut followers = Vec::new();
        if let Some(out) = child.stdout.take() {
            followers.push(tokio::spawn(follow_log(out, log_tail.clone())));
        }
        if let Some(err) = child.stderr.take() {
            followers.push(tokio::spawn(follow_log(err, log_tail.clone())));
        }
        let host = if cfg.engine_host == "0.0.0.0" {
            "127.0.0.1"
        } else {
            cfg.engine_host.as_str()
        };
        let mut engine = Engine {
            base_url: format!("http://{host}:{port}"),
            args,
            version: String::new(),
            log_tail,
            image: String::new(),
            image_digest: String::new(),
            container: String::new(),
            gpu_ids: grant.ids.clone(),
            log_tail_lines: cfg.log_tail_lines,
            runtime: Runtime::Process {
                child: Box::new(child),
                pgid,
                stopped: false,
                followers,
            },
            key,
        };
        if let Err(e) = engine.wait_ready(client, deadline, cancel).await {
            engine.stop().await;
            return Err(e);
        }
        Ok(engine)
    }

    /// Polls `/health`, then `/v1/models` for the served name, until the deadline; fails
    /// fast with the exit code and log tail when the process dies during start-up.
    async fn wait_ready(
        &mut self,
        client: &reqwest::Client,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.exited().await {
                return Err(AgentError::EngineStart {
                    message: format!("engine exited during start-up with code {:?}", exit.code),
                    exit_code: exit.code,
                    log_tail: exit.log_tail,
                });
            }
            if self.is_ready(client).await {
                self.version = fetch_version(client, &self.base_url).await;
                info!(url = %self.base_url, version = %self.version, after_s = started.elapsed().as_secs_f64(), "engine ready");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(AgentError::EngineStart {
                    message: format!(
                        "engine not ready after {:.0}s",
                        started.elapsed().as_secs_f64()
                    ),
                    exit_code: None,
                    log_tail: self.log_tail.snapshot(),
                });
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(AgentError::Cancelled),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    async fn is_ready(&self, client: &reqwest::Client) -> bool {
        let health = client
            .get(format!("{}/health", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if !health.is_ok_and(|r| r.status().is_success()) {
            return false;
        }
        let models = client
            .get(format!("{}/v1/models", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let Ok(models) = models else { return false };
        let Ok(body) = models.json::<serde_json::Value>().await else {
            return false;
        };
        body["data"].as_array().is_some_and(|d| {
            d.iter()
                .any(|m| m["id"] == self.key.spec.served_model_name.as_str())
        })
    }

    /// After a point: `Some` when the engine died during it. An engine that no longer
    /// answers `/health` is given a few seconds to be reported dead (a container's exit
    /// reaches Docker's state a moment after its streams broke), so a crash is never
    /// mistaken for a point whose requests merely failed.
    pub async fn exit_after_point(&mut self, client: &reqwest::Client) -> Option<ExitInfo> {
        if let Some(exit) = self.exited().await {
            return Some(exit);
        }
        if matches!(self.runtime, Runtime::External) {
            return None;
        }
        let healthy = client
            .get(format!("{}/health", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if healthy {
            return None;
        }
        let deadline = Instant::now() + DEATH_GRACE;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(exit) = self.exited().await {
                return Some(exit);
            }
        }
        warn!(url = %self.base_url, "engine does not answer /health but has not exited");
        None
    }

    /// `Some` once the engine process or container has exited (never for external
    /// engines). The log tail includes everything the engine wrote before it died.
    pub async fn exited(&mut self) -> Option<ExitInfo> {
        let (child, followers) = match &mut self.runtime {
            Runtime::Process {
                child, followers, ..
            } => (child, followers),
            Runtime::Docker(container) => {
                let exit = container.exited().await?;
                return Some(ExitInfo {
                    code: exit.code,
                    log_tail: container.log_tail(self.log_tail_lines).await,
                    oom_killed: exit.oom_killed,
                    finished_unix_us: exit.finished_unix_us,
                });
            }
            Runtime::External => return None,
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return None,
            Err(e) => {
                warn!(error = %e, "cannot poll engine process");
                return None;
            }
        };
        // The pipes close when the group exits; let the followers drain them.
        for f in followers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
        }
        Some(ExitInfo {
            code: status.code(),
            log_tail: self.log_tail.snapshot(),
            ..ExitInfo::default()
        })
    }

    /// Stops the engine: SIGTERM to the whole process group, SIGKILL after a grace period;
    /// a container is stopped the same way by Docker, then removed.
    pub async fn stop(&mut self) {
        let (child, pgid, stopped) = match &mut self.runtime {
            Runtime::Process {
                child,
                pgid,
                stopped,
                ..
            } => (child, pgid, stopped),
            Runtime::Docker(container) => {
                container.stop().await;
                return;
            }
            Runtime::External => return,
        };
        if *stopped {
            return;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            // The leader is gone; its workers may not be.
            signal_group(*pgid, nix::sys::signal::Signal::SIGKILL);
            *stopped = true;
            return;
        }
        info!(pgid = *pgid, "stopping engine process group");
        signal_group(*pgid, nix::sys::signal::Signal::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(_) => {}
            Err(_) => warn!(pgid = *pgid, "engine ignored SIGTERM for 20s; killing"),
        }
        // Children of the leader may outlive it: make sure the group is gone.
        signal_group(*pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait().await;
        *stopped = true;
    }
}

impl Drop for Engine {
    /// An engine must never outlive its agent (a panic, an aborted task, a dropped
    /// runtime): kill the whole process group. After a clean [`Engine::stop`] the group is
    /// gone already and this does nothing.
    fn drop(&mut self) {
        if let Runtime::Process {
            pgid,
            stopped: false,
            ..
        } = &self.runtime
        {
            signal_group(*pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, sig: nix::sys::signal::Signal) {
    if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig) {
        if e != nix::errno::Errno::ESRCH {
            warn!(pgid, error = %e, "killpg failed");
        }
    }
}

async fn follow_log(stream: impl AsyncRead + Unpin, tail: LogTail) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                debug!(target: "engine", "{line}");
                tail.push(line);
            }
            Ok(None) => break,
            Err(e) => {
                // Non-UTF-8 output must not kill the follower; keep a marker instead.
                tail.push(format!("<unreadable engine output: {e}>"));
                break;
            }
        }
    }
}

/// The engine's version from `/version`, or empty.
async fn fetch_version(client: &reqwest::Client, base_url: &str) -> String {
    let Ok(resp) = client
        .get(format!("{base_url}/version"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    else {
        return String::new();
    };
    resp.json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A port that was free a moment ago on `host` (the engine binds it right after).
fn free_port(host: &str) -> Result<u16, AgentError> {
    let bind_host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
    let listener = std::net::TcpListener::bind((bind_host, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let t = LogTail::new(3);
        for i in 0..5 {
            t.push(format!("l{i}"));
        }
        assert_eq!(t.snapshot(), vec!["l2", "l3", "l4"]);
    }

    #[tokio::test]
    async fn a_process_that_dies_at_startup_fails_fast_with_its_log() {
        let cfg = AgentConfig {
            vllm_command: vec![
                "sh".into(),
                "-c".into(),
                "echo loading weights; echo 'RuntimeError: out of memory' >&2; exit 3".into(),
                "sh".into(),
            ],
            ..AgentConfig::default()
        };
        let key = EngineKey {
            spec: pb::EngineSpec {
                runtime: "process".into(),
                model: "m".into(),
                served_model_name: "m".into(),
                startup_timeout_s: 60,
                ..Default::default()
            },
            gpus: 1,
        };
        let client = reqwest::Client::new();
        let started = std::time::Instant::now();
        let err = Engine::start(
            key,
            &cfg,
            &client,
            &CancellationToken::new(),
            &GpuGrant::default(),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(30));
        match err {
            AgentError::EngineStart {
                exit_code,
                log_tail,
                ..
            } => {
                assert_eq!(exit_code, Some(3));
                assert!(
                    log_tail.iter().any(|l| l.contains("out of memory")),
                    "{log_tail:?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
