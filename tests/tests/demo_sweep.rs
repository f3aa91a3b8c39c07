//! The embedded demo sweep (`controllerctl local` with no file) is every point `valid` on
//! a small machine: the first curve a new user sees measures the engine, not the client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Instant;

use fleetbench_tests::workspace_bin;
use serde_json::Value;

#[test]
fn the_embedded_demo_is_every_point_valid() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(workspace_bin("controllerctl"))
        .args(["local", "--format", "json"])
        .env("FLEETBENCH_VLLM_SIM", workspace_bin("vllm-sim"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let points: Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 20, "{points:#?}");
    let not_valid: Vec<String> = points
        .iter()
        .filter(|p| p["state"] != "done" || p["verdict"] != "valid")
        .map(|p| {
            format!(
                "{} gpus, batch {}, {}/{}: {} {}",
                p["gpus"],
                p["batch_size"],
                p["input_tokens"],
                p["output_tokens"],
                p["state"],
                p["verdict"]
            )
        })
        .collect();
    assert!(
        not_valid.is_empty(),
        "{} s; points not valid:\n{}",
        started.elapsed().as_secs(),
        not_valid.join("\n")
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "the demo took {:?}",
        started.elapsed()
    );
}
