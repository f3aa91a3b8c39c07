//! The point summary types (what a point's records and engine samples come to) and their
//! wire form.

use fleetbench_proto::pb;
use fleetbench_proto::spec::Slo;

use crate::summary::percentiles::Percentiles;

/// What the controller knows about a finished point attempt, besides its records.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct PointMeta {
    pub sweep_id: String,
    pub point_id: String,
    pub point_index: u32,
    pub attempt: u32,
    pub model: String,
    pub gpus: u32,
    pub host: String,
    pub agent: String,
    pub batch_size: u32,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// "done" | "failed" | "cancelled" | "skipped"
    pub state: String,
    pub error: String,
    pub endpoint: String,
    pub started_unix_us: i64,
    pub finished_unix_us: i64,
    /// "burst" | "concurrency" | "rate"
    pub mode: String,
    /// Rate mode: the requested rate in requests per second; 0 otherwise.
    pub request_rate: f64,
    /// The agent's own resource use during the load.
    pub client: ClientStats,
    /// Request extensions the engine refused (output length or usage not exact).
    pub fallbacks: Vec<String>,
    /// The converging warm-up before the measured load (no waves: none).
    #[serde(default)]
    pub warmup: WarmupStats,
    /// The GPUs the engine held, as the agent's inventory names them (distinct models
    /// joined with ` + `; empty without GPUs), and the host's GPU driver.
    #[serde(default)]
    pub gpu_model: String,
    #[serde(default)]
    pub gpu_driver: String,
    /// The rest of what identifies the hardware the point ran on.
    #[serde(default)]
    pub hardware: Hardware,
    /// The sweep's `[slo]`, which the point is judged against (`None`: no SLO).
    #[serde(default)]
    pub slo: Option<Slo>,
    /// The workload described (`512/128`, `normal 512±128/128±32`, `512/128 prefix 4x384`,
    /// `dataset chat.jsonl/data`); `input_tokens`/`output_tokens` are its means.
    #[serde(default)]
    pub workload: String,
    /// Dataset and trace workloads: the SHA-256 of the file the agent read (empty for
    /// synthetic prompts) and the entries it skipped (malformed, or too long for
    /// `max_model_len`).
    #[serde(default)]
    pub data_sha256: String,
    #[serde(default)]
    pub data_skipped: u32,
    /// A multi-stage point (`[load] stages`): each stage's duration in seconds and its
    /// load (rate mode: requests/s; concurrency mode: requests in flight); the requests'
    /// `wave` is their stage. Empty for other points.
    #[serde(default)]
    pub stage_durations_s: Vec<f64>,
    #[serde(default)]
    pub stage_loads: Vec<f64>,
}

/// What identifies a point's hardware beyond the GPU model and driver, from the agent's
/// inventory at registration: the held GPUs' vendor, memory and PCI bus ids, and the
/// host's CPU model. Empty (or 0) where the inventory did not say.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Hardware {
    /// `nvidia`, `intel`, … (distinct vendors of the held GPUs, joined with ` + `).
    pub gpu_vendor: String,
    /// Memory of one held GPU in GiB (the smallest when they differ).
    pub gpu_memory_gib: f64,
    /// PCI bus ids of the held GPUs in index order, comma-separated.
    pub gpu_pci_bus_ids: String,
    /// The host's CPU model (`/proc/cpuinfo`'s model name).
    pub cpu_model: String,
}

/// A point's converging warm-up: each wave's output throughput (tokens/s), and whether
/// the last two agreed within the tolerance before the cap.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct WarmupStats {
    pub wave_output_tps: Vec<f64>,
    pub converged: bool,
    pub tolerance: f64,
}

impl WarmupStats {
    pub fn waves(&self) -> u32 {
        u32::try_from(self.wave_output_tps.len()).unwrap_or(u32::MAX)
    }
}

/// The load generator's CPU use during a point's measured load.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ClientStats {
    /// CPU seconds (user + system, all threads).
    pub cpu_s: f64,
    /// Wall seconds of the measured load.
    pub wall_s: f64,
    /// Cores the agent could use.
    pub cores: u32,
}

impl ClientStats {
    /// Average cores busy: CPU seconds / wall seconds (0 without a wall time).
    pub fn cpu_cores(&self) -> f64 {
        if self.wall_s > 0.0 {
            self.cpu_s / self.wall_s
        } else {
            0.0
        }
    }
}

/// The summary of one point attempt (definitions in the module docs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PointSummary {
    pub meta: PointMeta,
    pub completed: u32,
    pub failed: u32,
    pub duration_s: f64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Per-request output speed: output tokens / E2EL, in tokens per second.
    pub output_speed: Percentiles,
    pub ttft_s: Percentiles,
    pub tpot_s: Percentiles,
    pub itl_s: Percentiles,
    pub e2el_s: Percentiles,
    /// What the engine reported about itself while the point ran.
    pub server: ServerStats,
    /// Completed requests whose input length, as the server counted it
    /// (`usage.prompt_tokens`), is not the target (or was not reported).
    pub input_len_mismatches: u32,
    /// Completed requests whose output length (`usage.completion_tokens`) is not the target.
    pub output_len_mismatches: u32,
    /// Requests sent per second over the send span: (sent − 1) / (last send − first send),
    /// on the agent's clock; 0 with fewer than two requests.
    pub achieved_rate: f64,
    /// Time-averaged requests in flight while requests were being sent (from the first
    /// send to the last), from each request's [send, send + E2EL] interval.
    pub achieved_concurrency: f64,
    /// Actual − scheduled send time of every measured request, in seconds.
    pub send_lag_s: Percentiles,
    /// Requests in flight as the client and as the engine saw them at the engine's
    /// scrapes; `None` with too few scrapes during the load.
    pub in_flight: Option<InFlight>,
    /// `valid`, or why the point did not measure what it asked for.
    pub verdict: String,
    /// With an `[slo]`: good requests per second (see `summary::slo`); `None` without one.
    #[serde(default)]
    pub goodput: Option<f64>,
    /// With an `[slo]`: the share of measured requests that met every objective.
    #[serde(default)]
    pub slo_attainment: Option<f64>,
    /// With an `[slo]`: `met` or `missed: …`; empty without one.
    #[serde(default)]
    pub slo_verdict: String,
}

