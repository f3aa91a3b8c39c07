//! `--sim-timing exact|fast` over HTTP: the exact schedule as a client sees it on the wall
//! clock, the fast mode's full streams, and that both bypass the engine's limits but not
//! `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, metric, sse_payloads};
use fleetbench_sim::{ExactSchedule, SimConfig, TimingMode};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::time::Instant;

const RUNNING: &str = r#"vllm:num_requests_running{engine="0",model_name="smol"}"#;
const GENERATED: &str = r#"vllm:generation_tokens_total{engine="0",model_name="smol"}"#;
const PROMPT: &str = r#"vllm:prompt_tokens_total{engine="0",model_name="smol"}"#;
const LENGTH: &str =
    r#"vllm:request_success_total{engine="0",finished_reason="length",model_name="smol"}"#;
const ABORT: &str =
    r#"vllm:request_success_total{engine="0",finished_reason="abort",model_name="smol"}"#;

/// Served as `smol` with `mode`; the model's limits and speedup set so that they would show
/// if they applied: one sequence at a time, a tiny KV cache, 100× speedup.
fn config(mode: TimingMode) -> SimConfig {
    let mut config = SimConfig::new("models/smollm2-135m");
    config.served_model_names = vec!["smol".to_owned()];
    config.log_stats = false;
    config.engine.max_num_seqs = 1;
    config.engine.kv_cache_tokens = 64;
    config.engine.timing.speedup = 100.0;
    config.timing_mode = mode;
    config
}

fn exact(ttft_ms: f64, itl_ms: f64) -> TimingMode {
    TimingMode::Exact(ExactSchedule::from_ms(ttft_ms, itl_ms))
}

