//! Unit tests of [`super`]: the engine step loop's batching, timeline, preemption, aborts and
//! crash.

use super::*;
use crate::config::TimingModel;

fn ms(v: f64) -> Duration {
    Duration::from_nanos((v * 1e6).round() as u64)
}

struct Harness {
    handle: EngineHandle,
    stats: Arc<EngineStats>,
    shutdown: CancellationToken,
    t0: Instant,
}

fn start(config: EngineConfig) -> Harness {
    let stats = Arc::new(EngineStats::new());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle = spawn_engine(config, stats.clone(), shutdown.clone(), &tracker);
    Harness {
        handle,
        stats,
        shutdown,
        t0: Instant::now(),
    }
}

/// Request `i` with a prompt of its own (`prompt_tokens` times the token id `i`: no two
/// requests of different `i` share a prefix-cache block).
fn request(i: usize, prompt_tokens: u32, output_tokens: u32) -> NewRequest {
    request_with(i, vec![i as u32; prompt_tokens as usize], output_tokens)
}

/// Request `i` with the prompt `prompt_ids`.
fn request_with(i: usize, prompt_ids: Vec<u32>, output_tokens: u32) -> NewRequest {
    NewRequest {
        request_id: format!("r{i}"),
        prompt_ids,
        max_tokens: output_tokens,
        output_tokens,
        finish_reason: FinishReason::Length,
    }
}

/// Receives every event of a request (one token each) and returns their ideal times
/// relative to `t0`.
async fn token_times(rx: &mut mpsc::Receiver<TokenEvent>, t0: Instant) -> Vec<Duration> {
    let mut times = Vec::new();
    let mut expected_index = 0;
    while let Some(ev) = rx.recv().await {
        assert_eq!(ev.count, 1, "a prompt reader sees one token per event");
        assert_eq!(ev.first_index, expected_index);
        expected_index += 1;
        times.push(ev.at - t0);
    }
    times
}

