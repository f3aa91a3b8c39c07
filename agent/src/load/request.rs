//! One streamed request, measured the way vLLM's `benchmark_serving` measures it.
//!
//! Timestamps are taken once per network read, when the bytes arrive; every event parsed
//! from that read gets that time. TTFT comes from the first chunk carrying generated
//! content (the role-only chunk does not count), E2EL from the last content chunk, ITL
//! from the gaps between content chunks, TPOT from (E2EL − TTFT) / (output tokens − 1).

use std::time::Duration;

use bytes::Bytes;

use fleetbench_proto::record::{ErrorKind, RequestRecord, tpot};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::AgentError;
use crate::load::clients::{StreamClient, next_data};
use crate::load::retry;
use crate::load::sse::{SseEvent, SseParser};

/// The two OpenAI-compatible endpoints the load generator drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEndpoint {
    Chat,
    Completions,
}

impl ApiEndpoint {
    pub fn path(self) -> &'static str {
        match self {
            ApiEndpoint::Chat => "/v1/chat/completions",
            ApiEndpoint::Completions => "/v1/completions",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ApiEndpoint::Chat => "chat",
            ApiEndpoint::Completions => "completions",
        }
    }
}

/// One message of a chat prompt, OpenAI's `{"role": …, "content": …}` (other fields of
/// the message, e.g. `name`, are ignored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Everything needed to send one request.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    pub index: u32,
    pub wave: u32,
    pub endpoint: ApiEndpoint,
    pub model: String,
    pub prompt: String,
    /// A dataset entry's conversation, sent verbatim as the chat request's `messages`
    /// (completions: the contents joined by newlines); `None`: one user message of
    /// `prompt`.
    pub messages: Option<Vec<ChatMessage>>,
    pub target_input_tokens: u32,
    pub target_output_tokens: u32,
    /// When the schedule means it to leave, relative to [`RequestContext::origin`].
    pub scheduled_offset: Duration,
    pub extensions: Extensions,
}

/// The vLLM request extensions that make the output length exact. Engines that are not
/// vLLM may refuse some (`transformers serve` answers 422 to `ignore_eos`); the load
/// generator probes and drops what is refused, and records that on the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// `ignore_eos: true`: generate `max_tokens` even past the end-of-sequence token.
    pub ignore_eos: bool,
    /// `min_tokens = max_tokens`: the same, the other way vLLM accepts.
    pub min_tokens: bool,
    /// `stream_options.include_usage`: the final chunk carries the server's token counts.
    pub include_usage: bool,
}

impl Extensions {
    /// Everything vLLM accepts.
    pub const ALL: Extensions = Extensions {
        ignore_eos: true,
        min_tokens: true,
        include_usage: true,
    };
}

/// What every request of a point shares: the clock origin of its schedule, the point's
/// deadline, and how long a stream may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// Start of the measured load: scheduled and actual send offsets are relative to it.
    pub origin: Instant,
    pub deadline: Instant,
    /// A response that sends no bytes for this long is recorded as [`ErrorKind::Stalled`].
    pub idle_timeout: Duration,
}

/// JSON body of a streaming request that forces exactly `max_tokens` of output on vLLM
/// (with every extension on; see [`Extensions`]).
pub fn request_body(plan: &RequestPlan) -> serde_json::Value {
    let ext = plan.extensions;
    let mut body = json!({
        "model": plan.model,
        "max_tokens": plan.target_output_tokens,
        "temperature": 0.0,
        "stream": true,
    });
    if ext.min_tokens {
        body["min_tokens"] = json!(plan.target_output_tokens);
    }
    if ext.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if ext.include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    match (plan.endpoint, &plan.messages) {
        (ApiEndpoint::Chat, None) => {
            body["messages"] = json!([{"role": "user", "content": plan.prompt}]);
        }
        (ApiEndpoint::Chat, Some(messages)) => {
            body["messages"] = messages_json(messages);
        }
        (ApiEndpoint::Completions, None) => {
            body["prompt"] = json!(plan.prompt);
        }
        (ApiEndpoint::Completions, Some(messages)) => {
            body["prompt"] = json!(joined(messages));
        }
    }
    body
}

/// A conversation as OpenAI's `messages` array.
pub fn messages_json(messages: &[ChatMessage]) -> serde_json::Value {
    serde_json::Value::Array(
        messages
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect(),
    )
}

/// A conversation's contents joined by newlines: its text for a completions request.
pub fn joined(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the stream delivered, with arrival times relative to the send.
#[derive(Debug, Default)]
struct StreamTrace {
    content_times: Vec<Duration>,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    finished: bool,
    done: bool,
    /// Resends of a request that never reached the server (see [`retry::never_reached`]).
    retries: u32,
    /// The generated text, kept only when asked for (a conversation's next turn carries
    /// it): `None` otherwise, so measured streams do not copy their content.
    text: Option<String>,
}

/// A request ready to leave: its plan (the prompt text dropped once encoded), URL and
/// JSON body, built before the load starts so that sending costs no serialisation.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    pub plan: RequestPlan,
    pub url: http::Uri,
    pub body: Bytes,
}

