//! Every controllerctl command ends cleanly when its reader has gone away
//! (`controllerctl … | head`): no `failed printing to stdout` panic, no exit 101.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

use fleetbench_tests::{AgentSpec, Cluster, submit, tiny_sweep, workspace_bin};

/// Runs controllerctl with `args` and a standard output whose read end is already
/// closed; returns its exit code and standard error.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let (writer, reader) = tokio::net::unix::pipe::pipe().unwrap();
    drop(reader);
    let writer = writer.into_blocking_fd().unwrap();
    let out = Command::new(workspace_bin("controllerctl"))
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn assert_clean(args: &[&str], want: i32) {
    let (code, stderr) = with_closed_stdout(args);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{args:?}: {stderr}"
    );
    assert_eq!(code, Some(want), "{args:?}: {stderr}");
}

#[test]
fn offline_commands_end_cleanly_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(&sweep, tiny_sweep("pipe", "[1, 2, 4, 8]", 1)).unwrap();
    let sweep = sweep.to_str().unwrap();
    assert_clean(&["validate", sweep], 0);
    assert_clean(&["--help"], 0);
    let certs = dir.path().join("certs");
    assert_clean(
        &["certs", "--out", certs.to_str().unwrap(), "--agents", "a1"],
        0,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_commands_end_cleanly_on_a_closed_pipe() {
    let cluster = Cluster::start(vec![AgentSpec::sim("pipe-agent", 2, &[])]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let sweep_id = submit(&mut client, &tiny_sweep("pipe", "[1]", 1)).await;
    let addr = cluster.addr.clone();
    let results = cluster.results.to_str().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        for args in [
            vec!["--controller", &addr, "status"],
            vec!["--controller", &addr, "status", &sweep_id],
            vec!["--controller", &addr, "agents"],
            vec!["--controller", &addr, "results", &sweep_id, "--live"],
        ] {
            assert_clean(&args, 0);
        }
        // `results` over a folder with no points yet ends with its own code, cleanly.
        let (code, stderr) = with_closed_stdout(&["results", "--dir", &results]);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_ne!(code, Some(101), "{stderr}");
    })
    .await
    .unwrap();
    cluster.stop().await;
}
