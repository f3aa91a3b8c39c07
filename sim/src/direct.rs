//! `--sim-timing exact|fast`: requests that bypass the engine loop, to measure the client.
//!
//! Each request is timed on its own, with no batching, no `--max-num-seqs`, no KV cache and no
//! `--sim-speedup`; nothing goes through the scheduler's step loop. The response body itself
//! paces the tokens (no task, no channel per request):
//!
//! - **exact**: token `k` (0-based) is written at `t0 + ttft + k × itl` ([`ExactSchedule`]),
//!   `t0` being when the server parsed the request. Each deadline is absolute, slept with
//!   [`crate::precise_timer`] (never early, typically 0.1 ms late; tokio's timer would round
//!   every deadline up to its 1 ms tick) or, for tests on tokio's paused clock, with tokio's
//!   ([`crate::config::Pacing`]); a late token is written at once without moving the
//!   following deadlines. One token per body frame: the chat role chunk rides with the first
//!   token, the usage chunk and `[DONE]` with the last, as in vLLM.
//! - **fast**: tokens are written as fast as the connection takes them, one token per SSE
//!   event, up to `chunks_per_frame` token events per body frame.
//!
//! The chunks are the bytes of [`crate::stream`]; the intermediate ones come from a per-request
//! [`ContentTemplate`] written into one reused [`BytesMut`], so a token costs no allocation.
//! `/metrics` counts these requests: `num_requests_running`, prompt and generation tokens,
//! `request_success` and the per-request histograms (TTFT as measured, ITL as the mean gap).
//! When the engine stops (shutdown), open streams end without `[DONE]`, as in `model` mode.
//! A [`StreamFault`] stalls or cuts them after their N-th token, as in `model` mode.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::config::{ExactSchedule, StreamFault, TimingMode};
use crate::error::SimError;
use crate::finish::FinishReason;
use crate::metrics::{EngineStats, FinishedRecord};
use crate::stop::StopSignal;
use crate::stream::{ContentTemplate, DONE, EVENT_STREAM, Endpoint, StreamContext, fault_end};
use crate::tokenizer::SyntheticOutput;
use crate::trace::Tracer;

/// How requests are paced when they bypass the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Exact(ExactSchedule),
    Fast { chunks_per_frame: usize },
}

impl Pace {
    /// The pace of `mode`, or `None` for the engine's `model` mode.
    pub fn of(mode: TimingMode) -> Option<Self> {
        match mode {
            TimingMode::Model => None,
            TimingMode::Exact(s) => Some(Self::Exact(s)),
            TimingMode::Fast { chunks_per_frame } => Some(Self::Fast {
                chunks_per_frame: chunks_per_frame.max(1),
            }),
        }
    }
}

/// A request that bypasses the engine.
#[derive(Debug, Clone, Copy)]
pub struct DirectRequest {
    /// When the server parsed the request (the exact schedule's origin).
    pub t0: Instant,
    pub prompt_tokens: u32,
    /// The request's (clamped) `max_tokens`, for `vllm:request_params_max_tokens`.
    pub max_tokens: u32,
    /// The tokens to emit (`output.len`, at least one).
    pub output: SyntheticOutput,
    /// Reported on the last token.
    pub finish_reason: FinishReason,
}

impl DirectRequest {
    fn len(&self) -> u32 {
        self.output.len.max(1)
    }
}

/// The metrics of one direct request: running from creation, finished by
/// [`RequestMetrics::finish`], aborted if dropped before.
struct RequestMetrics {
    stats: Arc<EngineStats>,
    req: DirectRequest,
    emitted: u32,
    first_token_at: Option<Instant>,
    ended: bool,
}

impl RequestMetrics {
    fn start(stats: Arc<EngineStats>, req: DirectRequest) -> Self {
        stats.direct_started(req.prompt_tokens);
        Self {
            stats,
            req,
            emitted: 0,
            first_token_at: None,
            ended: false,
        }
    }

    fn emitted(&mut self, n: u32, now: Instant) {
        if n == 0 {
            return;
        }
        self.first_token_at.get_or_insert(now);
        self.emitted += n;
        self.stats.direct_tokens(n);
    }

    fn record(&mut self, reason: FinishReason, now: Instant) {
        if self.ended {
            return;
        }
        self.ended = true;
        let first = self.first_token_at.unwrap_or(now);
        let record = FinishedRecord {
            reason,
            e2e: now.saturating_duration_since(self.req.t0),
            queued: Duration::ZERO,
            prefill: first.saturating_duration_since(self.req.t0),
            decode: now.saturating_duration_since(first),
            prompt_tokens: self.req.prompt_tokens,
            cached_tokens: 0,
            generation_tokens: self.emitted,
            max_tokens: self.req.max_tokens,
            preemptions: 0,
        };
        self.stats.direct_ended(&record, record.prefill);
    }

    fn finish(&mut self, now: Instant) {
        self.record(self.req.finish_reason, now);
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        self.record(FinishReason::Abort, Instant::now());
    }
}

/// Waits out a non-streamed request (exact: until its last token is due; fast: not at all)
/// and returns its completion tokens and finish reason.
pub async fn collect(
    req: DirectRequest,
    pace: Pace,
    stats: Arc<EngineStats>,
    stop: &StopSignal,
) -> Result<(u32, FinishReason), SimError> {
    let mut metrics = RequestMetrics::start(stats, req);
    let len = req.len();
    if let Pace::Exact(schedule) = pace {
        if !stop
            .sleep_until(schedule.deadline(req.t0, 0), schedule.pacing)
            .await
        {
            return Err(SimError::EngineStopped);
        }
        metrics.emitted(1, Instant::now());
        if len > 1
            && !stop
                .sleep_until(schedule.deadline(req.t0, len - 1), schedule.pacing)
                .await
        {
            return Err(SimError::EngineStopped);
        }
        metrics.emitted(len - 1, Instant::now());
    } else {
        if stop.is_stopped() {
            return Err(SimError::EngineStopped);
        }
        metrics.emitted(len, Instant::now());
    }
    metrics.finish(Instant::now());
    Ok((len, req.finish_reason))
}

