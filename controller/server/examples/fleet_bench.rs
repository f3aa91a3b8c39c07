//! Fleet benchmark: many simulated agents on one controller, as a lab fleet would load it.
//!
//! The controller is the release `controller` binary, started as its own process with a
//! durable state store (redb) and a results folder in a temporary directory, so its RSS and
//! CPU time are its own (read from `/proc/<pid>`). The simulated agents live in this
//! process, each a real gRPC client of `AgentService` on its own HTTP/2 connection: it
//! registers (one GPU), sends a heartbeat every `--heartbeat-ms`, and runs whatever point it
//! is assigned: after `--point-ms` it streams one `RecordBatch` of `--records` small records
//! and a `PointFinished`, then waits for the next assignment. `--sweeps` sweeps of
//! `--agents × --points-per-agent` points are submitted one after the other; each spreads
//! over every agent.
//!
//! ```sh
//! cargo build --release -p fleetbench-controller --bins --examples
//! target/release/examples/fleet_bench --agents 1000 --points-per-agent 2 --sweeps 3
//! ```
//!
//! What it measures, on this process's clock:
//! - registration: from the first connect to the last `Registered`, and each agent's
//!   connect + register time;
//! - heartbeat round trip: a `Heartbeat` sent to its `HeartbeatAck` (the controller acks
//!   once the state has taken it), at rest and while sweeps run;
//! - assignment latency: from the moment a point could be assigned to an agent (the sweep's
//!   submission, or the agent's previous `PointFinished`) to its `Assignment`;
//! - point acknowledgement: a `PointFinished` sent to its `PointAck` (the point's rows are
//!   on disk and its state durable);
//! - `ListAgents` latency while the fleet works;
//! - the controller's RSS after each sweep and at its peak, and its CPU time per phase.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use fleetbench_proto::pb::agent_service_client::AgentServiceClient;
use fleetbench_proto::pb::control_service_client::ControlServiceClient;
use fleetbench_proto::pb::{self, agent_message::Msg, controller_message::Msg as CMsg};
use fleetbench_proto::{unix_micros_now, unix_millis_now};
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Points per agent in each sweep (a sweep has agents × this many points).
    #[arg(long, default_value_t = 2)]
    points_per_agent: usize,
    /// Sweeps submitted one after the other.
    #[arg(long, default_value_t = 3)]
    sweeps: usize,
    /// How long a simulated point runs before its results are sent.
    #[arg(long, default_value_t = 200)]
    point_ms: u64,
    /// Each point runs up to this many milliseconds longer (uniform, seeded per agent and
    /// point), so points end spread out as on a real fleet; 0: every agent finishes in
    /// lockstep, the worst case.
    #[arg(long, default_value_t = 0)]
    point_jitter_ms: u64,
    /// Request records per point.
    #[arg(long, default_value_t = 16)]
    records: usize,
    /// Milliseconds between an agent's heartbeats.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Seconds of heartbeats only, after registration and before the first sweep.
    #[arg(long, default_value_t = 5)]
    rest_s: u64,
    /// Agents connecting at once during registration (all of them by default).
    #[arg(long)]
    connect_parallel: Option<usize>,
    /// The controller's `--archive-after-s`: finished sweeps leave its memory after this
    /// long (0: at once, so the RSS after each sweep shows what stays).
    #[arg(long, default_value_t = 0)]
    archive_after_s: u64,
    /// The controller binary (default: `controller` next to this example's folder).
    #[arg(long)]
    controller: Option<PathBuf>,
}

/// Latencies in seconds, collected by every agent.
#[derive(Default)]
struct Samples {
    register: Vec<f64>,
    heartbeat_rest: Vec<f64>,
    heartbeat_busy: Vec<f64>,
    first_assignment: Vec<f64>,
    next_assignment: Vec<f64>,
    point_ack: Vec<f64>,
}

/// What the agents share with the conductor.
struct Fleet {
    samples: Mutex<Samples>,
    /// When the current sweep was submitted (none before the first).
    submitted: Mutex<Option<Instant>>,
    /// Sweeps are running: heartbeats count as busy.
    busy: std::sync::atomic::AtomicBool,
    acked: AtomicUsize,
    acked_changed: Notify,
    registered: AtomicUsize,
    registered_changed: Notify,
}

