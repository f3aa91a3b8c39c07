//! The engine step loop: continuous batching with a deterministic timing model.
//!
//! One task owns the `waiting` queue and the `running` batch; requests reach it through a
//! bounded mpsc ([`REQUEST_QUEUE_CAPACITY`]) and tokens leave through one bounded channel per
//! request ([`TOKEN_CHANNEL_CAPACITY`]). Like vLLM's scheduler, work happens in steps:
//!
//! 1. **Collect**: every request already in the mpsc joins `waiting` (FCFS). Requests whose
//!    client is gone (token receiver dropped) leave `waiting`/`running` and count as `abort`.
//! 2. **Schedule** (vLLM V1's unified scheduler): every sequence has `computed` tokens in
//!    the KV cache out of `prompt + generated`; a step gives each scheduled sequence the
//!    tokens it still needs (1 when decoding), within a budget of `max_num_batched_tokens`.
//!    Running sequences go first, in order; one that needs a new KV-cache block when none is
//!    free preempts the last running sequence (which frees its blocks and goes back to the
//!    head of `waiting` to recompute prompt and output later; `vllm:num_preemptions`). Then,
//!    unless something was preempted, `waiting` is admitted FCFS while `running <
//!    max_num_seqs`, blocks are free and budget is left. With chunked prefill (vLLM's
//!    default) a prompt takes what is left of the budget and continues next step; without,
//!    a prompt is admitted whole or waits (alone, when nothing else is scheduled, it runs
//!    even if longer than the budget). KV blocks: `--block-size` tokens each; their number
//!    comes from the GPU profile (`--sim-gpu`, see [`crate::perf`]) or
//!    `--sim-kv-cache-tokens`. With prefix caching (vLLM's default, see [`prefix_cache`]),
//!    a waiting sequence first looks its prompt up: the longest run of cached full blocks
//!    from its start (never its last token) is computed already, shares those blocks, and
//!    only the rest is pending; the blocks of every prompt scheduled stay cached after it
//!    ends, until their space is needed (least recently used first).
//! 3. **Time**: with a GPU profile, [`crate::perf::PerfModel::step_time`] of the step's
//!    shape (decode sequences, prefill tokens, context read, attention pairs). Without, the
//!    flag model with `seqs` = scheduled sequences and `prefill` = prompt tokens computed:
//!
//!    ```text
//!    step_ms = sim_step_ms + sim_step_ms_per_seq × seqs + sim_prefill_us_per_token / 1000 × prefill
//!    ```
//!
//!    and the loop sleeps `step_ms / sim_speedup` ([`tokio::time::sleep_until`], so tests run
//!    on tokio's paused clock). Steps are laid on an absolute timeline: a step starts where the
//!    previous one ended (its ideal end, not the wake-up time), unless the loop was idle or fell
//!    more than [`MAX_LAG`] behind, in which case it starts now. So timer granularity never
//!    accumulates into drift.
//! 4. **Emit**: at the step's end every scheduled sequence whose tokens are all computed
//!    samples one token (the first one ends a prefill: TTFT). A request finishes when it has emitted its target
//!    number of tokens (`finish_reason` as given at submission) and leaves the batch.
//!
//! Consequences: a burst of N requests of P prompt tokens (sharing no cached block) that all
//! fit in one step gets TTFT = step(N, N×P), then one token every `sim_step_ms +
//! sim_step_ms_per_seq × N` (all divided by the speedup). With the defaults (20 ms, 0.2 ms/seq, 100 µs/token), N = 4 and
//! P = 100: first tokens at 60.8 ms, then every 20.8 ms.
//!
//! With `--sim-crash-at-running N` ([`EngineConfig::crash`]), the engine dies right after the
//! admission that makes `running` reach N, before that step runs: like vLLM when a large batch
//! exhausts GPU memory, it logs the fatal `EngineCore` error and the process exits with code 1
//! (see [`crash`]).
//!
//! Each [`TokenEvent`] carries the ideal instant of its step's end (`at`). If a client reads
//! slowly and its channel is full, the engine does not wait: tokens accumulate and the next
//! event carries several (like vLLM, whose stream chunks can hold several tokens).

pub mod prefix_cache;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::{CrashAction, CrashAt, EngineConfig};
use crate::error::SimError;
use crate::finish::FinishReason;
use crate::metrics::{EngineStats, FinishedRecord, PrefixCacheStats, StepRecord};
use crate::perf::StepShape;
use prefix_cache::{BlockHash, BlockPool, BlockTable};

