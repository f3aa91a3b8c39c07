//! `--sim-stall-after-tokens N` and `--sim-disconnect-after-tokens N`: every response stalls
//! (connection left open, nothing more sent) or is cut abruptly (no `[DONE]`, no terminating
//! zero-length chunk) after its N-th content token, in every timing mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Server, sse_payloads};
use fleetbench_sim::{ExactSchedule, SimConfig, StreamFaults, TimingMode};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vllm-sim");

/// How long "nothing more arrives" is watched for: every mode below would have sent all ten
/// tokens within a few milliseconds.
const QUIET: Duration = Duration::from_millis(700);

/// Served as `smol`, 100× faster than real time, no periodic stats.
fn config(mode: TimingMode, faults: StreamFaults) -> SimConfig {
    let mut config = SimConfig::new("models/smollm2-135m");
    config.served_model_names = vec!["smol".to_owned()];
    config.log_stats = false;
    config.engine.timing.speedup = 100.0;
    config.timing_mode = mode;
    config.faults = faults;
    config
}

fn modes() -> [(&'static str, TimingMode); 3] {
    [
        ("model", TimingMode::Model),
        ("exact", TimingMode::Exact(ExactSchedule::from_ms(2.0, 1.0))),
        (
            "fast",
            TimingMode::Fast {
                chunks_per_frame: 16,
            },
        ),
    ]
}

fn stall(n: u32) -> StreamFaults {
    StreamFaults {
        stall_after_tokens: Some(n),
        disconnect_after_tokens: None,
    }
}

fn disconnect(n: u32) -> StreamFaults {
    StreamFaults {
        stall_after_tokens: None,
        disconnect_after_tokens: Some(n),
    }
}

/// The two endpoints: path and a request of `max_tokens` tokens (exactly, `ignore_eos`).
fn requests(max_tokens: u32, stream: bool) -> [(&'static str, Value); 2] {
    let mut completion = json!({
        "model": "smol",
        "prompt": "Count to ten, please.",
        "max_tokens": max_tokens,
        "ignore_eos": true,
    });
    let mut chat = json!({
        "model": "smol",
        "messages": [{"role": "user", "content": "Count to ten, please."}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
    });
    if stream {
        for body in [&mut completion, &mut chat] {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    [
        ("/v1/completions", completion),
        ("/v1/chat/completions", chat),
    ]
}

/// The payloads of the events that carry generated text (chat: `delta.content` without
/// `delta.role`; completions: `text`).
fn content_events(payloads: &[String]) -> Vec<Value> {
    payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|chunk| {
            let choice = &chunk["choices"][0];
            choice.get("text").is_some()
                || (choice["delta"].get("content").is_some()
                    && choice["delta"].get("role").is_none())
        })
        .collect()
}

/// (a) A stalled stream: exactly N content tokens, then nothing, with the connection open;
/// shutdown still ends it (without `[DONE]`).
#[tokio::test]
async fn stall_stops_streams_after_n_tokens_and_keeps_them_open() {
    // The modes side by side: each one waits out several quiet periods.
    futures::future::join_all(modes().map(|(name, mode)| stall_in(name, mode))).await;
}

/// The stall test in one timing mode.
async fn stall_in(mode_name: &str, mode: TimingMode) {
    let server = Server::start(config(mode, stall(3))).await;
    let mut open = Vec::new();
    for (path, body) in requests(10, true) {
        let what = format!("{mode_name} {path}");
        let resp = server.post(path, body).await;
        assert_eq!(resp.status(), 200, "{what}");
        let mut stream = resp.bytes_stream();
        let mut body = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while content_events(&sse_payloads_so_far(&body)).len() < 3 {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: no third token: {body:?}"))
                .unwrap_or_else(|| panic!("{what}: ended early"))
                .unwrap();
            body.extend_from_slice(&chunk);
        }
        // Nothing more arrives, and the connection is neither closed nor reset.
        let next = tokio::time::timeout(QUIET, stream.next()).await;
        assert!(next.is_err(), "{what}: more after the stall: {next:?}");
        let text = String::from_utf8(body).unwrap();
        let payloads = sse_payloads(&text);
        let content = content_events(&payloads);
        assert_eq!(content.len(), 3, "{what}: {text}");
        assert!(
            content
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null()),
            "{what}: {text}"
        );
        assert!(!text.contains("[DONE]"), "{what}: {text}");
        open.push((what, stream));
    }
    // A stalled non-streamed request never gets its answer.
    for (path, body) in requests(10, false) {
        let answer = tokio::time::timeout(QUIET, server.post(path, body)).await;
        assert!(answer.is_err(), "{mode_name} {path}: answered: {answer:?}");
    }
    // Shorter responses than N are not affected.
    for (path, body) in requests(2, true) {
        let (status, text) = server.post_text(path, body).await;
        assert_eq!(status, 200);
        assert_eq!(sse_payloads(&text).last().unwrap(), "[DONE]");
    }
    // Shutdown is not held up by the stalled streams, which end without [DONE].
    let stopping = tokio::spawn(server.stop());
    for (what, mut stream) in open {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => rest.extend_from_slice(&bytes),
                    Err(_) => break,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "{what}: still open after shutdown");
        assert!(
            !String::from_utf8_lossy(&rest).contains("[DONE]"),
            "{what}: {rest:?}"
        );
    }
    stopping.await.unwrap();
}

/// The complete events of a partial SSE body.
fn sse_payloads_so_far(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    match text.rfind("\n\n") {
        Some(end) => sse_payloads(&text[..end + 2]),
        None => Vec::new(),
    }
}

/// An HTTP/1.1 response read from a raw socket until the server closes it.
struct RawResponse {
    head: String,
    /// The body, de-chunked.
    body: String,
    /// Whether the terminating zero-length chunk came.
    terminated: bool,
    /// The raw body bytes.
    raw_body: Vec<u8>,
}

/// Sends one `POST` by hand (`Connection: close`, so that a complete response ends with EOF
/// too) and reads until EOF (or a reset).
async fn raw_post(base: &str, path: &str, body: &Value) -> Vec<u8> {
    let addr = base.strip_prefix("http://").unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{path}: the connection stayed open: {}",
            String::from_utf8_lossy(&out)
        )
    });
    out
}

