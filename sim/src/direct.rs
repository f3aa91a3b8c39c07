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
//!   ([`Pacing`]); a late token is written at once without moving the following deadlines.
//!   One token per body frame: the chat role chunk rides with the first token, the usage chunk
//!   and `[DONE]` with the last, as in vLLM.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ExactSchedule, Pacing, StreamFault, TimingMode};
use crate::error::SimError;
use crate::metrics::{EngineStats, FinishedRecord};
use crate::precise_timer::precise_sleep_until;
use crate::scheduler::FinishReason;
use crate::stream::{ContentTemplate, DONE, EVENT_STREAM, Endpoint, StreamContext, fault_end};
use crate::tokenizer::SyntheticOutput;

/// Waits at least this long also watch the shutdown token (which takes locks); shorter ones
/// only sleep, and shutdown is noticed at the next token.
const WATCH_SHUTDOWN_AFTER: Duration = Duration::from_millis(50);

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

/// The engine's stop signal, readable per token without a lock: a flag set once the token is
/// cancelled, plus the token itself for long waits.
#[derive(Debug, Clone)]
pub struct StopSignal {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl StopSignal {
    /// Watches `token` on `tracker`.
    pub fn new(token: CancellationToken, tracker: &TaskTracker) -> Self {
        let flag = Arc::new(AtomicBool::new(token.is_cancelled()));
        let watched = token.clone();
        let set = flag.clone();
        tracker.spawn(async move {
            watched.cancelled().await;
            set.store(true, Ordering::Release);
        });
        Self { token, flag }
    }

    /// Whether the engine has stopped.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once the engine has stopped.
    pub async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Sleeps until `deadline` (at once if it has passed) on `pacing`'s timer. Returns false
    /// if the engine stopped.
    async fn sleep_until(&self, deadline: Instant, pacing: Pacing) -> bool {
        let now = Instant::now();
        if deadline <= now {
            return !self.is_stopped();
        }
        let watch = deadline - now >= WATCH_SHUTDOWN_AFTER;
        match pacing {
            Pacing::Precise => {
                self.wait(precise_sleep_until(deadline.into_std()), watch)
                    .await
            }
            Pacing::Tokio => self.wait(tokio::time::sleep_until(deadline), watch).await,
        }
    }