/// Capacity of the engine's request queue (submitters wait when it is full).
pub const REQUEST_QUEUE_CAPACITY: usize = 1024;
/// Capacity of each request's token channel, in events.
pub const TOKEN_CHANNEL_CAPACITY: usize = 64;
/// How far behind its ideal timeline the loop may fall before it restarts the timeline at now.
pub const MAX_LAG: Duration = Duration::from_millis(5);

/// Tokens produced for one request by one engine step (several if the client lagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEvent {
    /// Index of the first token in this event (0-based over the request's output).
    pub first_index: u32,
    /// Number of tokens in this event (≥ 1).
    pub count: u32,
    /// Set on the event that carries the request's last token.
    pub finish_reason: Option<FinishReason>,
    /// Ideal instant of the end of the step that produced the newest token.
    pub at: Instant,
}

/// What a caller submits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub request_id: String,
    /// The prompt's token ids (after the chat template): their number is the prompt length,
    /// their values decide which prefix-cache blocks the prompt shares with others.
    pub prompt_ids: Vec<u32>,
    /// The request's (clamped) `max_tokens`, for `vllm:request_params_max_tokens`.
    pub max_tokens: u32,
    /// Tokens to generate (at least 1 is generated).
    pub output_tokens: u32,
    /// Reported on the last token.
    pub finish_reason: FinishReason,
}

impl NewRequest {
    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> u32 {
        u32::try_from(self.prompt_ids.len()).unwrap_or(u32::MAX)
    }
}

#[derive(Debug)]
struct EngineRequest {
    new: NewRequest,
    /// Hashes of the prompt's full KV-cache blocks (none without prefix caching).
    block_hashes: Vec<BlockHash>,
    arrival: Instant,
    tokens: mpsc::Sender<TokenEvent>,
}

/// Cheap handle to submit requests to the engine loop.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<EngineRequest>,
    /// `--block-size`, when prefix caching is on: submitters hash their prompts' blocks.
    hash_block_size: Option<u32>,
}

impl EngineHandle {
    /// Queues a request; its tokens arrive on the returned receiver, which closes after the last
    /// token (or early if the engine stops). Dropping the receiver aborts the request.
    pub async fn submit(&self, new: NewRequest) -> Result<mpsc::Receiver<TokenEvent>, SimError> {
        let (tokens, rx) = mpsc::channel(TOKEN_CHANNEL_CAPACITY);
        // Hashed here, on the submitter's task, not in the engine loop.
        let block_hashes = self
            .hash_block_size
            .map(|size| prefix_cache::block_hashes(&new.prompt_ids, size))
            .unwrap_or_default();
        let request = EngineRequest {
            new,
            block_hashes,
            arrival: Instant::now(),
            tokens,
        };
        self.tx
            .send(request)
            .await
            .map_err(|_| SimError::EngineStopped)?;
        Ok(rx)
    }
}

/// Starts the engine loop on `tracker`; it stops when `shutdown` is cancelled or every handle
/// is dropped, dropping all token senders (open streams end without a final token).
pub fn spawn_engine(
    config: EngineConfig,
    stats: Arc<EngineStats>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> EngineHandle {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE_CAPACITY);
    let pool = BlockPool::new(
        config.kv_cache_blocks(),
        config.block_size,
        config.prefix_caching,
    );
    let hash_block_size = config.prefix_caching.then_some(config.block_size);
    let engine = Engine {
        config,
        stats,
        shutdown,
        tracker: tracker.clone(),
        rx,
        waiting: VecDeque::new(),
        running: Vec::new(),
        pool,
    };
    tracker.spawn(
        engine
            .run()
            .instrument(tracing::info_span!("engine", engine = 0)),
    );
    EngineHandle {
        tx,
        hash_block_size,
    }
}

#[derive(Debug)]
struct Seq {
    req: EngineRequest,
    generated: u32,
    delivered: u32,
    /// Tokens (prompt and output) whose keys and values are in the KV cache: vLLM's
    /// `num_computed_tokens`, prefix-cache hits included. A preempted sequence drops to 0 and
    /// recomputes (with the prefix-cache hit it then finds).
    computed: u64,
    /// KV-cache blocks held.
    blocks: BlockTable,
    /// Prompt tokens found in the prefix cache at the first admission (vLLM's
    /// `num_cached_tokens`; later admissions after preemptions do not change it).
    cached_tokens: u64,
    /// Tokens scheduled for this sequence in the current step (0: not scheduled).
    step_tokens: u64,
    preemptions: u32,
    scheduled_at: Option<Instant>,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
}

