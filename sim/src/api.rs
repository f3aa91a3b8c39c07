//! HTTP routes and handlers, matching vLLM 0.32's OpenAI-compatible server.
//!
//! Routes: `GET /health` (200, empty body), `GET|POST /ping`, `GET /version`,
//! `GET /v1/models`, `POST /tokenize`, `POST /detokenize`, `GET /metrics`,
//! `POST /v1/chat/completions`, `POST /v1/completions` (absent with `--disable-completions`).
//! Unknown routes answer FastAPI's 404 `{"detail":"Not Found"}`, wrong methods its 405.
//! Every response is logged like uvicorn's access log:
//! `127.0.0.1:45536 - "GET /health HTTP/1.1" 200 OK`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::config::{SimConfig, VLLM_VERSION};
use crate::error::SimError;
use crate::metrics::{self, EngineStats};
use crate::protocol::{
    AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatMessage,
    CompletionChoice, CompletionRequest, CompletionResponse, DetokenizeRequest, DetokenizeResponse,
    ModelCard, ModelList, ModelPermission, PromptInput, TokenizeRequest, TokenizeResponse,
    UsageInfo, VersionResponse,
};
use crate::scheduler::{EngineHandle, FinishReason, NewRequest, TokenEvent};
use crate::stream::{Endpoint, StreamContext, sse_response};
use crate::tokenizer::{self, SyntheticOutput};

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SimConfig,
    engine: EngineHandle,
    stats: Arc<EngineStats>,
    started: u64,
    id_salt: u64,
    next_id: AtomicU64,
    fingerprint: String,
}

impl AppState {
    pub fn new(config: SimConfig, engine: EngineHandle, stats: Arc<EngineStats>) -> Self {
        let started = unix_now();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let id_salt = tokenizer::mix64(nanos ^ u64::from(std::process::id()) ^ config.seed);
        let fingerprint = format!(
            "vllm-{VLLM_VERSION}-{:08x}",
            tokenizer::fnv1a(config.model.as_bytes()) as u32
        );
        Self {
            inner: Arc::new(Inner {
                config,
                engine,
                stats,
                started,
                id_salt,
                next_id: AtomicU64::new(0),
                fingerprint,
            }),
        }
    }

    fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    fn random_hex(&self) -> u64 {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        tokenizer::mix64(self.inner.id_salt ^ tokenizer::mix64(n))
    }

    /// The served name a request refers to (`None` means the first served name), or vLLM's 404.
    fn resolve_model(&self, requested: Option<&str>) -> Result<String, SimError> {
        let config = self.config();
        match requested {
            None => Ok(config.primary_name().to_owned()),
            Some(name) if config.served_model_names.iter().any(|n| n == name) => {
                Ok(name.to_owned())
            }
            Some(name) => Err(SimError::ModelNotFound(name.to_owned())),
        }
    }
}

/// The router with every route and the access log.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/ping", get(health).post(health))
        .route("/version", get(version))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(prometheus))
        .route("/v1/chat/completions", post(chat_completions));
    if !state.config().disable_completions {
        router = router.route("/v1/completions", post(completions));
    }
    router
        .fallback(|| async { SimError::RouteNotFound })
        .method_not_allowed_fallback(|| async { SimError::MethodNotAllowed })
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// Route paths in the order the start-up log lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("/version", "GET"),
    ("/health", "GET"),
    ("/metrics", "GET"),
    ("/tokenize", "POST"),
    ("/detokenize", "POST"),
    ("/v1/models", "GET"),
    ("/ping", "GET"),
    ("/ping", "POST"),
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
];

async fn access_log(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_owned(), |c| c.0.to_string());
    let method = request.method().clone();
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let response = next.run(request).await;
    let status = response.status();
    tracing::info!(
        "{peer} - \"{method} {path} HTTP/1.1\" {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    response
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses a JSON body; malformed JSON or wrong types give vLLM's 400.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, SimError> {
    serde_json::from_slice(body).map_err(|e| SimError::BadRequest(format!("Invalid request: {e}")))
}

async fn health() -> Response {
    Body::empty().into_response()
}

async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: VLLM_VERSION,
    })
}