impl PointSummary {
    /// Whether the point met its SLO (`None`: the sweep has none).
    pub fn slo_met(&self) -> Option<bool> {
        self.meta
            .slo
            .is_some()
            .then(|| self.slo_verdict == crate::summary::slo::SLO_MET)
    }
}

/// The engine's view of a point, from its Prometheus `/metrics` scraped during the load:
/// the most requests it ran and queued at once, its peak KV-cache use (0..1), and the
/// preemptions during the point (counter increase). `None` when the engine had no metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerStats {
    pub running_max: Option<f64>,
    pub waiting_max: Option<f64>,
    pub kv_cache_usage_max: Option<f64>,
    pub preemptions: Option<f64>,
    /// Prompt tokens the engine looked up in its prefix cache during the point, and those
    /// it found (vLLM's `vllm:prefix_cache_queries` / `vllm:prefix_cache_hits` counter
    /// increases); `None` without those counters.
    #[serde(default)]
    pub prefix_cache_queries: Option<f64>,
    #[serde(default)]
    pub prefix_cache_hits: Option<f64>,
}

/// Requests in flight at the moments the engine was scraped, over the scrapes taken while
/// the client had at least one request out: the most the client had out (sent, not yet
/// finished) and the most the engine reported (`vllm:num_requests_running` +
/// `vllm:num_requests_waiting`). Peaks, not means: an engine updates its gauges only when a
/// step ends, so during a long prefill step (seconds on a CPU engine) it reports the
/// previous step's counts, which drags a mean down but not the peak. The engine peaking
/// lower means requests waited before they reached it (client or network); higher means
/// requests that are not this point's (a shared engine).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InFlight {
    pub scrapes: usize,
    pub client_peak: f64,
    pub server_peak: f64,
}

fn to_pb_percentiles(p: Percentiles) -> pb::Percentiles {
    pb::Percentiles {
        mean: p.mean,
        p50: p.p50,
        p90: p.p90,
        p99: p.p99,
    }
}

impl From<&PointSummary> for pb::PointSummary {
    fn from(s: &PointSummary) -> Self {
        let m = &s.meta;
        pb::PointSummary {
            sweep_id: m.sweep_id.clone(),
            point_id: m.point_id.clone(),
            point_index: m.point_index,
            model: m.model.clone(),
            gpus: m.gpus,
            host: m.host.clone(),
            agent: m.agent.clone(),
            batch_size: m.batch_size,
            input_tokens: m.input_tokens,
            output_tokens: m.output_tokens,
            completed: s.completed,
            failed: s.failed,
            duration_s: s.duration_s,
            request_throughput: s.request_throughput,
            output_throughput: s.output_throughput,
            total_token_throughput: s.total_token_throughput,
            per_request_output_speed_mean: s.output_speed.mean,
            ttft_s: Some(to_pb_percentiles(s.ttft_s)),
            tpot_s: Some(to_pb_percentiles(s.tpot_s)),
            itl_s: Some(to_pb_percentiles(s.itl_s)),
            e2el_s: Some(to_pb_percentiles(s.e2el_s)),
            state: m.state.clone(),
            error: m.error.clone(),
            endpoint: m.endpoint.clone(),
            server_running_max: s.server.running_max,
            server_waiting_max: s.server.waiting_max,
            server_kv_cache_usage_max: s.server.kv_cache_usage_max,
            server_preemptions: s.server.preemptions,
            input_len_mismatches: s.input_len_mismatches,
            output_len_mismatches: s.output_len_mismatches,
            verdict: s.verdict.clone(),
            mode: m.mode.clone(),
            request_rate: m.request_rate,
            achieved_rate: s.achieved_rate,
            achieved_concurrency: s.achieved_concurrency,
            send_lag_s: Some(to_pb_percentiles(s.send_lag_s)),
            client_cpu_cores: m.client.cpu_cores(),
            client_cores: m.client.cores,
            fallbacks: m.fallbacks.clone(),
            in_flight_client_peak: s.in_flight.map(|f| f.client_peak),
            in_flight_engine_peak: s.in_flight.map(|f| f.server_peak),
            warmup_waves: m.warmup.waves(),
            warmup_converged: m.warmup.converged,
            warmup_last_output_tps: m.warmup.wave_output_tps.last().copied().unwrap_or(0.0),
            gpu_model: m.gpu_model.clone(),
            gpu_driver: m.gpu_driver.clone(),
            gpu_vendor: m.hardware.gpu_vendor.clone(),
            gpu_memory_gib: m.hardware.gpu_memory_gib,
            gpu_pci_bus_ids: m.hardware.gpu_pci_bus_ids.clone(),
            cpu_model: m.hardware.cpu_model.clone(),
            goodput: s.goodput,
            slo_attainment: s.slo_attainment,
            slo_verdict: s.slo_verdict.clone(),
            slo: m.slo.as_ref().map(Slo::describe).unwrap_or_default(),
            server_prefix_cache_queries: s.server.prefix_cache_queries,
            server_prefix_cache_hits: s.server.prefix_cache_hits,
            workload: m.workload.clone(),
            data_sha256: m.data_sha256.clone(),
            data_skipped: m.data_skipped,
        }
    }
}
