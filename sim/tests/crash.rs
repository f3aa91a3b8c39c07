//! `--sim-crash-at-running N`: the simulated GPU out-of-memory crash, through the binary (the
//! process dies with exit code 1 and cuts its streams) and in-process with a hook.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, sse_payloads};
use fleetbench_sim::{CrashAction, CrashAt, SimConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_vllm-sim");

/// The end of a stream that finished.
const DONE: &str = "data: [DONE]\n\n";

/// Output tokens of the requests that must still run when the crash comes: at 20× speed one
/// step takes about 1 ms, so each of them would run for more than 10 s.
const LONG: u32 = 12_000;

fn completion(model: &str, max_tokens: u32) -> Value {
    json!({
        "model": model,
        "prompt": "Tell me about GPUs.",
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "stream": true,
    })
}

/// Streams one request to its end: the body, or why there is none (status, cut connection).
async fn stream(client: &reqwest::Client, url: &str, body: &Value) -> Result<String, String> {
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    resp.text().await.map_err(|e| format!("body: {e}"))
}

/// `n` concurrent streams of `max_tokens` tokens each.
async fn streams(
    base: &str,
    model: &str,
    n: usize,
    max_tokens: u32,
) -> Vec<Result<String, String>> {
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/completions");
    let body = completion(model, max_tokens);
    futures::future::join_all((0..n).map(|_| stream(&client, &url, &body))).await
}

fn finished(result: &Result<String, String>) -> bool {
    matches!(result, Ok(body) if body.ends_with(DONE))
}

/// A `vllm-sim` process whose stdout and stderr lines are collected.
struct Sim {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Sim {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pipes: [Box<dyn AsyncRead + Unpin + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let readers = pipes
            .into_iter()
            .map(|reader| {
                let lines = lines.clone();
                tokio::spawn(async move {
                    let mut reader = BufReader::new(reader).lines();
                    while let Ok(Some(line)) = reader.next_line().await {
                        lines.lock().unwrap().push(line);
                    }
                })
            })
            .collect();
        Self {
            child,
            lines,
            readers,
        }
    }

    /// The base URL, once the server reported its port and is ready.
    async fn ready(&self) -> String {
        let started = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                {
                    let lines = self.lines.lock().unwrap();
                    let ready = lines
                        .iter()
                        .any(|l| l == "INFO:     Application startup complete.");
                    let port = lines.iter().find_map(|l| {
                        let (_, rest) =
                            l.split_once("Starting vLLM server on http://127.0.0.1:")?;
                        rest.trim().parse::<u16>().ok()
                    });
                    if let (true, Some(port)) = (ready, port) {
                        return format!("http://127.0.0.1:{port}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        started.unwrap_or_else(|_| panic!("not ready: {:#?}", self.lines.lock().unwrap()))
    }

    /// Waits for the exit (10 s at most) and the end of both pipes; returns the exit code and
    /// every output line.
    async fn exit(mut self) -> (Option<i32>, Vec<String>) {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running: {:#?}", self.lines.lock().unwrap()))
            .unwrap();
        for reader in self.readers {
            reader.await.unwrap();
        }
        let lines = self.lines.lock().unwrap().clone();
        (status.code(), lines)
    }
}

#[tokio::test]
async fn the_binary_dies_with_exit_code_1_when_the_batch_reaches_n() {
    let sim = Sim::spawn(&[
        "serve",
        "m",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-model-len",
        "16384",
        "--sim-timing",
        "model",
        "--sim-speedup",
        "20",
        "--sim-crash-at-running",
        "4",
        "--disable-log-stats",
    ]);
    let base = sim.ready().await;

    // Two at once stay below the limit.
    for result in streams(&base, "m", 2, 8).await {
        assert!(finished(&result), "{result:?}");
    }
    // Four long ones at once: the fourth admitted kills the engine.
    let results = streams(&base, "m", 4, LONG).await;
    let (code, lines) = sim.exit().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert!(
        results.iter().any(|r| !finished(r)),
        "no stream was cut: {results:?}"
    );
    let has = |f: &dyn Fn(&str) -> bool| lines.iter().any(|l| f(l));
    assert!(
        has(&|l| l.starts_with("(EngineCore pid=")
            && l.contains(" ERROR ")
            && l.trim_end()
                .ends_with("] EngineCore encountered a fatal error.")),
        "{lines:#?}"
    );
    assert!(
        has(&|l| l.contains(
            "] torch.OutOfMemoryError: XPU out of memory. Tried to allocate 2.00 GiB. GPU 0 has a \
             total capacity of 23.86 GiB of which 1.02 GiB is free."
        )),
        "{lines:#?}"
    );
    assert!(
        has(&|l| l.starts_with("(APIServer pid=")
            && l.trim_end().ends_with("] AsyncLLM output_handler failed.")),
        "{lines:#?}"
    );
    assert!(
        has(&|l| l.contains("vllm.v1.engine.exceptions.EngineDeadError")),
        "{lines:#?}"
    );
    // A crash, not a shutdown.
    assert!(
        !has(&|l| l.contains("Application shutdown complete.")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn crash_with_a_direct_timing_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["serve", "m", "--port", "0", "--sim-timing", "exact"])
        .args(["--sim-crash-at-running", "4"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--sim-crash-at-running needs --sim-timing model"),
        "{stderr}"
    );

    // The same through the environment.
    let out = Command::new(BIN)
        .args(["serve", "m", "--port", "0"])
        .env("VLLM_SIM_TIMING", "fast")
        .env("VLLM_SIM_CRASH_AT_RUNNING", "2")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn in_process_the_hook_runs_and_the_streams_end_without_done() {
    let calls: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let mut config = SimConfig::new("m");
    config.log_stats = false;
    config.max_model_len = 16_384;
    config.engine.timing.speedup = 20.0;
    config.engine.crash = Some(CrashAt {
        running: 4,
        action: CrashAction::Hook(Arc::new(move |running: usize| {
            seen.lock().unwrap().push(running);
        })),
    });
    let server = Server::start(config).await;

    let ok = streams(&server.base, "m", 2, 8).await;
    for result in &ok {
        let payloads = sse_payloads(result.as_ref().unwrap());
        assert_eq!(payloads.last().unwrap(), "[DONE]");
    }
    assert!(calls.lock().unwrap().is_empty());

    // The engine dies; the server stays up, so the streams end, cleanly but without [DONE].
    let cut = streams(&server.base, "m", 4, LONG).await;
    for result in &cut {
        let body = result.as_ref().unwrap();
        assert!(!body.ends_with(DONE), "{body}");
    }
    assert_eq!(*calls.lock().unwrap(), vec![4]);
    // A dead engine answers 503.
    let (status, _) = server
        .post_text("/v1/completions", completion("m", 2))
        .await;
    assert_eq!(status, 503);
    server.stop().await;
}
