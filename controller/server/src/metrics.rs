//! The controller's Prometheus metrics, served at `GET /metrics` on `--metrics-addr` in
//! the Prometheus text format (0.0.4), encoded by the official `prometheus-client` crate.
//!
//! Counters and histograms are updated where the work happens: record batches as they
//! arrive (`agent_service`), partition writes (`writer`), state commits
//! ([`Controller::persist`](crate::service::Controller::persist)). Gauges that describe the
//! fleet (agents connected, points and sweeps by state, queue depths) are read from the
//! state when scraped, so they cannot drift from it.
//!
//! | name | type | what |
//! |---|---|---|
//! | `fleetbench_controller_agents_connected` | gauge | agents with an open session |
//! | `fleetbench_controller_points{state}` | gauge | points by state (`pending`, `running`, `done`, `failed`, `cancelled`, `skipped`) |
//! | `fleetbench_controller_sweeps{state}` | gauge | sweeps by state (`running`, `done`, `cancelled`) |
//! | `fleetbench_controller_write_queue_jobs` | gauge | write jobs waiting for the results writer |
//! | `fleetbench_controller_ingest_records_total` | counter | request records received |
//! | `fleetbench_controller_ingest_bytes_total` | counter | encoded bytes of the record batches received |
//! | `fleetbench_controller_ingest_batches_total` | counter | record batches received |
//! | `fleetbench_controller_partition_writes_total{result}` | counter | partition writes, `ok` or `error` |
//! | `fleetbench_controller_partition_write_seconds` | histogram | time to write a partition's files |
//! | `fleetbench_controller_mirror_uploads_total{result}` | counter | results files uploaded to the S3 mirror (`--results-s3`), `ok` or `error` |
//! | `fleetbench_controller_store_commits_total{result}` | counter | state commits, `ok` or `error` |
//! | `fleetbench_controller_store_commit_seconds` | histogram | time of one durable (fsynced) state commit |

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// A `result` label: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

impl ResultLabel {
    fn of(ok: bool) -> Self {
        ResultLabel {
            result: if ok { "ok" } else { "error" },
        }
    }
}

/// What the state says when scraped.
#[derive(Debug, Default, Clone)]
pub struct FleetGauges {
    pub agents_connected: i64,
    /// (state, count), every state listed (zeros too).
    pub points: Vec<(&'static str, i64)>,
    pub sweeps: Vec<(&'static str, i64)>,
    pub write_queue_jobs: i64,
}

/// Every metric of the controller and the registry that encodes them.
#[derive(Debug)]
pub struct ControllerMetrics {
    registry: Registry,
    agents_connected: Gauge,
    points: Family<StateLabel, Gauge>,
    sweeps: Family<StateLabel, Gauge>,
    write_queue_jobs: Gauge,
    ingest_records: Counter,
    ingest_bytes: Counter,
    ingest_batches: Counter,
    partition_writes: Family<ResultLabel, Counter>,
    partition_write_seconds: Histogram,
    store_commits: Family<ResultLabel, Counter>,
    store_commit_seconds: Histogram,
    mirror_uploads: Family<ResultLabel, Counter>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut m = ControllerMetrics {
            registry: Registry::with_prefix("fleetbench_controller"),
            agents_connected: Gauge::default(),
            points: Family::default(),
            sweeps: Family::default(),
            write_queue_jobs: Gauge::default(),
            ingest_records: Counter::default(),
            ingest_bytes: Counter::default(),
            ingest_batches: Counter::default(),
            partition_writes: Family::default(),
            // 1 ms … ~65 s.
            partition_write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            store_commits: Family::default(),
            // 100 µs … ~3.3 s.
            store_commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            mirror_uploads: Family::default(),
        };
        let registry = &mut m.registry;
        registry.register(
            "agents_connected",
            "Agents with an open session",
            m.agents_connected.clone(),
        );
        registry.register("points", "Points by state", m.points.clone());
        registry.register("sweeps", "Sweeps by state", m.sweeps.clone());
        registry.register(
            "write_queue_jobs",
            "Write jobs waiting for the results writer",
            m.write_queue_jobs.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "ingest_records",
            "Request records received from agents",
            m.ingest_records.clone(),
        );
        registry.register(
            "ingest_bytes",
            "Encoded bytes of the record batches received from agents",
            m.ingest_bytes.clone(),
        );
        registry.register(
            "ingest_batches",
            "Record batches received from agents",
            m.ingest_batches.clone(),
        );
        registry.register(
            "partition_writes",
            "Partition writes (Parquet files of one sweep and GPU count)",
            m.partition_writes.clone(),
        );
        registry.register(
            "partition_write_seconds",
            "Time to write a partition's files",
            m.partition_write_seconds.clone(),
        );
        registry.register(
            "store_commits",
            "Durable state commits",
            m.store_commits.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time of one durable (fsynced) state commit",
            m.store_commit_seconds.clone(),
        );
        registry.register(
            "mirror_uploads",
            "Results files uploaded to the S3 mirror",
            m.mirror_uploads.clone(),
        );
        m
    }

    /// An upload to the results mirror ended.
    pub fn mirror_uploaded(&self, ok: bool) {
        self.mirror_uploads
            .get_or_create(&ResultLabel::of(ok))
            .inc();
    }

    /// A record batch of `records` records and `bytes` encoded bytes arrived.
    pub fn batch_received(&self, records: usize, bytes: usize) {
        self.ingest_batches.inc();
        self.ingest_records.inc_by(records as u64);
        self.ingest_bytes.inc_by(bytes as u64);
    }

    pub fn partition_written(&self, ok: bool, took: Duration) {
        self.partition_writes
            .get_or_create(&ResultLabel::of(ok))
            .inc();
        self.partition_write_seconds.observe(took.as_secs_f64());
    }

    pub fn store_committed(&self, ok: bool, took: Duration) {
        self.store_commits.get_or_create(&ResultLabel::of(ok)).inc();
        if ok {
            self.store_commit_seconds.observe(took.as_secs_f64());
        }
    }

    /// The exposition, with the fleet's gauges set from `fleet` first.
    pub fn render(&self, fleet: &FleetGauges) -> String {
        self.agents_connected.set(fleet.agents_connected);
        for (state, n) in &fleet.points {
            self.points.get_or_create(&StateLabel { state }).set(*n);
        }
        for (state, n) in &fleet.sweeps {
            self.sweeps.get_or_create(&StateLabel { state }).set(*n);
        }
        self.write_queue_jobs.set(fleet.write_queue_jobs);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`ControllerMetrics::render`]'s text (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_and_every_name_the_prefix() {
        let m = ControllerMetrics::new();
        m.batch_received(3, 120);
        m.partition_written(true, Duration::from_millis(4));
        m.store_committed(false, Duration::from_millis(1));
        m.mirror_uploaded(true);
        m.mirror_uploaded(true);
        let text = m.render(&FleetGauges {
            agents_connected: 2,
            points: vec![("pending", 1), ("done", 5)],
            sweeps: vec![("running", 1)],
            write_queue_jobs: 0,
        });
        assert!(
            text.contains("fleetbench_controller_ingest_records_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_controller_ingest_bytes_total 120\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_controller_agents_connected 2\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_controller_points{state=\"done\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_controller_store_commits_total{result=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_controller_mirror_uploads_total{result=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_controller_partition_write_seconds_count 1\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("fleetbench_controller_"), "{line}");
        }
    }
}