impl PreparedRequest {
    pub fn new(base_url: &str, mut plan: RequestPlan) -> Result<Self, AgentError> {
        let url = format!("{}{}", base_url.trim_end_matches('/'), plan.endpoint.path());
        let url = url
            .parse::<http::Uri>()
            .map_err(|e| AgentError::Engine(format!("engine URL {url:?}: {e}")))?;
        let body = serde_json::to_vec(&request_body(&plan))
            .map_err(|e| AgentError::Engine(format!("encoding a request: {e}")))?;
        plan.prompt = String::new();
        Ok(PreparedRequest {
            plan,
            url,
            body: Bytes::from(body),
        })
    }
}

/// Sends one request and measures it. Never fails: every problem becomes the record's
/// error kind, so a failed request is counted, not dropped.
pub async fn measure(
    client: &StreamClient,
    base_url: &str,
    plan: &RequestPlan,
    ctx: &RequestContext,
    cancel: &CancellationToken,
) -> RequestRecord {
    match PreparedRequest::new(base_url, plan.clone()) {
        Ok(prepared) => measure_prepared(client, &prepared, ctx, cancel).await,
        Err(e) => RequestRecord {
            request_index: plan.index,
            wave: plan.wave,
            send_time_unix_us: fleetbench_proto::unix_micros_now(),
            target_input_tokens: plan.target_input_tokens,
            target_output_tokens: plan.target_output_tokens,
            endpoint: plan.endpoint.as_str().to_string(),
            error_kind: Some(ErrorKind::Connect),
            error: e.to_string(),
            ..RequestRecord::default()
        },
    }
}

/// [`measure`] for a request prepared in advance.
pub async fn measure_prepared(
    client: &StreamClient,
    prepared: &PreparedRequest,
    ctx: &RequestContext,
    cancel: &CancellationToken,
) -> RequestRecord {
    measure_inner(client, prepared, ctx, cancel, false).await.0
}

/// [`measure_prepared`] that also returns the generated text (a conversation's turn,
/// whose answer the next turn carries).
pub async fn measure_keeping_text(
    client: &StreamClient,
    prepared: &PreparedRequest,
    ctx: &RequestContext,
    cancel: &CancellationToken,
) -> (RequestRecord, String) {
    let (record, text) = measure_inner(client, prepared, ctx, cancel, true).await;
    (record, text.unwrap_or_default())
}

async fn measure_inner(
    client: &StreamClient,
    prepared: &PreparedRequest,
    ctx: &RequestContext,
    cancel: &CancellationToken,
    keep_text: bool,
) -> (RequestRecord, Option<String>) {
    let plan = &prepared.plan;
    let send_wall = fleetbench_proto::unix_micros_now();
    let sent = Instant::now();
    let mut record = RequestRecord {
        request_index: plan.index,
        wave: plan.wave,
        send_time_unix_us: send_wall,
        target_input_tokens: plan.target_input_tokens,
        target_output_tokens: plan.target_output_tokens,
        endpoint: plan.endpoint.as_str().to_string(),
        scheduled_offset_s: plan.scheduled_offset.as_secs_f64(),
        send_offset_s: sent.saturating_duration_since(ctx.origin).as_secs_f64(),
        ..RequestRecord::default()
    };
    let mut trace = StreamTrace {
        text: keep_text.then(String::new),
        ..StreamTrace::default()
    };
    let flight = client.in_flight();
    let outcome = tokio::select! {
        r = stream(client, prepared, sent, ctx.idle_timeout, &mut trace) => r,
        () = tokio::time::sleep_until(ctx.deadline) => Err((ErrorKind::Timeout, "point deadline passed".to_string())),
        () = cancel.cancelled() => Err((ErrorKind::Cancelled, "point cancelled".to_string())),
    };
    finish_record(&mut record, &trace, outcome);
    flight.finish(record.success());
    (record, trace.text)
}

