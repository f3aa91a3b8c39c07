//! Endpoints and stream shape: `auto` resolution against vllm-sim with and without
//! `/v1/completions`, and one stream-shape check run over both real vLLM's captured stream
//! and vllm-sim's live stream with the agent's own parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetbench_agent::load::sse::{SseEvent, SseParser};
use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{AgentSpec, Cluster, submit, watch_to_end, workspace_bin};

const FAST: &[&str] = &[
    "--sim-step-ms",
    "2",
    "--sim-step-ms-per-seq",
    "0.1",
    "--sim-prefill-us-per-token",
    "1",
];

fn sweep(name: &str, agent: &str, endpoint: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test/auto"
[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
[matrix]
gpus = [1]
batch_sizes = [1, 4]
workloads = [{{ input = 40, output = 6 }}]
[load]
endpoint = "{endpoint}"
[placement]
agents = ["{agent}"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_chat_when_completions_is_disabled() {
    let mut no_completions = FAST.to_vec();
    no_completions.push("--disable-completions");
    let cluster = Cluster::start(vec![
        AgentSpec::sim("seedlike", 1, &no_completions),
        AgentSpec::sim("full", 1, FAST),
    ])
    .await;
    cluster.wait_agents(2).await;
    let mut client = cluster.client().await;
    let cases = [
        ("auto-seedlike", "seedlike", "auto", "chat"),
        ("auto-full", "full", "auto", "completions"),
        ("forced-completions", "full", "completions", "completions"),
    ];
    for (name, agent, endpoint, expected) in cases {
        let id = submit(&mut client, &sweep(name, agent, endpoint)).await;
        let status = watch_to_end(&mut client, &id).await;
        assert_eq!(
            (status.state.as_str(), status.points_failed),
            ("done", 0),
            "{status:?}"
        );
        let dir = partition_dir(&cluster.results, "test/auto", 1);
        let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
        assert!(
            points.iter().all(|p| p.meta.endpoint == expected),
            "{name}: {points:?}"
        );
        let rows = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
        assert_eq!(rows.len(), 5);
        for (_, _, r) in rows {
            assert_eq!(r.endpoint, expected, "{name}");
            assert_eq!(
                r.input_tokens,
                Some(40),
                "{name}: exact prompt length on {expected}"
            );
            assert_eq!(r.output_tokens, Some(6));
        }
    }
    cluster.stop().await;
}

/// What every vLLM stream with `include_usage` and a forced length looks like: for chat a
/// role-only chunk first (completions have none), content chunks, one finish reason on the
/// last chunk with choices, a usage chunk counting exactly `max_tokens`, then `[DONE]` and
/// nothing after.
pub fn check_stream(events: &[SseEvent], max_tokens: u32, chat: bool) {
    let role_chunk = SseEvent::Chunk {
        content: String::new(),
        finish_reason: None,
    };
    if chat {
        assert_eq!(events.first(), Some(&role_chunk), "role chunk first");
    } else {
        assert_ne!(
            events.first(),
            Some(&role_chunk),
            "completions have no role chunk"
        );
    }
    let chunks: Vec<&SseEvent> = events
        .iter()
        .filter(|e| matches!(e, SseEvent::Chunk { .. }))
        .collect();
    let finishes: Vec<usize> = chunks
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e,
                SseEvent::Chunk {
                    finish_reason: Some(_),
                    ..
                }
            )
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        finishes,
        vec![chunks.len() - 1],
        "one finish reason, on the last chunk"
    );
    assert!(
        matches!(chunks.last(), Some(SseEvent::Chunk { finish_reason: Some(r), .. }) if r == "length")
    );
    let content = chunks
        .iter()
        .filter(|e| matches!(e, SseEvent::Chunk { content, .. } if !content.is_empty()))
        .count();
    assert!(
        content as u32 <= max_tokens && content as u32 >= max_tokens * 9 / 10,
        "{content} content chunks"
    );
    let n = events.len();
    assert!(n >= 3);
    match &events[n - 2] {
        SseEvent::Usage {
            prompt_tokens,
            completion_tokens,
        } => {
            assert_eq!(*completion_tokens, Some(max_tokens));
            assert!(prompt_tokens.unwrap_or(0) > 0);
        }
        other => panic!("usage chunk expected before [DONE], got {other:?}"),
    }
    assert_eq!(events[n - 1], SseEvent::Done);
}

fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let events = p.push(bytes).unwrap();
    assert!(!p.has_partial());
    events
}

struct SimProcess(Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn real_vllm_and_vllm_sim_streams_have_the_same_shape() {
    // Real vLLM 0.32 (CPU build), captured.
    let real = include_bytes!("../fixtures/vllm-0.32-cpu/chat-stream.sse");
    check_stream(&parse_all(real), 128, true);
    let real = include_bytes!("../fixtures/vllm-0.32-cpu/chat-stream-32.sse");
    check_stream(&parse_all(real), 32, true);
    let real = include_bytes!("../fixtures/vllm-0.32-cpu/completions-stream.sse");
    check_stream(&parse_all(real), 32, false);

    // vllm-sim, live.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args: Vec<String> = vec!["serve".into(), "smol".into()];
    args.extend(FAST.iter().map(|s| s.to_string()));
    args.extend([
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
    ]);
    let _sim = SimProcess(
        Command::new(workspace_bin("vllm-sim"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if client
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (path, chat) in [("/v1/chat/completions", true), ("/v1/completions", false)] {
        let mut body = serde_json::json!({
            "model": "smol",
            "max_tokens": 32, "min_tokens": 32, "ignore_eos": true,
            "stream": true, "stream_options": {"include_usage": true},
        });
        if chat {
            body["messages"] = serde_json::json!([{"role": "user", "content": "hello there"}]);
        } else {
            body["prompt"] = serde_json::json!("hello there");
        }
        let bytes = client
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        check_stream(&parse_all(&bytes), 32, chat);
    }
}
