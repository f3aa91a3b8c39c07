//! Hostile input over real gRPC sockets: the attacks of issue 17 replayed against an
//! in-process controller, which must stay up with its memory bounded (the test process's
//! RSS is the controller's, since it runs in-process), refuse what it cannot hold and
//! never let a point's records or events come from an agent that does not hold it.
//!
//! The tests share one process, so they take turns (`SERIAL`) to keep RSS readings
//! meaningful. Run `cargo build --workspace --bins` first (controllerctl is run as a
//! process).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetbench_controller::ControllerConfig;
use fleetbench_controller::state::PointLimits;
use fleetbench_proto::pb::{
    self, agent_message::Msg, agent_service_client::AgentServiceClient,
    control_service_client::ControlServiceClient, controller_message::Msg as CMsg,
};
use fleetbench_tests::{parquet_metadata, watch_to_end, workspace_bin};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// (VmRSS, VmHWM) of this process in MiB.
fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Controller {
    addr: String,
    results: PathBuf,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), fleetbench_controller::ControllerError>>,
    _tmp: tempfile::TempDir,
}

impl Controller {
    async fn start(point_limits: PointLimits) -> Controller {
        let tmp = tempfile::tempdir().unwrap();
        let results = tmp.path().join("results");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(fleetbench_controller::run(
            ControllerConfig {
                results_dir: results.clone(),
                point_limits,
                ..ControllerConfig::default()
            },
            listener,
            shutdown.clone(),
        ));
        Controller {
            addr,
            results,
            shutdown,
            handle,
            _tmp: tmp,
        }
    }

