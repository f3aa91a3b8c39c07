//! Load generation for one point, in one of three modes:
//!
//! - `burst`: the seed's batch — N requests leave together, the next wave when all are
//!   done, W waves;
//! - `concurrency`: closed loop — N requests in flight, a new one leaves as soon as one
//!   finishes, until `requests` were sent or `duration_s` passed;
//! - `rate`: open loop — requests leave on the absolute timeline of a seeded
//!   [`RateSchedule`] whatever the server does.
//!
//! Every measured request runs as its own task (the load spreads over all cores) and keeps
//! its scheduled and actual send offsets, so a late client shows as send lag instead of
//! hiding in the latencies. Warm-up requests go first and are never recorded. The agent's
//! own CPU time during the load is measured so a saturated client can be called out.
//!
//! Submodules, what a point's load is made of: [`schedule`] (rate mode's arrival times),
//! [`prompt`] (exact-length prompts), [`tokenizer`] (local token counting), [`probe`]
//! (what the engine accepts), [`request`] (one measured request), [`sse`] (the stream
//! parser) and [`cpu`] (the agent's own CPU time).

pub mod chat_template;
pub mod clients;
pub mod conversation;
pub mod cpu;
pub mod dataset;
pub mod lengths;
pub mod pacer;
pub mod probe;
pub mod prompt;
pub mod request;
pub mod retry;
pub mod schedule;
pub mod sse;
pub mod tokenize_api;
pub mod tokenizer;
pub mod trace;
pub mod warmup;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::spec::{Arrival, Endpoint, LoadMode, TokenizerSource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::engine::telemetry::{MetricSample, spawn_scraper};
use crate::error::AgentError;
use crate::load::clients::{HttpClients, StreamClient};
use crate::load::conversation::{Conversations, Wire, drive_conversations};
use crate::load::cpu::cpu_time;
use crate::load::dataset::{DataFile, Dataset};
use crate::load::lengths::Lengths;
use crate::load::pacer::Pacer;
use crate::load::probe::{probe_extensions, resolve_endpoint};
use crate::load::prompt::{Filler, Prompt, TokenCounter, build_prompts_from, mix};
use crate::load::request::{
    ApiEndpoint, Extensions, PreparedRequest, RequestContext, RequestPlan, measure_prepared,
};
use crate::load::schedule::RateSchedule;
use crate::load::tokenizer::{LocalTokenizer, find_tokenizer_json};
use crate::load::trace::Trace;
use crate::load::warmup::{WarmupOutcome, wave_output_tps};
use crate::load::workload::{build_exact, build_from_dataset, build_requests};

/// Concurrency mode bounded only by time cycles through this many distinct prompts per
/// slot (the request count is unknown up front); bounds below and above.
const PROMPTS_PER_SLOT: usize = 8;
const MIN_PROMPT_POOL: usize = 64;
const MAX_PROMPT_POOL: usize = 4096;

/// How a point's load run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOutcome {
    pub endpoint: ApiEndpoint,
    /// Requests measured (successful or not), warm-up excluded.
    pub measured: u32,
    /// Prompts whose server-counted length differs from the target (or is unknown).
    pub inexact_prompts: u32,
    /// The engine's `/metrics` during the measured load.
    pub engine_metrics: Vec<MetricSample>,
    /// Request extensions the engine refused (see [`crate::load::probe`]).
    pub fallbacks: Vec<String>,
    /// The agent's CPU seconds (user + system, all threads) during the measured load.
    pub client_cpu_s: f64,
    /// Wall seconds of the measured load.
    pub load_wall_s: f64,
    /// Cores the agent could use.
    pub client_cores: u32,
    /// The converging warm-up, when the point asked for one (`[load.warmup]`).
    pub warmup: Option<WarmupOutcome>,
    /// The dataset or trace file the prompts came from.
    pub data_file: Option<pb::DataFileUse>,
}

/// Where a point's dataset and trace files may be read: the agent config's
/// `dataset_dirs`, and the largest file it reads (`max_dataset_bytes`).
#[derive(Debug, Clone, Default)]
pub struct DataDirs {
    pub dirs: Vec<std::path::PathBuf>,
    pub max_bytes: u64,
}

