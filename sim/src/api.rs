//! HTTP routes and handlers, matching vLLM 0.32's OpenAI-compatible server.
//!
//! Routes: `GET /health` (200, empty body), `GET|POST /ping`, `GET /load`, `GET /version`,
//! `GET /v1/models`, `POST /tokenize`, `POST /detokenize`, `GET /metrics`,
//! `POST /v1/chat/completions`, `POST /v1/completions` (absent with `--disable-completions`).
//! Unknown routes answer FastAPI's 404 `{"detail":"Not Found"}`, wrong methods its 405.
//! Every response carries uvicorn's `server: uvicorn` header and is logged like uvicorn's
//! access log: `INFO:     127.0.0.1:45536 - "GET /health HTTP/1.1" 200 OK`.
//!
//! Request validation follows vLLM 0.32 (see `plan`): over-long requests are clamped to the
//! context length rather than rejected, and errors carry vLLM's messages, `type` and `param`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONTENT_TYPE, SERVER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{FaultAction, SimConfig, TimingMode, VLLM_VERSION};
use crate::direct::{self, DirectRequest, Pace};
use crate::error::SimError;
use crate::finish::FinishReason;
use crate::logging::UVICORN_ACCESS;
use crate::metrics::{self, EngineStats};
use crate::protocol::{
    AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse, CompletionChoice,
    CompletionRequest, CompletionResponse, DetokenizeRequest, DetokenizeResponse, ModelCard,
    ModelList, ModelPermission, PromptInput, StreamOptions, TokenizeRequest, TokenizeResponse,
    UsageInfo, VersionResponse,
};
use crate::scheduler::{EngineHandle, NewRequest, TokenEvent};
use crate::stop::StopSignal;
use crate::stream::{Endpoint, StreamContext, cut_response, sse_response};
use crate::tokenizer::{self, SyntheticOutput};
use crate::trace::{TraceLog, Tracer};

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
    /// The engine's stop signal, for requests that bypass it (`--sim-timing exact|fast`).
    stop: StopSignal,
    started: u64,
    id_salt: u64,
    next_id: AtomicU64,
    fingerprint: String,
    /// `--sim-trace-requests`: what direct streams did.
    trace: Option<Arc<TraceLog>>,
}

