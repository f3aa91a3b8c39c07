//! The load modes end to end (controller, agent, vllm-sim as real processes and sockets):
//! `concurrency` keeps N requests in flight for a request count, `rate` sends on the seeded
//! absolute timeline the agent's schedule defines, and every record carries its scheduled
//! and actual send time into the Parquet files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fleetbench_agent::load::prompt::mix;
use fleetbench_agent::load::schedule::RateSchedule;
use fleetbench_proto::spec::Arrival;
use fleetbench_results::layout::partition_dir;
use fleetbench_results::read::{read_point_summaries, read_requests};
use fleetbench_tests::{AgentSpec, Cluster, submit, watch_to_end};

/// Exact-schedule vllm-sim: every request takes 30 ms to its first token and 5 ms per
/// token after, whatever the load, so the load generator's behaviour is what varies.
const EXACT: &[&str] = &[
    "--sim-timing",
    "exact",
    "--sim-ttft-ms",
    "30",
    "--sim-itl-ms",
    "5",
];

fn sweep(name: &str, load: &str, matrix: &str) -> String {
    format!(
        r#"
name = "{name}"
model = "test/modes"
[engine]
kind = "vllm"
runtime = "process"
max_model_len = 1024
[matrix]
gpus = [1]
{matrix}
workloads = [{{ input = 24, output = 8 }}]
[load]
seed = 11
{load}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_and_rate_modes_send_what_they_promise() {
    let cluster = Cluster::start(vec![AgentSpec::sim("modes", 1, EXACT)]).await;
    cluster.wait_agents(1).await;
    let mut client = cluster.client().await;
    let dir = partition_dir(&cluster.results, "test/modes", 1);

    // Concurrency: 4 slots, 40 requests. Each takes 30 + 7 × 5 = 65 ms on the server, so
    // the point holds 4 in flight for ~10 request lifetimes.
    let id = submit(
        &mut client,
        &sweep(
            "conc",
            "mode = \"concurrency\"\nrequests = 40",
            "batch_sizes = [4]",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    let p = &points[0];
    assert_eq!((p.completed, p.failed), (40, 0));
    assert_eq!(p.meta.mode, "concurrency");
    assert!(
        p.achieved_concurrency > 3.6 && p.achieved_concurrency <= 4.0 + 1e-9,
        "achieved concurrency {}",
        p.achieved_concurrency
    );
    assert_eq!(p.verdict, "valid", "{p:?}");
    // The engine's scrapes (every 20 ms here) saw the client's 4 in flight.
    let seen = p.in_flight.expect("engine scraped during the load");
    assert!(seen.scrapes >= 10, "{seen:?}");
    assert!(
        seen.server_peak == 4.0 && seen.client_peak == 4.0,
        "{seen:?}"
    );
    assert!(p.meta.client.cores >= 1 && p.meta.client.wall_s > 0.0);
    let rows = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    assert_eq!(rows.len(), 40);
    // Closed loop: never more than 4 requests between send and last chunk at any send.
    for (_, _, r) in &rows {
        let at = r.send_offset_s;
        let in_flight = rows
            .iter()
            .filter(|(_, _, o)| o.send_offset_s <= at && at < o.send_offset_s + o.e2el_s.unwrap())
            .count();
        assert!(in_flight <= 4, "{in_flight} in flight at {at}");
        assert_eq!(r.input_tokens, Some(24));
        assert_eq!(r.output_tokens, Some(8));
    }

    // Rate: Poisson at 40/s for 1.5 s; the records must follow the agent's seeded schedule
    // exactly (same spec, same timeline), and no request may leave before its time.
    let rate = 40.0;
    let id = submit(
        &mut client,
        &sweep(
            "rate",
            "mode = \"rate\"\narrival = \"poisson\"\nduration_s = 1.5",
            "rates = [40.0]",
        ),
    )
    .await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    let expected = RateSchedule {
        rate,
        arrival: Arrival::Poisson,
        burstiness: 1.0,
        seed: mix(11, f64::to_bits(rate)),
        duration: Some(Duration::from_secs_f64(1.5)),
        max_requests: None,
    }
    .offsets();
    assert!(expected.len() > 20, "{}", expected.len());
    let mut rows = read_requests(&dir.join(format!("{id}.requests.parquet"))).unwrap();
    rows.sort_by_key(|(_, _, r)| r.request_index);
    assert_eq!(rows.len(), expected.len());
    for ((_, _, r), want) in rows.iter().zip(&expected) {
        assert_eq!(r.scheduled_offset_s, want.as_secs_f64());
        assert!(
            r.send_offset_s >= r.scheduled_offset_s,
            "request {} left {} s early",
            r.request_index,
            r.scheduled_offset_s - r.send_offset_s
        );
        assert!(r.success(), "{r:?}");
    }
    let points = read_point_summaries(&dir.join(format!("{id}.points.parquet"))).unwrap();
    let p = &points[0];
    assert_eq!((p.meta.mode.as_str(), p.meta.request_rate), ("rate", rate));
    assert_eq!(p.meta.batch_size, 0);
    assert!(p.send_lag_s.p50.unwrap() >= 0.0);
    assert!(p.achieved_rate > 0.0);
    cluster.stop().await;
}