/// Runs `read` (blocking file I/O and parsing) on a blocking thread with the point's
/// dataset directories, the size cap and the file `name`.
async fn off_runtime<T: Send + 'static>(
    data: &DataDirs,
    name: &str,
    read: impl FnOnce(&[std::path::PathBuf], &str, u64) -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    let (dirs, max_bytes, name) = (data.dirs.clone(), data.max_bytes, name.to_string());
    tokio::task::spawn_blocking(move || read(&dirs, &name, max_bytes))
        .await
        .map_err(|e| AgentError::Dataset(format!("file reader task: {e}")))?
}

/// Reads a data file (a corpus).
async fn read_data_file(data: &DataDirs, name: &str) -> Result<DataFile, AgentError> {
    off_runtime(data, name, DataFile::read).await
}

/// Reads and parses a trace file.
async fn read_trace(
    data: &DataDirs,
    name: &str,
    max_model_len: u32,
) -> Result<(Trace, DataFile), AgentError> {
    off_runtime(data, name, move |dirs, name, max_bytes| {
        let file = DataFile::read(dirs, name, max_bytes)?;
        let text = std::str::from_utf8(&file.bytes)
            .map_err(|e| AgentError::Dataset(format!("{}: not UTF-8: {e}", file.path.display())))?;
        let trace = Trace::parse(name, text, max_model_len)?;
        Ok((trace, file))
    })
    .await
}

/// Opens a dataset file.
async fn open_dataset(data: &DataDirs, name: &str) -> Result<Dataset, AgentError> {
    off_runtime(data, name, Dataset::open).await
}

/// What the point records of a dataset, trace or corpus file it used.
fn data_file_use(name: &str, sha256: &str, skipped: usize) -> pb::DataFileUse {
    pb::DataFileUse {
        name: name.to_string(),
        sha256: sha256.to_string(),
        skipped: u32::try_from(skipped).unwrap_or(u32::MAX),
    }
}

/// `[load] requests` and `duration_s` when set (0: not set).
fn limits(load: &pb::LoadSpec) -> (Option<u32>, Option<Duration>) {
    let requests = (load.requests > 0).then_some(load.requests);
    let duration = (load.duration_s > 0.0 && load.duration_s.is_finite())
        .then(|| Duration::from_secs_f64(load.duration_s));
    (requests, duration)
}

/// A rate schedule with the point's arrival distribution and burstiness (0: Poisson's 1).
fn rate_schedule(
    load: &pb::LoadSpec,
    rate: f64,
    seed: u64,
    duration: Option<Duration>,
    max_requests: Option<u32>,
) -> Result<RateSchedule, AgentError> {
    let arrival = pb::Arrival::try_from(load.arrival_kind)
        .map(Arrival::from)
        .map_err(|_| AgentError::Engine(format!("unknown arrival {}", load.arrival_kind)))?;
    Ok(RateSchedule {
        rate,
        arrival,
        burstiness: if load.burstiness > 0.0 {
            load.burstiness
        } else {
            1.0
        },
        seed,
        duration,
        max_requests,
    })
}

/// The load of one point, decoded from its spec.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    Burst {
        batch: u32,
        waves: u32,
    },
    Concurrency {
        slots: u32,
        requests: Option<u32>,
        duration: Option<Duration>,
    },
    Rate(Vec<Duration>),
    /// `[load] stages` in rate mode: each stage's seeded schedule laid after the last,
    /// with the stage of every send.
    StagedRate {
        offsets: Vec<Duration>,
        stage_of: Vec<u32>,
    },
    /// `[load] stages` in concurrency mode: (stage end since the load's start, requests in
    /// flight during it).
    StagedConcurrency(Vec<(Duration, u32)>),
}

