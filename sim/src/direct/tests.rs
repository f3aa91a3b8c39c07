//! Unit tests of [`super`]: exact and fast pacing, their SSE bytes, statistics, shutdown and stream
//! faults.

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::config::Pacing;

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
    body_stream(ctx, req, pace, shared(stats, stop, None)).map(|item| item.unwrap())
}

fn shared(stats: Arc<EngineStats>, stop: StopSignal, fault: Option<StreamFault>) -> DirectStream {
    DirectStream {
        stats,
        stop,
        fault,
        tracer: None,
    }
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
                shared(stats.clone(), signal, Some(fault)),
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
