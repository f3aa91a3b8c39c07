//! Benchmarks the agent's load generator against vllm-sim's zero-cost timing modes, where
//! the ground truth is known: the numbers the issue's "done when" asks for.
//!
//! ```text
//! cargo build --release -p fleetbench-sim -p fleetbench-agent --bins --examples
//! ulimit -n 65536
//! target/release/examples/loadbench exact --streams 256     # TTFT/ITL error vs truth
//! target/release/examples/loadbench exact --streams 2048
//! target/release/examples/loadbench fast --streams 1000     # content chunks per second
//! target/release/examples/loadbench hold --streams 4096     # peak RSS with 4,096 streams
//! target/release/examples/loadbench rate --rate 500 --duration 20
//! target/release/examples/loadbench trace --rate 200 --duration 20  # replay send lag
//! target/release/examples/loadbench trace --file azure_conv.csv --requests 5000
//! ```
//!
//! Each scenario starts `vllm-sim` (found next to this binary's folder, or `--sim`) as its
//! own process on a free port, drives it through the same `load::run_point` the agent
//! uses, and prints one JSON object of measurements. The load generator runs in this
//! process, so the peak RSS it reports (`VmHWM`) is the load generator's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use fleetbench_agent::load::tokenizer::LocalTokenizer;
use fleetbench_agent::load::{LoadOutcome, run_point};
use fleetbench_proto::pb;
use fleetbench_proto::record::RequestRecord;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// The vllm-sim binary (default: next to this example's folder).
    #[arg(long, global = true)]
    sim: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Exact schedule: compare measured TTFT and ITL with the simulator's schedule.
    Exact {
        #[arg(long, default_value_t = 256)]
        streams: u32,
        /// rate: Poisson arrivals at streams / request lifetime, so `streams` are in flight
        /// on average with independent timelines (steady state); burst: `streams` requests
        /// leave together per wave, every stream's tokens due in the same millisecond (the
        /// worst case); concurrency: `streams` slots, `waves` × `streams` requests.
        #[arg(long, default_value = "rate")]
        mode: String,
        /// rate mode: seconds of arrivals.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 50.0)]
        ttft_ms: f64,
        #[arg(long, default_value_t = 10.0)]
        itl_ms: f64,
        #[arg(long, default_value_t = 64)]
        output: u32,
        #[arg(long, default_value_t = 3)]
        waves: u32,
    },
    /// Zero-cost tokens as fast as possible: content chunks per second the client takes.
    Fast {
        #[arg(long, default_value_t = 1000)]
        streams: u32,
        #[arg(long, default_value_t = 2000)]
        output: u32,
    },
    /// Many long-lived streams at once: peak RSS of the load generator.
    Hold {
        #[arg(long, default_value_t = 4096)]
        streams: u32,
        #[arg(long, default_value_t = 100)]
        output: u32,
        #[arg(long, default_value_t = 50.0)]
        itl_ms: f64,
    },
    /// Open-loop rate: achieved rate and send lag.
    Rate {
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        #[arg(long, default_value = "constant")]
        arrival: String,
        #[arg(long, default_value_t = 16)]
        output: u32,
    },
    /// Trace replay (`[load] mode = "trace"`): send lag on a trace's own timeline. Without
    /// `--file`, a seeded Poisson trace of `rate` arrivals/s over `duration` seconds with
    /// inputs of 16..=79 and outputs of 8..=23 tokens.
    Trace {
        /// A trace file (CSV, e.g. the Azure LLM inference trace, or JSONL).
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Requests replayed, at most (0: all).
        #[arg(long, default_value_t = 0)]
        requests: u32,
    },
}

const INPUT_TOKENS: u32 = 32;