    /// Awaits `sleep`, and also the shutdown token if `watch`. Returns false if the engine
    /// stopped.
    async fn wait(&self, sleep: impl Future<Output = ()>, watch: bool) -> bool {
        if !watch {
            sleep.await;
            return !self.is_stopped();
        }
        tokio::select! {
            biased;
            () = self.token.cancelled() => false,
            () = sleep => !self.is_stopped(),
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
}

impl DirectSse {
    fn new(
        ctx: StreamContext,
        req: DirectRequest,
        pace: Pace,
        stats: Arc<EngineStats>,
        stop: StopSignal,
        fault: Option<StreamFault>,
    ) -> Self {
        Self {
            template: ctx.content_template(),
            ctx,
            buf: BytesMut::new(),
            pace,
            stop,
            metrics: RequestMetrics::start(stats, req),
            next: 0,
            len: req.len(),
            fault,
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
        if self.next >= self.len {
            self.metrics.finish(now);
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
    stats: Arc<EngineStats>,
    stop: StopSignal,
    fault: Option<StreamFault>,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let state = DirectSse::new(ctx, req, pace, stats, stop, fault);
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
    stats: Arc<EngineStats>,
    stop: StopSignal,
    fault: Option<StreamFault>,
) -> Response {
    let stream = body_stream(ctx, req, pace, stats, stop, fault);
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    response
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    fn ctx(endpoint: Endpoint, include_usage: bool, len: u32) -> StreamContext {
        StreamContext {
            endpoint,
            id: "chatcmpl-0123456789abcdef".to_owned(),
            created: 1_795_813_601,
            model: "smol".to_owned(),
            prompt_tokens: 33,
            include_usage,
            continuous_usage: false,
            system_fingerprint: "vllm-0.32.0-898fdafa".to_owned(),
            output: SyntheticOutput {
                seed: 7,
                len,
                ends_with_eos: false,
            },
            role: "assistant".to_owned(),
        }
    }

    fn request(t0: Instant, len: u32) -> DirectRequest {
        DirectRequest {
            t0,
            prompt_tokens: 33,
            max_tokens: len,
            output: SyntheticOutput {
                seed: 7,
                len,
                ends_with_eos: false,
            },
            finish_reason: FinishReason::Length,
        }
    }

    /// An exact schedule on tokio's (paused) clock.
    fn on_tokio(ttft_ms: f64, itl_ms: f64) -> ExactSchedule {
        ExactSchedule::from_ms(ttft_ms, itl_ms).with_pacing(Pacing::Tokio)
    }

    /// The frames of a fault-free body.
    fn frames(
        ctx: StreamContext,
        req: DirectRequest,
        pace: Pace,
        stats: Arc<EngineStats>,
        stop: StopSignal,
    ) -> impl futures::Stream<Item = Bytes> + Send + 'static {
        body_stream(ctx, req, pace, stats, stop, None).map(|item| item.unwrap())
    }

    fn stop() -> (CancellationToken, StopSignal) {
        let token = CancellationToken::new();
        let signal = StopSignal::new(token.clone(), &TaskTracker::new());
        (token, signal)
    }

    /// The events of the model-mode stream for the same request: role, one content chunk per
    /// token, usage, `[DONE]`.
    fn reference(c: &StreamContext) -> Vec<u8> {
        let n = c.output.len;
        let mut out = Vec::new();
        if c.endpoint == Endpoint::Chat {
            out.extend_from_slice(&c.role_chunk());
        }
        for k in 0..n {
            let finish = (k + 1 == n).then_some("length");
            out.extend_from_slice(&c.content_chunk(c.output.piece(k), finish, k + 1));
        }
        if c.include_usage {
            out.extend_from_slice(&c.usage_chunk(n));
        }
        out.extend_from_slice(DONE);
        out
    }

    fn events(frame: &[u8]) -> usize {
        frame.windows(2).filter(|w| w == b"\n\n").count()
    }

    /// On the paused clock every frame comes exactly at its deadline (rounded up to tokio's
    /// 1 ms tick), one token per frame, even when the schedule is not on the tick.
    #[tokio::test(start_paused = true)]
    async fn exact_frames_come_on_their_absolute_deadlines() {
        let stats = Arc::new(EngineStats::new());
        let (_token, signal) = stop();
        let t0 = Instant::now();
        let schedule = on_tokio(50.0, 20.5);
        let c = ctx(Endpoint::Chat, true, 10);
        let expected = reference(&c);
        let mut frames = Box::pin(frames(
            c,
            request(t0, 10),
            Pace::Exact(schedule),
            stats.clone(),
            signal,
        ));
        let mut body = Vec::new();
        let mut k = 0u32;
        while let Some(frame) = frames.next().await {
            let at = Instant::now() - t0;
            let due = schedule.offset(k);
            assert!(at >= due, "token {k} early: {at:?} < {due:?}");
            assert!(
                at - due < Duration::from_millis(1),
                "token {k} late: {at:?}"
            );
            let extra = match k {
                0 => 1, // role chunk
                9 => 2, // usage chunk and [DONE]
                _ => 0,
            };
            assert_eq!(events(&frame), 1 + extra, "frame {k}");
            if k < 9 {
                assert_eq!(stats.snapshot().running, 1);
                assert_eq!(stats.snapshot().generation_tokens, u64::from(k) + 1);
            }
            body.extend_from_slice(&frame);
            k += 1;
        }
        assert_eq!(k, 10);
        assert_eq!(body, expected, "same bytes as the model-mode stream");
        let snap = stats.snapshot();
        assert_eq!(snap.running, 0);
        assert_eq!((snap.prompt_tokens, snap.generation_tokens), (33, 10));
        assert_eq!((snap.success_length, snap.success_abort), (1, 0));
    }

    /// With the precise timer on the real clock, frames come at their deadlines (which are
    /// off tokio's 1 ms tick), never early, and well within a millisecond on an idle machine
    /// (more is tolerated for busy CI machines).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn precise_frames_are_never_early() {
        let (_token, signal) = stop();
        let t0 = Instant::now();
        let schedule = ExactSchedule::from_ms(5.3, 2.7);
        assert_eq!(schedule.pacing, Pacing::Precise);
        let mut frames = Box::pin(frames(
            ctx(Endpoint::Completion, false, 20),
            request(t0, 20),
            Pace::Exact(schedule),
            Arc::new(EngineStats::new()),
            signal,
        ));
        let mut k = 0u32;
        while frames.next().await.is_some() {
            let at = Instant::now() - t0;
            let due = schedule.offset(k);
            assert!(at >= due, "token {k} early: {at:?} < {due:?}");
            assert!(
                at - due < crate::precise_timer::TEST_TOLERANCE,
                "token {k} late: {at:?}"
            );
            k += 1;
        }
        assert_eq!(k, 20);
    }

    /// A reader that falls behind gets the late tokens at once, and the schedule after them is
    /// unchanged (no drift).
    #[tokio::test(start_paused = true)]
    async fn exact_catches_up_without_drift() {
        let (_token, signal) = stop();
        let t0 = Instant::now();
        let schedule = on_tokio(20.0, 10.0);
        let mut frames = Box::pin(frames(
            ctx(Endpoint::Completion, false, 8),
            request(t0, 8),
            Pace::Exact(schedule),
            Arc::new(EngineStats::new()),
            signal,
        ));
        assert!(frames.next().await.is_some());
        assert_eq!(Instant::now() - t0, Duration::from_millis(20));
        // Stall for 45 ms: tokens 1..=4 (due at 30, 40, 50, 60) are late.
        tokio::time::sleep(Duration::from_millis(45)).await;
        for _ in 1..=4 {
            assert!(frames.next().await.is_some());
            assert_eq!(Instant::now() - t0, Duration::from_millis(65));
        }
        for k in 5..8 {
            assert!(frames.next().await.is_some());
            assert_eq!(Instant::now() - t0, schedule.offset(k));
        }
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn fast_coalesces_up_to_chunks_per_frame() {
        let stats = Arc::new(EngineStats::new());
        let (_token, signal) = stop();
        let c = ctx(Endpoint::Completion, true, 40);
        let expected = reference(&c);
        let frames: Vec<Bytes> = frames(
            c,
            request(Instant::now(), 40),
            Pace::Fast {
                chunks_per_frame: 16,
            },
            stats.clone(),
            signal,
        )
        .collect()
        .await;
        let counts: Vec<usize> = frames.iter().map(|f| events(f)).collect();
        assert_eq!(counts, [16, 16, 8 + 2]);
        assert_eq!(frames.concat(), expected);
        let snap = stats.snapshot();
        assert_eq!((snap.generation_tokens, snap.success_length), (40, 1));
    }

    /// A fault ends the frame that reaches its token; a stall then waits (the request still
    /// running) until the engine stops, a disconnect ends the body with an error.
    #[tokio::test(start_paused = true)]
    async fn faults_fire_after_their_token() {
        use crate::config::FaultAction;
        for action in [FaultAction::Stall, FaultAction::Disconnect] {
            for (len, last) in [(10, false), (3, true)] {
                let stats = Arc::new(EngineStats::new());
                let (token, signal) = stop();
                let fault = StreamFault {
                    after_tokens: 3,
                    action,
                };
                let mut body = Box::pin(body_stream(
                    ctx(Endpoint::Completion, true, len),
                    request(Instant::now(), len),
                    Pace::Fast {
                        chunks_per_frame: 16,
                    },
                    stats.clone(),
                    signal,
                    Some(fault),
                ));
                let first = body.next().await.unwrap().unwrap();
                // Three content chunks: no usage chunk, no [DONE], even after the last token.
                assert_eq!(events(&first), 3, "{action:?} {len}");
                let text = std::str::from_utf8(&first).unwrap();
                assert_eq!(text.contains("\"finish_reason\":\"length\""), last);
                assert!(!text.contains("[DONE]"));
                match action {
                    FaultAction::Stall => {
                        let wait = tokio::time::timeout(Duration::from_secs(3600), body.next());
                        assert!(wait.await.is_err());
                        assert_eq!(stats.snapshot().running, u64::from(!last));
                        token.cancel();
                        assert!(body.next().await.is_none());
                    }
                    FaultAction::Disconnect => {
                        let err = body.next().await.unwrap().unwrap_err();
                        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
                        assert!(body.next().await.is_none());
                    }
                }
                drop(body);
                let snap = stats.snapshot();
                assert_eq!(snap.generation_tokens, 3);
                assert_eq!(
                    (snap.success_abort, snap.success_length),
                    (u64::from(!last), u64::from(last))
                );
            }
        }
    }

    #[tokio::test]
    async fn a_dropped_stream_is_an_abort() {
        let stats = Arc::new(EngineStats::new());
        let (_token, signal) = stop();
        let mut stream = Box::pin(frames(
            ctx(Endpoint::Chat, true, 100),
            request(Instant::now(), 100),
            Pace::Fast {
                chunks_per_frame: 4,
            },
            stats.clone(),
            signal,
        ));
        assert!(stream.next().await.is_some());
        assert_eq!(stats.snapshot().running, 1);
        drop(stream);
        let snap = stats.snapshot();
        assert_eq!((snap.running, snap.success_abort), (0, 1));
        assert_eq!((snap.generation_tokens, snap.success_length), (4, 0));
    }

    /// Shutdown ends open streams without `[DONE]`, also during a long wait.
    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_streams_without_done() {
        for (ttft_ms, itl_ms) in [(1.0, 2.0), (10_000.0, 1.0), (1.0, 10_000.0)] {
            let stats = Arc::new(EngineStats::new());
            let (token, signal) = stop();
            let t0 = Instant::now();
            let mut stream = Box::pin(frames(
                ctx(Endpoint::Chat, true, 100),
                request(t0, 100),
                Pace::Exact(on_tokio(ttft_ms, itl_ms)),
                stats.clone(),
                signal,
            ));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                token.cancel();
            });
            let mut body = Vec::new();
            while let Some(frame) = stream.next().await {
                body.extend_from_slice(&frame);
            }
            let elapsed = Instant::now() - t0;
            assert!(
                elapsed < Duration::from_millis(102),
                "{ttft_ms}/{itl_ms}: {elapsed:?}"
            );
            assert!(!body.windows(6).any(|w| w == b"[DONE]"));
            drop(stream);
            let snap = stats.snapshot();
            assert_eq!((snap.running, snap.success_abort), (0, 1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn collect_waits_for_the_last_token_in_exact_mode() {
        let stats = Arc::new(EngineStats::new());
        let (_token, signal) = stop();
        let t0 = Instant::now();
        let pace = Pace::Exact(on_tokio(50.0, 20.0));
        let (n, reason) = collect(request(t0, 10), pace, stats.clone(), &signal)
            .await
            .unwrap();
        assert_eq!((n, reason), (10, FinishReason::Length));
        assert_eq!(Instant::now() - t0, Duration::from_millis(230));
        let pace = Pace::Fast {
            chunks_per_frame: 16,
        };
        let t1 = Instant::now();
        collect(request(t1, 10), pace, stats.clone(), &signal)
            .await
            .unwrap();
        assert_eq!(Instant::now(), t1);
        let snap = stats.snapshot();
        assert_eq!((snap.generation_tokens, snap.success_length), (20, 2));
        assert_eq!(snap.running, 0);
    }
}
