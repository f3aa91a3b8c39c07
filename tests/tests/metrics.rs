//! The controller's and the agent's Prometheus metrics, read through a Prometheus text
//! parser that is not ours (`prometheus-parse`): the names follow the conventions
//! (`fleetbench_…`, counters `_total`, durations `_seconds`) and the counters move with a
//! sweep by exactly what it did.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fleetbench_tests::{AgentSpec, Cluster, free_local_addr, submit, watch_to_end};
use prometheus_parse::{Scrape, Value};

const SWEEP: &str = r#"
name = "metrics"
model = "test-org/tiny-model"

[engine]
kind = "vllm"
runtime = "process"
max_model_len = 512
startup_timeout_s = 60

[matrix]
gpus = [1]
batch_sizes = [1, 3]
workloads = [{ input = 32, output = 8 }]

[load]
mode = "burst"
endpoint = "chat"
waves = 2
warmup_requests = 0
timeout_s = 60
"#;

async fn scrape(url: &str) -> Scrape {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `name` whose labels include `labels`; `None` when absent.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)));
    match sample.map(|x| &x.value) {
        Some(Value::Counter(v)) => *v,
        None => 0.0,
        Some(other) => panic!("{name} is not a counter: {other:?}"),
    }
}

/// Every sample of a scrape: named with `prefix`, counters ending in `_total`, and each
/// family documented.
fn conventional(s: &Scrape, prefix: &str) {
    assert!(!s.samples.is_empty());
    for x in &s.samples {
        assert!(x.metric.starts_with(prefix), "{}", x.metric);
        if matches!(x.value, Value::Counter(_)) {
            assert!(x.metric.ends_with("_total"), "counter {}", x.metric);
        }
        // A histogram's samples belong to the family without their suffix.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| x.metric.strip_suffix(suffix))
            .find(|f| s.docs.contains_key(*f))
            .unwrap_or(&x.metric);
        assert!(s.docs.contains_key(family), "no HELP for {}", x.metric);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_agent_metrics_count_a_sweep() {
    let agent_metrics = free_local_addr();
    let agent = AgentSpec {
        metrics_addr: Some(agent_metrics),
        ..AgentSpec::sim(
            "m1",
            1,
            &["--sim-step-ms", "2", "--sim-step-ms-per-seq", "0"],
        )
    };
    let cluster = Cluster::start_with_metrics(vec![agent]).await;
    cluster.wait_agents(1).await;
    let controller_url = cluster.metrics.clone().unwrap();
    let agent_url = format!("http://{agent_metrics}/metrics");

    let before = scrape(&controller_url).await;
    conventional(&before, "fleetbench_controller_");
    assert_eq!(
        value(&before, "fleetbench_controller_agents_connected", &[]),
        Some(1.0)
    );
    assert_eq!(
        counter(&before, "fleetbench_controller_ingest_records_total", &[]),
        0.0
    );
    let agent_before = scrape(&agent_url).await;
    conventional(&agent_before, "fleetbench_agent_");
    assert_eq!(
        value(&agent_before, "fleetbench_agent_controller_connected", &[]),
        Some(1.0)
    );
    assert_eq!(
        counter(&agent_before, "fleetbench_agent_requests_total", &[]),
        0.0
    );

    let mut client = cluster.client().await;
    let id = submit(&mut client, SWEEP).await;
    let status = watch_to_end(&mut client, &id).await;
    assert_eq!(status.state, "done", "{status:?}");
    // Two waves at batch 1 and at batch 3.
    let requests = 2.0 * (1.0 + 3.0);

    let after = scrape(&controller_url).await;
    conventional(&after, "fleetbench_controller_");
    assert_eq!(
        counter(&after, "fleetbench_controller_ingest_records_total", &[]),
        requests
    );
    assert!(counter(&after, "fleetbench_controller_ingest_bytes_total", &[]) > 0.0);
    assert!(counter(&after, "fleetbench_controller_ingest_batches_total", &[]) >= 2.0);
    assert_eq!(
        value(&after, "fleetbench_controller_points", &[("state", "done")]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &after,
            "fleetbench_controller_points",
            &[("state", "pending")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&after, "fleetbench_controller_sweeps", &[("state", "done")]),
        Some(1.0)
    );
    assert!(
        counter(
            &after,
            "fleetbench_controller_partition_writes_total",
            &[("result", "ok")]
        ) >= 1.0
    );
    // Every write observed by the histogram (its +Inf bucket counts them all).
    assert_eq!(
        value(&after, "fleetbench_controller_partition_write_seconds", &[]),
        Some(counter(
            &after,
            "fleetbench_controller_partition_writes_total",
            &[("result", "ok")]
        ))
    );

    // The agent's side: every request it sent, both points, nothing left in flight; the
    // acknowledgements reach it just after the sweep ends.
    let mut agent_after = scrape(&agent_url).await;
    for _ in 0..100 {
        if value(&agent_after, "fleetbench_agent_unacked_points", &[]) == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        agent_after = scrape(&agent_url).await;
    }
    conventional(&agent_after, "fleetbench_agent_");
    assert_eq!(
        counter(
            &agent_after,
            "fleetbench_agent_requests_total",
            &[("outcome", "ok")]
        ),
        requests
    );
    assert_eq!(
        counter(
            &agent_after,
            "fleetbench_agent_requests_total",
            &[("outcome", "error")]
        ),
        0.0
    );
    assert_eq!(
        value(&agent_after, "fleetbench_agent_requests_in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(
        counter(
            &agent_after,
            "fleetbench_agent_points_total",
            &[("state", "done")]
        ),
        2.0
    );
    assert_eq!(
        value(&agent_after, "fleetbench_agent_unacked_points", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&agent_after, "fleetbench_agent_spool_bytes", &[]),
        Some(0.0)
    );
    assert_eq!(
        counter(&agent_after, "fleetbench_agent_reconnects_total", &[]),
        0.0
    );
    cluster.stop().await;
}