impl Seq {
    fn target(&self) -> u32 {
        self.req.new.output_tokens.max(1)
    }

    fn is_gone(&self) -> bool {
        self.req.tokens.is_closed()
    }

    fn prompt_tokens(&self) -> u32 {
        self.req.new.prompt_tokens()
    }

    /// Prompt plus generated tokens.
    fn total_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens()) + u64::from(self.generated)
    }

    /// Tokens to compute before the next token can be sampled: the prompt (or prompt and
    /// output after a preemption) while prefilling, 1 while decoding.
    fn pending(&self) -> u64 {
        self.total_tokens().saturating_sub(self.computed).max(1)
    }
}

/// What the scheduler decided for one step.
#[derive(Debug, Default)]
struct Step {
    shape: StepShape,
    /// Requests admitted from `waiting` (the last ones in `running`).
    admitted: usize,
    preempted: u64,
    /// Prefix-cache lookups of the requests admitted for the first time.
    prefix_cache: PrefixCacheStats,
}

struct Engine {
    config: EngineConfig,
    stats: Arc<EngineStats>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    rx: mpsc::Receiver<EngineRequest>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    /// The KV-cache blocks, and the prefix cache.
    pool: BlockPool,
}

impl Engine {
    async fn run(mut self) {
        // Ideal end of the previous step, while the engine is busy.
        let mut timeline: Option<Instant> = None;
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                timeline = None;
                self.publish_gauges();
                let next = tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => None,
                    r = self.rx.recv() => r,
                };
                let Some(req) = next else { break };
                self.enqueue(req);
            }
            while let Ok(req) = self.rx.try_recv() {
                self.enqueue(req);
            }
            self.drop_disconnected();

            let step = self.schedule(Instant::now());
            if step.preempted > 0 {
                self.stats.record_preemptions(step.preempted);
            }
            if self.running.iter().all(|s| s.step_tokens == 0) {
                // Nothing fits (a prompt larger than the whole KV cache was dropped).
                continue;
            }
            if let Some(at) = &self.config.crash {
                if step.admitted > 0 && self.running.len() >= at.running {
                    crash(at, self.running.len(), step.shape.prefill_tokens);
                    break;
                }
            }
            if let (Some(action), Some(perf)) = (&self.config.oom, &self.config.perf) {
                let need = perf.step_workspace_bytes(&step.shape);
                if need > perf.headroom_bytes() {
                    oom_crash(
                        action,
                        self.running.len(),
                        &step.shape,
                        need,
                        perf.headroom_bytes(),
                    );
                    break;
                }
            }
            let now = Instant::now();
            let start = match timeline {
                Some(t) if now.saturating_duration_since(t) <= MAX_LAG => t,
                _ => now,
            };
            let duration = self.step_duration(&step.shape);
            let end = start + duration;
            self.publish_gauges();
            if duration.is_zero() {
                tokio::task::yield_now().await;
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(end) => {}
            }
            timeline = Some(end);
            self.emit(end, step.prefix_cache);
        }
        tracing::debug!(
            running = self.running.len(),
            waiting = self.waiting.len(),
            "engine loop stopped"
        );
        self.stats
            .record_aborts((self.running.len() + self.waiting.len()) as u64);
        self.running.clear();
        self.waiting.clear();
        self.stats.set_gauges(0, 0, 0.0);
    }

    fn enqueue(&mut self, req: EngineRequest) {
        self.waiting.push_back(Seq {
            req,
            generated: 0,
            delivered: 0,
            computed: 0,
            blocks: BlockTable::default(),
            cached_tokens: 0,
            step_tokens: 0,
            preemptions: 0,
            scheduled_at: None,
            first_token_at: None,
            last_token_at: None,
        });
    }

    fn drop_disconnected(&mut self) {
        let before = self.running.len() + self.waiting.len();
        let pool = &mut self.pool;
        self.running.retain_mut(|s| {
            let keep = !s.is_gone();
            if !keep {
                pool.release(&mut s.blocks);
            }
            keep
        });
        self.waiting.retain(|s| !s.is_gone());
        let gone = before - self.running.len() - self.waiting.len();
        if gone > 0 {
            self.stats.record_aborts(gone as u64);
        }
    }

    /// The step duration: the GPU performance model when a profile is selected, the flag
    /// model otherwise; divided by the speedup.
    fn step_duration(&self, shape: &StepShape) -> Duration {
        let scheduled = self.running.iter().filter(|s| s.step_tokens > 0).count();
        match &self.config.perf {
            Some(perf) => {
                let speedup = self.config.timing.speedup;
                Duration::from_secs_f64(perf.step_time(shape).as_secs_f64() / speedup)
            }
            None => self
                .config
                .timing
                .step_duration(scheduled, shape.prefill_tokens),
        }
    }

    /// Blocks a sequence needs to hold `tokens` tokens.
    fn blocks_for(&self, tokens: u64) -> u64 {
        tokens.div_ceil(u64::from(self.config.block_size.max(1)))
    }

    /// Preempts the last running sequence (the lowest priority, as vLLM's scheduler): its
    /// blocks are freed and it goes back to the head of `waiting` to recompute.
    fn preempt_last(&mut self) {
        if let Some(mut victim) = self.running.pop() {
            self.pool.release(&mut victim.blocks);
            victim.computed = 0;
            victim.step_tokens = 0;
            victim.preemptions += 1;
            tracing::debug!(request_id = %victim.req.new.request_id, "preempted (recompute)");
            self.waiting.push_front(victim);
        }
    }

    /// Steps 2 and 3 of the module docs: the running sequences first (in order; KV blocks
    /// for their new tokens, preempting from the back when none are free), then the waiting
    /// ones (FCFS, not after a preemption), each within the step's token budget.
    fn schedule(&mut self, now: Instant) -> Step {
        let chunked = self.config.chunked_prefill;
        let mut budget = self.config.max_num_batched_tokens;
        let mut step = Step::default();
        for s in &mut self.running {
            s.step_tokens = 0;
        }
        let mut scheduled = 0usize;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let (pending, computed, held) = {
                let s = &self.running[i];
                (s.pending(), s.computed, s.blocks.held())
            };
            let n = if chunked || pending <= budget || scheduled == 0 {
                pending.min(if chunked { budget } else { pending })
            } else {
                i += 1;
                continue;
            };
            let need = self.blocks_for(computed + n).saturating_sub(held);
            while need > self.pool.free_blocks() && self.running.len() > i + 1 {
                self.preempt_last();
                step.preempted += 1;
            }
            let Some(s) = self.running.get_mut(i) else {
                break;
            };
            if !self.pool.allocate(&mut s.blocks, &[], need) {
                // Not even this sequence fits: it is preempted itself.
                self.preempt_last();
                step.preempted += 1;
                break;
            }
            self.pool
                .register(&mut s.blocks, &s.req.block_hashes, computed + n);
            s.step_tokens = n;
            budget = budget.saturating_sub(n);
            scheduled += 1;
            i += 1;
        }
        while step.preempted == 0 && self.running.len() < self.config.max_num_seqs && budget > 0 {
            let Some(head) = self.waiting.front() else {
                break;
            };
            // Waiting sequences have nothing computed (new or preempted): their prefix-cache
            // hit is computed already, the rest is pending.
            let total = head.total_tokens();
            let hit_blocks = self.pool.lookup(&head.req.block_hashes, total);
            let hit_tokens = hit_blocks as u64 * u64::from(self.config.block_size.max(1));
            let pending = total.saturating_sub(hit_tokens).max(1);
            let n = if chunked {
                pending.min(budget)
            } else if pending <= budget || scheduled == 0 {
                pending
            } else {
                break;
            };
            let hits = head.req.block_hashes.get(..hit_blocks).unwrap_or_default();
            let need = self
                .blocks_for(hit_tokens + n)
                .saturating_sub(hit_blocks as u64);
            if !self.pool.can_allocate(hits, need) {
                if scheduled == 0 && self.running.is_empty() {
                    // Larger than the whole cache: it can never run.
                    if let Some(seq) = self.waiting.pop_front() {
                        tracing::warn!(request_id = %seq.req.new.request_id, "prompt does not fit the KV cache; aborted");
                        self.stats.record_aborts(1);
                    }
                    continue;
                }
                break;
            }
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            let hits = seq.req.block_hashes.get(..hit_blocks).unwrap_or_default();
            if !self.pool.allocate(&mut seq.blocks, hits, need) {
                // Checked above; put it back rather than run it without blocks.
                self.waiting.push_front(seq);
                break;
            }
            self.pool
                .register(&mut seq.blocks, &seq.req.block_hashes, hit_tokens + n);
            if self.pool.caching() && seq.preemptions == 0 {
                // vLLM counts the lookups of new requests, at admission.
                seq.cached_tokens = hit_tokens;
                step.prefix_cache.record(total, hit_tokens);
            }
            seq.computed = hit_tokens;
            seq.scheduled_at.get_or_insert(now);
            seq.step_tokens = n;
            budget = budget.saturating_sub(n);
            scheduled += 1;
            step.admitted += 1;
            self.running.push(seq);
        }
        for s in self.running.iter().filter(|s| s.step_tokens > 0) {
            let n = s.step_tokens;
            let decoding = s.generated > 0 && s.computed + 1 == s.total_tokens() && n == 1;
            if decoding {
                step.shape.decode_seqs += 1;
            } else {
                step.shape.prefill_tokens += n;
                let (c, n) = (s.computed as f64, n as f64);
                step.shape.attention_pairs += n * c + n * (n + 1.0) / 2.0;
            }
            step.shape.context_tokens += s.computed + n;
        }
        step
    }

    /// Step 4: the scheduled sequences' tokens are computed; those done with their pending
    /// tokens sample one; delivery, finishing, statistics.
    fn emit(&mut self, at: Instant, prefix_cache: PrefixCacheStats) {
        let mut record = StepRecord {
            prefix_cache,
            ..StepRecord::default()
        };
        let mut aborted = 0u64;
        let pool = &mut self.pool;
        let shutdown = &self.shutdown;
        let tracker = &self.tracker;
        self.running.retain_mut(|seq| {
            if seq.step_tokens == 0 {
                return true;
            }
            seq.computed += seq.step_tokens;
            seq.step_tokens = 0;
            if seq.computed < seq.total_tokens() {
                // A prompt chunk: no token yet.
                return true;
            }
            seq.generated += 1;
            record.generation_tokens += 1;
            if seq.generated == 1 {
                record.prefill_tokens += u64::from(seq.prompt_tokens());
                record.cached_prompt_tokens += seq.cached_tokens;
                record.ttft.push(at.saturating_duration_since(seq.req.arrival));
                seq.first_token_at = Some(at);
            } else if let Some(prev) = seq.last_token_at {
                record.itl.push(at.saturating_duration_since(prev));
            }
            seq.last_token_at = Some(at);
            let done = seq.generated >= seq.target();
            let finish = done.then_some(seq.req.new.finish_reason);
            if !deliver(seq, at, finish, shutdown, tracker) {
                aborted += 1;
                pool.release(&mut seq.blocks);
                return false;
            }
            if let Some(reason) = finish {
                let arrival = seq.req.arrival;
                let scheduled = seq.scheduled_at.unwrap_or(arrival);
                let first = seq.first_token_at.unwrap_or(at);
                record.finished.push(FinishedRecord {
                    reason,
                    e2e: at.saturating_duration_since(arrival),
                    queued: scheduled.saturating_duration_since(arrival),
                    prefill: first.saturating_duration_since(scheduled),
                    decode: at.saturating_duration_since(first),
                    prompt_tokens: seq.prompt_tokens(),
                    cached_tokens: u32::try_from(seq.cached_tokens).unwrap_or(u32::MAX),
                    generation_tokens: seq.generated,
                    max_tokens: seq.req.new.max_tokens,
                    preemptions: seq.preemptions,
                });
                tracing::debug!(request_id = %seq.req.new.request_id, reason = reason.as_str(), "finished request");
                pool.release(&mut seq.blocks);
            }
            !done
        });
        self.stats.record_step(&record);
        if aborted > 0 {
            self.stats.record_aborts(aborted);
        }
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let total = self.pool.total().max(1);
        let used = total.saturating_sub(self.pool.free_blocks());
        let usage = (used as f64 / total as f64).min(1.0);
        self.stats
            .set_gauges(self.running.len(), self.waiting.len(), usage);
    }
}

