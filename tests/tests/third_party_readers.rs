//! Results written by fleetbench are read by real third-party readers: after a vllm-sim
//! sweep, `tests/py/check_readers.py` reads the whole results folder with pyarrow.dataset
//! and DuckDB (Hive partitioning) and compares their totals with `controllerctl results
//! --format json`. pyarrow and DuckDB must be installed (the README's test command installs them, pinned); a missing
//! reader fails the test, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use fleetbench_tests::{
    AgentSpec, Cluster, TINY_SIM_ARGS, submit, tiny_sweep, watch_to_end, workspace_bin,
};

fn sweep() -> String {
    tiny_sweep("readers", "[1, 4, 8]", 5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_the_results_folder_and_agree_with_controllerctl() {
    let cluster = Cluster::start(vec![AgentSpec::sim("alpha", 2, TINY_SIM_ARGS)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    // Two sweeps: the readers see several files per partition.
    for _ in 0..2 {
        let id = submit(&mut client, &sweep()).await;
        let status = watch_to_end(&mut client, &id).await;
        assert_eq!(status.state, "done", "{status:?}");
    }
    let results = cluster.results.clone();

    let out = Command::new(workspace_bin("controllerctl"))
        .env_remove("FLEETBENCH_RESULTS")
        .args(["results", "--format", "json", "--dir"])
        .arg(&results)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("results.json");
    std::fs::write(&json, &out.stdout).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/check_readers.py");
    let python = std::env::var("FLEETBENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let check = Command::new(&python)
        .arg(&script)
        .arg(&results)
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("{python} does not run: {e}"));
    let stdout = String::from_utf8_lossy(&check.stdout);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success(),
        "check_readers.py failed ({}):\n{stdout}\n{stderr}",
        check.status
    );
    println!("{stdout}");
    assert!(stdout.contains("pyarrow.dataset: 24 points"), "{stdout}");
    assert!(stdout.contains("duckdb: 24 points"), "{stdout}");
    cluster.stop().await;
}