async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let config = state.config();
    let data = config
        .served_model_names
        .iter()
        .map(|name| ModelCard {
            id: name.clone(),
            object: "model",
            created: state.inner.started,
            owned_by: "vllm",
            root: config.model.clone(),
            parent: None,
            max_model_len: config.max_model_len,
            permission: vec![ModelPermission {
                id: format!("modelperm-{:016x}", state.random_hex()),
                object: "model_permission",
                created: state.inner.started,
                allow_create_engine: false,
                allow_sampling: true,
                allow_logprobs: true,
                allow_search_indices: false,
                allow_view: true,
                allow_fine_tuning: false,
                organization: "*",
                group: None,
                is_blocking: false,
            }],
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let text = state.inner.stats.render(state.config());
    let mut response = text.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

fn chat_prompt_ids(messages: &[ChatMessage], add_generation_prompt: bool) -> Vec<u32> {
    let texts: Vec<(String, String)> = messages
        .iter()
        .map(|m| (m.role.clone(), m.text()))
        .collect();
    tokenizer::encode_chat(
        texts.iter().map(|(r, c)| (r.as_str(), c.as_str())),
        add_generation_prompt,
    )
}

async fn tokenize(State(state): State<AppState>, body: Bytes) -> Result<Response, SimError> {
    let req: TokenizeRequest = parse(&body)?;
    state.resolve_model(req.model.as_deref())?;
    let want_strs = req.return_token_strs.unwrap_or(false);
    let (tokens, strs) = match (&req.messages, &req.prompt) {
        (Some(messages), _) => {
            let add = req.add_generation_prompt.unwrap_or(true);
            let texts: Vec<(String, String)> = messages
                .iter()
                .map(|m| (m.role.clone(), m.text()))
                .collect();
            let pairs = || texts.iter().map(|(r, c)| (r.as_str(), c.as_str()));
            let strs = want_strs.then(|| tokenizer::chat_pieces(pairs(), add));
            (tokenizer::encode_chat(pairs(), add), strs)
        }
        (None, Some(prompt)) => {
            let strs = want_strs.then(|| tokenizer::pieces(prompt).map(str::to_owned).collect());
            (tokenizer::encode(prompt), strs)
        }
        (None, None) => {
            return Err(SimError::BadRequest(
                "Either `prompt` or `messages` is required.".to_owned(),
            ));
        }
    };
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len: state.config().max_model_len,
        tokens,
        token_strs: strs,
    })
    .into_response())
}

async fn detokenize(State(state): State<AppState>, body: Bytes) -> Result<Response, SimError> {
    let req: DetokenizeRequest = parse(&body)?;
    state.resolve_model(req.model.as_deref())?;
    Ok(Json(DetokenizeResponse {
        prompt: tokenizer::decode(&req.tokens),
    })
    .into_response())
}

/// Sampling parameters that decide the output length.
#[derive(Debug, Clone, Copy)]
struct LengthParams {
    max_tokens: Option<u32>,
    default_max_tokens: Option<u32>,
    min_tokens: u32,
    ignore_eos: bool,
}

/// A validated request, ready for the engine.
#[derive(Debug, Clone, Copy)]
struct Plan {
    max_tokens: u32,
    output: SyntheticOutput,
    finish_reason: FinishReason,
}