    async fn client(&self) -> ControlServiceClient<Channel> {
        for _ in 0..100 {
            if let Ok(c) = ControlServiceClient::connect(self.addr.clone()).await {
                return c.max_decoding_message_size(64 << 20);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("controller at {} never answered", self.addr);
    }

    /// The controller still answers (it did not abort or wedge its state lock).
    async fn assert_alive(&self) {
        let mut c = self.client().await;
        tokio::time::timeout(
            Duration::from_secs(10),
            c.list_agents(pb::ListAgentsRequest {}),
        )
        .await
        .expect("controller answers in time")
        .expect("controller answers");
        assert!(!self.handle.is_finished(), "controller stopped");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// A raw agent: registers with `gpus` GPUs over its own session stream and does whatever
/// the test makes it send.
struct RawAgent {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ControllerMessage>,
}

impl RawAgent {
    async fn connect(addr: &str, name: &str, gpus: u32) -> RawAgent {
        let mut client = AgentServiceClient::connect(addr.to_string())
            .await
            .unwrap()
            .max_encoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(16);
        tx.send(msg(Msg::Register(pb::Register {
            inventory: Some(pb::Inventory {
                agent_name: name.into(),
                host: format!("{name}-host"),
                gpus: (0..gpus)
                    .map(|i| pb::Gpu {
                        index: i,
                        vendor: "sim".into(),
                        model: "vllm-sim".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            active_points: Vec::new(),
        })))
        .await
        .unwrap();
        let inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        RawAgent { tx, inbound }
    }

    /// The next assignment sent to this agent.
    async fn assignment(&mut self) -> pb::PointSpec {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.inbound.message())
                .await
                .expect("an assignment in time")
                .expect("session open")
                .expect("session open");
            if let Some(CMsg::Assignment(a)) = m.msg {
                return a.point.unwrap();
            }
        }
    }

    async fn send(&self, m: Msg) {
        self.tx.send(msg(m)).await.unwrap();
    }

    async fn records(&self, p: &pb::PointSpec, seq: u64, n: usize, error: &str) {
        self.send(Msg::RecordBatch(batch(p, seq, n, error))).await;
    }

    async fn finish(&self, p: &pb::PointSpec, batches: u64) {
        self.send(Msg::PointFinished(pb::PointFinished {
            sweep_id: p.sweep_id.clone(),
            point_id: p.point_id.clone(),
            attempt: p.attempt,
            batches,
            ok: true,
            ..Default::default()
        }))
        .await;
    }
}

fn msg(m: Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(m) }
}

fn batch(p: &pb::PointSpec, seq: u64, n: usize, error: &str) -> pb::RecordBatch {
    pb::RecordBatch {
        sweep_id: p.sweep_id.clone(),
        point_id: p.point_id.clone(),
        attempt: p.attempt,
        seq,
        records: (0..n)
            .map(|i| pb::RequestRecord {
                request_index: i as u32,
                success: true,
                ttft_s: Some(0.01),
                e2el_s: Some(0.1),
                output_tokens: Some(4),
                input_tokens: Some(8),
                target_input_tokens: 8,
                target_output_tokens: 4,
                error: error.to_string(),
                ..Default::default()
            })
            .collect(),
    }
}

fn sweep(name: &str, gpus: &str, batch_sizes: &str) -> String {
    format!(
        "name = \"{name}\"\nmodel = \"test-org/tiny-model\"\n[engine]\nkind = \"vllm\"\n\
         runtime = \"process\"\n[matrix]\ngpus = {gpus}\nbatch_sizes = {batch_sizes}\n\
         workloads = [{{ input = 8, output = 4 }}]\n"
    )
}

async fn submit(
    client: &mut ControlServiceClient<Channel>,
    toml: &str,
) -> Result<pb::SubmitSweepResponse, tonic::Status> {
    client
        .submit_sweep(pb::SubmitSweepRequest {
            spec_toml: toml.to_string(),
            file_name: "hostile.toml".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The status of a sweep's point.
async fn point(
    client: &mut ControlServiceClient<Channel>,
    id: &str,
    idx: usize,
) -> pb::PointStatus {
    client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .points
        .swap_remove(idx)
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

fn parquet_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(parquet_files(&p, suffix));
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// The 34 KB sweep file of the issue: 200 GPU counts x 200 workloads x 200 batch sizes.
fn eight_million_points() -> String {
    // Distinct values (repeated ones are measured once): 8 GPU counts x 1000 batch sizes x
    // 1000 workloads.
    let g: Vec<String> = (1..=8).map(|i| i.to_string()).collect();
    let w: Vec<String> = (1..=1000)
        .map(|i| format!("{{input={i},output=1}}"))
        .collect();
    let b: Vec<String> = (1..=1000).map(|i| i.to_string()).collect();
    format!(
        "name = \"huge\"\nmodel = \"m/x\"\n[engine]\nkind = \"vllm\"\nruntime = \"process\"\n\
         [matrix]\ngpus = [{}]\nbatch_sizes = [{}]\nworkloads = [{}]\n",
        g.join(","),
        b.join(","),
        w.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_finished_with_2_pow_64_batches_fails_the_point_and_the_controller_stays_up() {
    let _turn = SERIAL.lock().await;
    let ctl = Controller::start(PointLimits::default()).await;
    let mut agent = RawAgent::connect(&ctl.addr, "evil", 1).await;
    let mut client = ctl.client().await;
    let id = submit(&mut client, &sweep("bigfinish", "[1]", "[1]"))
        .await
        .unwrap()
        .sweep_id;
    let p = agent.assignment().await;
    let (rss0, hwm0) = rss_mib();
    agent.records(&p, 0, 3, "").await;
    agent.finish(&p, u64::MAX).await;
    let status = tokio::time::timeout(Duration::from_secs(20), watch_to_end(&mut client, &id))
        .await
        .expect("the sweep ends");
    let (rss1, hwm1) = rss_mib();
    eprintln!(
        "PointFinished{{batches: 2^64-1}}: RSS {rss0} -> {rss1} MiB, HWM {hwm0} -> {hwm1} MiB"
    );
    assert_eq!(status.points_failed, 1, "{status:?}");
    assert!(
        status.points[0].error.contains("record batches"),
        "{}",
        status.points[0].error
    );
    assert!(hwm1 - hwm0 < 64, "HWM grew {hwm0} -> {hwm1} MiB");
    ctl.assert_alive().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eight_million_point_sweep_is_refused_before_expansion() {
    let _turn = SERIAL.lock().await;
    let ctl = Controller::start(PointLimits::default()).await;
    let mut client = ctl.client().await;
    let text = eight_million_points();
    assert!(text.len() < 40_000);
    let (_, hwm0) = rss_mib();
    let e = submit(&mut client, &text).await.unwrap_err();
    let (_, hwm1) = rss_mib();
    eprintln!("8,000,000-point submit: HWM {hwm0} -> {hwm1} MiB");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("8000000 points"), "{}", e.message());
    assert!(e.message().contains("limit is 10000"), "{}", e.message());
    assert!(hwm1 - hwm0 < 32, "HWM grew {hwm0} -> {hwm1} MiB");
    // A file over 1 MiB is refused by size (and a 3 MiB message by the gRPC limit).
    let big = format!(
        "{}\n# {}\n",
        sweep("big", "[1]", "[1]"),
        "x".repeat(1 << 20)
    );
    let e = submit(&mut client, &big).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let huge = format!(
        "{}\n# {}\n",
        sweep("big", "[1]", "[1]"),
        "x".repeat(3 << 20)
    );
    let e = submit(&mut client, &huge).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    ctl.assert_alive().await;

    // controllerctl validate says the same, exit 65.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.toml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(workspace_bin("controllerctl"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("limit is 10000 points"), "{stderr}");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_too_many_batches_fail_the_point_with_memory_bounded() {
    let _turn = SERIAL.lock().await;
    let limits = PointLimits {
        max_bytes: 16 << 20,
        ..PointLimits::default()
    };
    let ctl = Controller::start(limits).await;
    let mut agent = RawAgent::connect(&ctl.addr, "flood", 1).await;
    let mut client = ctl.client().await;
    let id = submit(&mut client, &sweep("flood", "[1]", "[1, 2]"))
        .await
        .unwrap()
        .sweep_id;
    let p = agent.assignment().await;
    let (rss0, hwm0) = rss_mib();
    // The attack (150 batches of 3.2 MB: 1,000 records of 3.2 KB each, 496 MB RSS
    // before) doubled: 300 batches, 960 MB sent. What stays is the 16 MiB cap plus the
    // transient decode buffers of the messages in flight (both ends live in this process).
    let error = "e".repeat(3200);
    for seq in 0..300 {
        agent.records(&p, seq, 1000, &error).await;
    }
    agent.finish(&p, 300).await;
    // The point ends failed with the reason and the next one is assigned.
    let next = agent.assignment().await;
    let (rss1, hwm1) = rss_mib();
    eprintln!(
        "300 x 3.2 MB batches (cap 16 MiB): RSS {rss0} -> {rss1} MiB, HWM {hwm0} -> {hwm1} MiB"
    );
    let failed = point(&mut client, &id, 0).await;
    assert_eq!(failed.state, "failed");
    assert!(
        failed.error.contains("controller limit"),
        "{}",
        failed.error
    );
    assert!(
        hwm1 < hwm0 + 200,
        "HWM grew {hwm0} -> {hwm1} MiB (960 MB sent)"
    );

    // One message over the agent service's 64 MiB limit: the stream is refused, the
    // controller stays up, and the point is re-queued once the agent is gone.
    let huge = "h".repeat(70 << 20);
    agent
        .send(Msg::RecordBatch(batch(&next, 0, 1, &huge)))
        .await;
    drop(huge);
    let broke = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match agent.inbound.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("the session ends");
    eprintln!("70 MiB message: session ended with {broke:?}");
    assert!(broke.is_none_or(|e| e.code() != tonic::Code::Ok));
    ctl.assert_alive().await;
    let p = point(&mut client, &id, 1).await;
    assert_ne!(p.state, "done");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_events_and_finish_for_a_point_another_agent_holds_never_reach_parquet() {
    let _turn = SERIAL.lock().await;
    let ctl = Controller::start(PointLimits::default()).await;
    let mut a = RawAgent::connect(&ctl.addr, "honest", 1).await;
    let mut b = RawAgent::connect(&ctl.addr, "forger", 1).await;
    let mut client = ctl.client().await;
    let id = submit(&mut client, &sweep("forge", "[1]", "[1, 2]"))
        .await
        .unwrap()
        .sweep_id;
    let (pa, pb_) = tokio::join!(a.assignment(), b.assignment());
    assert_ne!(pa.point_id, pb_.point_id);
    // The forger writes into the honest agent's point: records, an engine event, a finish.
    b.records(&pa, 0, 50, "CANARY-records").await;
    b.records(&pa, 1, 50, "CANARY-records").await;
    b.send(Msg::EngineEvent(pb::EngineEvent {
        sweep_id: pa.sweep_id.clone(),
        point_id: pa.point_id.clone(),
        kind: "exited".into(),
        message: "CANARY-event".into(),
        log_tail: vec!["CANARY-event".into()],
        ..Default::default()
    }))
    .await;
    b.finish(&pa, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = point(&mut client, &id, 0).await;
    assert_eq!(
        p.state, "running",
        "the forged finish changed nothing: {p:?}"
    );
    // The honest agent reports its own point, the forger its own.
    a.send(Msg::EngineEvent(pb::EngineEvent {
        sweep_id: pa.sweep_id.clone(),
        point_id: pa.point_id.clone(),
        kind: "ready".into(),
        message: "honest-event".into(),
        ..Default::default()
    }))
    .await;
    a.records(&pa, 0, 3, "").await;
    a.finish(&pa, 1).await;
    b.records(&pb_, 0, 2, "").await;
    b.finish(&pb_, 1).await;
    let status = tokio::time::timeout(Duration::from_secs(20), watch_to_end(&mut client, &id))
        .await
        .expect("the sweep ends");
    assert_eq!(status.points_done, 2, "{status:?}");
    let results = client
        .get_results(pb::GetResultsRequest {
            sweep_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let honest = results
        .points
        .iter()
        .find(|s| s.point_id == pa.point_id)
        .unwrap();
    assert_eq!(honest.completed, 3, "only the holder's records: {honest:?}");
    // Nothing of the forger's reached the files: not the event (metadata) nor the records.
    let files = parquet_files(&ctl.results, ".parquet");
    assert!(!files.is_empty());
    for f in parquet_files(&ctl.results, ".points.parquet") {
        let meta = parquet_metadata(&f);
        let all: String = meta.values().cloned().collect();
        assert!(all.contains("honest-event"), "{meta:?}");
        assert!(!all.contains("CANARY"), "{meta:?}");
    }
    let bytes = all_bytes(&ctl.results);
    assert!(!bytes.windows(6).any(|w| w == b"CANARY"));
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sweep_name_is_refused_at_validation_with_the_field() {
    let _turn = SERIAL.lock().await;
    let ctl = Controller::start(PointLimits::default()).await;
    let mut client = ctl.client().await;
    let name = "n".repeat(98);
    let e = submit(&mut client, &sweep(&name, "[1]", "[1]"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("hostile.toml:1:8: field `name`"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("at most 64"), "{}", e.message());
    let e = submit(
        &mut client,
        &sweep("ok", "[1]", "[1]").replace("test-org/tiny-model", "../../etc/passwd"),
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("field `model`"), "{}", e.message());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.toml");
    std::fs::write(&file, sweep(&name, "[1]", "[1]")).unwrap();
    let out = Command::new(workspace_bin("controllerctl"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("field `name`"), "{stderr}");
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_no_known_agent_can_run_is_refused_at_submit() {
    let _turn = SERIAL.lock().await;
    let ctl = Controller::start(PointLimits::default()).await;
    let mut client = ctl.client().await;
    let _agent = RawAgent::connect(&ctl.addr, "small", 2).await;
    // Wait for the registration.
    for _ in 0..100 {
        let agents = client
            .list_agents(pb::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents;
        if !agents.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = submit(&mut client, &sweep("big", "[1000]", "[1]"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("1000 GPUs"), "{}", e.message());
    let e = submit(
        &mut client,
        &format!(
            "{}[placement]\nlabels = {{ rack = \"nowhere\" }}\n",
            sweep("lab", "[1]", "[1]")
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("no known agent matches"),
        "{}",
        e.message()
    );
    assert!(
        submit(&mut client, &sweep("fits", "[2]", "[1]"))
            .await
            .is_ok()
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_point_sweep_reads_through_controllerctl_status() {
    let _turn = SERIAL.lock().await;
    let ctl = Controller::start(PointLimits::default()).await;
    let mut client = ctl.client().await;
    let _agent = RawAgent::connect(&ctl.addr, "pager", 1).await;
    // 1 GPU count x 100 workloads x 100 batch sizes.
    let workloads: Vec<String> = (1..=100)
        .map(|i| format!("{{ input = {i}, output = 1 }}"))
        .collect();
    let batches: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let text = format!(
        "name = \"tenk\"\nmodel = \"m/x\"\n[engine]\nkind = \"vllm\"\nruntime = \"process\"\n\
         [matrix]\ngpus = [1]\nbatch_sizes = [{}]\nworkloads = [{}]\n",
        batches.join(","),
        workloads.join(",")
    );
    let resp = submit(&mut client, &text).await.unwrap();
    assert_eq!(resp.points, 10_000);
    // The plain GetSweep answers the first page and says more follow.
    let first = client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: resp.sweep_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.points_total, 10_000);
    assert_eq!(first.points.len(), 1000);
    assert_eq!(first.next_page_token, "1000");
    let out = Command::new(workspace_bin("controllerctl"))
        .args(["--controller", &ctl.addr, "status", &resp.sweep_id])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let point_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(point_lines.len(), 10_000, "one line per point");
    // The last point (workload 100/1, batch 100) is there: every page was read.
    assert!(
        point_lines[9999].contains("batch=100") && point_lines[9999].contains("100/1 tokens"),
        "{}",
        point_lines[9999]
    );
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicate_sweep_whose_child_ids_would_not_fit_a_file_name_is_refused() {
    let _turn = SERIAL.lock().await;
    let ctl = Controller::start(PointLimits::default()).await;
    let mut client = ctl.client().await;
    // The longest agent name (64) and sweep name (64): `<name>-<time>-<salt>.<agent>/pNNN`
    // is 155 bytes, and the agent's spool file names hold it hex-encoded (310 > 255).
    let agent_name = "a".repeat(64);
    let _agent = RawAgent::connect(&ctl.addr, &agent_name, 1).await;
    for _ in 0..100 {
        let n = client
            .list_agents(pb::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents
            .len();
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = format!(
        "{}[placement]\nstrategy = \"replicate\"\n",
        sweep(&"n".repeat(64), "[1]", "[1]")
    );
    let e = submit(&mut client, &text).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("too long"), "{}", e.message());
    // A short sweep name fits.
    let text = format!(
        "{}[placement]\nstrategy = \"replicate\"\n",
        sweep("short", "[1]", "[1]")
    );
    assert!(submit(&mut client, &text).await.is_ok());
    ctl.stop().await;
}
