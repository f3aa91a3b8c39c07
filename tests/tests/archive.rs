//! A finished sweep leaves the controller's memory and is read back from its state store
//! on demand: over real gRPC, `ListSweeps` says it is archived, and `GetSweep`,
//! `WatchSweep` and `GetResults` answer with every point as it was when the sweep ended.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fleetbench_proto::pb;
use fleetbench_tests::{AgentSpec, Cluster, submit, watch_to_end};

const SWEEP: &str = r#"
name = "archived"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 512
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = [1, 2, 4]
workloads = [{ input = 32, output = 8 }]

[load]
mode = "burst"
endpoint = "chat"
timeout_s = 60
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_sweep_is_answered_from_the_store_once_archived() {
    let agent = AgentSpec::sim(
        "a1",
        1,
        &["--sim-step-ms", "2", "--sim-step-ms-per-seq", "0"],
    );
    let cluster = Cluster::start_archiving(vec![agent]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, SWEEP).await;
    let finished = watch_to_end(&mut client, &id).await;
    assert_eq!(finished.state, "done", "{finished:?}");

    // The reaper archives it within a few of its 1 s rounds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = client
            .list_sweeps(pb::ListSweepsRequest {})
            .await
            .unwrap()
            .into_inner();
        let s = listed.sweeps.iter().find(|s| s.sweep_id == id).unwrap();
        if s.archived {
            assert_eq!((s.points_total, s.points_done), (3, 3), "{s:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not archived after 30 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let got = client
        .get_sweep(pb::GetSweepRequest {
            sweep_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.archived);
    assert_eq!(got.points.len(), 3);
    assert_eq!(
        got.points, finished.points,
        "points read back as they ended"
    );
    assert_eq!(got.result_files, finished.result_files);

    let watched = watch_to_end(&mut client, &id).await;
    assert!(watched.archived && watched.state == "done", "{watched:?}");
    assert_eq!(watched.points, finished.points);

    let results = client
        .get_results(pb::GetResultsRequest {
            sweep_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(results.points.len(), 3);
    assert!(results.points.iter().all(|p| p.output_throughput > 0.0));
    cluster.stop().await;
}
