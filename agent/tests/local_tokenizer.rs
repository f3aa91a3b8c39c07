//! Prompts sized with a local tokenizer.json: vllm-sim writes its synthetic tokenizer as a
//! Hugging Face tokenizer.json (`--sim-tokenizer-json`), the agent loads it with
//! `LocalTokenizer`, and every prompt has exactly the target count by the sim's `/tokenize`.
//! Completions prompts are built without a single `/tokenize` call; chat prompts with one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use fleetbench_agent::load::prompt::{SplitMix64, TokenCounter, build_prompts, words};
use fleetbench_agent::load::request::ApiEndpoint;
use fleetbench_agent::load::tokenizer::LocalTokenizer;
use fleetbench_sim::{Args, SimError, run, tokenizer as sim_tok};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Sim {
    base: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SimError>>,
}

impl Sim {
    /// Starts vllm-sim in-process from a command line that writes its tokenizer.json to
    /// `tokenizer_json`.
    async fn start(tokenizer_json: &Path) -> Self {
        let args = Args::try_parse_vllm([
            "vllm-sim",
            "serve",
            "models/smollm2-135m",
            "--served-model-name",
            "smol",
            "--sim-speedup",
            "100",
            "--disable-log-stats",
            "--sim-tokenizer-json",
            tokenizer_json.to_str().unwrap(),
        ])
        .unwrap();
        let (config, _) = args.into_config().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, shutdown.clone()));
        Sim {
            base: format!("http://{addr}"),
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("sim did not stop")
            .unwrap()
            .unwrap();
    }
}

/// The sim's `/tokenize` count of `text` as a prompt for `endpoint`.
async fn sim_count(client: &reqwest::Client, base: &str, endpoint: ApiEndpoint, text: &str) -> u32 {
    let body = match endpoint {
        ApiEndpoint::Chat => json!({
            "model": "smol",
            "messages": [{"role": "user", "content": text}],
            "add_generation_prompt": true,
        }),
        ApiEndpoint::Completions => json!({"model": "smol", "prompt": text}),
    };
    let resp: Value = client
        .post(format!("{base}/tokenize"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    u32::try_from(resp["count"].as_u64().unwrap()).unwrap()
}

/// A proxy in front of the sim that counts `/tokenize` calls (or answers them 404 when
/// `upstream` is None, like a server without `/tokenize`).
struct Proxy {
    base: String,
    calls: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

#[derive(Clone)]
struct ProxyState {
    upstream: Option<String>,
    client: reqwest::Client,
    calls: Arc<AtomicUsize>,
}

async fn proxy_tokenize(State(state): State<ProxyState>, body: String) -> axum::response::Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let Some(upstream) = &state.upstream else {
        return (StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#).into_response();
    };
    let resp = state
        .client
        .post(format!("{upstream}/tokenize"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let text = resp.text().await.unwrap();
    (status, [("content-type", "application/json")], text).into_response()
}

impl Proxy {
    async fn start(upstream: Option<&str>) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let state = ProxyState {
            upstream: upstream.map(str::to_owned),
            client: reqwest::Client::new(),
            calls: calls.clone(),
        };
        let app = axum::Router::new()
            .route("/tokenize", axum::routing::post(proxy_tokenize))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap();
        });
        Proxy {
            base: format!("http://{addr}"),
            calls,
            shutdown,
        }
    }
}

#[tokio::test]
async fn prompts_built_with_the_sim_tokenizer_json_have_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim").join("tokenizer.json");
    let sim = Sim::start(&path).await;
    let tokenizer = LocalTokenizer::from_file(&path).unwrap();
    assert!(tokenizer.source().ends_with("tokenizer.json"));
    let client = reqwest::Client::new();

    // Completions: counted locally only. The counter's server is unreachable (port 9 on
    // loopback has no listener), so any /tokenize call would fail the build.
    let offline = TokenCounter::new(client.clone(), "http://127.0.0.1:9", "smol")
        .with_local(tokenizer.clone());
    for (target, seed) in [(1, 1), (7, 2), (128, 3), (1000, 4)] {
        let prompts = build_prompts(&offline, ApiEndpoint::Completions, target, 6, seed)
            .await
            .unwrap();
        assert_eq!(prompts.len(), 6);
        for p in &prompts {
            assert!(p.is_exact(target), "{target}: {:?}", p.counted_tokens);
            let served = sim_count(&client, &sim.base, ApiEndpoint::Completions, &p.text).await;
            assert_eq!(served, target, "sim /tokenize of a completions prompt");
        }
    }
    // The same through a counting proxy: no /tokenize call at all.
    let proxy = Proxy::start(Some(&sim.base)).await;
    let counter =
        TokenCounter::new(client.clone(), &proxy.base, "smol").with_local(tokenizer.clone());
    let prompts = build_prompts(&counter, ApiEndpoint::Completions, 300, 8, 9)
        .await
        .unwrap();
    assert!(prompts.iter().all(|p| p.is_exact(300)));
    assert_eq!(proxy.calls.load(Ordering::SeqCst), 0);

    // Chat: one /tokenize call learns the template's tokens, the rest is local.
    for (target, seed) in [(16, 5), (128, 6), (1000, 7)] {
        let counter =
            TokenCounter::new(client.clone(), &proxy.base, "smol").with_local(tokenizer.clone());
        let before = proxy.calls.load(Ordering::SeqCst);
        let prompts = build_prompts(&counter, ApiEndpoint::Chat, target, 6, seed)
            .await
            .unwrap();
        assert_eq!(
            proxy.calls.load(Ordering::SeqCst) - before,
            1,
            "one /tokenize call"
        );
        for p in &prompts {
            assert!(p.is_exact(target), "{target}: {:?}", p.counted_tokens);
            let served = sim_count(&client, &sim.base, ApiEndpoint::Chat, &p.text).await;
            assert_eq!(served, target, "sim /tokenize of a chat prompt");
        }
        // Cloned counters share what was learned.
        let again = counter.clone();
        let _ = build_prompts(&again, ApiEndpoint::Chat, target, 2, seed + 100)
            .await
            .unwrap();
        assert_eq!(proxy.calls.load(Ordering::SeqCst) - before, 1);
    }
    proxy.shutdown.cancel();
    sim.stop().await;
}

#[tokio::test]
async fn chat_with_a_local_tokenizer_needs_the_servers_tokenize() {
    let tokenizer = LocalTokenizer::from_json(&sim_tok::tokenizer_json().to_string()).unwrap();
    let proxy = Proxy::start(None).await;
    let counter =
        TokenCounter::new(reqwest::Client::new(), &proxy.base, "smol").with_local(tokenizer);
    let err = build_prompts(&counter, ApiEndpoint::Chat, 64, 2, 1)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/tokenize") && msg.contains("chat template"),
        "{msg}"
    );
    // Completions still work without it.
    let prompts = build_prompts(&counter, ApiEndpoint::Completions, 64, 2, 1)
        .await
        .unwrap();
    assert!(prompts.iter().all(|p| p.is_exact(64)));
    assert_eq!(proxy.calls.load(Ordering::SeqCst), 1);
    proxy.shutdown.cancel();
}

