//! A running engine container, through the Docker Engine API (bollard): connect, create
//! and start it from its [`ContainerPlan`], follow its logs into the engine's
//! [`LogTail`], read its exit from Docker's state, stop and remove it; and the host-wide
//! calls the agent makes at start (its leftover containers, the local images).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptions,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::DockerConfig;
use crate::engine::docker::plan::{ContainerPlan, LABEL_AGENT, LABEL_MANAGED};
use crate::engine::log_tail::LogTail;
use crate::error::AgentError;

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

/// How long to wait between readiness polls of a container.
pub const READY_POLL: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

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
}