impl AppState {
    pub fn new(
        config: SimConfig,
        engine: EngineHandle,
        stats: Arc<EngineStats>,
        stop: StopSignal,
    ) -> Self {
        let started = unix_now();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let id_salt = tokenizer::mix64(nanos ^ u64::from(std::process::id()) ^ config.seed);
        let fingerprint = config.system_fingerprint();
        let trace = (config.trace_requests > 0 && config.timing_mode != TimingMode::Model)
            .then(|| Arc::new(TraceLog::new(config.trace_requests)));
        Self {
            inner: Arc::new(Inner {
                config,
                engine,
                stats,
                stop,
                started,
                id_salt,
                next_id: AtomicU64::new(0),
                fingerprint,
                trace,
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

    /// Checks that a request names a served model (or none, or an empty name), else vLLM's
    /// 404. Like vLLM, responses always carry the first served name, whichever alias the
    /// request used.
    fn check_model(&self, requested: Option<&str>) -> Result<(), SimError> {
        let config = self.config();
        match requested {
            None | Some("") => Ok(()),
            Some(name) if config.served_model_names.iter().any(|n| n == name) => Ok(()),
            Some(name) => Err(SimError::ModelNotFound {
                model: name.to_owned(),
                aliases: config.served_model_names.join(", "),
            }),
        }
    }
}

/// The router with every route and the access log.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/ping", get(health).post(health))
        .route("/load", get(load))
        .route("/version", get(version))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(prometheus))
        .route("/sim/trace", get(sim_trace))
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
    ("/load", "GET"),
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
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(SERVER, HeaderValue::from_static("uvicorn"));
    let status = response.status();
    tracing::info!(
        target: UVICORN_ACCESS,
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

/// vLLM's `/load`: in-flight generation requests when `--enable-server-load-tracking` is on,
/// which the simulator does not offer, so always vLLM's default 0.
async fn load() -> Json<serde_json::Value> {
    Json(serde_json::json!({"server_load": 0}))
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

async fn tokenize(State(state): State<AppState>, body: Bytes) -> Result<Response, SimError> {
    let req: TokenizeRequest = parse(&body)?;
    state.check_model(req.model.as_deref())?;
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
    state.check_model(req.model.as_deref())?;
    Ok(Json(DetokenizeResponse {
        prompt: tokenizer::decode(&req.tokens),
    })
    .into_response())
}

/// Sampling parameters that decide the output length, as the request gave them.
#[derive(Debug, Clone, Copy)]
struct LengthParams {
    /// `max_tokens` (completions: 16 when absent); `None` means "up to the context length".
    max_tokens: Option<i64>,
    /// The request field `max_tokens` came from (`max_tokens` or `max_completion_tokens`).
    max_tokens_param: &'static str,
    min_tokens: i64,
    ignore_eos: bool,
}

/// A prompt after the chat template and tokenization.
#[derive(Debug, Clone)]
struct Prompt {
    ids: Vec<u32>,
    /// Characters of the text vLLM tokenized; `None` for a prompt given as token ids.
    text_chars: Option<usize>,
}

/// A validated request, ready for the engine.
#[derive(Debug, Clone, Copy)]
struct Plan {
    max_tokens: u32,
    output: SyntheticOutput,
    finish_reason: FinishReason,
}

/// Validation and output length, in vLLM 0.32's order and with its messages:
/// 1. `max_tokens` (or `max_completion_tokens`) above `max_model_len` is a 400;
/// 2. a text prompt of more than `max_model_len × 81` characters is a 400 (`input_text`);
/// 3. a prompt of more than `max_model_len` tokens is a 400 (`input_tokens`). vLLM stops
///    tokenizing text at `max_model_len + 1` tokens, so for text it reports "at least
///    `max_model_len + 1`" whatever the real length;
/// 4. prompt + `max_tokens` above `max_model_len` is *not* an error: `max_tokens` is clamped
///    to what is left of the context (`min(max_tokens, max_model_len - prompt)`), and the
///    request ends with `finish_reason` "length" there. Chat's default `max_tokens` is all of
///    it, completions' 16;
/// 5. the clamped `max_tokens` must be at least 1 (so a prompt of exactly `max_model_len`
///    tokens is a 400) and at least `min_tokens`.
///
/// Output: with `ignore_eos` exactly `max_tokens` tokens (`finish_reason` "length"); without
/// it a deterministic natural length in `[1, max_tokens]` from a hash of the prompt (and
/// `--seed`), never below `min_tokens`; shorter than `max_tokens` means `finish_reason` "stop".
fn plan(config: &SimConfig, prompt: &Prompt, p: LengthParams) -> Result<Plan, SimError> {
    let max_len = i64::from(config.max_model_len);
    if let Some(n) = p.max_tokens
        && n > max_len
    {
        return Err(SimError::validation(
            format!(
                "{}={n} cannot be greater than max_model_len={max_len}. Please request fewer \
                 output tokens.",
                p.max_tokens_param
            ),
            p.max_tokens_param,
            Some(n),
        ));
    }
    let context = format!("This model's maximum context length is {max_len} tokens.");
    if let Some(chars) = prompt.text_chars {
        let limit = max_len as usize * tokenizer::MAX_CHARS_PER_TOKEN;
        if chars > limit {
            return Err(SimError::validation(
                format!(
                    "{context} However, your prompt contains {chars} characters (more than \
                     {limit} characters, which is the upper bound for {max_len} input tokens). \
                     Please reduce the length of the input prompt."
                ),
                "input_text",
                Some(chars),
            ));
        }
    }
    let mut prompt_len = prompt.ids.len() as i64;
    if prompt.text_chars.is_some() {
        prompt_len = prompt_len.min(max_len + 1);
    }
    if prompt_len > max_len {
        let qualifier = if prompt_len == max_len + 1 {
            "at least "
        } else {
            ""
        };
        return Err(SimError::validation(
            format!(
                "{context} However, your prompt contains {qualifier}{prompt_len} input tokens, \
                 which exceeds this limit even without any output tokens. Please reduce the \
                 length of the input prompt."
            ),
            "input_tokens",
            Some(prompt_len),
        ));
    }
    let room = max_len - prompt_len;
    let max_tokens = p.max_tokens.map_or(room, |n| n.min(room));
    if max_tokens < 1 {
        return Err(SimError::validation(
            format!("max_tokens must be at least 1, got {max_tokens}."),
            "max_tokens",
            Some(max_tokens),
        ));
    }
    if p.min_tokens < 0 {
        return Err(SimError::BadRequest(format!(
            "min_tokens must be greater than or equal to 0, got {}.",
            p.min_tokens
        )));
    }
    if p.min_tokens > max_tokens {
        return Err(SimError::BadRequest(format!(
            "min_tokens must be less than or equal to max_tokens={max_tokens}, got {}.",
            p.min_tokens
        )));
    }
    // Both fit in u32: 1 ≤ min_tokens ≤ max_tokens ≤ max_model_len.
    let max_tokens = max_tokens as u32;
    let min_tokens = p.min_tokens as u32;
    let len = if p.ignore_eos {
        max_tokens
    } else {
        tokenizer::natural_length(&prompt.ids, config.seed, max_tokens).max(min_tokens)
    };
    let finish_reason = if len >= max_tokens {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    Ok(Plan {
        max_tokens,
        output: SyntheticOutput {
            seed: tokenizer::mix64(tokenizer::prompt_hash(&prompt.ids) ^ config.seed),
            len,
            ends_with_eos: finish_reason == FinishReason::Stop,
        },
        finish_reason,
    })
}

/// vLLM's `repr(SamplingParams)` for a request with the simulator's (default) sampling
/// settings.
fn sampling_params_repr(ignore_eos: bool, max_tokens: u32, min_tokens: i64) -> String {
    let py_bool = |b: bool| if b { "True" } else { "False" };
    format!(
        "SamplingParams(n=1, presence_penalty=0.0, frequency_penalty=0.0, \
         repetition_penalty=1.0, temperature=1.0, watermarking=False, top_p=1.0, top_k=0, \
         min_p=0.0, seed=None, stop=[], stop_token_ids=[], bad_words=[], \
         thinking_token_budget=None, include_stop_str_in_output=False, ignore_eos={}, \
         max_tokens={max_tokens}, min_tokens={min_tokens}, logprobs=None, prompt_logprobs=None, \
         skip_special_tokens=True, spaces_between_special_tokens=True, \
         structured_outputs=None, extra_args=None)",
        py_bool(ignore_eos)
    )
}

/// `(include_usage, continuous_usage)` of a request (vLLM's `should_include_usage`); vLLM
/// rejects truthy `stream_options` without `stream`.
fn include_usage(stream: bool, options: Option<&StreamOptions>) -> Result<(bool, bool), SimError> {
    match options {
        Some(o) if !stream && o.is_truthy() => Err(SimError::validation(
            "Stream options can only be defined when `stream=True`.",
            "stream_options",
            None::<String>,
        )),
        Some(o) if stream => {
            let usage = o.include_usage();
            Ok((usage, usage && o.continuous_usage_stats()))
        }
        _ => Ok((false, false)),
    }
}

/// What the two completion endpoints share once the prompt is tokenized.
struct Generation {
    /// When the request was parsed: the origin of the `exact` schedule.
    received: Instant,
    /// The client's `x-request-id` header, for [`crate::trace`].
    request_id: String,
    endpoint: Endpoint,
    id: String,
    prompt: Prompt,
    length: LengthParams,
    stream: bool,
    /// `(include_usage, continuous_usage)`.
    include_usage: (bool, bool),
    /// Role of the answer (chat).
    role: String,
}

/// Submits a generation and answers with a stream or a complete body.
async fn generate(state: &AppState, g: Generation) -> Result<Response, SimError> {
    let config = state.config();
    let plan = plan(config, &g.prompt, g.length)?;
    let prompt_tokens = g.prompt.ids.len() as u32;
    // vLLM's engine request id: completions add the prompt's index.
    let engine_id = match g.endpoint {
        Endpoint::Chat => g.id.clone(),
        Endpoint::Completion => format!("{}-0", g.id),
    };
    if config.enable_log_requests {
        tracing::info!(
            src = "request_logger.py:65",
            "Received request {engine_id}: params: {}, lora_request: None.",
            sampling_params_repr(g.length.ignore_eos, plan.max_tokens, g.length.min_tokens)
        );
    }
    let pace = Pace::of(config.timing_mode);
    let source = match pace {
        Some(pace) => Source::Direct(
            DirectRequest {
                t0: g.received,
                prompt_tokens,
                max_tokens: plan.max_tokens,
                output: plan.output,
                finish_reason: plan.finish_reason,
            },
            pace,
        ),
        None => Source::Engine(
            state
                .inner
                .engine
                .submit(NewRequest {
                    request_id: engine_id.clone(),
                    prompt_ids: g.prompt.ids,
                    max_tokens: plan.max_tokens,
                    output_tokens: plan.output.len,
                    finish_reason: plan.finish_reason,
                })
                .await?,
        ),
    };
    if config.enable_log_requests {
        tracing::info!(src = "async_llm.py:578", "Added request {engine_id}.");
    }
    let created = unix_now();
    let model = config.primary_name().to_owned();
    let system_fingerprint = state.inner.fingerprint.clone();
    if g.stream {
        let ctx = StreamContext {
            endpoint: g.endpoint,
            id: g.id,
            created,
            model,
            prompt_tokens,
            include_usage: g.include_usage.0,
            continuous_usage: g.include_usage.1,
            system_fingerprint,
            output: plan.output,
            role: g.role,
        };
        let fault = config.faults.armed();
        let stop = state.inner.stop.clone();
        return Ok(match source {
            Source::Engine(rx) => sse_response(ctx, rx, fault, stop),
            Source::Direct(req, pace) => {
                let tracer = state.inner.trace.as_ref().map(|log| {
                    Tracer::new(log.clone(), g.request_id.clone(), req.output.len as usize)
                });
                let stream = direct::DirectStream {
                    stats: state.inner.stats.clone(),
                    stop,
                    fault,
                    tracer,
                };
                direct::sse_response(ctx, req, pace, stream)
            }
        });
    }
    let (completion_tokens, finish) = match source {
        Source::Engine(rx) => collect(rx).await?,
        Source::Direct(req, pace) => {
            direct::collect(req, pace, state.inner.stats.clone(), &state.inner.stop).await?
        }
    };
    // `--sim-stall-after-tokens` / `--sim-disconnect-after-tokens` on a request that reaches
    // the fault's token: no answer until shutdown (then the engine's 503), or none at all.
    if let Some(fault) = config.faults.armed()
        && fault.fires_within(completion_tokens)
    {
        return match fault.action {
            FaultAction::Stall => {
                state.inner.stop.stopped().await;
                Err(SimError::EngineStopped)
            }
            FaultAction::Disconnect => Ok(cut_response()),
        };
    }
    let text = plan.output.text(0, completion_tokens);
    let usage = UsageInfo {
        prompt_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        completion_tokens,
        prompt_tokens_details: None,
        completion_tokens_details: None,
    };
    let response = match g.endpoint {
        Endpoint::Chat => Json(ChatCompletionResponse {
            id: g.id,
            object: "chat.completion",
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: g.role,
                    content: text,
                    refusal: None,
                    annotations: None,
                    audio: None,
                    function_call: None,
                    reasoning: None,
                },
                logprobs: None,
                finish_reason: finish.as_str(),
                stop_reason: None,
                token_ids: None,
                routed_experts: None,
            }],
            service_tier: None,
            system_fingerprint,
            usage,
            prompt_logprobs: None,
            prompt_token_ids: None,
            prompt_text: None,
            kv_transfer_params: None,
            ec_transfer_params: None,
            metrics: None,
        })
        .into_response(),
        Endpoint::Completion => Json(CompletionResponse {
            id: g.id,
            object: "text_completion",
            created,
            model,
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: finish.as_str(),
                stop_reason: None,
                token_ids: None,
                prompt_logprobs: None,
                prompt_token_ids: None,
                routed_experts: None,
            }],
            service_tier: None,
            system_fingerprint,
            usage,
            kv_transfer_params: None,
            ec_transfer_params: None,
            metrics: None,
        })
        .into_response(),
    };
    Ok(response)
}

/// Where a request's tokens come from.
enum Source {
    /// The engine loop (`--sim-timing model`).
    Engine(mpsc::Receiver<TokenEvent>),
    /// Its own schedule (`--sim-timing exact|fast`).
    Direct(DirectRequest, Pace),
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

/// `GET /sim/trace`: the traced streams (see [`crate::trace`]); 404 when tracing is off.
async fn sim_trace(State(state): State<AppState>) -> Response {
    match &state.inner.trace {
        Some(log) => Json(log.snapshot()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "tracing is off: start with --sim-timing exact|fast --sim-trace-requests N",
        )
            .into_response(),
    }
}

/// The request's `x-request-id` header, or "".
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    let req: ChatCompletionRequest = parse(&body)?;
    let received = Instant::now();
    let stream = req.stream.unwrap_or(false);
    let include_usage = include_usage(stream, req.stream_options.as_ref())?;
    state.check_model(req.model.as_deref())?;
    let Some(messages) = &req.messages else {
        return Err(SimError::BadRequest(
            "Invalid request: field `messages` is required.".to_owned(),
        ));
    };
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let texts: Vec<(String, String)> = messages
        .iter()
        .map(|m| (m.role.clone(), m.text()))
        .collect();
    let pairs = || texts.iter().map(|(r, c)| (r.as_str(), c.as_str()));
    let prompt = Prompt {
        ids: tokenizer::encode_chat(pairs(), add_generation_prompt),
        text_chars: Some(
            tokenizer::render_chat(pairs(), add_generation_prompt)
                .chars()
                .count(),
        ),
    };
    // vLLM answers as the assistant, or as the last message's author without a generation
    // prompt.
    let role = if add_generation_prompt {
        "assistant".to_owned()
    } else {
        messages
            .last()
            .map_or_else(|| "assistant".to_owned(), |m| m.role.clone())
    };
    let id = format!("chatcmpl-{:016x}", state.random_hex());
    let (max_tokens, max_tokens_param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => (Some(n), "max_completion_tokens"),
        (None, n) => (n, "max_tokens"),
    };
    let length = LengthParams {
        max_tokens,
        max_tokens_param,
        min_tokens: req.min_tokens.unwrap_or(0),
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    let generation = Generation {
        received,
        request_id: request_id(&headers),
        endpoint: Endpoint::Chat,
        id,
        prompt,
        length,
        stream,
        include_usage,
        role,
    };
    generate(&state, generation).await
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    let req: CompletionRequest = parse(&body)?;
    let received = Instant::now();
    let stream = req.stream.unwrap_or(false);
    let include_usage = include_usage(stream, req.stream_options.as_ref())?;
    state.check_model(req.model.as_deref())?;
    let text_prompt = |text: &str| Prompt {
        ids: tokenizer::encode(text),
        text_chars: Some(text.chars().count()),
    };
    let token_prompt = |ids: Vec<u32>| Prompt {
        ids,
        text_chars: None,
    };
    let prompt = match req.prompt {
        Some(PromptInput::Text(text)) => text_prompt(&text),
        Some(PromptInput::Tokens(ids)) => token_prompt(ids),
        Some(PromptInput::Texts(mut texts)) if texts.len() == 1 => {
            text_prompt(&texts.pop().unwrap_or_default())
        }
        Some(PromptInput::TokenLists(mut lists)) if lists.len() == 1 => {
            token_prompt(lists.pop().unwrap_or_default())
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
    let id = format!("cmpl-{:016x}", state.random_hex());
    let length = LengthParams {
        // Absent: vLLM's default 16; `null`: no limit but the context.
        max_tokens: req.max_tokens.unwrap_or(Some(16)),
        max_tokens_param: "max_tokens",
        min_tokens: req.min_tokens.unwrap_or(0),
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    let generation = Generation {
        received,
        request_id: request_id(&headers),
        endpoint: Endpoint::Completion,
        id,
        prompt,
        length,
        stream,
        include_usage,
        role: "assistant".to_owned(),
    };
    generate(&state, generation).await
}

#[cfg(test)]
mod tests;
