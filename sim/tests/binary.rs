//! Tests of the `vllm-sim` binary as a process: usage errors, readiness line, SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vllm-sim");

#[tokio::test]
async fn unknown_flag_is_rejected() {
    let out = Command::new(BIN)
        .args(["serve", "some/model", "--no-such-flag", "1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[tokio::test]
async fn missing_model_is_a_usage_error() {
    let out = Command::new(BIN).arg("serve").output().await.unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn serves_after_startup_line_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "models/smollm2-135m",
            "--served-model-name",
            "smol",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--sim-startup-ms",
            "200",
            "--sim-speedup",
            "2",
        ])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut port = None;
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line
                .split("Starting vLLM server on http://127.0.0.1:")
                .nth(1)
            {
                port = rest.trim().parse::<u16>().ok();
            }
            if line.contains("Application startup complete.") {
                return;
            }
        }
        panic!("stderr closed before the readiness line");
    })
    .await
    .expect("no readiness line");
    let port = port.expect("no 'Starting vLLM server on' line");
    // Keep draining stderr so the child never blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });

    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let pid = child.id().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    let tail = drain.await.unwrap();
    assert!(
        tail.iter()
            .any(|l| l.contains("Application shutdown complete.")),
        "{tail:#?}"
    );
    assert!(
        tail.iter()
            .any(|l| l.contains("\"GET /health HTTP/1.1\" 200 OK")),
        "{tail:#?}"
    );
}
