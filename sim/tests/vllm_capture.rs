//! The simulator against the real vLLM 0.32 captures in `tests/fixtures/vllm-0.32-cpu/`:
//! live responses are compared with captured ones field by field, in order, with the values
//! that differ between any two runs (ids, times, generated text, counts) masked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fmt::Write as _;

use common::Server;
use fleetbench_sim::SimConfig;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/vllm-0.32-cpu"
);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// A JSON value that keeps the order of object keys (serde_json's `Value` sorts them).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Num(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Num(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Num(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(n) = seq.next_element()? {
                    items.push(n);
                }
                Ok(Node::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Node>()? {
                    entries.push((k, v));
                }
                Ok(Node::Obj(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Fields whose value is the same in every run of the same request.
const STABLE: &[&str] = &["object", "model", "finish_reason", "role", "index"];

/// The JSON with keys in order and run-specific values masked: strings become `"…"` and
/// numbers `0` unless their key is in [`STABLE`]; a `system_fingerprint` keeps its
/// `vllm-<version>-` part; nulls, booleans and structure stay.
fn skeleton(json: &str) -> String {
    fn walk(key: &str, node: &Node, out: &mut String) {
        match node {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Node::Num(n) if STABLE.contains(&key) => out.push_str(n),
            Node::Num(_) => out.push('0'),
            Node::Str(s) if STABLE.contains(&key) => {
                let _ = write!(out, "{s:?}");
            }
            Node::Str(s) if key == "system_fingerprint" => {
                let (version, hash) = s.rsplit_once('-').unwrap();
                assert_eq!(hash.len(), 8, "{s}");
                assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{s}");
                let _ = write!(out, "\"{version}-…\"");
            }
            Node::Str(_) => out.push_str("\"…\""),
            Node::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    walk(key, item, out);
                }
                out.push(']');
            }
            Node::Obj(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k:?}:");
                    walk(k, v, out);
                }
                out.push('}');
            }
        }
    }
    let node: Node = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let mut out = String::new();
    walk("", &node, &mut out);
    out
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn payloads(sse: &str) -> Vec<String> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Skeletons of the JSON payloads (`[DONE]` kept as is).
fn skeletons(payloads: &[String]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| {
            if p == "[DONE]" {
                p.clone()
            } else {
                skeleton(p)
            }
        })
        .collect()
}

/// Sections of `too-long.txt`: (title, status, body lines).
fn too_long_sections() -> Vec<(String, u16, Vec<String>)> {
    let text = fixture("too-long.txt");
    let mut sections = Vec::new();
    for block in text.split("### ").skip(1) {
        let mut lines = block.lines();
        let title = lines.next().unwrap().to_owned();
        let status = lines
            .next()
            .unwrap()
            .strip_prefix("HTTP ")
            .unwrap()
            .parse()
            .unwrap();
        sections.push((title, status, lines.map(str::to_owned).collect()));
    }
    sections
}

/// Like the captured server: SmolLM2 served as `smol`, `--max-model-len 2048`; fast.
async fn start() -> Server {
    let mut config = SimConfig::new("models/smollm2-135m");
    config.served_model_names = vec!["smol".to_owned()];
    config.engine.timing.speedup = 1000.0;
    config.log_stats = false;
    Server::start(config).await
}

