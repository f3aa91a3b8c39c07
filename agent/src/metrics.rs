//! The agent's own Prometheus metrics, served at `GET /metrics` on its `metrics_addr`
//! (`--metrics-addr`) in the Prometheus text format (0.0.4), encoded by the official
//! `prometheus-client` crate. Not the engine's metrics: those the agent scrapes and stores
//! with each point.
//!
//! Counters move where the work happens (the session, the load generator, the lanes);
//! gauges that describe a state (lanes, spool) are read from it when scraped.
//!
//! | name | type | what |
//! |---|---|---|
//! | `fleetbench_agent_controller_connected` | gauge | 1 while a session to the controller is open |
//! | `fleetbench_agent_reconnects_total` | counter | open sessions lost (each is followed by reconnect attempts) |
//! | `fleetbench_agent_lanes{state}` | gauge | engine lanes by state (`idle`, `starting-engine`, `running`, …) |
//! | `fleetbench_agent_requests_in_flight` | gauge | measured requests sent and not yet finished |
//! | `fleetbench_agent_requests_total{outcome}` | counter | measured requests finished, `ok` or `error` |
//! | `fleetbench_agent_points_total{state}` | counter | points finished by this agent, by state |
//! | `fleetbench_agent_spool_bytes` | gauge | bytes of unacknowledged results in the spool |
//! | `fleetbench_agent_unacked_points` | gauge | point attempts whose results the controller has not acknowledged |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A `state` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// An `outcome` label: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// What the agent's state says when scraped.
#[derive(Debug, Default, Clone)]
pub struct AgentGauges {
    /// (state, lanes in it).
    pub lanes: Vec<(String, i64)>,
    pub spool_bytes: i64,
    pub unacked_points: i64,
}

/// The load generator's request counters, shared by every stream.
#[derive(Debug, Clone, Default)]
pub struct RequestCounters {
    in_flight: Gauge,
    finished: Family<OutcomeLabel, Counter>,
}

impl RequestCounters {
    /// A request leaves: in flight until the guard is finished or dropped.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight {
            counters: self.clone(),
            ended: false,
        }
    }
}

/// One measured request in flight.
#[derive(Debug)]
pub struct InFlight {
    counters: RequestCounters,
    ended: bool,
}

impl InFlight {
    /// The request ended, successfully or not.
    pub fn finish(mut self, ok: bool) {
        self.end(ok);
    }

    fn end(&mut self, ok: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.counters.in_flight.dec();
        let outcome = if ok { "ok" } else { "error" };
        self.counters
            .finished
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }
}

impl Drop for InFlight {
    /// A request dropped unfinished (its point cancelled) counts as an error.
    fn drop(&mut self) {
        self.end(false);
    }
}

/// Every metric of the agent and the registry that encodes them. Cheap to clone (the
/// metrics are shared handles); the registry is built once, by [`AgentMetrics::new`].
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    registry: std::sync::Arc<Registry>,
    connected: Gauge,
    reconnects: Counter,
    lanes: Family<StateLabel, Gauge>,
    pub requests: RequestCounters,
    points: Family<StateLabel, Counter>,
    spool_bytes: Gauge,
    unacked_points: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetbench_agent");
        let connected = Gauge::default();
        let reconnects = Counter::default();
        let lanes = Family::<StateLabel, Gauge>::default();
        let requests = RequestCounters::default();
        let points = Family::<StateLabel, Counter>::default();
        let spool_bytes = Gauge::default();
        let unacked_points = Gauge::default();
        registry.register(
            "controller_connected",
            "1 while a session to the controller is open",
            connected.clone(),
        );
        registry.register(
            "reconnects",
            "Open controller sessions lost (each followed by reconnect attempts)",
            reconnects.clone(),
        );
        registry.register("lanes", "Engine lanes by state", lanes.clone());
        registry.register(
            "requests_in_flight",
            "Measured requests sent and not yet finished",
            requests.in_flight.clone(),
        );
        registry.register(
            "requests",
            "Measured requests finished, by outcome",
            requests.finished.clone(),
        );
        registry.register(
            "points",
            "Points finished by this agent, by state",
            points.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes of unacknowledged results in the spool",
            spool_bytes.clone(),
        );
        registry.register(
            "unacked_points",
            "Point attempts whose results the controller has not acknowledged",
            unacked_points.clone(),
        );
        AgentMetrics {
            registry: std::sync::Arc::new(registry),
            connected,
            reconnects,
            lanes,
            requests,
            points,
            spool_bytes,
            unacked_points,
        }
    }

    pub fn session_opened(&self) {
        self.connected.set(1);
    }

    /// A session ended (or failed to open): counted as a reconnect when it had been open.
    pub fn session_ended(&self) {
        if self.connected.set(0) == 1 {
            self.reconnects.inc();
        }
    }

    pub fn point_finished(&self, state: &str) {
        self.points
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .inc();
    }

    /// The exposition, with the state's gauges set from `now` first.
    pub fn render(&self, now: &AgentGauges) -> String {
        // Lanes that left a state read 0 rather than keep their last count.
        self.lanes.clear();
        for (state, n) in &now.lanes {
            self.lanes
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*n);
        }
        self.spool_bytes.set(now.spool_bytes);
        self.unacked_points.set(now.unacked_points);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`AgentMetrics::render`]'s text (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Serves `GET /metrics` on `listener` until `shutdown`, the state's gauges read by
/// `gauges` at each scrape.
pub async fn serve<G>(
    listener: tokio::net::TcpListener,
    metrics: AgentMetrics,
    gauges: G,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()>
where
    G: Fn() -> AgentGauges + Clone + Send + Sync + 'static,
{
    let route = axum::routing::get(move || {
        let (metrics, gauges) = (metrics.clone(), gauges.clone());
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                metrics.render(&gauges()),
            )
        }
    });
    let app = axum::Router::new().route("/metrics", route);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_in_flight_until_it_ends_or_is_dropped() {
        let m = AgentMetrics::new();
        let a = m.requests.start();
        let b = m.requests.start();
        let text = m.render(&AgentGauges::default());
        assert!(
            text.contains("fleetbench_agent_requests_in_flight 2\n"),
            "{text}"
        );
        a.finish(true);
        drop(b);
        let text = m.render(&AgentGauges {
            lanes: vec![("idle".into(), 1)],
            spool_bytes: 10,
            unacked_points: 1,
        });
        assert!(
            text.contains("fleetbench_agent_requests_in_flight 0\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_agent_requests_total{outcome=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_agent_requests_total{outcome=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetbench_agent_lanes{state=\"idle\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("fleetbench_agent_spool_bytes 10\n"), "{text}");
    }
}
