//! What the engine accepts, found out before a point with tiny requests: which endpoint
//! `auto` resolves to, and which of vLLM's request extensions the engine takes.
//!
//! Not every OpenAI-compatible server is vLLM: `transformers serve` rejects `ignore_eos`
//! with 422 and ignores `stream_options`. The probe drops what is refused and says so in
//! its fallbacks, which travel with the point so a reader knows which numbers are exact.

use std::time::Duration;

use fleetbench_proto::spec::Endpoint;
use serde_json::json;
use tracing::info;

use crate::error::AgentError;
use crate::load::request::{ApiEndpoint, Extensions, RequestPlan, request_body};
use crate::load::retry::send_idempotent;
use crate::load::sse::{SseEvent, SseParser};

/// How long one probe request may take (a cold engine compiles kernels on first use).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Decides the endpoint for `auto`: completions when the engine serves it, otherwise chat
/// (the seed's image answered 404 on `/v1/completions`).
pub async fn resolve_endpoint(
    client: &reqwest::Client,
    base_url: &str,
    model: &str,
    wanted: Endpoint,
) -> Result<ApiEndpoint, AgentError> {
    match wanted {
        Endpoint::Chat => Ok(ApiEndpoint::Chat),
        Endpoint::Completions => Ok(ApiEndpoint::Completions),
        Endpoint::Auto => {
            let url = format!("{base_url}/v1/completions");
            let body = json!({"model": model, "prompt": "hello", "max_tokens": 1});
            let resp =
                send_idempotent(|| client.post(&url).json(&body).timeout(PROBE_TIMEOUT)).await?;
            let status = resp.status();
            if status.is_success() {
                Ok(ApiEndpoint::Completions)
            } else if status == reqwest::StatusCode::NOT_FOUND
                || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
            {
                info!(%status, "completions endpoint refused; auto falls back to chat");
                Ok(ApiEndpoint::Chat)
            } else {
                Err(AgentError::Engine(format!(
                    "probe of /v1/completions answered {status}"
                )))
            }
        }
    }
}

/// The extensions a point's requests will carry and the fallbacks taken to get there.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub extensions: Extensions,
    /// One line per extension the engine refused or ignored, e.g.
    /// `"ignore_eos, min_tokens refused (HTTP 422 …): output length not forced"`.
    pub fallbacks: Vec<String>,
}

/// Sends a 2-token streamed request with every extension; on a 400/422 retries without the
/// output-length extensions, then without `stream_options`. A stream without `usage` is
/// noted: output tokens are then counted from content chunks.
pub async fn probe_extensions(
    client: &reqwest::Client,
    base_url: &str,
    model: &str,
    endpoint: ApiEndpoint,
) -> Result<Accepted, AgentError> {
    let length_off = Extensions {
        ignore_eos: false,
        min_tokens: false,
        ..Extensions::ALL
    };
    let bare = Extensions {
        include_usage: false,
        ..length_off
    };
    let mut fallbacks = Vec::new();
    let mut refusal: Option<String> = None;
    for (extensions, dropped) in [
        (Extensions::ALL, None),
        (
            length_off,
            Some("ignore_eos, min_tokens refused: output length not forced"),
        ),
        (
            bare,
            Some("stream_options refused: output tokens counted from content chunks"),
        ),
    ] {
        if let Some(what) = dropped {
            fallbacks.push(match &refusal {
                Some(why) => format!("{what} ({why})"),
                None => what.to_string(),
            });
        }
        match probe_once(client, base_url, model, endpoint, extensions).await? {
            ProbeAnswer::Accepted { usage } => {
                if extensions.include_usage && !usage {
                    fallbacks.push(
                        "stream_options.include_usage ignored: output tokens counted from content chunks"
                            .into(),
                    );
                }
                if !fallbacks.is_empty() {
                    info!(?fallbacks, "engine refused request extensions");
                }
                return Ok(Accepted {
                    extensions,
                    fallbacks,
                });
            }
            ProbeAnswer::Refused(why) => refusal = Some(why),
        }
    }
    Err(AgentError::Engine(format!(
        "the engine refused even a plain streamed request: {}",
        refusal.unwrap_or_default()
    )))
}

enum ProbeAnswer {
    Accepted { usage: bool },
    Refused(String),
}

async fn probe_once(
    client: &reqwest::Client,
    base_url: &str,
    model: &str,
    endpoint: ApiEndpoint,
    extensions: Extensions,
) -> Result<ProbeAnswer, AgentError> {
    let plan = RequestPlan {
        index: 0,
        wave: 0,
        endpoint,
        model: model.to_string(),
        prompt: "hello".into(),
        messages: None,
        target_input_tokens: 0,
        target_output_tokens: 2,
        scheduled_offset: Duration::ZERO,
        extensions,
    };
    let url = format!("{}{}", base_url.trim_end_matches('/'), endpoint.path());
    let body = request_body(&plan);
    let resp = send_idempotent(|| client.post(&url).json(&body).timeout(PROBE_TIMEOUT)).await?;
    let status = resp.status();
    if status == reqwest::StatusCode::BAD_REQUEST
        || status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
    {
        let text = resp.text().await.unwrap_or_default();
        return Ok(ProbeAnswer::Refused(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    if !status.is_success() {
        return Err(AgentError::Engine(format!(
            "probe request answered {status}"
        )));
    }
    let body = resp.bytes().await?;
    let mut parser = SseParser::new();
    let usage = parser
        .push(&body)
        .map_err(|e| AgentError::Engine(format!("probe stream unreadable: {e}")))?
        .iter()
        .any(|ev| matches!(ev, SseEvent::Usage { .. }));
    Ok(ProbeAnswer::Accepted { usage })
}