/// Output length and validation:
/// - `max_tokens` defaults to `max_model_len - prompt` for chat and 16 for completions;
/// - prompt + `max_tokens` > `max_model_len` is vLLM's 400 "maximum context length";
/// - with `ignore_eos` exactly `max_tokens` tokens (`finish_reason` "length"); without it a
///   deterministic natural length in `[1, max_tokens]` from a hash of the prompt (and `--seed`),
///   never below `min_tokens`; shorter than `max_tokens` means `finish_reason` "stop".
fn plan(config: &SimConfig, prompt_ids: &[u32], p: LengthParams) -> Result<Plan, SimError> {
    let prompt = prompt_ids.len() as u64;
    let max_len = u64::from(config.max_model_len);
    if p.max_tokens == Some(0) {
        return Err(SimError::BadRequest(
            "max_tokens must be at least 1, got 0.".to_owned(),
        ));
    }
    let max_tokens = p
        .max_tokens
        .or(p.default_max_tokens)
        .unwrap_or_else(|| max_len.saturating_sub(prompt).min(u64::from(u32::MAX)) as u32);
    let requested = prompt + u64::from(max_tokens);
    if requested > max_len || max_tokens == 0 {
        return Err(SimError::BadRequest(format!(
            "This model's maximum context length is {max_len} tokens. However, you requested \
             {requested} tokens ({prompt} in the messages, {max_tokens} in the completion). \
             Please reduce the length of the messages or completion."
        )));
    }
    if p.min_tokens > max_tokens {
        return Err(SimError::BadRequest(format!(
            "min_tokens must be less than or equal to max_tokens={max_tokens}, got {}.",
            p.min_tokens
        )));
    }
    let len = if p.ignore_eos {
        max_tokens
    } else {
        tokenizer::natural_length(prompt_ids, config.seed, max_tokens).max(p.min_tokens)
    };
    let finish_reason = if len >= max_tokens {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    Ok(Plan {
        max_tokens,
        output: SyntheticOutput {
            seed: tokenizer::mix64(tokenizer::prompt_hash(prompt_ids) ^ config.seed),
            len,
            ends_with_eos: finish_reason == FinishReason::Stop,
        },
        finish_reason,
    })
}

fn include_usage(
    stream: bool,
    options: Option<&crate::protocol::StreamOptions>,
) -> Result<bool, SimError> {
    match options {
        Some(_) if !stream => Err(SimError::BadRequest(
            "Stream options can only be defined when `stream=True`.".to_owned(),
        )),
        Some(o) => Ok(o.include_usage.unwrap_or(false)),
        None => Ok(false),
    }
}

/// What the two completion endpoints share once the prompt is tokenized.
struct Generation {
    endpoint: Endpoint,
    id: String,
    model: String,
    prompt_ids: Vec<u32>,
    length: LengthParams,
    stream: bool,
    include_usage: bool,
}

/// Submits a generation and answers with a stream or a complete body.
async fn generate(state: &AppState, g: Generation) -> Result<Response, SimError> {
    let config = state.config();
    let plan = plan(config, &g.prompt_ids, g.length)?;
    let prompt_tokens = g.prompt_ids.len() as u32;
    if config.enable_log_requests {
        tracing::info!(
            "Received request {}: prompt_tokens: {prompt_tokens}, max_tokens: {}, min_tokens: {}, ignore_eos: {}",
            g.id,
            plan.max_tokens,
            g.length.min_tokens,
            g.length.ignore_eos
        );
    }
    let rx = state
        .inner
        .engine
        .submit(NewRequest {
            request_id: g.id.clone(),
            prompt_tokens,
            output_tokens: plan.output.len,
            finish_reason: plan.finish_reason,
        })
        .await?;
    if config.enable_log_requests {
        tracing::info!("Added request {}.", g.id);
    }
    let created = unix_now();
    if g.stream {
        let ctx = StreamContext {
            endpoint: g.endpoint,
            id: g.id,
            created,
            model: g.model,
            prompt_tokens,
            include_usage: g.include_usage,
            system_fingerprint: state.inner.fingerprint.clone(),
            output: plan.output,
        };
        return Ok(sse_response(ctx, rx));
    }
    let (completion_tokens, finish) = collect(rx).await?;
    let text = plan.output.text(0, completion_tokens);
    let usage = UsageInfo {
        prompt_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        completion_tokens,
        prompt_tokens_details: None,
    };
    let response = match g.endpoint {
        Endpoint::Chat => Json(ChatCompletionResponse {
            id: g.id,
            object: "chat.completion",
            created,
            model: g.model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                    refusal: None,
                    annotations: None,
                    audio: None,
                    function_call: None,
                    tool_calls: Vec::new(),
                    reasoning_content: None,
                },
                logprobs: None,
                finish_reason: finish.as_str(),
                stop_reason: None,
                token_ids: None,
            }],
            service_tier: None,
            system_fingerprint: None,
            usage,
            prompt_logprobs: None,
            prompt_token_ids: None,
            kv_transfer_params: None,
        })
        .into_response(),
        Endpoint::Completion => Json(CompletionResponse {
            id: g.id,
            object: "text_completion",
            created,
            model: g.model,
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: finish.as_str(),
                stop_reason: None,
                token_ids: None,
                prompt_logprobs: None,
                prompt_token_ids: None,
            }],
            service_tier: None,
            system_fingerprint: None,
            usage,
            kv_transfer_params: None,
        })
        .into_response(),
    };
    Ok(response)
}

/// Waits for every token of a non-streamed request.
async fn collect(mut rx: mpsc::Receiver<TokenEvent>) -> Result<(u32, FinishReason), SimError> {
    while let Some(ev) = rx.recv().await {
        if let Some(reason) = ev.finish_reason {
            return Ok((ev.first_index + ev.count, reason));
        }
    }
    Err(SimError::EngineStopped)
}