/// What a direct stream shares with the server beyond its request: the engine's
/// statistics and stop signal, the armed fault, and the tracer (`--sim-trace-requests`).
pub struct DirectStream {
    pub stats: Arc<EngineStats>,
    pub stop: StopSignal,
    pub fault: Option<StreamFault>,
    pub tracer: Option<Tracer>,
}

/// The body of one direct SSE response.
struct DirectSse {
    ctx: StreamContext,
    template: Option<ContentTemplate>,
    /// Reused for every frame: `split().freeze()` hands the frame over, and the allocation
    /// comes back once the connection has written it.
    buf: BytesMut,
    pace: Pace,
    stop: StopSignal,
    metrics: RequestMetrics,
    /// Index of the next token.
    next: u32,
    len: u32,
    /// The armed fault, until it fires.
    fault: Option<StreamFault>,
    /// Records each frame's hand-over until the stream finishes.
    tracer: Option<Tracer>,
}

impl DirectSse {
    fn new(ctx: StreamContext, req: DirectRequest, pace: Pace, shared: DirectStream) -> Self {
        Self {
            template: ctx.content_template(),
            ctx,
            buf: BytesMut::new(),
            pace,
            stop: shared.stop,
            metrics: RequestMetrics::start(shared.stats, req),
            next: 0,
            len: req.len(),
            fault: shared.fault,
            tracer: shared.tracer,
        }
    }

    /// Appends the events of token `k`: the chat role chunk before the first one; the
    /// finishing chunk, the usage chunk and `[DONE]` for the last one (only the finishing
    /// chunk if the fault fires on it).
    fn write_token(&mut self, k: u32) {
        if k == 0 && self.ctx.endpoint == Endpoint::Chat {
            self.buf.extend_from_slice(&self.ctx.role_chunk());
        }
        let text = self.ctx.output.piece(k);
        if k + 1 >= self.len {
            let reason = self.metrics.req.finish_reason.as_str();
            self.buf
                .extend_from_slice(&self.ctx.content_chunk(text, Some(reason), k + 1));
            if self.fault.is_some_and(|f| k + 1 == f.after_tokens) {
                return;
            }
            if self.ctx.include_usage {
                self.buf.extend_from_slice(&self.ctx.usage_chunk(k + 1));
            }
            self.buf.extend_from_slice(DONE);
        } else if let Some(template) = &self.template {
            template.write(&mut self.buf, text);
        } else {
            self.buf
                .extend_from_slice(&self.ctx.content_chunk(text, None, k + 1));
        }
    }

    /// Reserves room for `tokens` intermediate chunks.
    fn reserve(&mut self, tokens: u32) {
        let per_token = self.template.as_ref().map_or(512, |t| t.len_for("") + 32);
        self.buf.reserve(per_token * tokens as usize);
    }

    /// The next body item: the frames, then, once the fault's token is out, the fault's end
    /// ([`fault_end`]).
    async fn next_item(&mut self) -> Option<Result<Bytes, io::Error>> {
        if let Some(f) = self.fault
            && self.next >= f.after_tokens
        {
            self.fault = None;
            return fault_end(f.action, &self.stop).await.map(Err);
        }
        self.next_frame().await.map(Ok)
    }

    /// The next body frame, or `None` at the end (or when the engine stops).
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.next >= self.len || self.stop.is_stopped() {
            return None;
        }
        let mut count = match self.pace {
            Pace::Exact(schedule) => {
                let deadline = schedule.deadline(self.metrics.req.t0, self.next);
                if !self.stop.sleep_until(deadline, schedule.pacing).await {
                    return None;
                }
                1
            }
            Pace::Fast { chunks_per_frame } => {
                let left = self.len - self.next;
                u32::try_from(chunks_per_frame).map_or(left, |n| n.min(left))
            }
        };
        if let Some(f) = self.fault
            && self.next < f.after_tokens
        {
            // The fault's token ends a frame.
            count = count.min(f.after_tokens - self.next);
        }
        self.reserve(count);
        for k in self.next..self.next + count {
            self.write_token(k);
        }
        self.next += count;
        let now = Instant::now();
        self.metrics.emitted(count, now);
        if let Some(tracer) = &mut self.tracer {
            tracer.frame(now.saturating_duration_since(self.metrics.req.t0));
        }
        if self.next >= self.len {
            self.metrics.finish(now);
            if let Some(tracer) = self.tracer.take() {
                tracer.finish();
            }
        }
        Some(self.buf.split().freeze())
    }
}

/// The body of a direct SSE response, without the HTTP wrapping: its frames, and with a
/// `fault` the error that cuts the connection (the last item).
fn body_stream(
    ctx: StreamContext,
    req: DirectRequest,
    pace: Pace,
    shared: DirectStream,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let state = DirectSse::new(ctx, req, pace, shared);
    futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next_item().await? {
            Ok(frame) => Some((Ok(frame), Some(state))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The streaming HTTP response of a direct request. Dropping the body (client gone) counts the
/// request as aborted. With a `fault`, the body stalls (until `stop`) or is cut after the
/// fault's token.
pub fn sse_response(
    ctx: StreamContext,
    req: DirectRequest,
    pace: Pace,
    shared: DirectStream,
) -> Response {
    let stream = body_stream(ctx, req, pace, shared);
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    response
}

#[cfg(test)]
mod tests;