/// Pieces for random texts: the prompt word pool, and text a tokenizer may split differently.
const TRICKY: &[&str] = &[
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    " \n",
    "\t",
    "\r\n",
    " \t ",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{85}",
    ",",
    ".",
    "!",
    "?",
    "'",
    "\"",
    "(",
    ")",
    " (",
    "-",
    "--",
    "_",
    "<|im_start|>",
    "<|im_end|>",
    "[UNK]",
    "é",
    "naïve",
    "日本語",
    "💡",
    "👩‍👩‍👧",
    "Ω",
    "ß",
    "x\u{301}",
    "42",
    "3.14",
    "A1b2",
    "CamelCase",
    "snake_case",
    "a+b=c",
    "\\",
    "/",
    "@",
    "#",
    "$",
    "\u{200b}",
    "\u{feff}",
    "\u{0}",
    "\u{7f}",
    "تجربة",
    "קוד",
    "Привет",
];

/// A seeded random text mixing prompt words, leading spaces and tricky pieces.
fn random_text(seed: u64) -> String {
    let mut rng = SplitMix64::new(seed);
    let parts = rng.next_u64() % 40;
    let mut text = String::new();
    for i in 0..parts {
        match rng.next_u64() % 4 {
            0 | 1 => text.push_str(&words(rng.next_u64(), (rng.next_u64() % 5 + 1) as usize)),
            2 => text.push_str(TRICKY[(rng.next_u64() % TRICKY.len() as u64) as usize]),
            _ => {
                let ws = [" ", "  ", "\n", " \n ", "\t"];
                text.push_str(ws[(rng.next_u64() % ws.len() as u64) as usize]);
            }
        }
        if i % 7 == 3 {
            text.push(char::from_u32((rng.next_u64() % 0x3000) as u32).unwrap_or('?'));
        }
    }
    text
}

#[test]
fn sim_tokenizer_json_counts_match_the_sim_tokenizer() {
    let tokenizer = LocalTokenizer::from_json(&sim_tok::tokenizer_json().to_string()).unwrap();
    let mut texts: Vec<String> = TRICKY.iter().map(|s| (*s).to_owned()).collect();
    texts.extend(
        [
            "",
            " leading",
            "  two leading",
            "trailing ",
            "trailing  \n",
            "Hello, world!  It's 42.\n\nnaïve ok",
            " \n x",
            "a  b",
            "a\u{a0}b",
            " \u{a0}b",
            " é",
            "  日本",
            "...!!!",
            " . , ;",
            "\n \n \n",
            "tab\tseparated\tvalues",
            // Every Unicode White_Space character, and look-alikes that are not.
            "a\u{b}b\u{c}c\u{1680}d\u{2000}e\u{2005}f\u{200a}g\u{2029}h\u{202f}i\u{205f}j",
            " \u{2003}x",
            "x\u{2003} y",
            "\u{180e}\u{2060} \u{180e}",
        ]
        .map(str::to_owned),
    );
    texts.extend((0..2000).map(random_text));
    texts.push(words(11, 5000));
    for text in &texts {
        let want = sim_tok::count(text);
        for add_special in [true, false] {
            let got = tokenizer.count(text, add_special).unwrap();
            assert_eq!(
                got as usize, want,
                "{text:?} (add_special_tokens={add_special})"
            );
        }
    }
}

#[tokio::test]
async fn sim_tokenize_endpoint_agrees_on_tricky_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let sim = Sim::start(&path).await;
    let tokenizer = LocalTokenizer::from_file(&path).unwrap();
    let client = reqwest::Client::new();
    for seed in 0..100 {
        let text = random_text(seed);
        let served = sim_count(&client, &sim.base, ApiEndpoint::Completions, &text).await;
        assert_eq!(tokenizer.count(&text, true).unwrap(), served, "{text:?}");
    }
    sim.stop().await;
}