async fn chat_completions(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, SimError> {
    let req: ChatCompletionRequest = parse(&body)?;
    let model = state.resolve_model(req.model.as_deref())?;
    let Some(messages) = &req.messages else {
        return Err(SimError::BadRequest(
            "Invalid request: field `messages` is required.".to_owned(),
        ));
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = include_usage(stream, req.stream_options.as_ref())?;
    let prompt_ids = chat_prompt_ids(messages, req.add_generation_prompt.unwrap_or(true));
    let id = format!("chatcmpl-{:016x}", state.random_hex());
    let length = LengthParams {
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        default_max_tokens: None,
        min_tokens: req.min_tokens.unwrap_or(0),
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    let generation = Generation {
        endpoint: Endpoint::Chat,
        id,
        model,
        prompt_ids,
        length,
        stream,
        include_usage,
    };
    generate(&state, generation).await
}

async fn completions(State(state): State<AppState>, body: Bytes) -> Result<Response, SimError> {
    let req: CompletionRequest = parse(&body)?;
    let model = state.resolve_model(req.model.as_deref())?;
    let prompt_ids = match req.prompt {
        Some(PromptInput::Text(text)) => tokenizer::encode(&text),
        Some(PromptInput::Tokens(ids)) => ids,
        Some(PromptInput::Texts(mut texts)) if texts.len() == 1 => {
            tokenizer::encode(&texts.pop().unwrap_or_default())
        }
        Some(PromptInput::TokenLists(mut lists)) if lists.len() == 1 => {
            lists.pop().unwrap_or_default()
        }
        Some(_) => {
            return Err(SimError::BadRequest(
                "vllm-sim accepts exactly one prompt per request.".to_owned(),
            ));
        }
        None => {
            return Err(SimError::BadRequest(
                "Invalid request: field `prompt` is required.".to_owned(),
            ));
        }
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = include_usage(stream, req.stream_options.as_ref())?;
    let id = format!(
        "cmpl-{:016x}{:016x}",
        state.random_hex(),
        state.random_hex()
    );
    let length = LengthParams {
        max_tokens: req.max_tokens,
        default_max_tokens: Some(16),
        min_tokens: req.min_tokens.unwrap_or(0),
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    let generation = Generation {
        endpoint: Endpoint::Completion,
        id,
        model,
        prompt_ids,
        length,
        stream,
        include_usage,
    };
    generate(&state, generation).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(max_tokens: Option<u32>, min_tokens: u32, ignore_eos: bool) -> LengthParams {
        LengthParams {
            max_tokens,
            default_max_tokens: None,
            min_tokens,
            ignore_eos,
        }
    }

    #[test]
    fn plan_honours_ignore_eos_and_min_tokens() {
        let config = SimConfig::new("m");
        let ids = tokenizer::encode("a prompt of a few tokens");
        let p = plan(&config, &ids, params(Some(50), 0, true)).unwrap();
        assert_eq!((p.output.len, p.finish_reason), (50, FinishReason::Length));
        assert!(!p.output.ends_with_eos);

        let natural = plan(&config, &ids, params(Some(1000), 0, false)).unwrap();
        assert!((1..=1000).contains(&natural.output.len));
        let floored = plan(&config, &ids, params(Some(1000), 999, false)).unwrap();
        assert!(floored.output.len >= 999);

        // Chat default: everything left in the context.
        let default = plan(&config, &ids, params(None, 0, true)).unwrap();
        assert_eq!(default.max_tokens, 2048 - ids.len() as u32);
    }

    #[test]
    fn plan_stops_naturally_below_max_tokens() {
        let config = SimConfig::new("m");
        let stopped = (0..20)
            .map(|i| tokenizer::encode(&format!("prompt number {i}")))
            .filter_map(|ids| plan(&config, &ids, params(Some(500), 0, false)).ok())
            .find(|p| p.output.len < 500)
            .unwrap();
        assert_eq!(stopped.finish_reason, FinishReason::Stop);
        assert!(stopped.output.ends_with_eos);
    }

    #[test]
    fn plan_rejects_too_long_requests() {
        let mut config = SimConfig::new("m");
        config.max_model_len = 10;
        let ids = tokenizer::encode("one two three four five six");
        assert_eq!(ids.len(), 6);
        let err = plan(&config, &ids, params(Some(5), 0, true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "This model's maximum context length is 10 tokens. However, you requested 11 tokens \
             (6 in the messages, 5 in the completion). Please reduce the length of the messages \
             or completion."
        );
        assert!(plan(&config, &ids, params(Some(4), 0, true)).is_ok());
        assert!(plan(&config, &ids, params(Some(0), 0, true)).is_err());
        assert!(plan(&config, &ids, params(Some(3), 4, true)).is_err());
    }
}