/// The out-of-memory crash of `--sim-failure oom`: a step whose attention workspace
/// (see [`crate::perf::PerfModel::step_workspace_bytes`]) exceeds what
/// `--gpu-memory-utilization` leaves free kills the engine with vLLM's lines.
fn oom_crash(action: &CrashAction, running: usize, shape: &StepShape, need: f64, free: f64) {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    tracing::warn!(
        "vllm-sim: a step of {running} running requests ({} prompt tokens, {} context tokens) \
         needs {:.2} GiB of attention workspace, {:.2} GiB are free: GPU out of memory",
        shape.prefill_tokens,
        shape.context_tokens,
        need / GIB,
        free / GIB
    );
    log_engine_oom();
    match action {
        CrashAction::Exit => exit_after_crash(),
        CrashAction::Hook(hook) => hook(running),
    }
}

/// The simulated out-of-memory crash of `--sim-crash-at-running`: logs what vLLM logs when the
/// forward pass of a step with `running` sequences and `prefill_tokens` new prompt tokens runs
/// out of GPU memory, then runs `at.action`; with [`CrashAction::Exit`] it does not return.
pub fn crash(at: &CrashAt, running: usize, prefill_tokens: u64) {
    tracing::warn!(
        "vllm-sim: --sim-crash-at-running {} reached ({running} running requests, \
         {prefill_tokens} prompt tokens to prefill): simulating a GPU out-of-memory crash",
        at.running
    );
    log_engine_oom();
    match &at.action {
        CrashAction::Exit => exit_after_crash(),
        CrashAction::Hook(hook) => hook(running),
    }
}

