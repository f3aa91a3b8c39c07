//! End to end against servers as found in the wild (issue 18).
//!
//! - A server that closes every connection after each response without `connection:
//!   close` ([`ClosingProxy`] in front of vllm-sim, as an `external` engine): a whole sweep
//!   runs with every point `done` and `valid`, and no load request is resent.
//! - Points whose every request fails are `failed`, with the most common error kind and
//!   its count as the reason, and `controllerctl watch` exits 1: a stream that stalls
//!   (vllm-sim `--sim-stall-after-tokens`), a connection dropped mid-stream
//!   (`--sim-disconnect-after-tokens`, never resent), an error object mid-stream and
//!   garbage ([`Fault`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_results::summary::PointSummary;
use fleetbench_tests::http_proxy::{ClosingProxy, Fault};
use fleetbench_tests::{
    AgentSpec, Cluster, TINY_SIM_ARGS, controllerctl, submit, watch_to_end, workspace_bin,
};
use tokio::process::{Child, Command};

/// Starts `vllm-sim serve` of the tiny model on a free port; returns it once `/health`
/// answers.
async fn start_sim(extra: &[&str]) -> (Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(workspace_bin("vllm-sim"))
        .args(["serve", "test-org/tiny-model", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--max-model-len", "1024"])
        .args(TINY_SIM_ARGS)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::Client::new();
    for _ in 0..300 {
        let up = client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            return (child, addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("vllm-sim did not come up");
}

/// A burst sweep of the tiny model on one GPU; `engine` is the `[engine]` runtime lines.
fn sweep(name: &str, engine: &str, batch_sizes: &str, load_extra: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
{engine}
max_model_len = 1024
max_num_seqs = 64
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = {batch_sizes}
workloads = [{{ input = 64, output = 16 }}, {{ input = 32, output = 8 }}]

[load]
mode = "burst"
endpoint = "chat"
timeout_s = 60
warmup_requests = 1
{load_extra}
"#
    )
}

fn external(url: &str) -> String {
    format!("runtime = \"external\"\nurl = \"{url}\"")
}

fn points_file(cluster: &Cluster, id: &str, suffix: &str) -> PathBuf {
    cluster
        .results
        .join("model=test-org--tiny-model")
        .join("gpus=1")
        .join(format!("{id}.{suffix}.parquet"))
}

fn read_points(cluster: &Cluster, id: &str) -> Vec<PointSummary> {
    let mut points = read_point_summaries(&points_file(cluster, id, "points")).unwrap();
    points.sort_by_key(|p| p.meta.point_index);
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_every_connection_after_each_response_measures_every_point() {
    let (_sim, sim_addr) = start_sim(&[]).await;
    let proxy = ClosingProxy::start(sim_addr, Fault::None).await.unwrap();
    let cluster = Cluster::start(vec![AgentSpec::sim("closer", 1, &[])]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(
        &mut client,
        &sweep("closing", &external(&proxy.url()), "[1, 2, 4, 8]", ""),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(status.points_failed, 0, "{status:?}");
    let rows = read_requests(&points_file(&cluster, &id, "requests")).unwrap();
    let failed: Vec<_> = rows.iter().filter(|(_, _, r)| !r.success()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let points = read_points(&cluster, &id);
    assert_eq!(points.len(), 8);
    for p in &points {
        assert_eq!(
            p.meta.state, "done",
            "{}: {}",
            p.meta.point_id, p.meta.error
        );
        assert_eq!(p.failed, 0, "{}", p.meta.point_id);
        assert_eq!(p.verdict, "valid", "{}", p.meta.point_id);
    }
    assert_eq!(rows.len(), 2 * (1 + 2 + 4 + 8));
    assert!(rows.iter().all(|(_, _, r)| r.success()));
    // No request reached the server twice: the proxy forwarded each measured request (and
    // each point's warm-up request) once. A request resent because the connection it was
    // given had been closed under it says so in `retries`.
    assert_eq!(proxy.forwarded_streams(), rows.len() + points.len());
    let resent: u32 = rows.iter().map(|(_, _, r)| r.retries).sum();
    eprintln!("{resent} load request(s) resent after meeting a closed connection");
    // Every response came on its own connection: at least one per measured request.
    assert!(proxy.served() >= rows.len(), "{}", proxy.served());
    let (code, text) = controllerctl(&cluster.addr, &["watch", &id]).await;
    assert_eq!(code, Some(0), "{text}");
    cluster.stop().await;
}

/// Runs a one-GPU sweep whose every measured request fails; asserts each point `failed`
/// with a reason naming `kind` and `controllerctl watch` exiting 1. Returns the number of
/// measured requests. No request is resent by an engine that keeps its connections
/// (vllm-sim); behind a [`ClosingProxy`], one that met a connection the proxy had closed
/// may be (and says so), and the caller checks that each reached the proxy once.
async fn every_request_fails(
    name: &str,
    agent: AgentSpec,
    engine: &str,
    load_extra: &str,
    kind: &str,
) -> usize {
    let cluster = Cluster::start(vec![agent]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, &sweep(name, engine, "[1, 2]", load_extra)).await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.points_failed, 4, "{status:?}");
    let points = read_points(&cluster, &id);
    assert_eq!(points.len(), 4);
    for p in &points {
        let b = p.meta.batch_size;
        assert_eq!(
            p.meta.state, "failed",
            "{}: {}",
            p.meta.point_id, p.meta.error
        );
        assert_eq!(
            p.meta.error,
            format!("all {b} requests failed: {kind} ×{b}"),
            "{}",
            p.meta.point_id
        );
        assert_eq!(p.completed, 0);
        assert_eq!(p.failed, b);
    }
    let rows = read_requests(&points_file(&cluster, &id, "requests")).unwrap();
    assert_eq!(rows.len(), 2 * (1 + 2));
    for (_, _, r) in &rows {
        assert_eq!(r.error_kind.map(|k| k.as_str()), Some(kind), "{r:?}");
        if engine.contains("process") {
            assert_eq!(r.retries, 0, "{r:?}");
        }
    }
    let (code, text) = controllerctl(&cluster.addr, &["watch", &id]).await;
    assert_eq!(code, Some(1), "{text}");
    cluster.stop().await;
    rows.len()
}

fn sim_agent(name: &str, extra: &[&str]) -> AgentSpec {
    let args: Vec<&str> = TINY_SIM_ARGS
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    AgentSpec::sim(name, 1, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_whose_streams_stall_is_failed() {
    let agent = sim_agent("staller", &["--sim-stall-after-tokens", "3"]);
    every_request_fails(
        "stall",
        agent,
        "runtime = \"process\"",
        "idle_timeout_s = 1",
        "stalled",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_whose_connections_drop_mid_stream_is_failed_and_nothing_is_resent() {
    let agent = sim_agent("dropper", &["--sim-disconnect-after-tokens", "3"]);
    every_request_fails("drop", agent, "runtime = \"process\"", "", "truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_whose_streams_carry_an_error_mid_stream_is_failed() {
    let (_sim, sim_addr) = start_sim(&[]).await;
    let proxy = ClosingProxy::start(sim_addr, Fault::ErrorMidStream)
        .await
        .unwrap();
    let agent = AgentSpec::sim("erring", 1, &[]);
    let rows =
        every_request_fails("errmid", agent, &external(&proxy.url()), "", "server-error").await;
    // Each measured request and each point's warm-up request reached the server once.
    assert_eq!(proxy.faulted(), rows + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_whose_streams_are_garbage_is_failed() {
    let (_sim, sim_addr) = start_sim(&[]).await;
    let proxy = ClosingProxy::start(sim_addr, Fault::Garbage).await.unwrap();
    let agent = AgentSpec::sim("garbler", 1, &[]);
    let rows =
        every_request_fails("garbage", agent, &external(&proxy.url()), "", "malformed").await;
    // Each measured request and each point's warm-up request reached the server once.
    assert_eq!(proxy.faulted(), rows + 4);
}