impl Fleet {
    fn record(&self, f: impl FnOnce(&mut Samples)) {
        if let Ok(mut s) = self.samples.lock() {
            f(&mut s);
        }
    }
}

fn agent_msg(msg: Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(msg) }
}

fn records(n: usize, now_us: i64) -> Vec<pb::RequestRecord> {
    (0..n)
        .map(|i| pb::RequestRecord {
            request_index: i as u32,
            send_time_unix_us: now_us,
            ttft_s: Some(0.05),
            e2el_s: Some(0.1),
            itl_s: vec![0.01; 4],
            input_tokens: Some(32),
            output_tokens: Some(5),
            target_input_tokens: 32,
            target_output_tokens: 5,
            content_chunks: 5,
            endpoint: "completions".into(),
            usage_reported: true,
            ..Default::default()
        })
        .collect()
}

/// One simulated agent, until `stop`.
async fn run_agent(
    url: String,
    name: String,
    args: Arc<Args>,
    fleet: Arc<Fleet>,
    connect: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
) -> Result<()> {
    let started = Instant::now();
    let permit = connect.acquire().await?;
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("{name}: connect"))?;
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
    tx.send(agent_msg(Msg::Register(pb::Register {
        inventory: Some(pb::Inventory {
            agent_name: name.clone(),
            host: format!("{name}.bench"),
            gpus: vec![pb::Gpu {
                index: 0,
                vendor: "none".into(),
                model: "bench".into(),
                memory_bytes: 24 << 30,
                pci_bus_id: String::new(),
            }],
            driver: "bench".into(),
            fleetbench_version: fleetbench_proto::FLEETBENCH_VERSION.into(),
            ..Default::default()
        }),
        active_points: Vec::new(),
    })))
    .await?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .with_context(|| format!("{name}: session"))?
        .into_inner();
    match inbound.message().await? {
        Some(pb::ControllerMessage {
            msg: Some(CMsg::Registered(_)),
        }) => {}
        other => bail!("{name}: expected Registered, got {other:?}"),
    }
    drop(permit);
    fleet.record(|s| s.register.push(started.elapsed().as_secs_f64()));
    fleet.registered.fetch_add(1, Ordering::SeqCst);
    fleet.registered_changed.notify_waiters();

    let mut heartbeat = tokio::time::interval(Duration::from_millis(args.heartbeat_ms.max(1)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (unix_ms key, sent at, during a sweep) of heartbeats not acked yet.
    let mut beats: VecDeque<(i64, Instant, bool)> = VecDeque::new();
    let mut last_key = 0i64;
    // The running point and when its work is over.
    let mut work: Option<(pb::PointSpec, Instant)> = None;
    // When this agent last became free (its last PointFinished).
    let mut free_since: Option<Instant> = None;
    // PointFinished sent, by point id, waiting for the ack.
    let mut finished: VecDeque<(String, Instant)> = VecDeque::new();
    loop {
        let due = work.as_ref().map(|(_, at)| *at);
        tokio::select! {
            () = stop.cancelled() => break,
            _ = heartbeat.tick() => {
                let key = unix_millis_now().max(last_key + 1);
                last_key = key;
                beats.push_back((key, Instant::now(), fleet.busy.load(Ordering::Relaxed)));
                let state = if work.is_some() { "running" } else { "idle" };
                tx.send(agent_msg(Msg::Heartbeat(pb::Heartbeat {
                    unix_ms: key,
                    state: state.into(),
                    current_point: work.as_ref().map(|(p, _)| p.point_id.clone()).unwrap_or_default(),
                }))).await?;
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                let Some((point, _)) = work.take() else { continue };
                let now_us = unix_micros_now();
                tx.send(agent_msg(Msg::RecordBatch(pb::RecordBatch {
                    sweep_id: point.sweep_id.clone(),
                    point_id: point.point_id.clone(),
                    attempt: point.attempt,
                    seq: 0,
                    records: records(args.records, now_us),
                }))).await?;
                tx.send(agent_msg(Msg::PointFinished(pb::PointFinished {
                    sweep_id: point.sweep_id.clone(),
                    point_id: point.point_id.clone(),
                    attempt: point.attempt,
                    batches: 1,
                    ok: true,
                    endpoint: "completions".into(),
                    engine_version: "bench".into(),
                    started_unix_us: now_us - i64::try_from(args.point_ms).unwrap_or(0) * 1000,
                    finished_unix_us: now_us,
                    load_wall_s: args.point_ms as f64 / 1e3,
                    client_cores: 1,
                    gpu_ids: vec![0],
                    ..Default::default()
                }))).await?;
                let now = Instant::now();
                finished.push_back((point.point_id, now));
                free_since = Some(now);
            }
            m = inbound.message() => {
                let Some(m) = m? else { bail!("{name}: the controller ended the session") };
                let now = Instant::now();
                match m.msg {
                    Some(CMsg::HeartbeatAck(a)) => {
                        while let Some((key, sent, busy)) = beats.pop_front() {
                            if key == a.unix_ms {
                                let rtt = now.duration_since(sent).as_secs_f64();
                                fleet.record(|s| if busy { s.heartbeat_busy.push(rtt) } else { s.heartbeat_rest.push(rtt) });
                                break;
                            }
                            // Older heartbeats whose acks were dropped (a full queue).
                        }
                    }
                    Some(CMsg::Assignment(a)) => {
                        let point = a.point.context("Assignment without a point")?;
                        let submitted = fleet.submitted.lock().ok().and_then(|s| *s);
                        match (free_since, submitted) {
                            (Some(free), Some(sub)) if free > sub => {
                                fleet.record(|s| s.next_assignment.push(now.duration_since(free).as_secs_f64()));
                            }
                            (_, Some(sub)) => {
                                fleet.record(|s| s.first_assignment.push(now.duration_since(sub).as_secs_f64()));
                            }
                            _ => {}
                        }
                        ensure!(work.is_none(), "{name}: a second assignment while running one");
                        let jitter = if args.point_jitter_ms == 0 {
                            0
                        } else {
                            // SplitMix64 of the point id's hash: seeded, spread.
                            let mut h = std::hash::DefaultHasher::new();
                            std::hash::Hash::hash(&point.point_id, &mut h);
                            let mut z = std::hash::Hasher::finish(&h).wrapping_add(0x9E37_79B9_7F4A_7C15);
                            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                            (z ^ (z >> 31)) % (args.point_jitter_ms + 1)
                        };
                        work = Some((point, now + Duration::from_millis(args.point_ms + jitter)));
                    }
                    Some(CMsg::PointAck(a)) => {
                        if let Some(i) = finished.iter().position(|(id, _)| *id == a.point_id) {
                            if let Some((_, sent)) = finished.remove(i) {
                                fleet.record(|s| s.point_ack.push(now.duration_since(sent).as_secs_f64()));
                            }
                            fleet.acked.fetch_add(1, Ordering::SeqCst);
                            fleet.acked_changed.notify_waiters();
                        }
                    }
                    Some(CMsg::CancelPoint(c)) => bail!("{name}: point cancelled: {}", c.reason),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// RSS (kB) and CPU seconds (user + system) of process `pid`.
fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3; utime and
    // stime are fields 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux's USER_HZ is 100 on every mainstream configuration.
    Some((rss, ticks / 100.0))
}

/// p50 / p99 / max of seconds, in milliseconds.
fn stats_ms(values: &[f64]) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::Value::Null;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] * 1e3;
    json!({"n": v.len(), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)})
}

fn sweep_toml(index: usize, agents: usize, per_agent: usize) -> String {
    let batches: Vec<String> = (1..=agents).map(|b| b.to_string()).collect();
    let workloads: Vec<String> = (1..=per_agent)
        .map(|k| format!("{{ input = {}, output = 5 }}", 32 + k))
        .collect();
    format!(
        r#"
name = "fleet-bench-{index}"
model = "bench/model"

[engine]
kind = "vllm"
runtime = "external"
url = "http://127.0.0.1:9"

[matrix]
gpus = [1]
batch_sizes = [{}]
workloads = [{}]

[load]
mode = "burst"
endpoint = "completions"
timeout_s = 3600
"#,
        batches.join(", "),
        workloads.join(", ")
    )
}

async fn wait_until(
    notify: &Notify,
    counter: &AtomicUsize,
    n: usize,
    limit: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let changed = notify.notified();
        if counter.load(Ordering::SeqCst) >= n {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            bail!(
                "only {} of {n} after {limit:?}",
                counter.load(Ordering::SeqCst)
            );
        }
    }
}

/// `GET /metrics` from the controller on 127.0.0.1:`port`, over a bare HTTP/1.0 request
/// (the example needs no HTTP client for one request).
async fn metrics_text(port: u16) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    ensure!(
        args.agents >= 1 && args.points_per_agent >= 1,
        "--agents and --points-per-agent must be at least 1"
    );
    let controller_bin = match &args.controller {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("controller"))
            .context("no folder for the controller binary")?,
    };
    let tmp = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut controller = tokio::process::Command::new(&controller_bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--results")
        .arg(tmp.path().join("results"))
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--archive-after-s", &args.archive_after_s.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("controller.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", controller_bin.display()))?;
    let pid = controller.id().context("controller pid")?;
    let mut control = loop {
        match ControlServiceClient::connect(url.clone()).await {
            Ok(c) => break c,
            Err(_) if controller.try_wait()?.is_none() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => bail!("the controller exited: {e}"),
        }
    };
    let (rss_start, cpu_start) = proc_usage(pid).context("reading /proc for the controller")?;

    // Peak RSS, sampled every 100 ms.
    let peak_rss = Arc::new(AtomicUsize::new(0));
    let sampler_stop = CancellationToken::new();
    let sampler = tokio::spawn({
        let (peak, stop) = (peak_rss.clone(), sampler_stop.clone());
        async move {
            while !stop.is_cancelled() {
                if let Some((rss, _)) = proc_usage(pid) {
                    peak.fetch_max(rss as usize, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let fleet = Arc::new(Fleet {
        samples: Mutex::new(Samples::default()),
        submitted: Mutex::new(None),
        busy: false.into(),
        acked: AtomicUsize::new(0),
        acked_changed: Notify::new(),
        registered: AtomicUsize::new(0),
        registered_changed: Notify::new(),
    });
    let stop = CancellationToken::new();
    let connect = Arc::new(tokio::sync::Semaphore::new(
        args.connect_parallel.unwrap_or(args.agents).max(1),
    ));
    let registration_started = Instant::now();
    let agents: Vec<_> = (0..args.agents)
        .map(|i| {
            let agent = run_agent(
                url.clone(),
                format!("bench-{i:04}"),
                args.clone(),
                fleet.clone(),
                connect.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let result = agent.await;
                if let Err(e) = &result {
                    eprintln!("agent failed: {e:#}");
                }
                result
            })
        })
        .collect();
    wait_until(
        &fleet.registered_changed,
        &fleet.registered,
        args.agents,
        Duration::from_secs(120),
    )
    .await?;
    let registration_s = registration_started.elapsed().as_secs_f64();
    let (rss_registered, cpu_registered) = proc_usage(pid).context("controller gone")?;

    tokio::time::sleep(Duration::from_secs(args.rest_s)).await;
    let (_, cpu_rest) = proc_usage(pid).context("controller gone")?;

    fleet.busy.store(true, Ordering::Relaxed);
    let mut list_agents = Vec::new();
    let mut sweeps = Vec::new();
    let per_sweep = args.agents * args.points_per_agent;
    for k in 0..args.sweeps {
        let before = fleet.acked.load(Ordering::SeqCst);
        let (_, cpu_before) = proc_usage(pid).context("controller gone")?;
        let t = Instant::now();
        if let Ok(mut s) = fleet.submitted.lock() {
            *s = Some(t);
        }
        let reply = control
            .submit_sweep(pb::SubmitSweepRequest {
                spec_toml: sweep_toml(k, args.agents, args.points_per_agent),
                file_name: format!("fleet-bench-{k}.toml"),
            })
            .await?
            .into_inner();
        let submit_s = t.elapsed().as_secs_f64();
        ensure!(
            reply.points as usize == per_sweep,
            "sweep has {} points, not {per_sweep}",
            reply.points
        );
        // ListAgents while the sweep runs.
        let lister = {
            let mut c = control.clone();
            let stop = CancellationToken::new();
            let s2 = stop.clone();
            let task = tokio::spawn(async move {
                let mut took = Vec::new();
                while !s2.is_cancelled() {
                    let t = Instant::now();
                    if c.list_agents(pb::ListAgentsRequest {}).await.is_err() {
                        break;
                    }
                    took.push(t.elapsed().as_secs_f64());
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                took
            });
            (stop, task)
        };
        wait_until(
            &fleet.acked_changed,
            &fleet.acked,
            before + per_sweep,
            Duration::from_secs(600),
        )
        .await?;
        let took = t.elapsed().as_secs_f64();
        lister.0.cancel();
        list_agents.extend(lister.1.await?);
        let (rss, cpu) = proc_usage(pid).context("controller gone")?;
        sweeps.push(json!({
            "points": per_sweep,
            "submit_s": submit_s,
            "all_acked_s": took,
            "controller_rss_mb_after": rss as f64 / 1024.0,
            "controller_cpu_s": cpu - cpu_before,
            "controller_cores": (cpu - cpu_before) / took,
        }));
    }
    let (rss_end, cpu_end) = proc_usage(pid).context("controller gone")?;
    // The controller's own view of its commits and writes.
    let metrics = metrics_text(metrics_port).await.unwrap_or_default();
    let metric = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    let commits = metric("fleetbench_controller_store_commit_seconds_count");
    let commit_s = metric("fleetbench_controller_store_commit_seconds_sum");
    let writes = metric("fleetbench_controller_partition_write_seconds_count");
    let write_s = metric("fleetbench_controller_partition_write_seconds_sum");
    stop.cancel();
    for a in agents {
        a.await??;
    }
    sampler_stop.cancel();
    sampler.await?;
    controller.start_kill()?;
    let _ = controller.wait().await;

    let s = fleet
        .samples
        .lock()
        .map_err(|_| anyhow::anyhow!("samples poisoned"))?;
    let report = json!({
        "agents": args.agents,
        "sweeps": args.sweeps,
        "points_per_sweep": per_sweep,
        "point_ms": args.point_ms,
        "point_jitter_ms": args.point_jitter_ms,
        "registration_all_s": registration_s,
        "register_ms": stats_ms(&s.register),
        "heartbeat_rtt_rest_ms": stats_ms(&s.heartbeat_rest),
        "heartbeat_rtt_busy_ms": stats_ms(&s.heartbeat_busy),
        "first_assignment_ms": stats_ms(&s.first_assignment),
        "next_assignment_ms": stats_ms(&s.next_assignment),
        "point_ack_ms": stats_ms(&s.point_ack),
        "list_agents_ms": stats_ms(&list_agents),
        "controller": {
            "rss_mb_start": rss_start as f64 / 1024.0,
            "rss_mb_registered": rss_registered as f64 / 1024.0,
            "rss_mb_end": rss_end as f64 / 1024.0,
            "rss_mb_peak": peak_rss.load(Ordering::Relaxed) as f64 / 1024.0,
            "cpu_s_registration": cpu_registered - cpu_start,
            "cpu_cores_at_rest": (cpu_rest - cpu_registered) / args.rest_s.max(1) as f64,
            "cpu_s_total": cpu_end - cpu_start,
            "store_commits": commits,
            "store_commit_mean_ms": commit_s.zip(commits).map(|(s, n)| s / n * 1e3),
            "store_commit_busy_s": commit_s,
            "partition_writes": writes,
            "partition_write_mean_ms": write_s.zip(writes).map(|(s, n)| s / n * 1e3),
        },
        "per_sweep": sweeps,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