async fn stream(
    client: &StreamClient,
    prepared: &PreparedRequest,
    sent: Instant,
    idle: Duration,
    trace: &mut StreamTrace,
) -> Result<(), (ErrorKind, String)> {
    let mut resp = loop {
        let request = client.post_json(
            &prepared.url,
            request_id(&prepared.plan),
            prepared.body.clone(),
        );
        let sent = tokio::time::timeout(idle, request).await.map_err(|_| {
            (
                ErrorKind::Stalled,
                format!(
                    "no response headers for {:.3} s (idle timeout)",
                    idle.as_secs_f64()
                ),
            )
        })?;
        match sent {
            Ok(resp) => break resp,
            // Never reached the server (no connection, or one the server had closed before
            // any response byte): resent, and the record says so. A request that got a
            // response is never resent (its failure is the measurement).
            Err(e) if retry::never_reached(&e) && trace.retries < retry::MAX_LOAD_RESENDS => {
                let wait =
                    retry::PROBE_BACKOFF[trace.retries as usize % retry::PROBE_BACKOFF.len()];
                trace.retries += 1;
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err((ErrorKind::Connect, error_chain(&e))),
        }
    };
    let status = resp.status();
    let body = resp.body_mut();
    if !status.is_success() {
        // The body only explains the status: read what comes without a silence of the idle
        // timeout, up to a few KB, so a body that never ends cannot turn this into a
        // timeout at the point deadline.
        let mut text = Vec::new();
        while text.len() < 4096 {
            match tokio::time::timeout(idle, next_data(body)).await {
                Ok(Some(Ok(bytes))) => text.extend_from_slice(&bytes),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&text);
        return Err((
            ErrorKind::HttpStatus,
            format!(
                "HTTP {status}: {}",
                text.chars().take(500).collect::<String>()
            ),
        ));
    }
    let mut parser = SseParser::new();
    loop {
        let chunk = tokio::time::timeout(idle, next_data(body))
            .await
            .map_err(|_| stalled_after(idle, trace))?;
        let Some(chunk) = chunk else { break };
        let bytes = chunk.map_err(|e| (ErrorKind::Truncated, error_chain(&e)))?;
        let at = sent.elapsed();
        let events = parser
            .push(&bytes)
            .map_err(|e| (ErrorKind::Malformed, e.to_string()))?;
        for ev in events {
            match ev {
                SseEvent::Chunk {
                    content,
                    finish_reason,
                } => {
                    if !content.is_empty() {
                        trace.content_times.push(at);
                        if let Some(text) = trace.text.as_mut() {
                            text.push_str(&content);
                        }
                    }
                    if finish_reason.is_some() {
                        trace.finished = true;
                    }
                }
                SseEvent::Usage {
                    prompt_tokens,
                    completion_tokens,
                } => {
                    trace.prompt_tokens = prompt_tokens;
                    trace.completion_tokens = completion_tokens;
                }
                SseEvent::Error(msg) => return Err((ErrorKind::ServerError, msg)),
                SseEvent::Done => {
                    trace.done = true;
                    return Ok(());
                }
            }
        }
    }
    if parser.has_partial() {
        return Err((ErrorKind::Truncated, "stream ended inside an event".into()));
    }
    if !trace.done && !trace.finished {
        return Err((ErrorKind::Truncated, "stream ended without [DONE]".into()));
    }
    Ok(())
}

/// The `x-request-id` of a request: `fleetbench-<wave>-<index>`, as its record's `wave` and
/// `request_index` (a warm-up request shares the ids of the first measured ones; it never
/// runs at the same time as them).
pub fn request_id(plan: &RequestPlan) -> http::HeaderValue {
    let id = format!("fleetbench-{}-{}", plan.wave, plan.index);
    // Digits, letters and '-' only: always a valid header value.
    http::HeaderValue::from_str(&id).unwrap_or(http::HeaderValue::from_static("fleetbench"))
}

fn stalled_after(idle: Duration, trace: &StreamTrace) -> (ErrorKind, String) {
    (
        ErrorKind::Stalled,
        format!(
            "stream silent for {:.3} s (idle timeout) after {} content chunk(s)",
            idle.as_secs_f64(),
            trace.content_times.len()
        ),
    )
}

fn finish_record(
    record: &mut RequestRecord,
    trace: &StreamTrace,
    outcome: Result<(), (ErrorKind, String)>,
) {
    record.content_chunks = u32::try_from(trace.content_times.len()).unwrap_or(u32::MAX);
    record.retries = trace.retries;
    record.input_tokens = trace.prompt_tokens;
    record.usage_reported = trace.completion_tokens.is_some();
    record.output_tokens = trace.completion_tokens.or(Some(record.content_chunks));
    if let (Some(first), Some(last)) = (trace.content_times.first(), trace.content_times.last()) {
        record.ttft_s = Some(first.as_secs_f64());
        record.e2el_s = Some(last.as_secs_f64());
        record.itl_s = trace
            .content_times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
    }
    match outcome {
        Err((kind, msg)) => {
            record.error_kind = Some(kind);
            record.error = msg;
        }
        Ok(()) if trace.content_times.is_empty() => {
            record.error_kind = Some(ErrorKind::NoContent);
            record.error = "stream finished without generated content".into();
        }
        Ok(()) => {}
    }
    if let (Some(ttft), Some(e2el), Some(out), true) = (
        record.ttft_s,
        record.e2el_s,
        record.output_tokens,
        record.success(),
    ) {
        record.tpot_s = tpot(ttft, e2el, out);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests;
