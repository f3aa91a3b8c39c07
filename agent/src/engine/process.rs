//! The `process` runtime: the engine runs natively (`vllm serve …`, `vllm-sim serve …`,
//! `transformers serve …`, `llama-server …`: the agent's command for the spec's engine
//! kind, see [`AgentConfig::engine_command`]) in a process group of its own, on a free local port, with the environment of its GPU
//! grant. Its output is followed into the engine's [`LogTail`]; stopping it stops the
//! whole group (vLLM starts child processes), and dropping it kills the group.

use std::process::Stdio;
use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_proto::spec::{EngineKind, Listen, VllmModelArg, engine_args};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::engine::gpu::GpuGrant;
use crate::engine::log_tail::LogTail;
use crate::error::AgentError;

/// A spawned engine process and where it serves.
#[derive(Debug)]
pub struct Spawned {
    pub process: EngineProcess,
    /// `http://<host>:<port>` of the engine's server.
    pub base_url: String,
    /// The engine's arguments (after the program).
    pub args: Vec<String>,
}

/// A running engine process group.
#[derive(Debug)]
pub struct EngineProcess {
    child: Box<Child>,
    pgid: i32,
    /// Set once [`EngineProcess::stop`] has reaped the group, so `Drop` never signals a
    /// process group id the kernel may have handed out again.
    stopped: bool,
    followers: Vec<JoinHandle<()>>,
}

impl EngineProcess {
    /// Spawns the engine of `spec` on `gpus` GPUs (the tensor-parallel size) with
    /// `cfg.vllm_command`, on a free port of `cfg.engine_host`, with the environment of
    /// `grant`; its stdout and stderr are followed into `log_tail`. Does not wait for it.
    pub fn spawn(
        spec: &pb::EngineSpec,
        gpus: u32,
        cfg: &AgentConfig,
        grant: &GpuGrant,
        log_tail: &LogTail,
    ) -> Result<Spawned, AgentError> {
        let port = free_port(&cfg.engine_host)?;
        let kind = EngineKind::from(spec.engine_kind());
        let command = cfg.engine_command(kind);
        let Some((program, first_args)) = command.split_first() else {
            return Err(AgentError::Engine(format!(
                "no command for engine kind {}",
                kind.as_str()
            )));
        };
        // A local folder for this model, when the agent has one; otherwise the name.
        // `transformers serve` serves a model under the path it loaded, which requests must
        // name: it gets the sweep's model as written.
        let model = match kind {
            EngineKind::Transformers => spec.model.clone(),
            _ => cfg
                .model_paths
                .get(&spec.model)
                .cloned()
                .unwrap_or_else(|| spec.model.clone()),
        };
        let mut args: Vec<String> = first_args.to_vec();
        args.extend(engine_args(
            spec,
            gpus,
            &model,
            Listen {
                host: &cfg.engine_host,
                port,
            },
            VllmModelArg::Positional,
        ));
        info!(engine_kind = kind.as_str(), program = %program, args = %args.join(" "), "starting engine process");
        let mut cmd = Command::new(program);
        cmd.args(&args)
            .envs(&cfg.engine_env)
            .envs(grant.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| AgentError::EngineStart {
            message: format!("cannot run {program:?}: {e}"),
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
        Ok(Spawned {
            process: EngineProcess {
                child: Box::new(child),
                pgid,
                stopped: false,
                followers,
            },
            base_url: format!("http://{host}:{port}"),
            args,
        })
    }

    /// `Some(exit code)` once the process has exited, after its output followers have
    /// drained the pipes (so the log tail holds everything it wrote); `None` while it runs.
    pub async fn exited(&mut self) -> Option<Option<i32>> {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return None,
            Err(e) => {
                warn!(error = %e, "cannot poll engine process");
                return None;
            }
        };
        // The pipes close when the group exits; let the followers drain them.
        for f in self.followers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
        }
        Some(status.code())
    }

    /// Stops the process group: SIGTERM, SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let pgid = self.pgid;
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            // The leader is gone; its workers may not be.
            signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            self.stopped = true;
            return;
        }
        info!(pgid, "stopping engine process group");
        signal_group(pgid, nix::sys::signal::Signal::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(_) => {}
            Err(_) => warn!(pgid, "engine ignored SIGTERM for 20s; killing"),
        }
        // Children of the leader may outlive it: make sure the group is gone.
        signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait().await;
        self.stopped = true;
    }
}

impl Drop for EngineProcess {
    /// An engine must never outlive its agent (a panic, an aborted task, a dropped
    /// runtime): kill the whole process group. After a clean [`EngineProcess::stop`] the
    /// group is gone already and this does nothing.
    fn drop(&mut self) {
        if !self.stopped {
            signal_group(self.pgid, nix::sys::signal::Signal::SIGKILL);
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
            Ok(Some(line)) => tail.push(line),
            Ok(None) => break,
            Err(e) => {
                // Non-UTF-8 output must not kill the follower; keep a marker instead.
                tail.push(format!("<unreadable engine output: {e}>"));
                break;
            }
        }
    }
}

/// A port that was free a moment ago on `host` (the engine binds it right after).
fn free_port(host: &str) -> Result<u16, AgentError> {
    let bind_host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
    let listener = std::net::TcpListener::bind((bind_host, 0))?;
    Ok(listener.local_addr()?.port())
}