/// The `torch.OutOfMemoryError` of the simulated crash, as vLLM's engine core logs it.
pub const OOM_ERROR: &str = "torch.OutOfMemoryError: XPU out of memory. Tried to allocate 2.00 \
     GiB. GPU 0 has a total capacity of 23.86 GiB of which 1.02 GiB is free. Of the allocated \
     memory 21.37 GiB is allocated by PyTorch, and 1.12 GiB is reserved by PyTorch but \
     unallocated. If reserved but unallocated memory is large try setting \
     PYTORCH_ALLOC_CONF=expandable_segments:True to avoid fragmentation.";

/// vLLM 0.32's lines when the engine core dies of an out-of-memory error in a step: the
/// `EngineCore` process's fatal error with its traceback, then the API server's
/// `EngineDeadError` (each traceback is one multi-line message, as Python's `logger.exception`).
pub fn log_engine_oom() {
    const SITE: &str = "/usr/local/lib/python3.12/dist-packages";
    tracing::error!(
        src = "core.py:1008",
        proc = "EngineCore",
        "EngineCore encountered a fatal error.\n\
         Traceback (most recent call last):\n\
         \x20 File \"{SITE}/vllm/v1/engine/core.py\", line 999, in run_engine_core\n\
         \x20   engine_core.run_busy_loop()\n\
         \x20 File \"{SITE}/vllm/v1/engine/core.py\", line 1026, in run_busy_loop\n\
         \x20   self._process_engine_step()\n\
         \x20 File \"{SITE}/vllm/v1/engine/core.py\", line 1059, in _process_engine_step\n\
         \x20   outputs, model_executed = self.step_fn()\n\
         \x20 File \"{SITE}/vllm/v1/engine/core.py\", line 391, in step\n\
         \x20   model_output = self.model_executor.execute_model(scheduler_output)\n\
         \x20 File \"{SITE}/vllm/v1/worker/gpu_model_runner.py\", line 2801, in execute_model\n\
         \x20   model_output = self._model_forward(\n\
         \x20 File \"{SITE}/torch/nn/modules/module.py\", line 1784, in _call_impl\n\
         \x20   return forward_call(*args, **kwargs)\n\
         {OOM_ERROR}"
    );
    tracing::error!(
        src = "async_llm.py:525",
        "AsyncLLM output_handler failed.\n\
         Traceback (most recent call last):\n\
         \x20 File \"{SITE}/vllm/v1/engine/async_llm.py\", line 477, in output_handler\n\
         \x20   outputs = await engine_core.get_output_async()\n\
         \x20 File \"{SITE}/vllm/v1/engine/core_client.py\", line 895, in get_output_async\n\
         \x20   raise self._format_exception(outputs) from None\n\
         vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack \
         trace (above) for the root cause."
    );
}

/// Flushes stdout and stderr and ends the process with exit code 1: the crash itself. Open
/// connections are cut wherever their streams are.
pub fn exit_after_crash() -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(1)
}

/// Sends the undelivered tokens of `seq`. Returns false when the client is gone.
fn deliver(
    seq: &mut Seq,
    at: Instant,
    finish_reason: Option<FinishReason>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> bool {
    let event = TokenEvent {
        first_index: seq.delivered,
        count: seq.generated - seq.delivered,
        finish_reason,
        at,
    };
    match seq.req.tokens.try_send(event) {
        Ok(()) => {
            seq.delivered = seq.generated;
            true
        }
        Err(TrySendError::Full(event)) => {
            if finish_reason.is_some() {
                // The request leaves the batch now; hand its last tokens over in the background.
                let tx = seq.req.tokens.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        _ = tx.send(event) => {}
                    }
                });
            }
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests;
