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
async fn weights_that_do_not_fit_the_gpu_fail_like_vllm() {
    // Llama-3.1-8B in bf16 (15 GiB) on one 12 GB Arc B580: vLLM dies loading the weights.
    let out = Command::new(BIN)
        .args([
            "serve",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--sim-gpu",
            "b580",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("torch.OutOfMemoryError"), "{all}");
    assert!(all.contains("Engine core initialization failed"), "{all}");
    // An unknown profile is a usage error naming the known ones.
    let out = Command::new(BIN)
        .args(["serve", "m", "--sim-gpu", "tpu-v9"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("h100-sxm"));
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// Checks the vLLM prefix of a stdout line and returns `(fileinfo, message)`:
/// `(APIServer pid=N) INFO MM-DD HH:MM:SS [file.py:line] message`.
fn vllm_parts(line: &str, pid: u32) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(&format!("(APIServer pid={pid}) INFO "))?;
    let (time, rest) = rest.split_at_checked(14)?;
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    if shape != "99-99 99:99:99" {
        return None;
    }
    let rest = rest.strip_prefix(" [")?;
    let (fileinfo, message) = rest.split_once("] ")?;
    Some((fileinfo, message))
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // Both streams feed one channel, so neither pipe ever fills up.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Stream, String)>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for (stream, reader) in [
        (
            Stream::Out,
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        ),
        (Stream::Err, Box::new(err)),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send((stream, line));
            }
        });
    }
    drop(tx);

    // Like vLLM: its own lines on stdout, uvicorn's readiness line on stderr.
    let mut port = None;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some((stream, line)) = rx.recv().await {
            seen.push((stream, line.clone()));
            if let Some(("entry.py:140", message)) = vllm_parts(&line, pid) {
                assert_eq!(stream, Stream::Out);
                let rest = message
                    .strip_prefix("Starting vLLM server on http://127.0.0.1:")
                    .unwrap();
                port = rest.parse::<u16>().ok();
            }
            if line == "INFO:     Application startup complete." {
                assert_eq!(stream, Stream::Err);
                return;
            }
        }
        panic!("output closed before the readiness line");
    })
    .await
    .expect("no readiness line");
    let port = port.unwrap_or_else(|| panic!("no 'Starting vLLM server on' line: {seen:#?}"));
    let has =
        |stream: Stream, f: &dyn Fn(&str) -> bool| seen.iter().any(|(s, l)| *s == stream && f(l));
    assert!(has(Stream::Out, &|l| vllm_parts(l, pid)
        == Some((
            "api_utils.py:347",
            " ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0+sim"
        ))));
    assert!(has(Stream::Out, &|l| vllm_parts(l, pid).is_some_and(
        |(f, m)| f == "api_utils.py:286"
            && m.starts_with("non-default args: {'model_tag': 'models/smollm2-135m', ")
    )));
    assert!(has(Stream::Out, &|l| vllm_parts(l, pid)
        == Some((
            "launcher.py:195",
            "Route: /v1/chat/completions, Methods: POST"
        ))));
    assert!(has(Stream::Err, &|l| l
        == format!("INFO:     Started server process [{pid}]")));

    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

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
    let mut tail = Vec::new();
    while let Some(item) = rx.recv().await {
        tail.push(item);
    }
    let has =
        |stream: Stream, f: &dyn Fn(&str) -> bool| tail.iter().any(|(s, l)| *s == stream && f(l));
    assert!(
        has(Stream::Out, &|l| l.starts_with("INFO:     127.0.0.1:")
            && l.ends_with(" - \"GET /health HTTP/1.1\" 200 OK")),
        "{tail:#?}"
    );
    assert!(
        has(Stream::Out, &|l| vllm_parts(l, pid)
            == Some((
                "launcher.py:254",
                "[shutdown] API server: shutdown triggered"
            ))),
        "{tail:#?}"
    );
    assert!(
        has(Stream::Err, &|l| l
            == "INFO:     Application shutdown complete."),
        "{tail:#?}"
    );
}
