//! The shared harness of the HTTP tests: `fleetbench_sim::run` on a `127.0.0.1:0` listener,
//! driven with reqwest.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fleetbench_sim::{SimConfig, SimError, run};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A simulator serving on an ephemeral port until [`Server::stop`].
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), SimError>>,
}

impl Server {
    pub async fn start(config: SimConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, shutdown.clone()));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Status and body text of a POST.
    pub async fn post_text(&self, path: &str, body: Value) -> (u16, String) {
        let resp = self.post(path, body).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Body text of a GET.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get_text("/metrics").await
    }

    /// Cancels the server and checks that `run` returns `Ok` within 10 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop")
            .unwrap();
        result.unwrap();
    }
}

/// Splits an SSE body into its `data:` payloads, checking the framing.
pub fn sse_payloads(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "events end with a blank line");
    body.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

/// The metric value of an exact series line such as `vllm:foo{...}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