/// `chat-stream-32.sse` and `completions-stream.sse` were captured with `ignore_eos`,
/// `min_tokens` = `max_tokens` = 32 and `include_usage`: the simulator's streams for the same
/// requests have the same events, keys in the same order, the same nulls and stable values.
#[tokio::test]
async fn streams_have_the_captured_events_and_keys() {
    let server = start().await;
    let options = json!({"include_usage": true});
    for (path, body, capture) in [
        (
            "/v1/chat/completions",
            json!({"model": "smol", "messages": [{"role": "user", "content": "hello there"}],
                   "max_tokens": 32, "min_tokens": 32, "ignore_eos": true,
                   "stream": true, "stream_options": options}),
            "chat-stream-32.sse",
        ),
        (
            "/v1/completions",
            json!({"model": "smol", "prompt": "hello world",
                   "max_tokens": 32, "min_tokens": 32, "ignore_eos": true,
                   "stream": true, "stream_options": options}),
            "completions-stream.sse",
        ),
    ] {
        let (status, sse) = server.post_text(path, body).await;
        assert_eq!(status, 200);
        let ours = skeletons(&payloads(&sse));
        let theirs = skeletons(&payloads(&fixture(capture)));
        assert_eq!(ours.len(), theirs.len(), "{capture}: event count");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "{capture}: event {i}");
        }
        // The usage numbers match too: the capture's prompts are 32 and 2 tokens long
        // under SmolLM2's template; ours under the synthetic one.
        let usage: Value = serde_json::from_str(&payloads(&sse)[ours.len() - 2]).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 32);
    }
    // `hello world` is two tokens for both tokenizers: the usage chunk is identical but for
    // the id, the time and the fingerprint's hash.
    let (_, sse) = server
        .post_text(
            "/v1/completions",
            json!({"model": "smol", "prompt": "hello world", "max_tokens": 32, "ignore_eos": true,
                   "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
    let ours = payloads(&sse);
    let usage: Value = serde_json::from_str(&ours[ours.len() - 2]).unwrap();
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 2, "total_tokens": 34, "completion_tokens": 32})
    );
    server.stop().await;
}

