//! Server-sent events of streamed chat and completion responses, byte-for-byte in vLLM 0.32's
//! shape (see `fixtures/vllm-0.32-cpu/chat-stream.sse`):
//!
//! - every event is `data: {json}\n\n`, the stream ends with `data: [DONE]\n\n`;
//! - chat: a role chunk `{"role":"assistant","content":""}` with top-level
//!   `"prompt_token_ids":null,"prompt_text":null` (sent with the first token, as vLLM does),
//!   then one chunk per engine output with `delta.content` and `"token_ids":null` (one token
//!   unless the client lagged), the last one with `finish_reason` and `"stop_reason":null`; a
//!   natural stop ends with the end-of-sequence token, whose `content` is `""`;
//! - completions: no role chunk, `object` `text_completion`, `text` instead of `delta`, and
//!   every choice carries `"stop_reason":null,"prompt_token_ids":null,"token_ids":null`;
//! - with `stream_options.include_usage`, a final chunk with `"choices":[]`, `usage` and
//!   `system_fingerprint`; without it the chunk with `finish_reason` carries
//!   `system_fingerprint` instead;
//! - with `include_usage` and `continuous_usage_stats`, every chunk also carries `usage` (the
//!   tokens so far; chat's with `"completion_tokens_details":null`).
//!
//! If the engine stops mid-request (shutdown), the stream ends without `[DONE]`. With a
//! [`StreamFault`] (`--sim-stall-after-tokens`, `--sim-disconnect-after-tokens`) it stalls or is
//! cut after its N-th content token instead (see [`fault_end`]).

use std::collections::VecDeque;
use std::io;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut as _, Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{FaultAction, StreamFault};
use crate::protocol::Null;
use crate::scheduler::TokenEvent;
use crate::stop::StopSignal;
use crate::tokenizer::SyntheticOutput;

/// `Content-Type` of the streamed answers (Starlette's `StreamingResponse`).
pub const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// Which API is streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// Everything the chunks of one response need.
#[derive(Debug, Clone)]
pub struct StreamContext {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub prompt_tokens: u32,
    pub include_usage: bool,
    /// `stream_options.continuous_usage_stats` (with `include_usage`): `usage` in every chunk.
    pub continuous_usage: bool,
    pub system_fingerprint: String,
    pub output: SyntheticOutput,
    /// `delta.role` of the chat role chunk: `assistant`, or the last message's role without
    /// `add_generation_prompt`.
    pub role: String,
}

#[derive(Debug, Serialize)]
struct RoleChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [RoleChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ContinuousUsage>,
    prompt_token_ids: Null,
    prompt_text: Null,
}

/// `usage` of every chunk with `continuous_usage_stats`.
#[derive(Debug, Serialize)]
struct ContinuousUsage {
    prompt_tokens: u32,
    total_tokens: u32,
    completion_tokens: u32,
    /// Chat sets it (to null), completions do not.
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<Null>,
}

#[derive(Debug, Serialize)]
struct RoleChoice<'a> {
    index: u32,
    delta: RoleDelta<'a>,
    logprobs: Null,
    finish_reason: Null,
}

#[derive(Debug, Serialize)]
struct RoleDelta<'a> {
    role: &'a str,
    content: &'static str,
}

#[derive(Debug, Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ContinuousUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct ChatChoice<'a> {
    index: u32,
    delta: ContentDelta<'a>,
    logprobs: Null,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<Null>,
    token_ids: Null,
}

#[derive(Debug, Serialize)]
struct ContentDelta<'a> {
    content: &'a str,
}

#[derive(Debug, Serialize)]
struct CompletionChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ContinuousUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    text: &'a str,
    logprobs: Null,
    finish_reason: Option<&'static str>,
    stop_reason: Null,
    prompt_token_ids: Null,
    token_ids: Null,
}

#[derive(Debug, Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [(); 0],
    usage: StreamUsage,
    system_fingerprint: &'a str,
}

/// `usage` of the final streamed chunk (no `prompt_tokens_details`, as captured).
#[derive(Debug, Serialize)]
struct StreamUsage {
    prompt_tokens: u32,
    total_tokens: u32,
    completion_tokens: u32,
}

/// `data: {json}\n\n`.
fn event<T: Serialize>(chunk: &T) -> Bytes {
    let json = serde_json::to_string(chunk)
        .unwrap_or_else(|e| format!("{{\"error\":{{\"message\":\"{e}\"}}}}"));
    Bytes::from(format!("data: {json}\n\n"))
}

/// The final `data: [DONE]\n\n`.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// A text no generated token contains, rendered into a chunk to find where the text goes.
const TEXT_SENTINEL: &str = "\u{1}fleetbench-sim\u{2}";