impl Plan {
    /// `trace`: a trace replay's send offsets (trace mode only).
    fn from_point(
        point: &pb::PointSpec,
        load: &pb::LoadSpec,
        trace: Option<Vec<Duration>>,
    ) -> Result<Plan, AgentError> {
        let mode = pb::LoadMode::try_from(load.load_mode)
            .map(LoadMode::from)
            .map_err(|_| AgentError::Engine(format!("unknown load mode {}", load.load_mode)))?;
        let (requests, duration) = limits(load);
        if !load.stages.is_empty() {
            return Self::staged(mode, load);
        }
        Ok(match mode {
            LoadMode::Burst => Plan::Burst {
                batch: point.batch_size,
                waves: load.waves.max(1),
            },
            LoadMode::Concurrency => Plan::Concurrency {
                slots: point.batch_size.max(1),
                requests,
                duration,
            },
            LoadMode::Rate => {
                if !(point.request_rate > 0.0 && point.request_rate.is_finite()) {
                    return Err(AgentError::Engine(format!(
                        "rate mode needs a positive request rate, got {}",
                        point.request_rate
                    )));
                }
                let seed = mix(load.seed, point.request_rate.to_bits());
                Plan::Rate(
                    rate_schedule(load, point.request_rate, seed, duration, requests)?.offsets(),
                )
            }
            LoadMode::Trace => {
                Plan::Rate(trace.ok_or_else(|| {
                    AgentError::Engine("trace mode needs a trace workload".into())
                })?)
            }
        })
    }

    /// A multi-stage plan: rate mode lays each stage's schedule (the sweep's arrival, a
    /// seed per stage) after the previous stage's end; concurrency mode keeps each stage's
    /// count in flight until the stage ends.
    fn staged(mode: LoadMode, load: &pb::LoadSpec) -> Result<Plan, AgentError> {
        let mut start = Duration::ZERO;
        let mut bounds = Vec::with_capacity(load.stages.len());
        for s in &load.stages {
            if !(s.duration_s.is_finite() && s.duration_s > 0.0) {
                return Err(AgentError::Engine(format!(
                    "a stage needs a positive duration, got {}",
                    s.duration_s
                )));
            }
            start += Duration::from_secs_f64(s.duration_s);
            bounds.push(start);
        }
        match mode {
            LoadMode::Rate => {
                let (mut offsets, mut stage_of) = (Vec::new(), Vec::new());
                let mut begin = Duration::ZERO;
                for (k, (s, end)) in load.stages.iter().zip(&bounds).enumerate() {
                    if !(s.rate > 0.0 && s.rate.is_finite()) {
                        return Err(AgentError::Engine(format!(
                            "rate stage {k} needs a positive rate, got {}",
                            s.rate
                        )));
                    }
                    let seed = mix(load.seed, s.rate.to_bits() ^ k as u64);
                    let length = Some(end.saturating_sub(begin));
                    let schedule = rate_schedule(load, s.rate, seed, length, None)?;
                    for offset in schedule.offsets() {
                        offsets.push(begin + offset);
                        stage_of.push(u32::try_from(k).unwrap_or(u32::MAX));
                    }
                    begin = *end;
                }
                Ok(Plan::StagedRate { offsets, stage_of })
            }
            LoadMode::Concurrency => Ok(Plan::StagedConcurrency(
                load.stages
                    .iter()
                    .zip(bounds)
                    .map(|(s, end)| (end, s.concurrency.max(1)))
                    .collect(),
            )),
            other => Err(AgentError::Engine(format!(
                "stages apply to rate and concurrency mode, not {}",
                other.as_str()
            ))),
        }
    }

    /// How many distinct prompts the measured load needs.
    fn prompts_needed(&self) -> usize {
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        match self {
            Plan::Burst { batch, waves } => n(*batch).saturating_mul(n(*waves)),
            Plan::Concurrency {
                requests: Some(r), ..
            } => n(*r),
            Plan::Concurrency { slots, .. } => n(*slots)
                .saturating_mul(PROMPTS_PER_SLOT)
                .clamp(MIN_PROMPT_POOL, MAX_PROMPT_POOL),
            Plan::Rate(offsets) | Plan::StagedRate { offsets, .. } => offsets.len(),
            Plan::StagedConcurrency(stages) => n(stages.iter().map(|s| s.1).max().unwrap_or(1))
                .saturating_mul(PROMPTS_PER_SLOT)
                .clamp(MIN_PROMPT_POOL, MAX_PROMPT_POOL),
        }
    }
}

