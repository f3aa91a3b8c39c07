//! Engine lifecycle: start an engine for a point's engine configuration, gate on
//! readiness, keep its log tail for forensics, stop it (the whole process group: vLLM
//! starts child processes).
//!
//! Runtimes: `process` (spawn `vllm serve …` or `vllm-sim serve …` natively, see
//! [`process`]), `docker` (a container of the sweep's image, see [`docker`]) and `external`
//! (an engine that already runs; no lifecycle).
//!
//! Submodules, what an engine runs on: [`process`] and [`docker`] (the runtimes),
//! [`log_tail`] (the engine's last log lines), [`gpu`] (this host's GPUs and which engine
//! holds which) and [`telemetry`] (the engine's `/metrics`, scraped while a point runs).

pub mod docker;
pub mod gpu;
pub mod log_tail;
pub mod process;
pub mod telemetry;

use std::time::Duration;

use fleetbench_proto::pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::engine::docker::{Container, ContainerPlan};
use crate::engine::gpu::GpuGrant;
use crate::engine::log_tail::LogTail;
use crate::engine::process::{EngineProcess, Spawned};
use crate::error::AgentError;
use crate::load::retry::send_idempotent;
use crate::policy::scrub::Scrubber;

/// What decides whether a running engine can serve the next point.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineKey {
    pub spec: pb::EngineSpec,
    pub gpus: u32,
}

/// How long one readiness or health request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the first 1-token readiness request may take; each later try doubles it, up to
/// [`MAX_FIRST_REQUEST_TIMEOUT`] (an engine's first request may compile kernels or capture
/// graphs). On an H100, `transformers serve` 5.17 sometimes never answered the first
/// request after start-up while a second one, sent later, was answered at once: a short
/// first timeout makes that cost seconds, not minutes.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(160);