/// `too-long.txt`: vLLM 0.32 clamps prompt + max_tokens to the context length (finish_reason
/// "length"), and answers a prompt that alone does not fit with a 400 before any stream.
#[tokio::test]
async fn over_long_requests_behave_like_vllm() {
    let server = start().await;
    let sections = too_long_sections();
    assert_eq!(sections.len(), 4);

    // 1. "hello world" + max_tokens 2047: 2 + 2046 = 2048 tokens, finish_reason length.
    let (title, status, lines) = &sections[0];
    assert!(title.contains(r#""max_tokens":2047"#), "{title}");
    let (our_status, body) = server
        .post_text(
            "/v1/completions",
            json!({"prompt": "hello world", "max_tokens": 2047, "ignore_eos": true}),
        )
        .await;
    assert_eq!((our_status, *status), (200, 200));
    assert_eq!(skeleton(&body), skeleton(&lines[0]));
    let ours: Value = serde_json::from_str(&body).unwrap();
    let theirs: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(ours["usage"], theirs["usage"]);
    assert_eq!(ours["choices"][0]["finish_reason"], "length");
    assert_eq!(ours["model"], "smol");
    let id = ours["id"].as_str().unwrap();
    assert_eq!(id.len(), theirs["id"].as_str().unwrap().len(), "{id}");

    // 2. 2040 prompt tokens + max_tokens 64, streamed: 8 tokens, then usage, then [DONE].
    let (title, status, lines) = &sections[1];
    assert!(title.contains("2040 tokens"), "{title}");
    let prompt = "hello ".repeat(2039);
    let (count_status, count) = server
        .post_text("/tokenize", json!({"model": "smol", "prompt": prompt}))
        .await;
    assert_eq!(count_status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&count).unwrap()["count"],
        2040
    );
    let (our_status, sse) = server
        .post_text(
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 64, "ignore_eos": true, "stream": true,
                   "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!((our_status, *status), (200, 200));
    let ours = payloads(&sse);
    assert_eq!(ours.len(), 8 + 2, "8 tokens, usage, [DONE]");
    let theirs: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(skeletons(&ours[ours.len() - 3..]), skeletons(&theirs));
    let our_usage: Value = serde_json::from_str(&ours[8]).unwrap();
    let their_usage: Value = serde_json::from_str(&theirs[1]).unwrap();
    assert_eq!(our_usage["usage"], their_usage["usage"]);

    // 3. and 4. A prompt that alone exceeds the context: the same 400 body, byte for byte,
    // from /v1/completions and from a streamed chat request.
    let too_long = "hello ".repeat(2100);
    let requests = [
        (
            "/v1/completions",
            json!({"prompt": too_long, "max_tokens": 16}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": too_long}], "stream": true}),
        ),
    ];
    for ((path, body), (title, status, lines)) in requests.into_iter().zip(&sections[2..]) {
        let (our_status, answer) = server.post_text(path, body).await;
        assert_eq!(our_status, *status, "{title}");
        assert_eq!(answer, lines[0], "{title}");
    }
    server.stop().await;
}

/// The families a benchmark client scrapes have vLLM's exact names, types and label sets after
/// load, and the whole `vllm:` exposition keeps the capture's series.
#[tokio::test]
async fn metrics_after_load_have_the_captured_series() {
    let server = start().await;
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let body = if path == "/v1/completions" {
            json!({"prompt": "hello world", "max_tokens": 32, "ignore_eos": true})
        } else {
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 32,
                   "ignore_eos": true})
        };
        assert_eq!(server.post_text(path, body).await.0, 200);
    }
    let ours = server.get_text("/metrics").await;
    let theirs = fixture("metrics-after-load.prom");
    let series = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("vllm:") && !l.starts_with("vllm:cache_config_info"))
            .map(|l| {
                if l.starts_with('#') {
                    l.to_owned()
                } else {
                    l.rsplit_once(' ').unwrap().0.to_owned()
                }
            })
            .collect()
    };
    assert_eq!(series(&ours), series(&theirs));
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    ] {
        let type_line = format!("# TYPE {name} ");
        let pick = |text: &str| {
            text.lines()
                .filter(|l| l.starts_with(&type_line) || l.starts_with(&format!("{name}{{")))
                .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(&ours), pick(&theirs), "{name}");
        assert!(!pick(&ours).is_empty());
    }
    // The counters count what was served: 64 tokens generated, two requests ended by length.
    let value = |series: &str| -> f64 {
        ours.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap()
    };
    assert_eq!(
        value(r#"vllm:generation_tokens_total{engine="0",model_name="smol"}"#),
        64.0
    );
    assert_eq!(
        value(
            r#"vllm:request_success_total{engine="0",finished_reason="length",model_name="smol"}"#
        ),
        2.0
    );
    assert_eq!(
        value(r#"vllm:request_params_max_tokens_sum{engine="0",model_name="smol"}"#),
        64.0
    );
    server.stop().await;
}

/// `/tokenize` answers vLLM's `TokenizeResponse` fields in order; `/v1/models` the model card.
#[tokio::test]
async fn tokenize_and_models_have_vllms_fields() {
    let server = start().await;
    let (status, body) = server
        .post_text(
            "/tokenize",
            json!({"model": "smol", "prompt": "hello world"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        skeleton(&body),
        r#"{"count":0,"max_model_len":0,"tokens":[0,0],"token_strs":null}"#
    );
    let models = server.get_text("/v1/models").await;
    assert_eq!(
        skeleton(&models),
        r#"{"object":"list","data":[{"id":"…","object":"model","created":0,"owned_by":"…","root":"…","parent":null,"max_model_len":0,"permission":[{"id":"…","object":"model_permission","created":0,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"…","group":null,"is_blocking":false}]}]}"#
    );
    server.stop().await;
}

/// Non-streamed chat answers carry vLLM 0.32's `ChatCompletionResponse` fields in order (from
/// vLLM's source: no capture has one); an empty `tool_calls` is left out as vLLM does.
#[tokio::test]
async fn non_streamed_chat_has_vllms_fields() {
    let server = start().await;
    let (status, body) = server
        .post_text(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "ignore_eos": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        skeleton(&body),
        r#"{"id":"…","object":"chat.completion","created":0,"model":"smol","choices":[{"index":0,"message":{"role":"assistant","content":"…","refusal":null,"annotations":null,"audio":null,"function_call":null,"reasoning":null},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null,"routed_experts":null}],"service_tier":null,"system_fingerprint":"vllm-0.32.0-…","usage":{"prompt_tokens":0,"total_tokens":0,"completion_tokens":0,"prompt_tokens_details":null,"completion_tokens_details":null},"prompt_logprobs":null,"prompt_token_ids":null,"prompt_text":null,"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}"#
    );
    server.stop().await;
}