/// The local tokenizer a point's prompts are counted with, by the spec's `tokenizer`
/// setting (`source`: the wire's `LoadSpec.tokenizer_source`, unspecified = `auto`, a value
/// this agent does not know is an error): `auto` uses the model's `tokenizer.json` when the
/// agent finds one (see [`find_tokenizer_json`]) and the engine's `/tokenize` otherwise;
/// `local` requires it; `server` never uses it.
pub fn local_tokenizer(
    source: i32,
    model: &str,
    model_paths: &BTreeMap<String, String>,
) -> Result<Option<LocalTokenizer>, AgentError> {
    let source = pb::TokenizerSource::try_from(source)
        .map(TokenizerSource::from)
        .map_err(|_| AgentError::Prompt(format!("unknown tokenizer source {source}")))?;
    let found = || find_tokenizer_json(model, model_paths);
    match source {
        TokenizerSource::Server => Ok(None),
        TokenizerSource::Auto => found().map(LocalTokenizer::from_file).transpose(),
        TokenizerSource::Local => match found() {
            Some(path) => LocalTokenizer::from_file(path).map(Some),
            None => Err(AgentError::Prompt(format!(
                "tokenizer = \"local\" but no tokenizer.json for {model:?} (looked in the \
                 agent's model_paths, the model folder and the Hugging Face cache)"
            ))),
        },
    }
}