/// Splits a chunked response; stops at the first incomplete chunk.
fn parse_chunked(raw: &[u8]) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head: {raw:?}"));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let raw_body = raw[split + 4..].to_vec();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut rest: &[u8] = &raw_body;
    let mut body = Vec::new();
    let mut terminated = false;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        let data = &rest[eol + 2..];
        if size == 0 {
            terminated = data.starts_with(b"\r\n");
            break;
        }
        if data.len() < size + 2 {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
    RawResponse {
        head,
        body: String::from_utf8(body).unwrap(),
        terminated,
        raw_body,
    }
}

/// (b) A cut stream, read with a raw TCP client: N content events, no `[DONE]`, no
/// terminating zero-length chunk, and the connection closed.
#[tokio::test]
async fn disconnect_cuts_streams_after_n_tokens_without_the_final_chunk() {
    for (mode_name, mode) in modes() {
        let server = Server::start(config(mode, disconnect(3))).await;
        for (path, body) in requests(10, true) {
            let what = format!("{mode_name} {path}");
            let response = parse_chunked(&raw_post(&server.base, path, &body).await);
            assert!(response.head.starts_with("HTTP/1.1 200 OK"), "{what}");
            assert!(!response.terminated, "{what}: clean end");
            assert!(
                !response.raw_body.ends_with(b"0\r\n\r\n"),
                "{what}: {:?}",
                response.raw_body
            );
            let payloads = sse_payloads(&response.body);
            let content = content_events(&payloads);
            assert_eq!(content.len(), 3, "{what}: {}", response.body);
            assert!(
                content
                    .iter()
                    .all(|c| c["choices"][0]["finish_reason"].is_null()),
                "{what}"
            );
            assert!(!response.body.contains("[DONE]"), "{what}");
            // An HTTP client sees a failed body, not a clean end.
            let resp = server.post(path, body).await;
            assert_eq!(resp.status(), 200);
            assert!(resp.text().await.is_err(), "{what}: clean end with reqwest");
        }
        // The N-th token is the last: its chunk keeps `finish_reason`, but neither the usage
        // chunk nor [DONE] follows.
        for (path, body) in requests(3, true) {
            let what = format!("{mode_name} {path} (3 tokens)");
            let response = parse_chunked(&raw_post(&server.base, path, &body).await);
            assert!(!response.terminated, "{what}");
            let payloads = sse_payloads(&response.body);
            let content = content_events(&payloads);
            assert_eq!(content.len(), 3, "{what}");
            assert_eq!(
                content[2]["choices"][0]["finish_reason"], "length",
                "{what}"
            );
            let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
            assert_ne!(last["choices"], json!([]), "{what}: usage chunk sent");
        }
        // Shorter responses than N are not affected.
        for (path, body) in requests(2, true) {
            let response = parse_chunked(&raw_post(&server.base, path, &body).await);
            assert!(response.terminated, "{mode_name} {path}");
            assert_eq!(sse_payloads(&response.body).last().unwrap(), "[DONE]");
        }
        // A non-streamed request gets no answer at all.
        for (path, body) in requests(10, false) {
            let raw = raw_post(&server.base, path, &body).await;
            assert!(raw.is_empty(), "{mode_name} {path}: {raw:?}");
            let sent = server
                .client
                .post(server.url(path))
                .json(&body)
                .send()
                .await;
            assert!(sent.is_err(), "{mode_name} {path}: answered");
        }
        for (path, body) in requests(2, false) {
            let (status, _) = server.post_text(path, body).await;
            assert_eq!(status, 200, "{mode_name} {path}");
        }
        server.stop().await;
    }
}

/// The flags and their environment variables through the binary: both at once is a usage
/// error, one alone is armed with a start-up warning.
#[tokio::test]
async fn the_binary_warns_and_rejects_both_faults_at_once() {
    let out = Command::new(BIN)
        .args(["serve", "m", "--port", "0"])
        .args(["--sim-stall-after-tokens", "3"])
        .env("VLLM_SIM_DISCONNECT_AFTER_TOKENS", "5")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be combined"), "{stderr}");

    for (var, flag) in [
        ("VLLM_SIM_STALL_AFTER_TOKENS", "--sim-stall-after-tokens"),
        (
            "VLLM_SIM_DISCONNECT_AFTER_TOKENS",
            "--sim-disconnect-after-tokens",
        ),
    ] {
        let mut child = Command::new(BIN)
            .args(["serve", "m", "--host", "127.0.0.1", "--port", "0"])
            .env(var, "4")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let warning = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains(" WARNING ") && line.contains(flag) {
                    return line;
                }
            }
            panic!("no warning for {flag}");
        })
        .await
        .unwrap_or_else(|_| panic!("no warning for {flag}"));
        assert!(warning.contains("after 4 content tokens"), "{warning}");
        child.kill().await.unwrap();
    }
}