/// A seeded Poisson trace (see [`Scenario::Trace`]) as CSV.
fn synthetic_trace(rate: f64, duration: f64) -> String {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::from("arrival_s,input_tokens,output_tokens\n");
    let mut t = 0.0;
    while t < duration {
        let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
        out.push_str(&format!(
            "{t:.6},{},{}\n",
            16 + next() % 64,
            8 + next() % 16
        ));
        t += -(1.0 - u).ln() / rate;
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (old, new) = fleetbench_agent::raise_open_file_limit()?;
    eprintln!("open-file limit {old} -> {new}");
    let sim_bin = match args.sim {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("vllm-sim"))
            .context("no folder for vllm-sim")?,
    };
    let scenario = args.scenario;
    let sim_args: Vec<String> = match &scenario {
        Scenario::Exact {
            ttft_ms, itl_ms, ..
        } => vec![
            "--sim-timing".into(),
            "exact".into(),
            "--sim-ttft-ms".into(),
            ttft_ms.to_string(),
            "--sim-itl-ms".into(),
            itl_ms.to_string(),
            // Ground truth: when each frame actually left the simulator.
            "--sim-trace-requests".into(),
            "1000000".into(),
        ],
        Scenario::Hold { itl_ms, .. } => vec![
            "--sim-timing".into(),
            "exact".into(),
            "--sim-ttft-ms".into(),
            itl_ms.to_string(),
            "--sim-itl-ms".into(),
            itl_ms.to_string(),
        ],
        Scenario::Fast { .. } | Scenario::Rate { .. } | Scenario::Trace { .. } => {
            vec!["--sim-timing".into(), "fast".into()]
        }
    };
    // A trace scenario's file, in a folder of its own (the agent reads traces only from
    // its dataset folders).
    let data_dir = std::env::temp_dir().join(format!("loadbench-trace-{}", std::process::id()));
    let data = match &scenario {
        Scenario::Trace {
            file,
            rate,
            duration,
            ..
        } => {
            std::fs::create_dir_all(&data_dir)?;
            let text = match file {
                Some(f) => std::fs::read_to_string(f).with_context(|| f.display().to_string())?,
                None => synthetic_trace(*rate, *duration),
            };
            std::fs::write(data_dir.join("trace.csv"), text)?;
            fleetbench_agent::load::DataDirs {
                dirs: vec![data_dir.clone()],
                max_bytes: 1 << 30,
            }
        }
        _ => fleetbench_agent::load::DataDirs::default(),
    };
    let sim = Sim::start(&sim_bin, &sim_args).await?;

    let (mode, batch, rate, output, waves, duration, arrival, warmup) = match scenario.clone() {
        Scenario::Exact {
            streams,
            output,
            ref mode,
            duration,
            ttft_ms,
            itl_ms,
            ..
        } if mode == "rate" => {
            let lifetime_s = (ttft_ms + f64::from(output.saturating_sub(1)) * itl_ms) / 1e3;
            let rate = f64::from(streams) / lifetime_s;
            ("rate", 0, rate, output, 0, duration, "", streams)
        }
        Scenario::Exact {
            streams,
            output,
            waves,
            ref mode,
            ..
        } if mode == "concurrency" => {
            ("concurrency", streams, 0.0, output, waves, 0.0, "", streams)
        }
        Scenario::Exact {
            streams,
            output,
            waves,
            ..
        } => ("burst", streams, 0.0, output, waves, 0.0, "", streams),
        Scenario::Fast { streams, output } => ("burst", streams, 0.0, output, 1, 0.0, "", streams),
        Scenario::Hold {
            streams, output, ..
        } => ("burst", streams, 0.0, output, 1, 0.0, "", streams),
        Scenario::Rate {
            rate,
            duration,
            output,
            ..
        } => ("rate", 0, rate, output, 0, duration, "", 64),
        Scenario::Trace { .. } => ("trace", 0, 0.0, 0, 0, 0.0, "", 64),
    };
    let arrival = match &scenario {
        Scenario::Rate { arrival, .. } => arrival.clone(),
        Scenario::Exact { .. } => "poisson".to_string(),
        _ => arrival.to_string(),
    };
    let point = pb::PointSpec {
        sweep_id: "loadbench".into(),
        point_id: "p-0000".into(),
        engine: Some(pb::EngineSpec {
            served_model_name: "loadbench".into(),
            max_model_len: 1 << 20,
            ..Default::default()
        }),
        workload: Some(match &scenario {
            Scenario::Trace { time_scale, .. } => pb::Workload {
                trace: "trace.csv".into(),
                time_scale: *time_scale,
                ..Default::default()
            },
            _ => pb::Workload {
                input_tokens: INPUT_TOKENS,
                output_tokens: output,
                ..Default::default()
            },
        }),
        batch_size: batch,
        request_rate: rate,
        load: Some(pb::LoadSpec {
            load_mode: pb::LoadMode::from(serde_json::from_value::<
                fleetbench_proto::spec::LoadMode,
            >(json!(mode))?)
            .into(),
            endpoint_kind: pb::Endpoint::Chat.into(),
            timeout_s: 600,
            warmup_requests: warmup,
            waves,
            seed: 1,
            duration_s: duration,
            requests: match &scenario {
                Scenario::Trace { requests, .. } => *requests,
                _ if mode == "concurrency" => batch * waves.max(1),
                _ => 0,
            },
            arrival_kind: pb::Arrival::from(if arrival.is_empty() {
                fleetbench_proto::spec::Arrival::default()
            } else {
                serde_json::from_value(json!(arrival))?
            })
            .into(),
            idle_timeout_s: 60.0,
            tokenizer_source: pb::TokenizerSource::Local.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let tokenizer = LocalTokenizer::from_file(&sim.tokenizer_json)?;
    let (tx, mut rx) = mpsc::channel::<RequestRecord>(1024);
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(r) = rx.recv().await {
            all.push(r);
        }
        all
    });
    let clients = fleetbench_agent::http_clients()?;
    let cancel = CancellationToken::new();
    let outcome = run_point(
        &clients,
        &sim.base_url,
        &point,
        &tx,
        Duration::from_secs(1),
        Some(tokenizer),
        &data,
        &cancel,
    )
    .await?;
    drop(tx);
    let records = collector.await?;
    let trace = match scenario {
        Scenario::Exact { .. } => sim_trace(&sim.base_url).await?,
        _ => HashMap::new(),
    };
    let report = report(&scenario, &outcome, &records, &trace);
    println!("{}", serde_json::to_string_pretty(&report)?);
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}

/// What the simulator did, by `x-request-id`: per stream, each frame's offset (ns) from the
/// request's parse. A warm-up request shares its id with a measured one and finishes
/// before it, so the later trace wins.
async fn sim_trace(base_url: &str) -> anyhow::Result<HashMap<String, Vec<u64>>> {
    let body: serde_json::Value = reqwest::get(format!("{base_url}/sim/trace"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut out = HashMap::new();
    for s in body["streams"]
        .as_array()
        .context("no streams in /sim/trace")?
    {
        let id = s["request_id"].as_str().unwrap_or_default().to_string();
        let offsets = s["frame_offsets_ns"]
            .as_array()
            .context("no frame offsets")?
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .collect();
        out.insert(id, offsets);
    }
    Ok(out)
}

/// The client's share of the timing error, against what the simulator actually did
/// (`trace`) rather than what its schedule meant, and the simulator's own lateness.
///
/// - TTFT: the record's TTFT (client send → first content chunk read) minus the
///   simulator's first frame offset (request parsed → first frame handed to the
///   connection): the request's trip to the server's parse, the response's trip back and
///   the client's own delays.
/// - ITL: each record gap minus the same gap between the simulator's frames (one token a
///   frame in exact mode).
fn truth_report(
    ok: &[&RequestRecord],
    trace: &HashMap<String, Vec<u64>>,
    ttft_ms: f64,
    itl_ms: f64,
) -> serde_json::Value {
    let (mut client_ttft, mut client_itl, mut sim_ttft, mut sim_itl) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut untraced = 0usize;
    for r in ok {
        let id = format!("fleetbench-{}-{}", r.wave, r.request_index);
        let (Some(offsets), Some(ttft)) = (trace.get(&id), r.ttft_s) else {
            untraced += 1;
            continue;
        };
        if offsets.len() != r.itl_s.len() + 1 {
            untraced += 1;
            continue;
        }
        let secs = |ns: u64| ns as f64 / 1e9;
        client_ttft.push(ttft - secs(offsets[0]));
        sim_ttft.push(secs(offsets[0]) - ttft_ms / 1e3);
        for (k, itl) in r.itl_s.iter().enumerate() {
            let sim_gap = secs(offsets[k + 1].saturating_sub(offsets[k]));
            client_itl.push(itl - sim_gap);
            sim_itl.push(sim_gap - itl_ms / 1e3);
        }
    }
    let abs = |v: &[f64]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
    json!({
        "traced_requests": ok.len() - untraced,
        "untraced_requests": untraced,
        "client_ttft_share_ms": stats_ms(&client_ttft),
        "client_itl_share_ms": stats_ms(&client_itl),
        "client_itl_abs_share_ms": stats_ms(&abs(&client_itl)),
        "sim_ttft_lateness_ms": stats_ms(&sim_ttft),
        "sim_itl_error_ms": stats_ms(&sim_itl),
        "sim_itl_abs_error_ms": stats_ms(&abs(&sim_itl)),
    })
}

fn report(
    scenario: &Scenario,
    o: &LoadOutcome,
    records: &[RequestRecord],
    trace: &HashMap<String, Vec<u64>>,
) -> serde_json::Value {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success()).collect();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for r in records.iter().filter(|r| !r.success()) {
        *errors
            .entry(r.error_kind.map_or("?", |k| k.as_str()).to_string())
            .or_default() += 1;
    }
    let chunks: u64 = records.iter().map(|r| u64::from(r.content_chunks)).sum();
    let lag: Vec<f64> = records.iter().map(RequestRecord::send_lag_s).collect();
    let first_send = records
        .iter()
        .map(|r| r.send_offset_s)
        .fold(f64::MAX, f64::min);
    let last_send = records.iter().map(|r| r.send_offset_s).fold(0.0, f64::max);
    let busy: f64 = records
        .iter()
        .filter_map(|r| {
            let end = r.send_offset_s + r.e2el_s?;
            Some((end.min(last_send) - r.send_offset_s.max(first_send)).max(0.0))
        })
        .sum();
    let mut out = json!({
        "mean_in_flight": if last_send > first_send { busy / (last_send - first_send) } else { records.len() as f64 },
        "requests": records.len(),
        "succeeded": ok.len(),
        "errors": errors,
        "input_len_mismatches": ok.iter().filter(|r| r.input_tokens != Some(r.target_input_tokens)).count(),
        "output_len_mismatches": ok.iter().filter(|r| r.output_tokens != Some(r.target_output_tokens)).count(),
        "load_wall_s": o.load_wall_s,
        "client_cpu_s": o.client_cpu_s,
        "client_cores": o.client_cores,
        "content_chunks": chunks,
        "content_chunks_per_s": chunks as f64 / o.load_wall_s,
        "send_lag_ms": stats_ms(&lag),
        "peak_rss_mb": peak_rss_mb(),
        "fallbacks": o.fallbacks,
    });
    match scenario {
        Scenario::Exact {
            ttft_ms, itl_ms, ..
        } => {
            let (ttft_ms, itl_ms) = (*ttft_ms, *itl_ms);
            let ttft_err: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.ttft_s)
                .map(|t| t - ttft_ms / 1e3)
                .collect();
            let itl_err: Vec<f64> = ok
                .iter()
                .flat_map(|r| r.itl_s.iter())
                .map(|t| t - itl_ms / 1e3)
                .collect();
            out["ttft_error_ms"] = stats_ms(&ttft_err);
            out["itl_error_ms"] = stats_ms(&itl_err);
            out["itl_abs_error_ms"] =
                stats_ms(&itl_err.iter().map(|e| e.abs()).collect::<Vec<_>>());
            out["against_the_sims_trace"] = truth_report(&ok, trace, ttft_ms, itl_ms);
        }
        Scenario::Rate { rate, duration, .. } => {
            let first = records
                .iter()
                .map(|r| r.send_offset_s)
                .fold(f64::MAX, f64::min);
            let last = records.iter().map(|r| r.send_offset_s).fold(0.0, f64::max);
            let achieved = (records.len().saturating_sub(1)) as f64 / (last - first);
            let rate = *rate;
            out["target_rate"] = json!(rate);
            out["target_duration_s"] = json!(duration);
            out["achieved_rate"] = json!(achieved);
            out["rate_error_pct"] = json!((achieved - rate) / rate * 100.0);
        }
        Scenario::Trace { time_scale, .. } => {
            out["time_scale"] = json!(time_scale);
            out["trace_span_s"] = json!(
                records
                    .iter()
                    .map(|r| r.scheduled_offset_s)
                    .fold(0.0, f64::max)
            );
        }
        Scenario::Fast { .. } | Scenario::Hold { .. } => {}
    }
    out
}

/// p50 / p99 / max / min of seconds, in milliseconds.
fn stats_ms(values: &[f64]) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::Value::Null;
    }
    let mut v: Vec<f64> = values.iter().map(|x| x * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    json!({
        "n": v.len(),
        "min": v[0],
        "p50": q(0.5),
        "p99": q(0.99),
        "max": v[v.len() - 1],
    })
}

/// This process's peak resident set (`VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A vllm-sim child process on a free port.
struct Sim {
    child: tokio::process::Child,
    base_url: String,
    tokenizer_json: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sim {
    async fn start(bin: &PathBuf, extra: &[String]) -> anyhow::Result<Sim> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let tokenizer_json = dir.path().join("tokenizer.json");
        let child = tokio::process::Command::new(bin)
            .args(["--model", "loadbench", "--port", &port.to_string()])
            .arg("--sim-tokenizer-json")
            .arg(&tokenizer_json)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let base_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client
                .get(format!("{base_url}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(Sim {
                    child,
                    base_url,
                    tokenizer_json,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("vllm-sim at {base_url} did not become healthy")
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
