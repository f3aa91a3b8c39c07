//! HTTP tests against `fleetbench_sim::run` on a `127.0.0.1:0` listener, with reqwest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, metric, sse_payloads};
use fleetbench_sim::{SimConfig, tokenizer};
use futures::StreamExt as _;
use serde_json::{Value, json};

/// Served as `smol`, 100× faster than real time, no periodic stats.
fn fast_config() -> SimConfig {
    let mut config = SimConfig::new("models/smollm2-135m");
    config.served_model_names = vec!["smol".to_owned()];
    config.engine.timing.speedup = 100.0;
    config.log_stats = false;
    config
}

fn messages() -> Value {
    json!([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "Write a haiku about GPUs, please."}]}
    ])
}

#[tokio::test]
async fn chat_stream_with_usage_matches_vllm() {
    let server = Server::start(fast_config()).await;
    let n = 7;
    let resp = server
        .post(
            "/v1/chat/completions",
            json!({
                "model": "smol",
                "messages": messages(),
                "max_tokens": n,
                "ignore_eos": true,
                "stream": true,
                "stream_options": {"include_usage": true}
            }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let payloads = sse_payloads(&resp.text().await.unwrap());
    assert_eq!(
        payloads.len(),
        1 + n + 1 + 1,
        "role + {n} tokens + usage + DONE"
    );
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "smol");
    }

    let role = &chunks[0]["choices"][0];
    assert_eq!(role["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(role["finish_reason"], Value::Null);

    let content = &chunks[1..=n];
    for (i, c) in content.iter().enumerate() {
        let choice = &c["choices"][0];
        let text = choice["delta"]["content"].as_str().unwrap();
        assert_eq!(
            tokenizer::count(text),
            1,
            "chunk {i} holds one token: {text:?}"
        );
        assert!(choice["delta"].get("role").is_none());
        if i + 1 < n {
            assert_eq!(choice["finish_reason"], Value::Null);
            assert!(choice.get("stop_reason").is_none());
        } else {
            assert_eq!(choice["finish_reason"], "length");
            assert_eq!(choice["stop_reason"], Value::Null);
        }
    }

    let usage_chunk = &chunks[n + 1];
    assert_eq!(usage_chunk["choices"], json!([]));
    let prompt_tokens = usage_chunk["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage_chunk["usage"]["completion_tokens"], n);
    assert_eq!(
        usage_chunk["usage"]["total_tokens"].as_u64().unwrap(),
        prompt_tokens + n as u64
    );

    // The template count: content tokens + 5 per message + 3 for the generation prompt.
    let expected = tokenizer::count("You are a helpful assistant.")
        + tokenizer::count("Write a haiku about GPUs, please.")
        + 2 * 5
        + 3;
    assert_eq!(prompt_tokens, expected as u64);

    // /tokenize agrees with what the server charged.
    let tok: Value = server
        .post(
            "/tokenize",
            json!({"model": "smol", "messages": messages()}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tok["count"].as_u64(), Some(prompt_tokens));
    assert_eq!(tok["max_model_len"], 2048);
    assert_eq!(
        tok["tokens"].as_array().unwrap().len() as u64,
        prompt_tokens
    );
    assert_eq!(tok["token_strs"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn completions_stream_has_no_role_chunk() {
    let server = Server::start(fast_config()).await;
    let n = 5;
    let resp = server
        .post(
            "/v1/completions",
            json!({
                "model": "smol",
                "prompt": "The quick brown fox",
                "max_tokens": n,
                "ignore_eos": true,
                "stream": true,
                "stream_options": {"include_usage": true}
            }),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let payloads = sse_payloads(&resp.text().await.unwrap());
    assert_eq!(payloads.len(), n + 2);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..=n]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    for (i, c) in chunks[..n].iter().enumerate() {
        assert!(c["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(c["object"], "text_completion");
        let choice = &c["choices"][0];
        assert_eq!(tokenizer::count(choice["text"].as_str().unwrap()), 1);
        assert_eq!(choice["logprobs"], Value::Null);
        assert_eq!(choice["stop_reason"], Value::Null);
        let expected = if i + 1 == n {
            json!("length")
        } else {
            Value::Null
        };
        assert_eq!(choice["finish_reason"], expected);
    }
    let usage = &chunks[n]["usage"];
    assert_eq!(chunks[n]["choices"], json!([]));
    assert_eq!(usage["prompt_tokens"], 4);
    assert_eq!(usage["completion_tokens"], n);
    assert_eq!(usage["total_tokens"], 4 + n);
    server.stop().await;
}

#[tokio::test]
async fn non_streaming_answers_and_natural_stops() {
    let server = Server::start(fast_config()).await;
    let body =
        json!({"model": "smol", "messages": messages(), "max_tokens": 9, "ignore_eos": true});
    let resp: Value = server
        .post("/v1/chat/completions", body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["object"], "chat.completion");
    assert_eq!(resp["choices"][0]["finish_reason"], "length");
    let text = resp["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(tokenizer::count(text), 9);
    assert_eq!(resp["usage"]["completion_tokens"], 9);

    // Without ignore_eos the length is a pure function of the prompt, in [min_tokens, max].
    for i in 0..6 {
        let body = json!({
            "model": "smol",
            "prompt": format!("Prompt number {i} for a natural stop"),
            "max_tokens": 40,
            "min_tokens": 3
        });
        let a: Value = server
            .post("/v1/completions", body.clone())
            .await
            .json()
            .await
            .unwrap();
        let b: Value = server
            .post("/v1/completions", body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
        let completion = a["usage"]["completion_tokens"].as_u64().unwrap();
        assert!((3..=40).contains(&completion), "{completion}");
        let finish = a["choices"][0]["finish_reason"].as_str().unwrap();
        assert_eq!(
            finish == "length",
            completion == 40,
            "{finish} at {completion}"
        );
        if finish == "stop" {
            // The end-of-sequence token counts but has no text.
            let text = a["choices"][0]["text"].as_str().unwrap();
            assert_eq!(tokenizer::count(text) as u64, completion - 1);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn errors_have_vllm_bodies() {
    let mut config = fast_config();
    config.max_model_len = 64;
    config.disable_completions = true;
    let server = Server::start(config).await;

    // --disable-completions: FastAPI's 404, as the seed saw.
    let resp = server
        .post("/v1/completions", json!({"model": "smol", "prompt": "hi"}))
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), r#"{"detail":"Not Found"}"#);
    assert_eq!(server.get("/nope").await.status(), 404);
    assert_eq!(server.get("/v1/chat/completions").await.status(), 405);

    // Unknown model: vLLM names the served aliases.
    let resp = server
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt-4", "messages": messages()}),
        )
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"The model `gpt-4` does not exist. Valid aliases: smol.","type":"NotFoundError","param":"model","code":404}}"#
    );

    // A prompt that alone exceeds max_model_len (69 tokens with the template): vLLM stops
    // tokenizing at 65 and says "at least 65".
    let long = "word ".repeat(60);
    let msgs = json!([{"role": "user", "content": long}]);
    assert_eq!(tokenizer::count(&long) + 5 + 3, 69);
    let resp = server
        .post(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": msgs, "max_tokens": 10}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"This model's maximum context length is 64 tokens. However, your prompt contains at least 65 input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=65)","type":"BadRequestError","param":"input_tokens","code":400}}"#
    );

    // Prompt + max_tokens over max_model_len is not an error (max_tokens alone must fit):
    // generation stops at the context length with finish_reason "length".
    let short = "word ".repeat(20);
    let prompt = (tokenizer::count(&short) + 5 + 3) as u64;
    let resp: Value = server
        .post(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": [{"role": "user", "content": short}], "max_tokens": 60, "ignore_eos": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["usage"]["prompt_tokens"], prompt);
    assert_eq!(resp["usage"]["total_tokens"], 64);
    assert_eq!(resp["usage"]["completion_tokens"], 64 - prompt);
    assert_eq!(resp["choices"][0]["finish_reason"], "length");

    // max_tokens above the context, and stream_options without stream.
    let resp = server
        .post(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": messages(), "max_completion_tokens": 65}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"max_completion_tokens=65 cannot be greater than max_model_len=64. Please request fewer output tokens. (parameter=max_completion_tokens, value=65)","type":"BadRequestError","param":"max_completion_tokens","code":400}}"#
    );
    let resp = server
        .post(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": messages(), "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        r#"{"error":{"message":"Stream options can only be defined when `stream=True`. (parameter=stream_options)","type":"BadRequestError","param":"stream_options","code":400}}"#
    );

    // Malformed JSON is a 400 too.
    let resp = server
        .client
        .post(server.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn info_endpoints() {
    let server = Server::start(fast_config()).await;
    let health = server.get("/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["server"], "uvicorn");
    let load: Value = server.get("/load").await.json().await.unwrap();
    assert_eq!(load, json!({"server_load": 0}));
    assert_eq!(health.text().await.unwrap(), "");

    let version: Value = server.get("/version").await.json().await.unwrap();
    assert_eq!(version, json!({"version": "0.32.0+sim"}));

    let models: Value = server.get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["object"], "list");
    let card = &models["data"][0];
    assert_eq!(card["id"], "smol");
    assert_eq!(card["object"], "model");
    assert_eq!(card["owned_by"], "vllm");
    assert_eq!(card["root"], "models/smollm2-135m");
    assert_eq!(card["parent"], Value::Null);
    assert_eq!(card["max_model_len"], 2048);
    assert!(card["created"].as_u64().unwrap() > 1_700_000_000);
    assert!(card["permission"].is_array());

    let tok: Value = server
        .post(
            "/tokenize",
            json!({"prompt": "Hello, world", "return_token_strs": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tok["count"], 3);
    assert_eq!(tok["token_strs"], json!(["Hello", ",", " world"]));
    let detok: Value = server
        .post(
            "/detokenize",
            json!({"tokens": tokenizer::encode(" the model, the data")}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detok["prompt"], " the model, the data");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_tokens_and_requests() {
    let server = Server::start(fast_config()).await;
    let mut prompt_total = 0;
    for n in [3u64, 4, 5] {
        let resp: Value = server
            .post(
                "/v1/completions",
                json!({"model": "smol", "prompt": "a b c d e f", "max_tokens": n, "ignore_eos": true}),
            )
            .await
            .json()
            .await
            .unwrap();
        prompt_total += resp["usage"]["prompt_tokens"].as_u64().unwrap();
    }
    let resp = server.get("/metrics").await;
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    let labels = r#"{engine="0",model_name="smol"}"#;
    assert_eq!(
        metric(&text, &format!("vllm:generation_tokens_total{labels}")),
        Some(12.0)
    );
    assert_eq!(
        metric(&text, &format!("vllm:prompt_tokens_total{labels}")),
        Some(prompt_total as f64)
    );
    assert_eq!(
        metric(
            &text,
            r#"vllm:request_success_total{engine="0",finished_reason="length",model_name="smol"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, &format!("vllm:num_requests_running{labels}")),
        Some(0.0)
    );
    assert!(text.contains("# TYPE vllm:kv_cache_usage_perc gauge"));
    assert!(text.contains("# HELP vllm:num_requests_waiting "));
    server.stop().await;
}

#[tokio::test]
async fn a_client_disconnect_aborts_the_request() {
    let mut config = fast_config();
    config.engine.timing.speedup = 1.0;
    let server = Server::start(config).await;
    let resp = server
        .post(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": messages(), "max_tokens": 1000, "ignore_eos": true, "stream": true}),
        )
        .await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let running = r#"vllm:num_requests_running{engine="0",model_name="smol"}"#;
    assert_eq!(metric(&server.metrics().await, running), Some(1.0));
    drop(body);

    let abort =
        r#"vllm:request_success_total{engine="0",finished_reason="abort",model_name="smol"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = server.metrics().await;
        if metric(&text, abort) == Some(1.0) && metric(&text, running) == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not aborted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_returns() {
    let mut config = fast_config();
    config.engine.timing.speedup = 1.0;
    let server = Server::start(config).await;
    let resp = server
        .post(
            "/v1/chat/completions",
            json!({"model": "smol", "messages": messages(), "max_tokens": 1000, "ignore_eos": true, "stream": true}),
        )
        .await;
    let mut body = resp.bytes_stream();
    assert!(body.next().await.is_some());
    server.shutdown.cancel();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            rest.extend_from_slice(&chunk);
        }
        rest
    })
    .await
    .expect("stream did not end");
    assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"));
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("run did not return")
        .unwrap()
        .unwrap();
}

/// `n` one-token words from `w{start}`: `"w0 w1 w2"` is 3 tokens.
fn words(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends one completions request of `prompt` and waits for its answer.
async fn complete(server: &common::Server, prompt: &str) {
    let resp: Value = server
        .post(
            "/v1/completions",
            json!({"model": "smol", "prompt": prompt, "max_tokens": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp["usage"]["prompt_tokens"].as_u64(),
        Some(tokenizer::count(prompt) as u64)
    );
}

/// `(vllm:prefix_cache_queries_total, vllm:prefix_cache_hits_total)`.
async fn prefix_counters(server: &common::Server) -> (f64, f64) {
    let text = server.metrics().await;
    let labels = r#"{engine="0",model_name="smol"}"#;
    let value = |name: &str| metric(&text, &format!("{name}{labels}")).unwrap();
    (
        value("vllm:prefix_cache_queries_total"),
        value("vllm:prefix_cache_hits_total"),
    )
}

#[tokio::test]
async fn prefix_cache_hits_show_on_metrics() {
    let server = Server::start(fast_config()).await;
    let text = server.metrics().await;
    for line in [
        "# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.",
        "# TYPE vllm:prefix_cache_queries_total counter",
        "# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.",
        "# TYPE vllm:prefix_cache_hits_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}");
    }
    assert_eq!(prefix_counters(&server).await, (0.0, 0.0));
    // 70 tokens, block size 16: the first time nothing is cached.
    let prompt = words(0, 70);
    complete(&server, &prompt).await;
    assert_eq!(prefix_counters(&server).await, (70.0, 0.0));
    // The same prompt: (70 - 1) / 16 = 4 full blocks, 64 tokens, hit; the last 6 tokens are
    // computed again.
    complete(&server, &prompt).await;
    assert_eq!(prefix_counters(&server).await, (140.0, 64.0));
    // Another prompt of the same length shares nothing.
    complete(&server, &words(1000, 70)).await;
    assert_eq!(prefix_counters(&server).await, (210.0, 64.0));
    // A prompt of 100 tokens whose first 64 are the first prompt's: 4 blocks, 64 tokens.
    complete(&server, &format!("{} {}", words(0, 64), words(2000, 36))).await;
    assert_eq!(prefix_counters(&server).await, (310.0, 128.0));
    let text = server.metrics().await;
    let labels = r#"engine="0",model_name="smol""#;
    assert_eq!(
        metric(
            &text,
            &format!("vllm:prompt_tokens_cached_total{{{labels}}}")
        ),
        Some(128.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!("vllm:prompt_tokens_by_source_total{{{labels},source=\"local_compute\"}}")
        ),
        Some(310.0 - 128.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn without_prefix_caching_metrics_show_no_lookups() {
    let mut config = fast_config();
    config.engine.prefix_caching = false;
    let server = Server::start(config).await;
    let prompt = words(0, 70);
    complete(&server, &prompt).await;
    complete(&server, &prompt).await;
    assert_eq!(prefix_counters(&server).await, (0.0, 0.0));
    assert!(
        server
            .metrics()
            .await
            .contains("enable_prefix_caching=\"False\"")
    );
    server.stop().await;
}