fn chat(max_tokens: u32, stream: bool) -> Value {
    let mut body = json!({
        "model": "smol",
        "messages": [{"role": "user", "content": "Count to a few thousand, please."}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// An SSE stream read as it arrives: every event with the instant its last byte was read.
struct Events {
    events: Vec<(Instant, String)>,
}

impl Events {
    async fn read(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        while let Some(bytes) = body.next().await {
            let now = Instant::now();
            pending.extend_from_slice(&bytes.unwrap());
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                events.push((now, text));
            }
        }
        assert!(pending.is_empty(), "trailing bytes: {pending:?}");
        Self { events }
    }

    fn body(&self) -> String {
        self.events.iter().map(|(_, e)| e.as_str()).collect()
    }

    /// Arrival instants of the chunks that carry generated text (`delta.content` without
    /// `delta.role`).
    fn content_arrivals(&self) -> Vec<Instant> {
        self.events
            .iter()
            .filter_map(|(at, e)| {
                let json: Value = serde_json::from_str(e.strip_prefix("data: ")?.trim()).ok()?;
                let delta = &json["choices"][0]["delta"];
                (delta.get("content").is_some() && delta.get("role").is_none()).then_some(*at)
            })
            .collect()
    }

    /// The `usage` of the usage chunk.
    fn usage(&self) -> Value {
        let payloads = sse_payloads(&self.body());
        assert_eq!(payloads.last().unwrap(), "[DONE]");
        let chunk: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
        assert_eq!(chunk["choices"], json!([]));
        chunk["usage"].clone()
    }
}

/// The prompt length `/tokenize` gives for `chat(..)`'s messages.
async fn prompt_tokens(server: &Server) -> u64 {
    let tok: Value = server
        .post(
            "/tokenize",
            json!({"model": "smol", "messages": chat(1, false)["messages"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    tok["count"].as_u64().unwrap()
}

/// TTFT 50 ms, ITL 20 ms, 10 tokens: content chunk k arrives at t_send + 50 + 20k ms on the
/// client's wall clock, never early (beyond 2 ms of clock noise), at most 15 ms late, and the
/// 100× speedup of the config does not shorten the schedule.
#[tokio::test]
async fn exact_mode_tokens_arrive_on_their_schedule() {
    let server = Server::start(config(exact(50.0, 20.0))).await;
    let prompt = prompt_tokens(&server).await;
    // Warm the connection so that the timed request does not pay for the TCP handshake.
    assert_eq!(server.get("/health").await.status(), 200);

    let t_send = Instant::now();
    let resp = server.post("/v1/chat/completions", chat(10, true)).await;
    let events = Events::read(resp).await;
    let arrivals = events.content_arrivals();
    assert_eq!(arrivals.len(), 10, "{}", events.body());
    let early = Duration::from_millis(2);
    let late = Duration::from_millis(15);
    let mut previous = t_send;
    for (k, at) in arrivals.iter().enumerate() {
        let due = t_send + Duration::from_millis(50 + 20 * k as u64);
        assert!(
            *at + early >= due,
            "chunk {k} early by {:?}",
            due.duration_since(*at)
        );
        assert!(
            at.duration_since(due) <= late,
            "chunk {k} late by {:?}",
            at.duration_since(due)
        );
        assert!(*at >= previous, "chunk {k} out of order");
        previous = *at;
    }
    let usage = events.usage();
    assert_eq!(
        usage,
        json!({"prompt_tokens": prompt, "total_tokens": prompt + 10, "completion_tokens": 10})
    );
    // The chunks are the model mode's: role chunk first, one token per chunk, `length` last.
    let payloads = sse_payloads(&events.body());
    assert_eq!(payloads.len(), 1 + 10 + 1 + 1);
    let role: Value = serde_json::from_str(&payloads[0]).unwrap();
    assert_eq!(
        role["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let last: Value = serde_json::from_str(&payloads[10]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");

    let text = server.metrics().await;
    assert_eq!(metric(&text, GENERATED), Some(10.0));
    assert_eq!(metric(&text, PROMPT), Some(prompt as f64));
    assert_eq!(metric(&text, LENGTH), Some(1.0));
    assert_eq!(metric(&text, RUNNING), Some(0.0));
    server.stop().await;
}

/// `--max-num-seqs 1` and a 64-token KV cache do not apply: eight concurrent streams all run
/// at once (the running gauge says 8) and all end on their own schedule; a non-streamed
/// request answers when its last token is due.
#[tokio::test]
async fn exact_mode_ignores_engine_limits_and_counts_requests() {
    let server = Server::start(config(exact(50.0, 20.0))).await;
    let t_send = Instant::now();
    let streams: Vec<_> = (0..8)
        .map(|_| {
            let request = server
                .client
                .post(server.url("/v1/chat/completions"))
                .json(&chat(20, true))
                .send();
            tokio::spawn(async move { Events::read(request.await.unwrap()).await })
        })
        .collect();
    // Mid-stream (tokens 0..20 span 50..430 ms): all eight run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&server.metrics().await, RUNNING), Some(8.0));
    for stream in streams {
        let events = stream.await.unwrap();
        let arrivals = events.content_arrivals();
        assert_eq!(arrivals.len(), 20);
        let end = arrivals[19].duration_since(t_send);
        // On the exact schedule (the model at 100× would be done in a few ms), concurrently
        // (serialised, eight 430 ms schedules would take 3.4 s).
        assert!(end >= Duration::from_millis(428), "{end:?}");
        assert!(end < Duration::from_millis(1000), "{end:?}");
        assert_eq!(events.usage()["completion_tokens"], 20);
    }

    let t_send = Instant::now();
    let resp: Value = server
        .post("/v1/chat/completions", chat(5, false))
        .await
        .json()
        .await
        .unwrap();
    let took = t_send.elapsed();
    assert!(took >= Duration::from_millis(128), "{took:?}"); // 50 + 4 × 20
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(resp["usage"]["completion_tokens"], 5);
    assert_eq!(resp["choices"][0]["finish_reason"], "length");

    let text = server.metrics().await;
    assert_eq!(metric(&text, GENERATED), Some(8.0 * 20.0 + 5.0));
    assert_eq!(metric(&text, LENGTH), Some(9.0));
    assert_eq!(metric(&text, RUNNING), Some(0.0));
    server.stop().await;
}

/// A client that leaves mid-stream is an abort, and the running gauge drops.
#[tokio::test]
async fn exact_mode_disconnect_is_an_abort() {
    let server = Server::start(config(exact(1.0, 5.0))).await;
    let resp = server.post("/v1/chat/completions", chat(1000, true)).await;
    let mut body = resp.bytes_stream();
    assert!(body.next().await.unwrap().unwrap().starts_with(b"data: "));
    assert_eq!(metric(&server.metrics().await, RUNNING), Some(1.0));
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = server.metrics().await;
        if metric(&text, ABORT) == Some(1.0) && metric(&text, RUNNING) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "not aborted:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// 2000 tokens as fast as possible: 2000 one-token content chunks, `length`, usage 2000.
#[tokio::test]
async fn fast_mode_streams_every_token() {
    let server = Server::start(config(TimingMode::Fast {
        chunks_per_frame: 16,
    }))
    .await;
    let prompt = prompt_tokens(&server).await;
    let t_send = Instant::now();
    let resp = server.post("/v1/chat/completions", chat(2000, true)).await;
    let events = Events::read(resp).await;
    let took = t_send.elapsed();
    // The model would need 2000 steps of 20 ms / 100 = 4 s; fast mode has no steps.
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(events.content_arrivals().len(), 2000);
    let payloads = sse_payloads(&events.body());
    assert_eq!(payloads.len(), 1 + 2000 + 1 + 1);
    for (k, p) in payloads[1..=2000].iter().enumerate() {
        let chunk: Value = serde_json::from_str(p).unwrap();
        let choice = &chunk["choices"][0];
        let text = choice["delta"]["content"].as_str().unwrap();
        assert_eq!(
            fleetbench_sim::tokenizer::count(text),
            1,
            "chunk {k}: {text:?}"
        );
        let finish = if k == 1999 {
            json!("length")
        } else {
            Value::Null
        };
        assert_eq!(choice["finish_reason"], finish, "chunk {k}");
    }
    assert_eq!(
        events.usage(),
        json!({"prompt_tokens": prompt, "total_tokens": prompt + 2000, "completion_tokens": 2000})
    );
    let text = server.metrics().await;
    assert_eq!(metric(&text, GENERATED), Some(2000.0));
    assert_eq!(metric(&text, PROMPT), Some(prompt as f64));
    assert_eq!(metric(&text, LENGTH), Some(1.0));
    assert_eq!(metric(&text, RUNNING), Some(0.0));

    // Completions in fast mode: no role chunk, same shapes; non-streamed answers at once.
    let (status, sse) = server
        .post_text(
            "/v1/completions",
            json!({"model": "smol", "prompt": "hello world", "max_tokens": 40,
                   "ignore_eos": true, "stream": true}),
        )
        .await;
    assert_eq!(status, 200);
    let payloads = sse_payloads(&sse);
    assert_eq!(
        payloads.len(),
        40 + 1,
        "40 tokens and [DONE], no usage chunk"
    );
    let last: Value = serde_json::from_str(&payloads[39]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(
        last["system_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("vllm-0.32.0-")
    );
    let resp: Value = server
        .post(
            "/v1/completions",
            json!({"model": "smol", "prompt": "hello world", "max_tokens": 7, "ignore_eos": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["usage"]["completion_tokens"], 7);
    server.stop().await;
}

/// `--sim-trace-requests 2`: the last two finished streams, keyed by their `x-request-id`,
/// with one offset per frame (one token each in exact mode), none before its deadline and
/// in order; without the flag `/sim/trace` is a 404.
#[tokio::test]
async fn exact_mode_traces_what_each_stream_did() {
    let off = Server::start(config(exact(1.0, 1.0))).await;
    assert_eq!(off.get("/sim/trace").await.status(), 404);
    off.stop().await;

    let mut traced = config(exact(20.0, 5.0));
    traced.trace_requests = 2;
    let server = Server::start(traced).await;
    for id in ["first", "second", "third"] {
        let resp = server
            .client
            .post(server.url("/v1/chat/completions"))
            .header("x-request-id", id)
            .json(&chat(4, true))
            .send()
            .await
            .unwrap();
        let events = Events::read(resp).await;
        assert_eq!(events.content_arrivals().len(), 4);
    }
    let trace: Value = server.get("/sim/trace").await.json().await.unwrap();
    let streams = trace["streams"].as_array().unwrap();
    let ids: Vec<&str> = streams
        .iter()
        .map(|s| s["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["second", "third"]);
    for s in streams {
        let offsets: Vec<u64> = s["frame_offsets_ns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(offsets.len(), 4, "{s}");
        for (k, at) in offsets.iter().enumerate() {
            let due = 20_000_000 + 5_000_000 * k as u64;
            assert!(*at >= due, "frame {k} at {at} ns, due {due} ns");
        }
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    }
    server.stop().await;
}
