//! Server-sent events of streamed chat and completion responses, byte-for-byte in vLLM 0.32's
//! shape (see `fixtures/vllm-0.32-cpu/chat-stream.sse`):
//!
//! - every event is `data: {json}\n\n`, the stream ends with `data: [DONE]\n\n`;
//! - chat: a role chunk `{"role":"assistant","content":""}` (sent with the first token, as
//!   vLLM does), then one chunk per engine output with `delta.content` (one token unless the
//!   client lagged), the last one with `finish_reason` and `"stop_reason":null`; a natural stop
//!   ends with the end-of-sequence token, whose `content` is `""`;
//! - completions: the same without the role chunk, `object` `text_completion`, `text` instead
//!   of `delta`;
//! - with `stream_options.include_usage`, a final chunk with `"choices":[]` and `usage`.
//!
//! If the engine stops mid-request (shutdown), the stream ends without `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::protocol::Null;
use crate::scheduler::TokenEvent;
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
    pub system_fingerprint: String,
    pub output: SyntheticOutput,
}

#[derive(Debug, Serialize)]
struct RoleChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [RoleChoice; 1],
    prompt_token_ids: Null,
    prompt_text: Null,
}

#[derive(Debug, Serialize)]
struct RoleChoice {
    index: u32,
    delta: RoleDelta,
    logprobs: Null,
    finish_reason: Null,
}

#[derive(Debug, Serialize)]
struct RoleDelta {
    role: &'static str,
    content: &'static str,
}

#[derive(Debug, Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
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
}

#[derive(Debug, Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    text: &'a str,
    logprobs: Null,
    finish_reason: Option<&'static str>,
    stop_reason: Null,
}

#[derive(Debug, Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [(); 0],
    usage: StreamUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
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

impl StreamContext {
    fn object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        }
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
                    role: "assistant",
                    content: "",
                },
                logprobs: None,
                finish_reason: None,
            }],
            prompt_token_ids: None,
            prompt_text: None,
        })
    }

    /// A content chunk with `text`; `finish_reason` on the last one.
    pub fn content_chunk(&self, text: &str, finish_reason: Option<&'static str>) -> Bytes {
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
                }],
            }),
        }
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
            system_fingerprint: match self.endpoint {
                Endpoint::Chat => Some(&self.system_fingerprint),
                Endpoint::Completion => None,
            },
        })
    }
}

/// State of one SSE response.
struct SseState {
    ctx: StreamContext,
    rx: Option<mpsc::Receiver<TokenEvent>>,
    pending: VecDeque<Bytes>,
    role_sent: bool,
}

impl SseState {
    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
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
        let text = self.ctx.output.text(ev.first_index, ev.count);
        let finish = ev.finish_reason.map(|r| r.as_str());
        self.pending
            .push_back(self.ctx.content_chunk(&text, finish));
        if finish.is_some() {
            if self.ctx.include_usage {
                let completion = ev.first_index + ev.count;
                self.pending.push_back(self.ctx.usage_chunk(completion));
            }
            self.pending.push_back(Bytes::from_static(DONE));
            self.rx = None;
        }
    }
}

/// The streaming HTTP response for `ctx`, fed by the request's token receiver. Dropping the
/// response body (client gone) drops the receiver, which aborts the request in the engine.
pub fn sse_response(ctx: StreamContext, rx: mpsc::Receiver<TokenEvent>) -> Response {
    let state = SseState {
        ctx,
        rx: Some(rx),
        pending: VecDeque::new(),
        role_sent: false,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        state
            .next_event()
            .await
            .map(|b| (Ok::<Bytes, Infallible>(b), state))
    });
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(endpoint: Endpoint) -> StreamContext {
        StreamContext {
            endpoint,
            id: "chatcmpl-852858eebd06c043".to_owned(),
            created: 1_795_813_601,
            model: "smol".to_owned(),
            prompt_tokens: 33,
            include_usage: true,
            system_fingerprint: "vllm-0.32.0-898fdafa".to_owned(),
            output: SyntheticOutput {
                seed: 0,
                len: 128,
                ends_with_eos: false,
            },
        }
    }

    /// Lines taken verbatim from `fixtures/vllm-0.32-cpu/chat-stream.sse`.
    #[test]
    fn chat_chunks_match_the_capture_byte_for_byte() {
        let c = ctx(Endpoint::Chat);
        assert_eq!(
            c.role_chunk(),
            "data: {\"id\":\"chatcmpl-852858eebd06c043\",\"object\":\"chat.completion.chunk\",\"created\":1795813601,\"model\":\"smol\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"prompt_token_ids\":null,\"prompt_text\":null}\n\n"
        );
        assert_eq!(
            c.content_chunk(" here", None),
            "data: {\"id\":\"chatcmpl-852858eebd06c043\",\"object\":\"chat.completion.chunk\",\"created\":1795813601,\"model\":\"smol\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" here\"},\"logprobs\":null,\"finish_reason\":null,\"token_ids\":null}]}\n\n"
        );
        assert_eq!(
            c.content_chunk("?", Some("length")),
            "data: {\"id\":\"chatcmpl-852858eebd06c043\",\"object\":\"chat.completion.chunk\",\"created\":1795813601,\"model\":\"smol\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"?\"},\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null,\"token_ids\":null}]}\n\n"
        );
        assert_eq!(
            c.usage_chunk(128),
            "data: {\"id\":\"chatcmpl-852858eebd06c043\",\"object\":\"chat.completion.chunk\",\"created\":1795813601,\"model\":\"smol\",\"choices\":[],\"usage\":{\"prompt_tokens\":33,\"total_tokens\":161,\"completion_tokens\":128},\"system_fingerprint\":\"vllm-0.32.0-898fdafa\"}\n\n"
        );
    }

    #[test]
    fn completion_chunks_have_no_role_and_carry_stop_reason() {
        let mut c = ctx(Endpoint::Completion);
        c.id = "cmpl-1".to_owned();
        assert_eq!(
            c.content_chunk(" word", None),
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1795813601,\"model\":\"smol\",\"choices\":[{\"index\":0,\"text\":\" word\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}]}\n\n"
        );
        assert_eq!(
            c.usage_chunk(2),
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1795813601,\"model\":\"smol\",\"choices\":[],\"usage\":{\"prompt_tokens\":33,\"total_tokens\":35,\"completion_tokens\":2}}\n\n"
        );
    }
}