#[tokio::test(start_paused = true)]
async fn burst_of_four_fits_in_one_step() {
    let h = start(EngineConfig::default());
    let mut rxs = Vec::new();
    for i in 0..4 {
        rxs.push(h.handle.submit(request(i, 100, 5)).await.unwrap());
    }
    for rx in &mut rxs {
        let times = token_times(rx, h.t0).await;
        let expected: Vec<Duration> = (0..5).map(|k| ms(60.8 + 20.8 * k as f64)).collect();
        assert_eq!(times, expected);
    }
    let snap = h.stats.snapshot();
    assert_eq!(snap.prompt_tokens, 400);
    assert_eq!(snap.generation_tokens, 20);
    assert_eq!(snap.success_length, 4);
    assert_eq!(snap.running, 0);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn tokens_arrive_on_the_first_timer_tick_after_their_ideal_time() {
    let h = start(EngineConfig::default());
    let mut rx = h.handle.submit(request(0, 100, 4)).await.unwrap();
    let mut n = 0;
    while let Some(ev) = rx.recv().await {
        let now = Instant::now();
        assert!(now >= ev.at, "token delivered before its step ended");
        assert!(now - ev.at < Duration::from_millis(1), "timer tick is 1 ms");
        n += 1;
    }
    assert_eq!(n, 4);
    // 30.2 ms + 3 × 20.2 ms, with no drift from the 1 ms timer tick.
    assert!(Instant::now() - h.t0 >= ms(90.8));
    assert!(Instant::now() - h.t0 < ms(91.8));
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn max_num_seqs_makes_the_third_request_wait() {
    let h = start(EngineConfig {
        max_num_seqs: 2,
        ..EngineConfig::default()
    });
    let mut rxs = Vec::new();
    for i in 0..3 {
        rxs.push(h.handle.submit(request(i, 100, 3)).await.unwrap());
    }
    // Steps: 2 seqs + 200 prefill = 40.4 ms; decode with 2 seqs = 20.4 ms.
    let first_two: Vec<Duration> = [40.4, 60.8, 81.2].into_iter().map(ms).collect();
    assert_eq!(token_times(&mut rxs[0], h.t0).await, first_two);
    assert_eq!(token_times(&mut rxs[1], h.t0).await, first_two);
    // The third is admitted after both finish: 20 + 0.2 + 10 = 30.2 ms, then 20.2 ms steps.
    let third: Vec<Duration> = [111.4, 131.6, 151.8].into_iter().map(ms).collect();
    assert_eq!(token_times(&mut rxs[2], h.t0).await, third);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn max_num_batched_tokens_splits_admission() {
    let h = start(EngineConfig {
        max_num_batched_tokens: 250,
        chunked_prefill: false,
        ..EngineConfig::default()
    });
    let mut rxs = Vec::new();
    for i in 0..4 {
        rxs.push(h.handle.submit(request(i, 100, 2)).await.unwrap());
    }
    // Step 1 admits 0 and 1 (200 tokens; a third would make 300 > 250): 40.4 ms.
    // Step 2 admits 2 and 3 while 0 and 1 decode: 20 + 0.8 + 20 = 40.8 ms -> 81.2.
    // Step 3 decodes 2 and 3: 20.4 ms -> 101.6.
    let early: Vec<Duration> = [40.4, 81.2].into_iter().map(ms).collect();
    let late: Vec<Duration> = [81.2, 101.6].into_iter().map(ms).collect();
    assert_eq!(token_times(&mut rxs[0], h.t0).await, early);
    assert_eq!(token_times(&mut rxs[1], h.t0).await, early);
    assert_eq!(token_times(&mut rxs[2], h.t0).await, late);
    assert_eq!(token_times(&mut rxs[3], h.t0).await, late);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_oversized_prompt_runs_alone_when_nothing_runs() {
    let h = start(EngineConfig {
        max_num_batched_tokens: 250,
        chunked_prefill: false,
        ..EngineConfig::default()
    });
    let mut big = h.handle.submit(request(0, 1000, 1)).await.unwrap();
    let mut small = h.handle.submit(request(1, 10, 1)).await.unwrap();
    // 20 + 0.2 + 100 = 120.2 ms alone; the small one is not admitted past the big one
    // because the budget is already spent (1000 + 10 > 250).
    assert_eq!(token_times(&mut big, h.t0).await, vec![ms(120.2)]);
    assert_eq!(
        token_times(&mut small, h.t0).await,
        vec![ms(120.2 + 20.0 + 0.2 + 1.0)]
    );
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn chunked_prefill_fills_the_budget_with_prompt_chunks() {
    let h = start(EngineConfig {
        max_num_batched_tokens: 250,
        ..EngineConfig::default()
    });
    let mut rxs = Vec::new();
    for i in 0..4 {
        rxs.push(h.handle.submit(request(i, 100, 2)).await.unwrap());
    }
    // Step 1: 0 and 1 whole, 50 tokens of 2 (250): 20 + 3 × 0.2 + 25 = 45.6 ms; only 0
    // and 1 sample a token. Step 2: 0 and 1 decode (2), the rest of 2 (50), 3 whole
    // (100): 20 + 0.8 + 15 = 35.8 ms -> 81.4. Step 3: 2 and 3 decode: 20.4 -> 101.8.
    let early: Vec<Duration> = [45.6, 81.4].into_iter().map(ms).collect();
    let late: Vec<Duration> = [81.4, 101.8].into_iter().map(ms).collect();
    assert_eq!(token_times(&mut rxs[0], h.t0).await, early);
    assert_eq!(token_times(&mut rxs[1], h.t0).await, early);
    assert_eq!(token_times(&mut rxs[2], h.t0).await, late);
    assert_eq!(token_times(&mut rxs[3], h.t0).await, late);
    // Prompt tokens are counted once per request.
    assert_eq!(h.stats.snapshot().prompt_tokens, 400);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn running_out_of_kv_blocks_preempts_the_newest_request() {
    // 4 blocks of 16 tokens: two 30-token prompts take 2 blocks each; the first decode
    // past 32 tokens needs a third block, so the newer request is preempted, recomputes
    // after the older one finishes, and both still get every token.
    let h = start(EngineConfig {
        block_size: 16,
        kv_cache_tokens: 64,
        ..EngineConfig::default()
    });
    let mut a = h.handle.submit(request(0, 30, 10)).await.unwrap();
    let mut b = h.handle.submit(request(1, 30, 10)).await.unwrap();
    let (ta, tb) = tokio::join!(token_times(&mut a, h.t0), token_times(&mut b, h.t0));
    assert_eq!((ta.len(), tb.len()), (10, 10));
    assert!(tb.last() > ta.last(), "{ta:?} {tb:?}");
    let snap = h.stats.snapshot();
    assert!(snap.preemptions >= 1, "{snap:?}");
    assert_eq!(snap.generation_tokens, 20);
    assert_eq!(snap.prompt_tokens, 60);
    // The preempted request's second lookup is not counted again (as in vLLM).
    assert_eq!(snap.prefix_cache_queries, 60);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn speedup_divides_every_step() {
    let h = start(EngineConfig {
        timing: TimingModel {
            speedup: 4.0,
            ..TimingModel::default()
        },
        ..EngineConfig::default()
    });
    let mut rx = h.handle.submit(request(0, 100, 2)).await.unwrap();
    // (20 + 0.2 + 10) / 4 = 7.55 ms, then 20.2 / 4 = 5.05 ms.
    assert_eq!(
        token_times(&mut rx, h.t0).await,
        vec![ms(7.55), ms(7.55 + 5.05)]
    );
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn late_arrivals_join_at_the_next_step() {
    let h = start(EngineConfig::default());
    let mut a = h.handle.submit(request(0, 100, 3)).await.unwrap();
    // a: first token at 30.2 ms. b arrives at 35 ms, during a's second step (30.2..50.4).
    tokio::time::sleep(ms(35.0)).await;
    let mut b = h.handle.submit(request(1, 100, 1)).await.unwrap();
    // Step 3 starts at 50.4 with a decoding and b prefilling: 20 + 0.4 + 10 = 30.4 -> 80.8.
    assert_eq!(
        token_times(&mut a, h.t0).await,
        vec![ms(30.2), ms(50.4), ms(80.8)]
    );
    assert_eq!(token_times(&mut b, h.t0).await, vec![ms(80.8)]);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_receiver_aborts_and_leaves_the_batch() {
    let h = start(EngineConfig::default());
    let mut keep = h.handle.submit(request(0, 100, 4)).await.unwrap();
    let mut leave = h.handle.submit(request(1, 100, 4)).await.unwrap();
    let first = leave.recv().await.unwrap();
    assert_eq!(first.at - h.t0, ms(40.4));
    drop(leave);
    // Step 2 still has both (the drop is noticed when delivering): 20.4 -> 60.8.
    // From step 3 on only one runs: 20.2 ms steps -> 81.0, 101.2.
    assert_eq!(
        token_times(&mut keep, h.t0).await,
        vec![ms(40.4), ms(60.8), ms(81.0), ms(101.2)]
    );
    let snap = h.stats.snapshot();
    assert_eq!(snap.success_abort, 1);
    assert_eq!(snap.success_length, 1);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_gets_coalesced_tokens() {
    let h = start(EngineConfig {
        timing: TimingModel {
            step_ms: 1.0,
            step_ms_per_seq: 0.0,
            prefill_us_per_token: 0.0,
            speedup: 1.0,
        },
        ..EngineConfig::default()
    });
    let n = TOKEN_CHANNEL_CAPACITY as u32 + 10;
    let mut rx = h.handle.submit(request(0, 1, n)).await.unwrap();
    // Do not read until the engine is done with it.
    tokio::time::sleep(Duration::from_millis(u64::from(n) + 5)).await;
    let mut total = 0;
    let mut events = 0;
    let mut last = None;
    while let Some(ev) = rx.recv().await {
        assert_eq!(ev.first_index, total);
        total += ev.count;
        events += 1;
        last = ev.finish_reason;
    }
    assert_eq!(total, n);
    assert_eq!(last, Some(FinishReason::Length));
    assert_eq!(events, TOKEN_CHANNEL_CAPACITY + 1);
    h.shutdown.cancel();
}

/// A crash at `n` running requests whose hook records the running count.
fn crash_config(n: usize) -> (EngineConfig, Arc<std::sync::Mutex<Vec<usize>>>) {
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    let config = EngineConfig {
        crash: Some(CrashAt {
            running: n,
            action: CrashAction::Hook(Arc::new(move |running: usize| {
                seen.lock().unwrap().push(running);
            })),
        }),
        ..EngineConfig::default()
    };
    (config, calls)
}

#[tokio::test(start_paused = true)]
async fn fewer_running_requests_than_the_crash_limit_finish() {
    let (config, calls) = crash_config(3);
    let h = start(config);
    let mut rxs = Vec::new();
    for i in 0..2 {
        rxs.push(h.handle.submit(request(i, 100, 5)).await.unwrap());
    }
    for rx in &mut rxs {
        assert_eq!(token_times(rx, h.t0).await.len(), 5);
    }
    // A third one alone: three requests ran, never three at once.
    let mut a = h.handle.submit(request(2, 100, 3)).await.unwrap();
    assert_eq!(token_times(&mut a, h.t0).await.len(), 3);
    assert!(calls.lock().unwrap().is_empty());
    assert_eq!(h.stats.snapshot().success_length, 3);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn reaching_the_crash_limit_kills_the_engine() {
    let (config, calls) = crash_config(3);
    let h = start(config);
    let mut early = h.handle.submit(request(0, 100, 1000)).await.unwrap();
    let mut second = h.handle.submit(request(1, 100, 1000)).await.unwrap();
    // Both run (two < three) and get tokens.
    assert!(early.recv().await.is_some());
    assert!(second.recv().await.is_some());
    assert!(calls.lock().unwrap().is_empty());
    // The third joins the batch: the engine dies before that step runs.
    let mut third = h.handle.submit(request(2, 100, 1000)).await.unwrap();
    for rx in [&mut early, &mut second, &mut third] {
        while let Some(ev) = rx.recv().await {
            assert!(ev.finish_reason.is_none(), "a cut stream has no last token");
        }
    }
    assert_eq!(*calls.lock().unwrap(), vec![3]);
    // The dead engine takes no more requests.
    assert!(h.handle.submit(request(3, 1, 1)).await.is_err());
    let snap = h.stats.snapshot();
    assert_eq!(snap.success_length, 0);
    assert_eq!(snap.success_abort, 3);
    assert_eq!(snap.running, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_open_streams() {
    let h = start(EngineConfig::default());
    let mut rx = h.handle.submit(request(0, 10, 1000)).await.unwrap();
    assert!(rx.recv().await.is_some());
    h.shutdown.cancel();
    while let Some(ev) = rx.recv().await {
        assert!(ev.finish_reason.is_none());
    }
    assert!(h.handle.submit(request(1, 1, 1)).await.is_err());
}

/// Prefix caching: tokens `1000..1064` shared by the prompts of [`prefix_prompt`].
fn prefix_prompt(suffix_start: u32, len: u32) -> Vec<u32> {
    (1000..1064)
        .chain(suffix_start..)
        .take(len as usize)
        .collect()
}

/// Submits `req` to an idle engine and returns its token times from now.
async fn alone(h: &Harness, req: NewRequest) -> Vec<Duration> {
    let t = Instant::now();
    let mut rx = h.handle.submit(req).await.unwrap();
    token_times(&mut rx, t).await
}

#[tokio::test(start_paused = true)]
async fn a_repeated_prompt_prefills_only_its_uncached_tokens() {
    let h = start(EngineConfig::default());
    let prompt: Vec<u32> = (0..100).collect();
    // First: 20 + 0.2 + 100 × 0.1 = 30.2 ms.
    assert_eq!(
        alone(&h, request_with(0, prompt.clone(), 1)).await,
        [ms(30.2)]
    );
    // Again: (100 - 1) / 16 = 6 full blocks hit, 96 tokens; the last 4 tokens are
    // prefilled: 20 + 0.2 + 4 × 0.1 = 20.6 ms.
    assert_eq!(alone(&h, request_with(1, prompt, 1)).await, [ms(20.6)]);
    let snap = h.stats.snapshot();
    assert_eq!(snap.prefix_cache_queries, 200);
    assert_eq!(snap.prefix_cache_hits, 96);
    // vLLM's prompt counter counts whole prompts; the cached part separately.
    assert_eq!(snap.prompt_tokens, 200);
    assert_eq!(snap.prompt_tokens_cached, 96);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn without_prefix_caching_a_repeated_prompt_is_prefilled_again() {
    let h = start(EngineConfig {
        prefix_caching: false,
        ..EngineConfig::default()
    });
    let prompt: Vec<u32> = (0..100).collect();
    assert_eq!(
        alone(&h, request_with(0, prompt.clone(), 1)).await,
        [ms(30.2)]
    );
    assert_eq!(alone(&h, request_with(1, prompt, 1)).await, [ms(30.2)]);
    let snap = h.stats.snapshot();
    assert_eq!((snap.prefix_cache_queries, snap.prefix_cache_hits), (0, 0));
    assert_eq!(snap.prompt_tokens_cached, 0);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn prompts_sharing_a_64_token_prefix_hit_64_tokens() {
    let h = start(EngineConfig::default());
    // 100 tokens each, the first 64 equal: 4 blocks of 16 have equal chained hashes, the
    // fifth (tokens 64..80) differs; the last-token cap ((100 - 1) / 16 = 6 blocks) is not
    // reached. The second prefills 100 - 64 = 36 tokens: 20 + 0.2 + 3.6 = 23.8 ms.
    let a = prefix_prompt(2000, 100);
    let b = prefix_prompt(3000, 100);
    assert_eq!(alone(&h, request_with(0, a, 1)).await, [ms(30.2)]);
    assert_eq!(alone(&h, request_with(1, b, 1)).await, [ms(23.8)]);
    let snap = h.stats.snapshot();
    assert_eq!(
        (snap.prefix_cache_queries, snap.prefix_cache_hits),
        (200, 64)
    );
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_request_admitted_in_the_same_step_hits_the_blocks_scheduled_before_it() {
    // vLLM caches a block when it allocates it for the step, not when the step ends.
    let h = start(EngineConfig::default());
    let prompt: Vec<u32> = (0..100).collect();
    let mut a = h
        .handle
        .submit(request_with(0, prompt.clone(), 1))
        .await
        .unwrap();
    let mut b = h.handle.submit(request_with(1, prompt, 1)).await.unwrap();
    // One step: 100 + 4 prompt tokens, 2 sequences: 20 + 0.4 + 10.4 = 30.8 ms.
    assert_eq!(token_times(&mut a, h.t0).await, [ms(30.8)]);
    assert_eq!(token_times(&mut b, h.t0).await, [ms(30.8)]);
    assert_eq!(h.stats.snapshot().prefix_cache_hits, 96);
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_tiny_kv_cache_evicts_the_least_recently_used_blocks() {
    // 4 blocks of 16 tokens. A (48 tokens, 3 full blocks) runs and leaves them cached; B
    // (48 other tokens) takes the never-used block, then evicts A's tail blocks (A2, A1:
    // vLLM frees a sequence's blocks last-first). A again hits only A0: 16 tokens, and
    // prefills 32: 20 + 0.2 + 3.2 = 23.4 ms instead of 21.8 ms with its 2 hittable blocks.
    let h = start(EngineConfig {
        block_size: 16,
        kv_cache_tokens: 64,
        ..EngineConfig::default()
    });
    let a: Vec<u32> = (0..48).collect();
    let b: Vec<u32> = (100..148).collect();
    let full = ms(20.0 + 0.2 + 4.8);
    assert_eq!(alone(&h, request_with(0, a.clone(), 1)).await, [full]);
    assert_eq!(alone(&h, request_with(1, b.clone(), 1)).await, [full]);
    assert_eq!(alone(&h, request_with(2, a, 1)).await, [ms(23.4)]);
    // B's blocks were freed after A0: A's admission evicted B2 and B1 (A0 was a hit, A1 and
    // A2 new blocks), B keeps B0 and hits 16 tokens.
    assert_eq!(alone(&h, request_with(3, b, 1)).await, [ms(23.4)]);
    let snap = h.stats.snapshot();
    assert_eq!(
        (snap.prefix_cache_queries, snap.prefix_cache_hits),
        (4 * 48, 16 + 16)
    );
    h.shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_cached_prefix_shortens_ttft_in_the_gpu_model() {
    let profiles = crate::perf::Profiles::builtin().unwrap();
    let perf = crate::perf::PerfModel {
        gpu: profiles.gpu("h100-sxm").unwrap().clone(),
        model: profiles
            .model("meta-llama/Llama-3.1-8B-Instruct")
            .unwrap()
            .1
            .clone(),
        tp: 1,
        enforce_eager: false,
        gpu_memory_utilization: 0.9,
    };
    let h = start(EngineConfig {
        perf: Some(perf.clone()),
        ..EngineConfig::default()
    });
    // As the engine sleeps it: the model's time divided by the speedup (1).
    let step = |shape: StepShape| Duration::from_secs_f64(perf.step_time(&shape).as_secs_f64());
    let prompt: Vec<u32> = (0..2000).collect();
    // First: the whole prompt, 2000 tokens attending causally to each other.
    let cold = step(StepShape {
        prefill_tokens: 2000,
        context_tokens: 2000,
        attention_pairs: 2000.0 * 2001.0 / 2.0,
        ..StepShape::default()
    });
    // Again: (2000 - 1) / 16 = 124 blocks hit (1984 tokens); 16 tokens prefilled, each
    // reading the 1984 cached ones as context.
    let warm = step(StepShape {
        prefill_tokens: 16,
        context_tokens: 2000,
        attention_pairs: 16.0 * 1984.0 + 16.0 * 17.0 / 2.0,
        ..StepShape::default()
    });
    assert!(warm < cold / 2, "{warm:?} vs {cold:?}");
    assert_eq!(alone(&h, request_with(0, prompt.clone(), 1)).await, [cold]);
    assert_eq!(alone(&h, request_with(1, prompt, 1)).await, [warm]);
    assert_eq!(h.stats.snapshot().prefix_cache_hits, 1984);
    h.shutdown.cancel();
}
