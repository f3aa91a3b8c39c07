//! A results write that fails is a failure, not a log line: with a FILE where the sweep's
//! partition folder `model=<slug>` must go (every write fails with ENOTDIR), the sweep's
//! points show `write-failed` with the error, the sweep ends `failed` and `controllerctl
//! watch` exits 3, while the agent keeps its spooled records. Once the blocker is gone the
//! controller's retry lands the rows exactly once, the points turn `done` and the agent,
//! acknowledged, drops its spool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{
    AgentSpec, Cluster, TINY_SIM_ARGS, controllerctl, submit, tiny_sweep, watch_to_end,
};
use tokio::time::{Instant, timeout};

/// `controllerctl`'s exit code when a sweep ends with results not written.
const EXIT_WRITE_FAILED: i32 = 3;

/// Polls `check` every 50 ms until it returns `Some`, failing after `limit`.
async fn until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_results_write_fails_the_watch_then_lands_once_when_the_cause_is_gone() {
    let cluster = Cluster::start(vec![AgentSpec::sim("a", 1, TINY_SIM_ARGS)]).await;
    // A file where the partition folder must go: every write of the sweep fails.
    std::fs::create_dir_all(&cluster.results).unwrap();
    let blocker = cluster.results.join("model=test-org--tiny-model");
    std::fs::write(&blocker, b"in the way").unwrap();
    let spool = cluster.results.parent().unwrap().join("spool").join("a");
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let sweep = tiny_sweep("write-failures", "[1, 2]", 11).replace("gpus = [1, 2]", "gpus = [1]");
    let id = submit(&mut client, &sweep).await;

    // controllerctl watch follows it to its end: failed, exit 3, the reason on each point.
    let (code, watched) = controllerctl(&cluster.addr, &["watch", &id]).await;
    assert_eq!(code, Some(EXIT_WRITE_FAILED), "{watched}");
    assert!(watched.contains("write-failed"), "{watched}");
    assert!(watched.contains("results write failed: "), "{watched}");
    assert!(watched.contains(&format!("sweep {id} failed")), "{watched}");
    assert!(
        watched.contains("0 done, 0 failed, 0 skipped of 4 points; results of 4 not written"),
        "{watched}"
    );

    // The watch stream ends too, on the same state.
    let status = timeout(Duration::from_secs(10), watch_to_end(&mut client, &id))
        .await
        .expect("the watch stream of a failed sweep ends");
    assert_eq!(status.state, "failed", "{status:?}");
    assert_eq!(status.points.len(), 4);
    for p in &status.points {
        assert_eq!(p.state, "write-failed", "{p:?}");
        assert!(
            p.error.starts_with("results write failed: ") && p.error.contains("Not a directory"),
            "{p:?}"
        );
    }
    assert_eq!((status.points_done, status.points_failed), (0, 0));
    assert!(status.result_files.is_empty(), "{status:?}");
    // controllerctl status shows it as well.
    let (code, shown) = controllerctl(&cluster.addr, &["status", &id]).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains(" failed: 4/4 finished") && shown.contains("4 write-failed"),
        "{shown}"
    );
    assert!(shown.contains("error: results write failed: "), "{shown}");
    // Not acknowledged: the agent still holds every point's records.
    assert_eq!(spool_files(&spool), 4, "spool of {}", spool.display());

    // The cause goes away; the controller's retry (backoff at most 30 s) writes the rows.
    std::fs::remove_file(&blocker).unwrap();
    let mut poll = client.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = poll
            .get_sweep(pb::GetSweepRequest {
                sweep_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.state == "done" {
            break s;
        }
        assert!(Instant::now() < deadline, "the retry never landed: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.points_done, 4, "{status:?}");
    assert!(
        status
            .points
            .iter()
            .all(|p| p.state == "done" && p.error.is_empty()),
        "{status:?}"
    );
    // Acknowledged once on disk: the agent drops its spool.
    until(Duration::from_secs(30), "the agent drops its spool", || {
        (spool_files(&spool) == 0).then_some(())
    })
    .await;
    // And a watch now ends done, exit 0.
    let (code, watched) = controllerctl(&cluster.addr, &["watch", &id]).await;
    assert_eq!(code, Some(0), "{watched}");

    let part = cluster
        .results
        .join("model=test-org--tiny-model")
        .join("gpus=1");
    let requests = part.join(format!("{id}.requests.parquet"));
    let points = part.join(format!("{id}.points.parquet"));
    let rows = read_requests(&requests)
        .unwrap_or_else(|e| panic!("{e}; written: {:?}", status.result_files));
    let summaries = read_point_summaries(&points).unwrap();
    assert_eq!(summaries.len(), 4);
    assert!(
        summaries.iter().all(|s| s.meta.state == "done"),
        "{summaries:?}"
    );
    let measured: u32 = status.points.iter().map(|p| p.completed + p.failed).sum();
    // Burst: one row per request of each point (batch sizes 1 and 2, two workloads).
    assert_eq!(measured, 6, "{status:?}");
    assert_eq!(rows.len(), 6, "one row per completed request");
    let unique: BTreeSet<(String, u32, u32)> = rows
        .iter()
        .map(|(pid, attempt, r)| (pid.clone(), *attempt, r.request_index))
        .collect();
    assert_eq!(unique.len(), rows.len(), "no row written twice");
    cluster.stop().await;
}