/// Runs one point against a ready engine; each measured request's record is sent to
/// `records` as soon as it completes. Prompts are counted with `tokenizer` when given,
/// otherwise through the engine's `/tokenize`.
#[allow(clippy::too_many_arguments)]
pub async fn run_point(
    clients: &HttpClients,
    base_url: &str,
    point: &pb::PointSpec,
    records: &mpsc::Sender<RequestRecord>,
    metrics_interval: Duration,
    tokenizer: Option<LocalTokenizer>,
    data: &DataDirs,
    cancel: &CancellationToken,
) -> Result<LoadOutcome, AgentError> {
    let load = point.load.clone().unwrap_or_default();
    let workload = point.workload.clone().unwrap_or_default();
    let engine = point.engine.clone().unwrap_or_default();
    let model = engine.served_model_name.clone();
    let deadline = Instant::now() + Duration::from_secs(u64::from(load.timeout_s.max(1)));
    // A trace workload's file decides the schedule and the lengths.
    let trace = if workload.trace.is_empty() {
        None
    } else {
        let (trace, file) = read_trace(data, &workload.trace, engine.max_model_len).await?;
        let (requests, window) = limits(&load);
        let (offsets, lengths) = trace.replay(workload.time_scale, requests, window);
        // The record of the file, not its bytes, goes on with the point.
        let used = data_file_use(&workload.trace, &file.sha256, trace.skipped);
        info!(
            trace = %workload.trace,
            requests = offsets.len(),
            skipped = trace.skipped,
            time_scale = workload.time_scale,
            "trace replay"
        );
        Some((offsets, lengths, used))
    };
    let plan = Plan::from_point(point, &load, trace.as_ref().map(|t| t.0.clone()))?;

    let client = &clients.probes;
    let streams = &clients.streams;
    let wanted = Endpoint::from(load.endpoint_kind());
    let endpoint = resolve_endpoint(client, base_url, &model, wanted).await?;
    let accepted = probe_extensions(client, base_url, &model, endpoint).await?;

    let warmups = usize::try_from(load.warmup_requests).unwrap_or(0);
    let wave_size = usize::try_from(point.batch_size.max(1)).unwrap_or(1);
    let warmup_waves = if load.warmup_max_waves >= 2 {
        usize::try_from(load.warmup_max_waves).unwrap_or(0)
    } else {
        0
    };
    // Converging warm-up waves each get prompts of their own (a repeated prompt would hit
    // a prefix cache and speed later waves up): after the warm-up requests, before the
    // measured ones.
    let warmups = warmups.saturating_add(wave_size.saturating_mul(warmup_waves));
    let needed = plan.prompts_needed();
    let seed = mix(
        load.seed,
        (u64::from(workload.input_tokens) << 32)
            ^ u64::from(point.batch_size)
            ^ point.request_rate.to_bits(),
    );
    let mut counter =
        TokenCounter::new(client.clone(), base_url, &model).with_engine_kind(engine.engine_kind());
    if let Some(local) = tokenizer {
        info!(
            tokenizer = local.source(),
            "prompts counted with a local tokenizer"
        );
        counter = counter.with_local(local);
    }
    // A corpus fills synthetic prompts with its words.
    let (filler, corpus_use) = if workload.corpus.is_empty() {
        (Filler::Common, None)
    } else {
        let file = read_data_file(data, &workload.corpus).await?;
        let text = String::from_utf8_lossy(&file.bytes);
        let filler = Filler::corpus(&text);
        if matches!(filler, Filler::Common) {
            return Err(AgentError::Dataset(format!(
                "corpus {}: holds no words",
                workload.corpus
            )));
        }
        (
            filler,
            Some(data_file_use(&workload.corpus, &file.sha256, 0)),
        )
    };
    let built = async {
        if let Some((_, lengths, used)) = &trace {
            // Warm-ups take the trace's first lengths, the measured requests all of them.
            let all: Vec<Lengths> = lengths
                .iter()
                .cycle()
                .take(warmups)
                .chain(lengths)
                .copied()
                .collect();
            let prompts = build_exact(&filler, &counter, endpoint, &workload, &all, seed).await?;
            Ok::<_, AgentError>((prompts, Some(used.clone())))
        } else if !workload.dataset.is_empty() {
            let dataset = open_dataset(data, &workload.dataset).await?;
            let built = build_from_dataset(
                &counter,
                endpoint,
                &workload,
                &dataset,
                warmups + needed,
                seed,
                engine.max_model_len,
            )
            .await?;
            let skipped = dataset.skipped_malformed + built.too_long;
            let used = data_file_use(&workload.dataset, &dataset.sha256, skipped);
            info!(dataset = %used.name, sha256 = %used.sha256, skipped = used.skipped, "dataset prompts");
            Ok((built.prompts, Some(used)))
        } else if workload.turns >= 2 {
            // A conversation's user messages: `input_tokens` of content each (the
            // conversation around them is counted whole before each turn).
            let mut prompts = build_prompts_from(
                &filler,
                &counter,
                ApiEndpoint::Completions,
                workload.input_tokens,
                warmups + needed,
                seed,
            )
            .await?;
            for p in &mut prompts {
                p.target_output = workload.output_tokens;
            }
            Ok((prompts, None))
        } else {
            let prompts = build_requests(
                &filler,
                &counter,
                endpoint,
                &workload,
                warmups + needed,
                seed,
            )
            .await?;
            Ok((prompts, None))
        }
    };
    let (prompts, data_file) = tokio::select! {
        p = built => p?,
        () = cancel.cancelled() => return Err(AgentError::Cancelled),
    };
    let data_file = data_file.or(corpus_use);
    let inexact = prompts
        .iter()
        .skip(warmups)
        .filter(|p| !p.is_exact(p.target_input))
        .count();
    let mut fallbacks = accepted.fallbacks;
    if prompts.iter().any(|p| p.counted_tokens.is_none()) {
        fallbacks.push(
            "no /tokenize and no local tokenizer: prompts sized at one word per token".into(),
        );
    }
    if inexact > 0 {
        warn!(
            inexact,
            target = workload.input_tokens,
            "prompts whose server-counted length is not the target"
        );
    }
    let template = PlanTemplate {
        endpoint,
        model,
        extensions: accepted.extensions,
    };
    // Every body is encoded before the load starts: sending then costs no serialisation.
    // Conversations send their turns themselves: only their warm-ups are encoded here.
    let encoded = if workload.turns >= 2 {
        warmups
    } else {
        prompts.len()
    };
    let prepared = prompts
        .iter()
        .take(encoded)
        .map(|p| PreparedRequest::new(base_url, template.plan(0, 0, p, Duration::ZERO)))
        .collect::<Result<Vec<_>, _>>()?;
    let user_messages: Vec<String> = if workload.turns >= 2 {
        prompts
            .iter()
            .skip(warmups)
            .map(|p| p.text.clone())
            .collect()
    } else {
        Vec::new()
    };
    drop(prompts);
    let (warmup_prompts, measured_prompts) = prepared.split_at(warmups.min(prepared.len()));
    let (warmup_prompts, wave_prompts) = warmup_prompts.split_at(
        warmup_prompts
            .len()
            .saturating_sub(wave_size.saturating_mul(warmup_waves)),
    );
    let idle_timeout = Duration::from_secs_f64(if load.idle_timeout_s > 0.0 {
        load.idle_timeout_s
    } else {
        300.0
    });

    // Warm-up requests: sent together, awaited, never recorded.
    if !warmup_prompts.is_empty() {
        for r in run_wave(streams, warmup_prompts, deadline, idle_timeout, cancel).await {
            if !r.success() {
                warn!(error = %r.error, "warm-up request failed");
            }
        }
    }

    let warmup = if warmup_waves >= 2 {
        let mut outcome = WarmupOutcome::new(load.warmup_max_waves, load.warmup_tolerance);
        for wave in wave_prompts.chunks(wave_size) {
            let records = run_wave(streams, wave, deadline, idle_timeout, cancel).await;
            if cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            let tps = wave_output_tps(&records);
            info!(wave = outcome.waves() + 1, output_tps = tps, "warm-up wave");
            if outcome.push(tps) {
                break;
            }
        }
        if !outcome.converged {
            warn!(waves = outcome.waves(), tolerance = outcome.tolerance, tps = ?outcome.wave_output_tps, "warm-up did not converge before its cap");
        }
        Some(outcome)
    } else {
        None
    };

    let stop_scraper = CancellationToken::new();
    let scraper = spawn_scraper(
        client.clone(),
        base_url.to_string(),
        metrics_interval,
        stop_scraper.clone(),
    )
    .await;
    let cpu_before = cpu_time();
    let origin = Instant::now();
    let mut launcher = Launcher::new(
        streams,
        origin,
        deadline,
        idle_timeout,
        cancel,
        records.clone(),
    );
    let sent = if workload.turns >= 2 {
        let Plan::Concurrency {
            slots,
            requests,
            duration,
        } = &plan
        else {
            return Err(AgentError::Engine(
                "multi-turn conversations run in concurrency mode".into(),
            ));
        };
        let conversations = Conversations {
            users: *slots,
            turns: workload.turns,
            think: Duration::from_millis(u64::from(workload.think_time_ms)),
            requests: *requests,
            duration: *duration,
            messages: user_messages,
            output_tokens: workload.output_tokens,
            model: template.model.clone(),
            extensions: template.extensions,
        };
        let wire = Wire {
            client: streams,
            base_url,
            counter: &counter,
            ctx: launcher.ctx,
            cancel,
            sink: records,
        };
        drive_conversations(&conversations, &wire).await
    } else {
        drive(&plan, measured_prompts, &mut launcher, cancel).await
    };
    launcher.finish().await;
    let load_wall_s = origin.elapsed().as_secs_f64();
    let client_cpu_s = match (cpu_before, cpu_time()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    stop_scraper.cancel();
    let engine_metrics = scraper.await.unwrap_or_default();
    if engine_metrics.is_empty() {
        fallbacks.push(
            "no engine metrics (no /metrics, or none of the known names): the engine's view of \
             requests in flight was not checked"
                .into(),
        );
    }
    let measured = sent?;
    Ok(LoadOutcome {
        endpoint,
        measured,
        inexact_prompts: u32::try_from(inexact).unwrap_or(u32::MAX),
        engine_metrics,
        fallbacks,
        client_cpu_s,
        load_wall_s,
        client_cores: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        warmup,
        data_file,
    })
}

/// Sends `prompts` together as one unrecorded wave and returns its records when all are
/// done.
async fn run_wave(
    client: &StreamClient,
    prompts: &[PreparedRequest],
    deadline: Instant,
    idle_timeout: Duration,
    cancel: &CancellationToken,
) -> Vec<RequestRecord> {
    let (sink, mut drain) = mpsc::channel(prompts.len().max(1));
    let mut launcher = Launcher::new(client, Instant::now(), deadline, idle_timeout, cancel, sink);
    for (i, p) in prompts.iter().enumerate() {
        launcher.launch(at(p, index(i), 0, Duration::ZERO), None);
    }
    launcher.finish().await;
    drop(launcher);
    let mut records = Vec::with_capacity(prompts.len());
    while let Some(r) = drain.recv().await {
        records.push(r);
    }
    records
}

/// Sends the measured requests of `plan`; returns how many were sent.
async fn drive(
    plan: &Plan,
    prompts: &[PreparedRequest],
    launcher: &mut Launcher,
    cancel: &CancellationToken,
) -> Result<u32, AgentError> {
    let prompt = |i: usize| prompts.get(i % prompts.len().max(1));
    let mut sent = 0usize;
    match plan {
        Plan::Burst { batch, waves } => {
            let batch = usize::try_from(*batch).unwrap_or(0);
            for wave in 0..*waves {
                if cancel.is_cancelled() {
                    return Err(AgentError::Cancelled);
                }
                let start = launcher.now_offset();
                for _ in 0..batch {
                    let Some(p) = prompt(sent) else { break };
                    launcher.launch(at(p, index(sent), wave, start), None);
                    sent += 1;
                }
                // The next wave leaves when this one is done.
                launcher.finish().await;
            }
        }
        Plan::Concurrency {
            slots,
            requests,
            duration,
        } => {
            let slots = Arc::new(Semaphore::new(usize::try_from(*slots).unwrap_or(1)));
            let end = duration.map(|d| launcher.ctx.origin + d);
            let limit = requests.map_or(usize::MAX, |r| usize::try_from(r).unwrap_or(usize::MAX));
            let fill = Fill {
                slots: &slots,
                end,
                limit,
                stage: 0,
            };
            fill.run(&mut sent, &prompt, launcher, cancel).await?;
        }
        Plan::Rate(offsets) => {
            sent = send_on_time(offsets, |_| 0, &prompt, launcher, cancel).await?;
        }
        Plan::StagedRate { offsets, stage_of } => {
            let stage = |i: usize| stage_of.get(i).copied().unwrap_or(0);
            sent = send_on_time(offsets, stage, &prompt, launcher, cancel).await?;
        }
        Plan::StagedConcurrency(stages) => {
            // One pool of slots, resized at each stage start: added at once when a stage
            // asks for more, withdrawn as requests finish when it asks for fewer (in-flight
            // requests are never cut).
            let slots = Arc::new(Semaphore::new(0));
            let mut current = 0u32;
            for (k, &(end, want)) in stages.iter().enumerate() {
                if want > current {
                    slots.add_permits(usize::try_from(want - current).unwrap_or(0));
                } else if want < current {
                    let pool = Arc::clone(&slots);
                    let excess = current - want;
                    tokio::spawn(async move {
                        if let Ok(p) = pool.acquire_many_owned(excess).await {
                            p.forget();
                        }
                    });
                }
                current = want;
                let fill = Fill {
                    slots: &slots,
                    end: Some(launcher.ctx.origin + end),
                    limit: usize::MAX,
                    stage: u32::try_from(k).unwrap_or(u32::MAX),
                };
                fill.run(&mut sent, &prompt, launcher, cancel).await?;
            }
        }
    }
    Ok(u32::try_from(sent).unwrap_or(u32::MAX))
}

/// Closed-loop sending: a request leaves whenever one of `slots` is free, until `end`
/// (when given) or `limit` requests in all, each as `stage`'s wave.
struct Fill<'s> {
    slots: &'s Arc<Semaphore>,
    end: Option<Instant>,
    limit: usize,
    stage: u32,
}

