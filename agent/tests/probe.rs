//! The extension probe against servers that are not vLLM: one that rejects vLLM's
//! output-length fields with 422 (as `transformers serve` does), one that ignores
//! `stream_options`, one that refuses everything, and a vLLM-like one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleetbench_agent::load::probe::probe_extensions;
use fleetbench_agent::load::request::{ApiEndpoint, Extensions};

#[derive(Clone, Copy)]
enum Behaviour {
    Vllm,
    /// 422 on `ignore_eos` / `min_tokens`, usage always sent (transformers serve 5.17).
    RejectsLengthFields,
    /// Accepts everything but never sends usage.
    NoUsage,
    /// 400 on every request.
    RefusesAll,
}

async fn serve(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |body: Bytes| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                respond(behaviour, &body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

fn respond(behaviour: Behaviour, body: &serde_json::Value) -> Response {
    let has = |k: &str| body.get(k).is_some();
    let refuse = match behaviour {
        Behaviour::Vllm | Behaviour::NoUsage => false,
        Behaviour::RejectsLengthFields => has("ignore_eos") || has("min_tokens"),
        Behaviour::RefusesAll => true,
    };
    if refuse {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"detail":"Unexpected fields in the request"}"#,
        )
            .into_response();
    }
    let usage = !matches!(behaviour, Behaviour::NoUsage);
    let mut sse = String::from(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
         data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
         data: {\"choices\":[{\"delta\":{\"content\":\" there\"},\"finish_reason\":\"length\"}]}\n\n",
    );
    if usage {
        sse.push_str(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
        );
    }
    sse.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], sse).into_response()
}

#[tokio::test]
async fn vllm_keeps_every_extension() {
    let (url, calls) = serve(Behaviour::Vllm).await;
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let got = probe_extensions(&client, &url, "m", ApiEndpoint::Chat)
        .await
        .unwrap();
    assert_eq!(got.extensions, Extensions::ALL);
    assert!(got.fallbacks.is_empty(), "{:?}", got.fallbacks);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn length_fields_refused_with_422_are_dropped_and_recorded() {
    let (url, calls) = serve(Behaviour::RejectsLengthFields).await;
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let got = probe_extensions(&client, &url, "m", ApiEndpoint::Chat)
        .await
        .unwrap();
    assert_eq!(
        got.extensions,
        Extensions {
            ignore_eos: false,
            min_tokens: false,
            include_usage: true
        }
    );
    assert_eq!(got.fallbacks.len(), 1, "{:?}", got.fallbacks);
    let f = &got.fallbacks[0];
    assert!(
        f.starts_with("ignore_eos, min_tokens refused: output length not forced (HTTP 422"),
        "{f}"
    );
    assert!(f.contains("Unexpected fields"), "{f}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_server_without_usage_is_noted() {
    let (url, _) = serve(Behaviour::NoUsage).await;
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let got = probe_extensions(&client, &url, "m", ApiEndpoint::Chat)
        .await
        .unwrap();
    assert_eq!(got.extensions, Extensions::ALL);
    assert_eq!(
        got.fallbacks,
        vec![
            "stream_options.include_usage ignored: output tokens counted from content chunks"
                .to_string()
        ]
    );
}

#[tokio::test]
async fn a_server_refusing_even_plain_requests_is_an_error() {
    let (url, calls) = serve(Behaviour::RefusesAll).await;
    let client = fleetbench_agent::http_clients().unwrap().probes;
    let err = probe_extensions(&client, &url, "m", ApiEndpoint::Chat)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused even a plain streamed request"),
        "{err}"
    );
    assert!(err.contains("HTTP 422"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
