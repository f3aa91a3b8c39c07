//! Prompts counted through each engine kind's own tokenize endpoints, against servers that
//! answer as llama.cpp's `llama-server` and TGI do (bodies and answers as their docs and
//! sources give them), and `transformers serve`, which has none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use fleetbench_agent::load::prompt::{TokenCounter, build_prompts};
use fleetbench_agent::load::request::ApiEndpoint;
use fleetbench_proto::pb::EngineKind;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The requests a fake engine saw, as (path, body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// One token a word; a chat template adds 5 tokens around the user message.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn llama_cpp(seen: Seen) -> String {
    let app = Router::new()
        .route(
            "/tokenize",
            post(
                |State(seen): State<Seen>, Json(body): Json<Value>| async move {
                    seen.lock()
                        .unwrap()
                        .push(("/tokenize".into(), body.clone()));
                    let n = words(body["content"].as_str().unwrap())
                        + usize::from(body["add_special"] == true);
                    Json(json!({"tokens": (0..n).collect::<Vec<_>>()}))
                },
            ),
        )
        .route(
            "/apply-template",
            post(
                |State(seen): State<Seen>, Json(body): Json<Value>| async move {
                    seen.lock()
                        .unwrap()
                        .push(("/apply-template".into(), body.clone()));
                    let content = body["messages"][0]["content"].as_str().unwrap();
                    Json(json!({"prompt": format!("<u> a b {content} </u> <a>")}))
                },
            ),
        )
        .with_state(seen);
    serve(app).await
}

async fn tgi(seen: Seen) -> String {
    let app = Router::new()
        .route(
            "/tokenize",
            post(
                |State(seen): State<Seen>, Json(body): Json<Value>| async move {
                    seen.lock()
                        .unwrap()
                        .push(("/tokenize".into(), body.clone()));
                    let n = words(body["inputs"].as_str().unwrap());
                    Json(json!(
                        (0..n)
                            .map(|i| json!({"id": i, "text": "w"}))
                            .collect::<Vec<_>>()
                    ))
                },
            ),
        )
        .route(
            "/chat_tokenize",
            post(
                |State(seen): State<Seen>, Json(body): Json<Value>| async move {
                    seen.lock()
                        .unwrap()
                        .push(("/chat_tokenize".into(), body.clone()));
                    let n = words(body["messages"][0]["content"].as_str().unwrap()) + 5;
                    Json(json!({
                        "tokenize_response": (0..n).map(|i| json!({"id": i})).collect::<Vec<_>>(),
                        "templated_text": "…",
                    }))
                },
            ),
        )
        .with_state(seen);
    serve(app).await
}

#[tokio::test]
async fn llama_cpp_counts_through_tokenize_and_apply_template() {
    let seen = Seen::default();
    let base = llama_cpp(seen.clone()).await;
    let counter = TokenCounter::new(reqwest::Client::new(), &base, "m")
        .with_engine_kind(EngineKind::LlamaCpp);
    // Completions: the words plus the BOS `add_special` adds.
    let prompts = build_prompts(&counter, ApiEndpoint::Completions, 40, 2, 1)
        .await
        .unwrap();
    assert!(prompts.iter().all(|p| p.is_exact(40)), "{prompts:?}");
    assert!(prompts.iter().all(|p| words(&p.text) == 39));
    // Chat: the templated prompt (5 template words + BOS) is counted.
    let prompts = build_prompts(&counter, ApiEndpoint::Chat, 40, 2, 1)
        .await
        .unwrap();
    assert!(prompts.iter().all(|p| p.is_exact(40)), "{prompts:?}");
    assert!(prompts.iter().all(|p| words(&p.text) == 34));
    let seen = seen.lock().unwrap();
    let (path, body) = seen.iter().find(|(p, _)| p == "/tokenize").unwrap();
    assert_eq!(path, "/tokenize");
    assert_eq!(body["parse_special"], true);
    assert!(
        seen.iter()
            .any(|(p, b)| p == "/apply-template" && b["messages"][0]["role"] == "user")
    );
}

#[tokio::test]
async fn tgi_counts_through_tokenize_and_chat_tokenize() {
    let seen = Seen::default();
    let base = tgi(seen.clone()).await;
    let counter =
        TokenCounter::new(reqwest::Client::new(), &base, "m").with_engine_kind(EngineKind::Tgi);
    let prompts = build_prompts(&counter, ApiEndpoint::Completions, 30, 2, 2)
        .await
        .unwrap();
    assert!(
        prompts
            .iter()
            .all(|p| p.is_exact(30) && words(&p.text) == 30)
    );
    let prompts = build_prompts(&counter, ApiEndpoint::Chat, 30, 2, 2)
        .await
        .unwrap();
    assert!(
        prompts
            .iter()
            .all(|p| p.is_exact(30) && words(&p.text) == 25)
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(p, b)| p == "/chat_tokenize" && b["model"] == "m")
    );
}

#[tokio::test]
async fn transformers_has_no_tokenize_and_asks_nothing() {
    // Nothing listens on loopback port 9: any request would fail the build.
    let counter = TokenCounter::new(reqwest::Client::new(), "http://127.0.0.1:9", "m")
        .with_engine_kind(EngineKind::Transformers);
    let prompts = build_prompts(&counter, ApiEndpoint::Chat, 12, 3, 3)
        .await
        .unwrap();
    assert!(prompts.iter().all(|p| p.counted_tokens.is_none()));
}

#[tokio::test]
async fn an_unexpected_answer_is_an_error_that_names_the_endpoint() {
    let app = Router::new().route("/tokenize", post(|| async { Json(json!({"oops": 1})) }));
    let base = serve(app).await;
    let counter = TokenCounter::new(reqwest::Client::new(), &base, "m")
        .with_engine_kind(EngineKind::LlamaCpp);
    let err = build_prompts(&counter, ApiEndpoint::Completions, 10, 1, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/tokenize") && err.contains("tokens"), "{err}");
}