impl Fill<'_> {
    /// Sends from request `*sent` on, counting them in `sent`.
    async fn run<'a>(
        &self,
        sent: &mut usize,
        prompt: &impl Fn(usize) -> Option<&'a PreparedRequest>,
        launcher: &mut Launcher,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        while *sent < self.limit {
            let permit = tokio::select! {
                p = Arc::clone(self.slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = sleep_until_opt(self.end) => break,
                () = cancel.cancelled() => return Err(AgentError::Cancelled),
            };
            if self.end.is_some_and(|e| Instant::now() >= e) {
                break;
            }
            let Some(p) = prompt(*sent) else { break };
            let scheduled = launcher.now_offset();
            launcher.launch(at(p, index(*sent), self.stage, scheduled), Some(permit));
            *sent += 1;
        }
        Ok(())
    }
}

/// Sends request i at `offsets[i]` after the load's origin, on the pacer's sub-millisecond
/// clock ([`Pacer`]), as `stage(i)`'s wave; returns how many were sent.
async fn send_on_time<'a>(
    offsets: &[Duration],
    stage: impl Fn(usize) -> u32,
    prompt: &impl Fn(usize) -> Option<&'a PreparedRequest>,
    launcher: &mut Launcher,
    cancel: &CancellationToken,
) -> Result<usize, AgentError> {
    let mut pacer = Pacer::start(launcher.ctx.origin.into_std(), offsets.to_vec())?;
    let mut sent = 0usize;
    loop {
        let i = tokio::select! {
            i = pacer.due.recv() => match i {
                Some(i) => i,
                None => break,
            },
            () = cancel.cancelled() => {
                pacer.stop();
                return Err(AgentError::Cancelled);
            }
        };
        let (Some(p), Some(&offset)) = (prompt(i), offsets.get(i)) else {
            break;
        };
        launcher.launch(at(p, index(i), stage(i), offset), None);
        sent = i + 1;
    }
    Ok(sent)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A prepared request numbered and scheduled for one send.
fn at(prepared: &PreparedRequest, index: u32, wave: u32, scheduled: Duration) -> PreparedRequest {
    let mut out = prepared.clone();
    out.plan.index = index;
    out.plan.wave = wave;
    out.plan.scheduled_offset = scheduled;
    out
}

fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The parts of a [`RequestPlan`] every request of a point shares.
#[derive(Debug, Clone)]
struct PlanTemplate {
    endpoint: ApiEndpoint,
    model: String,
    extensions: Extensions,
}

impl PlanTemplate {
    fn plan(&self, index: u32, wave: u32, prompt: &Prompt, scheduled: Duration) -> RequestPlan {
        RequestPlan {
            index,
            wave,
            endpoint: self.endpoint,
            model: self.model.clone(),
            prompt: prompt.text.clone(),
            messages: prompt.messages.clone(),
            target_input_tokens: prompt.target_input,
            target_output_tokens: prompt.target_output,
            scheduled_offset: scheduled,
            extensions: self.extensions,
        }
    }
}

/// Starts measured requests as tasks and waits for them.
struct Launcher {
    client: StreamClient,
    ctx: RequestContext,
    cancel: CancellationToken,
    sink: mpsc::Sender<RequestRecord>,
    tasks: JoinSet<()>,
}

impl Launcher {
    fn new(
        client: &StreamClient,
        origin: Instant,
        deadline: Instant,
        idle_timeout: Duration,
        cancel: &CancellationToken,
        sink: mpsc::Sender<RequestRecord>,
    ) -> Self {
        Launcher {
            client: client.clone(),
            ctx: RequestContext {
                origin,
                deadline,
                idle_timeout,
            },
            cancel: cancel.clone(),
            sink,
            tasks: JoinSet::new(),
        }
    }

    fn now_offset(&self) -> Duration {
        Instant::now().saturating_duration_since(self.ctx.origin)
    }

    /// Sends one request in its own task; its record goes to the sink when it completes,
    /// after `slot` (a concurrency permit) is released so the next request is not held up.
    fn launch(&mut self, request: PreparedRequest, slot: Option<OwnedSemaphorePermit>) {
        let client = self.client.clone();
        let ctx = self.ctx;
        let cancel = self.cancel.clone();
        let sink = self.sink.clone();
        self.tasks.spawn(
            async move {
                let record = measure_prepared(&client, &request, &ctx, &cancel).await;
                drop(slot);
                if sink.send(record).await.is_err() {
                    warn!("record sink closed; a measured record was dropped");
                }
            }
            .in_current_span(),
        );
    }

    /// Waits for every launched request.
    async fn finish(&mut self) {
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                warn!(error = %e, "request task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;