/// How long an engine that stopped answering may take to be reported dead.
const DEATH_GRACE: Duration = Duration::from_secs(10);

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
    Process(EngineProcess),
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
        let log_tail = engine_log_tail(cfg);
        let deadline = Instant::now() + Duration::from_secs(u64::from(key.spec.startup_timeout_s));
        match key.spec.runtime_kind() {
            pb::Runtime::External => {
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
            pb::Runtime::Process => {
                let Spawned {
                    process,
                    base_url,
                    args,
                } = EngineProcess::spawn(&key.spec, key.gpus, cfg, grant, &log_tail)?;
                let mut engine = Engine {
                    base_url,
                    args,
                    version: String::new(),
                    log_tail,
                    image: String::new(),
                    image_digest: String::new(),
                    container: String::new(),
                    gpu_ids: grant.ids.clone(),
                    log_tail_lines: cfg.log_tail_lines,
                    runtime: Runtime::Process(process),
                    key,
                };
                if let Err(e) = engine.wait_ready(client, deadline, cancel).await {
                    engine.stop().await;
                    return Err(e);
                }
                Ok(engine)
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
        let log_tail = engine_log_tail(cfg);
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

    /// Polls until the engine is ready (see [`Engine::is_ready`]) or the deadline; fails
    /// fast with the exit code and log tail when the process dies during start-up.
    async fn wait_ready(
        &mut self,
        client: &reqwest::Client,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        let started = Instant::now();
        let mut first_request_timeout = FIRST_REQUEST_TIMEOUT;
        loop {
            if let Some(exit) = self.exited().await {
                return Err(AgentError::EngineStart {
                    message: format!("engine exited during start-up with code {:?}", exit.code),
                    exit_code: exit.code,
                    log_tail: exit.log_tail,
                });
            }
            let (ready, tried) = self.is_ready(client, first_request_timeout).await;
            if tried && !ready {
                first_request_timeout = (first_request_timeout * 2).min(MAX_FIRST_REQUEST_TIMEOUT);
            }
            if ready {
                self.version =
                    fetch_version(client, &self.base_url, self.key.spec.engine_kind()).await;
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

    /// Ready the vLLM way — `/health` answers 2xx and `/v1/models` lists the served name —
    /// or, for an engine without `/health` or with a broken `/v1/models` (`transformers
    /// serve` answers 500 there), once it answers HTTP at all and a 1-token request for the
    /// served model succeeds. `503` on `/health` means still loading (vLLM, llama.cpp, TGI).
    ///
    /// Returns (ready, whether a 1-token request was tried), the request given `timeout`.
    async fn is_ready(&self, client: &reqwest::Client, timeout: Duration) -> (bool, bool) {
        let url = format!("{}/health", self.base_url);
        let Ok(health) = send_idempotent(|| client.get(&url).timeout(PROBE_TIMEOUT)).await else {
            return (false, false);
        };
        if health.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return (false, false);
        }
        if health.status().is_success() && self.lists_served_model(client).await {
            return (true, false);
        }
        let model = &self.key.spec.served_model_name;
        let ready = one_token_request(client, &self.base_url, model, timeout).await;
        if ready {
            info!(
                url = %self.base_url,
                health = %health.status(),
                "engine ready by a 1-token request (no /health or /v1/models answer)"
            );
        } else {
            warn!(url = %self.base_url, timeout_s = timeout.as_secs_f64(), "1-token readiness request failed or timed out; trying again");
        }
        (ready, true)
    }

    /// Whether `/v1/models` lists the served model name.
    async fn lists_served_model(&self, client: &reqwest::Client) -> bool {
        let url = format!("{}/v1/models", self.base_url);
        let models = send_idempotent(|| client.get(&url).timeout(PROBE_TIMEOUT)).await;
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
        // Any answer but a server error: engines without `/health` answer 404.
        let url = format!("{}/health", self.base_url);
        let healthy = send_idempotent(|| client.get(&url).timeout(PROBE_TIMEOUT))
            .await
            .is_ok_and(|r| !r.status().is_server_error());
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
        match &mut self.runtime {
            Runtime::Process(process) => {
                let code = process.exited().await?;
                Some(ExitInfo {
                    code,
                    log_tail: self.log_tail.snapshot(),
                    ..ExitInfo::default()
                })
            }
            Runtime::Docker(container) => {
                let exit = container.exited().await?;
                Some(ExitInfo {
                    code: exit.code,
                    log_tail: self
                        .log_tail
                        .scrub_lines(container.log_tail(self.log_tail_lines).await),
                    oom_killed: exit.oom_killed,
                    finished_unix_us: exit.finished_unix_us,
                })
            }
            Runtime::External => None,
        }
    }

    /// Stops the engine: SIGTERM to the whole process group, SIGKILL after a grace period;
    /// a container is stopped the same way by Docker, then removed.
    pub async fn stop(&mut self) {
        match &mut self.runtime {
            Runtime::Process(process) => process.stop().await,
            Runtime::Docker(container) => container.stop().await,
            Runtime::External => {}
        }
    }
}

/// An engine's log tail: `log_tail_lines` long, scrubbed of the agent's `engine_env`.
fn engine_log_tail(cfg: &AgentConfig) -> LogTail {
    LogTail::new(cfg.log_tail_lines).scrubbing(Scrubber::new(&cfg.engine_env))
}

/// The engine's version from `/version`, or empty.
/// The engine's version where its kind reports one: vLLM and the simulator `GET /version`
/// `.version`, TGI `/info` `.version`, SGLang `/get_server_info` `.version`, llama.cpp
/// `/props` `.build_info`; `transformers serve` reports none (empty).
async fn fetch_version(client: &reqwest::Client, base_url: &str, kind: pb::EngineKind) -> String {
    let (path, field) = match kind {
        pb::EngineKind::Vllm | pb::EngineKind::Unspecified => ("/version", "version"),
        pb::EngineKind::Tgi => ("/info", "version"),
        pb::EngineKind::Sglang => ("/get_server_info", "version"),
        pb::EngineKind::LlamaCpp => ("/props", "build_info"),
        pb::EngineKind::Transformers => return String::new(),
    };
    let url = format!("{base_url}{path}");
    let Ok(resp) = send_idempotent(|| client.get(&url).timeout(PROBE_TIMEOUT)).await else {
        return String::new();
    };
    resp.json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| v[field].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether a 1-token streamed chat request for `model` is answered in full within
/// `timeout` (a completions request when the engine has no chat endpoint): streamed, as the
/// measured requests are.
async fn one_token_request(
    client: &reqwest::Client,
    base_url: &str,
    model: &str,
    timeout: Duration,
) -> bool {
    let chat = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
        "stream": true,
    });
    let completion = serde_json::json!({
        "model": model,
        "prompt": "hi",
        "max_tokens": 1,
        "stream": true,
    });
    for (path, body) in [
        ("/v1/chat/completions", chat),
        ("/v1/completions", completion),
    ] {
        let url = format!("{base_url}{path}");
        let Ok(resp) = client.post(&url).json(&body).timeout(timeout).send().await else {
            return false;
        };
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        // The whole (short) stream, within the same timeout.
        return resp.status().is_success() && resp.bytes().await.is_ok_and(|b| !b.is_empty());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_engine_that_prints_a_secret_shows_only_its_name() {
        let canary = "hf_engine_canary_4242";
        let mut cfg = AgentConfig {
            vllm_command: vec![
                "sh".into(),
                "-c".into(),
                "echo \"token is $HF_TOKEN\"; exit 3".into(),
                "sh".into(),
            ],
            ..AgentConfig::default()
        };
        cfg.engine_env.insert("HF_TOKEN".into(), canary.into());
        let key = EngineKey {
            spec: pb::EngineSpec {
                runtime_kind: pb::Runtime::Process.into(),
                model: "m".into(),
                served_model_name: "m".into(),
                startup_timeout_s: 60,
                ..Default::default()
            },
            gpus: 1,
        };
        let err = Engine::start(
            key,
            &cfg,
            &reqwest::Client::new(),
            &CancellationToken::new(),
            &GpuGrant::default(),
        )
        .await
        .unwrap_err();
        let AgentError::EngineStart { log_tail, .. } = err else {
            panic!("unexpected {err:?}")
        };
        // The engine saw the secret (it is the agent's to give), the log tail never holds it.
        assert!(
            log_tail.iter().any(|l| l == "token is [redacted:HF_TOKEN]"),
            "{log_tail:?}"
        );
        assert!(!log_tail.iter().any(|l| l.contains(canary)), "{log_tail:?}");
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
                runtime_kind: pb::Runtime::Process.into(),
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

    /// A `transformers serve`-like engine: no `/health` route, `/v1/models` answers 500,
    /// and the first chat request after start-up is never answered (as seen on an H100);
    /// later ones stream.
    #[tokio::test]
    async fn an_engine_without_health_whose_first_request_hangs_becomes_ready() {
        use axum::Router;
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let chats = Arc::new(AtomicUsize::new(0));
        let seen = chats.clone();
        let app = Router::new()
            .route(
                "/v1/models",
                get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .route(
                "/v1/chat/completions",
                post(move || {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n == 0 {
                            std::future::pending::<()>().await;
                        }
                        "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let key = EngineKey {
            spec: pb::EngineSpec {
                engine_kind: pb::EngineKind::Transformers.into(),
                runtime_kind: pb::Runtime::External.into(),
                external_url: format!("http://{addr}"),
                model: "/m".into(),
                served_model_name: "/m".into(),
                startup_timeout_s: 120,
                ..Default::default()
            },
            gpus: 1,
        };
        let engine = Engine::start(
            key,
            &AgentConfig::default(),
            &reqwest::Client::new(),
            &CancellationToken::new(),
            &GpuGrant::default(),
        )
        .await
        .unwrap();
        assert_eq!(engine.base_url, format!("http://{addr}"));
        assert_eq!(
            chats.load(Ordering::SeqCst),
            2,
            "the hung first try, then one more"
        );
    }
}