/// The constant bytes of a request's intermediate content chunks (no `finish_reason`, no
/// per-chunk usage), serialised once per request by [`StreamContext::content_template`]:
/// writing a chunk is then two copies and the JSON string of its text, with no allocation.
#[derive(Debug, Clone)]
pub struct ContentTemplate {
    /// `data: {…"content":` (chat) or `data: {…"text":` (completions).
    head: Bytes,
    /// From the text's closing quote to the event's `\n\n`.
    tail: Bytes,
}

impl ContentTemplate {
    /// Bytes of the chunk for `text`, before escaping.
    pub fn len_for(&self, text: &str) -> usize {
        self.head.len() + text.len() + 2 + self.tail.len()
    }

    /// Appends the event [`StreamContext::content_chunk`] would give for `text` with no
    /// `finish_reason`, byte for byte.
    pub fn write(&self, buf: &mut BytesMut, text: &str) {
        buf.extend_from_slice(&self.head);
        write_json_str(buf, text);
        buf.extend_from_slice(&self.tail);
    }
}

/// Appends `text` as a JSON string, escaped exactly as serde_json does.
fn write_json_str(buf: &mut BytesMut, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.reserve(text.len() + 2);
        buf.put_u8(b'"');
        buf.extend_from_slice(text.as_bytes());
        buf.put_u8(b'"');
    } else {
        // Writing into memory cannot fail.
        let _ = serde_json::to_writer(buf.writer(), text);
    }
}

impl StreamContext {
    fn object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        }
    }

    /// The per-chunk `usage` after `completion_tokens` tokens, if continuous usage is on.
    fn continuous_usage(&self, completion_tokens: u32) -> Option<ContinuousUsage> {
        self.continuous_usage.then(|| ContinuousUsage {
            prompt_tokens: self.prompt_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
            completion_tokens,
            completion_tokens_details: (self.endpoint == Endpoint::Chat).then_some(None),
        })
    }

    /// The chat role chunk.
    pub fn role_chunk(&self) -> Bytes {
        event(&RoleChunk {
            id: &self.id,
            object: self.object(),
            created: self.created,
            model: &self.model,
            choices: [RoleChoice {
                index: 0,
                delta: RoleDelta {
                    role: &self.role,
                    content: "",
                },
                logprobs: None,
                finish_reason: None,
            }],
            usage: self.continuous_usage(0),
            prompt_token_ids: None,
            prompt_text: None,
        })
    }

    /// A content chunk with `text`, after which `completion_tokens` tokens have been sent;
    /// `finish_reason` on the last one, which also carries `system_fingerprint` when no usage
    /// chunk follows.
    pub fn content_chunk(
        &self,
        text: &str,
        finish_reason: Option<&'static str>,
        completion_tokens: u32,
    ) -> Bytes {
        let system_fingerprint = (finish_reason.is_some() && !self.include_usage)
            .then_some(self.system_fingerprint.as_str());
        match self.endpoint {
            Endpoint::Chat => event(&ChatChunk {
                id: &self.id,
                object: self.object(),
                created: self.created,
                model: &self.model,
                choices: [ChatChoice {
                    index: 0,
                    delta: ContentDelta { content: text },
                    logprobs: None,
                    finish_reason,
                    stop_reason: finish_reason.map(|_| None),
                    token_ids: None,
                }],
                usage: self.continuous_usage(completion_tokens),
                system_fingerprint,
            }),
            Endpoint::Completion => event(&CompletionChunk {
                id: &self.id,
                object: self.object(),
                created: self.created,
                model: &self.model,
                choices: [CompletionChoice {
                    index: 0,
                    text,
                    logprobs: None,
                    finish_reason,
                    stop_reason: None,
                    prompt_token_ids: None,
                    token_ids: None,
                }],
                usage: self.continuous_usage(completion_tokens),
                system_fingerprint,
            }),
        }
    }

    /// The constant parts of this request's intermediate content chunks; `None` with
    /// `continuous_usage_stats` (every chunk's usage differs) or if the text cannot be located
    /// unambiguously (then use [`Self::content_chunk`]).
    pub fn content_template(&self) -> Option<ContentTemplate> {
        if self.continuous_usage {
            return None;
        }
        let chunk = self.content_chunk(TEXT_SENTINEL, None, 0);
        let needle = serde_json::to_string(TEXT_SENTINEL).ok()?;
        let needle = needle.as_bytes();
        let mut hits = chunk
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i);
        let at = hits.next()?;
        if hits.next().is_some() {
            return None;
        }
        Some(ContentTemplate {
            head: chunk.slice(..at),
            tail: chunk.slice(at + needle.len()..),
        })
    }

    /// The `include_usage` chunk.
    pub fn usage_chunk(&self, completion_tokens: u32) -> Bytes {
        event(&UsageChunk {
            id: &self.id,
            object: self.object(),
            created: self.created,
            model: &self.model,
            choices: [],
            usage: StreamUsage {
                prompt_tokens: self.prompt_tokens,
                total_tokens: self.prompt_tokens + completion_tokens,
                completion_tokens,
            },
            system_fingerprint: &self.system_fingerprint,
        })
    }
}

/// How the body of a faulted response ends once its fault's token is out; `Some(error)` is
/// the body's last item.
///
/// - [`FaultAction::Stall`]: waits for the engine to stop (shutdown), then ends the body
///   without `[DONE]`. If the client goes away first, hyper drops the body.
/// - [`FaultAction::Disconnect`]: an error, on which hyper closes the connection at once,
///   without the terminating zero-length chunk. hyper drops what it has buffered along with
///   the connection, so the body yields once first: while the body is pending hyper flushes
///   the chunks already written to the socket.
pub async fn fault_end(action: FaultAction, stop: &StopSignal) -> Option<io::Error> {
    match action {
        FaultAction::Stall => {
            stop.stopped().await;
            None
        }
        FaultAction::Disconnect => {
            tokio::task::yield_now().await;
            Some(disconnect_error())
        }
    }
}

/// The body error that makes hyper cut a connection (`--sim-disconnect-after-tokens`).
pub fn disconnect_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "vllm-sim: simulated disconnect (--sim-disconnect-after-tokens)",
    )
}

/// A response whose connection is cut before anything is written: its body fails at once,
/// before hyper flushes the status line and headers, so the client gets no answer at all (a
/// non-streamed request under `--sim-disconnect-after-tokens`).
pub fn cut_response() -> Response {
    let body = futures::stream::once(async { Err::<Bytes, io::Error>(disconnect_error()) });
    Body::from_stream(body).into_response()
}

/// State of one SSE response.
struct SseState {
    ctx: StreamContext,
    rx: Option<mpsc::Receiver<TokenEvent>>,
    pending: VecDeque<Bytes>,
    role_sent: bool,
    /// The armed fault, if any.
    fault: Option<StreamFault>,
    /// Set once the fault's token is queued: what follows the queued chunks.
    fault_due: Option<FaultAction>,
    /// A stalled request's receiver, kept (and never read) so that the engine sees its client
    /// until the body is dropped.
    stalled_rx: Option<mpsc::Receiver<TokenEvent>>,
    stop: StopSignal,
}

impl SseState {
    async fn next_event(&mut self) -> Option<Result<Bytes, io::Error>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(Ok(b));
            }
            if let Some(action) = self.fault_due.take() {
                return fault_end(action, &self.stop).await.map(Err);
            }
            let ev = self.rx.as_mut()?.recv().await;
            match ev {
                None => {
                    self.rx = None;
                }
                Some(ev) => self.on_tokens(ev),
            }
        }
    }

    fn on_tokens(&mut self, ev: TokenEvent) {
        if self.ctx.endpoint == Endpoint::Chat && !self.role_sent {
            self.role_sent = true;
            self.pending.push_back(self.ctx.role_chunk());
        }
        let mut count = ev.count;
        let mut finish = ev.finish_reason.map(|r| r.as_str());
        // The event that reaches the fault's token is cut there (it fires once: nothing is
        // read after it, so the event starts before the fault's token).
        let fault = self
            .fault
            .filter(|f| f.fires_within(ev.first_index + ev.count));
        if let Some(f) = fault {
            let cut = f.after_tokens.saturating_sub(ev.first_index).max(1);
            if cut < count {
                count = cut;
                finish = None;
            }
        }
        let text = self.ctx.output.text(ev.first_index, count);
        let completion = ev.first_index + count;
        self.pending
            .push_back(self.ctx.content_chunk(&text, finish, completion));
        if let Some(f) = fault {
            self.fault_due = Some(f.action);
            self.stalled_rx = self.rx.take().filter(|_| f.action == FaultAction::Stall);
            return;
        }
        if finish.is_some() {
            if self.ctx.include_usage {
                self.pending.push_back(self.ctx.usage_chunk(completion));
            }
            self.pending.push_back(Bytes::from_static(DONE));
            self.rx = None;
        }
    }
}

/// The streaming HTTP response for `ctx`, fed by the request's token receiver. Dropping the
/// response body (client gone) drops the receiver, which aborts the request in the engine.
/// With a `fault`, the body stalls (until `stop`) or is cut after the fault's token.
pub fn sse_response(
    ctx: StreamContext,
    rx: mpsc::Receiver<TokenEvent>,
    fault: Option<StreamFault>,
    stop: StopSignal,
) -> Response {
    let state = SseState {
        ctx,
        rx: Some(rx),
        pending: VecDeque::new(),
        role_sent: false,
        fault,
        fault_due: None,
        stalled_rx: None,
        stop,
    };
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next_event().await? {
            Ok(b) => Some((Ok(b), Some(state))),
            // An error is the body's last item.
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    response
}

#[cfg(test)]
mod tests;
