//! The controller as a shared service: the fleet state under a lock, the open agent
//! sessions, and the queue of partition writes. Both gRPC services hold an `Arc` of it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use fleetbench_proto::pb;
use fleetbench_proto::spec::{
    DEFAULT_MAX_POINTS, MAX_POINTS_CEILING, Strategy, SweepSpec, longest_point_id, point_id_fits,
};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use crate::error::ControllerError;
use crate::metrics::{ControllerMetrics, FleetGauges};
use crate::mirror::Mirror;
use crate::state::{Outgoing, PointLimits, State, WriteJob};
use crate::store::Store;

/// The sending half of an agent's session stream.
pub type AgentTx = mpsc::Sender<Result<pb::ControllerMessage, tonic::Status>>;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Root of the Hive-partitioned results tree.
    pub results_dir: PathBuf,
    /// How long a disconnected agent keeps its running point before it is re-queued.
    pub agent_grace: Duration,
    /// Directory of the durable state store (redb); `None` keeps the state in memory
    /// only (a restart forgets every sweep).
    pub state_dir: Option<PathBuf>,
    /// Where the read-only HTTP report pages are served (`GET /`, `GET /sweeps/<id>/report`);
    /// `None`: no HTTP listener.
    pub http: Option<std::net::SocketAddr>,
    /// Where Prometheus metrics are served (`GET /metrics`, see [`crate::metrics`]);
    /// `None`: not served.
    pub metrics: Option<std::net::SocketAddr>,
    /// TLS for the gRPC listener (and client certificates, with a client CA); `None`:
    /// plain text, allowed on loopback only unless `insecure`.
    pub tls: Option<TlsFiles>,
    /// Operator tokens (TOML: `[[token]] name, role, sha256`).
    pub tokens: Option<PathBuf>,
    /// Plain text (or no credentials) on a non-loopback address: the operator said so.
    pub insecure: bool,
    /// Points one sweep may expand to (`--max-points`; capped at
    /// [`MAX_POINTS_CEILING`](fleetbench_proto::spec::MAX_POINTS_CEILING)). Checked from
    /// the matrix sizes before the sweep is expanded.
    pub max_points: u64,
    /// What the controller buffers per point from its agent (records, batches, events).
    pub point_limits: PointLimits,
    /// How long a finished sweep stays in memory before it is archived (its points then
    /// come from the store on demand; see `state/archive.rs`). Only with a store.
    pub archive_after: Duration,
    /// Where the results folder is mirrored (`--results-s3 s3://bucket/prefix`); `None`:
    /// local only.
    pub results_s3: Option<crate::mirror::MirrorConfig>,
}

/// The controller's TLS files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signs agent and operator certificates: with it, clients authenticate
    /// with certificates (agents must).
    pub client_ca: Option<PathBuf>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            results_dir: PathBuf::from("results"),
            agent_grace: Duration::from_secs(60),
            state_dir: None,
            http: None,
            metrics: None,
            tls: None,
            tokens: None,
            insecure: false,
            max_points: DEFAULT_MAX_POINTS,
            point_limits: PointLimits::default(),
            archive_after: Duration::from_secs(300),
            results_s3: None,
        }
    }
}

/// Messages queued for the next group commit (see [`Controller::dispatch`]).
#[derive(Debug, Default)]
struct CommitQueue {
    pending: Vec<Outgoing>,
    /// A caller is committing and sending: the others only queue.
    leading: bool,
    /// The round the messages queued now will be committed in.
    next_round: u64,
}

pub struct Controller {
    pub config: ControllerConfig,
    state: Mutex<State>,
    /// Open agent sessions by agent name, with their registration generation.
    sessions: DashMap<String, (u64, AgentTx)>,
    writes: mpsc::Sender<WriteJob>,
    /// The durable copy of `state`, if configured.
    store: Option<Store>,
    /// Serializes [`Controller::persist`] so an older snapshot never overwrites a newer one.
    persisting: Mutex<()>,
    /// Messages waiting for the commit that makes their state durable (group commit, see
    /// [`Controller::dispatch`]).
    commits: Mutex<CommitQueue>,
    /// The number of the last commit round that finished (see [`Controller::durable`]).
    committed: tokio::sync::watch::Sender<u64>,
    /// Prometheus metrics (`--metrics-addr`).
    pub metrics: ControllerMetrics,
    /// The results mirror's queue, with `--results-s3`.
    mirror: Option<Mirror>,
}

impl Controller {
    /// A controller with an empty, in-memory state.
    pub fn new(config: ControllerConfig, writes: mpsc::Sender<WriteJob>) -> Arc<Self> {
        Self::with_store(config, writes, State::default(), None, None)
    }

    /// A controller resuming `state` (restored from `store`), persisting into `store`.
    pub fn with_store(
        config: ControllerConfig,
        writes: mpsc::Sender<WriteJob>,
        mut state: State,
        store: Option<Store>,
        mirror: Option<Mirror>,
    ) -> Arc<Self> {
        state.limits = config.point_limits;
        Arc::new(Controller {
            config,
            state: Mutex::new(state),
            sessions: DashMap::new(),
            writes,
            store,
            persisting: Mutex::new(()),
            commits: Mutex::new(CommitQueue::default()),
            committed: tokio::sync::watch::Sender::new(0),
            metrics: ControllerMetrics::new(),
            mirror,
        })
    }

    /// Commits the state's changes since the last call to the store, in one write
    /// transaction. Called before any message leaves ([`Controller::dispatch`]), so an
    /// agent never acts on (nor is acknowledged for) a state the store does not hold.
    /// Returns false when the store write failed.
    pub fn persist(&self) -> bool {
        let Some(store) = &self.store else {
            return true;
        };
        let _order = self
            .persisting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ops = self.state().store_ops();
        if ops.is_empty() {
            return true;
        }
        let n = ops.len();
        let started = std::time::Instant::now();
        let applied = store.apply(&ops);
        self.metrics
            .store_committed(applied.is_ok(), started.elapsed());
        if let Err(e) = applied {
            // Retried in full with the next event; the agents keep what is not acked.
            error!(error = %e, ops = n, "cannot persist controller state");
            self.state().store_failed();
            return false;
        }
        debug!(
            ops = n,
            commit_us = started.elapsed().as_micros() as u64,
            "controller state committed"
        );
        true
    }

    /// Archives the sweeps finished for [`ControllerConfig::archive_after`] (none without a
    /// store: their points could not be read back).
    pub fn archive(&self) {
        if self.store.is_some() {
            self.state().archive_finished(self.config.archive_after);
        }
    }

    /// When sweep (or replicate group) `id` has archived members: a state holding the
    /// whole group as read back from the store, to answer from; `None` when all of it is
    /// in memory (or unknown).
    pub async fn archived_view(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Option<State>, ControllerError> {
        let ids: Vec<String> = {
            let st = self.state();
            let group = st.group(id);
            if !group.iter().any(|s| s.archived.is_some()) {
                return Ok(None);
            }
            group.iter().map(|s| s.id.clone()).collect()
        };
        let ctl = Arc::clone(self);
        let loaded = tokio::task::spawn_blocking(move || match &ctl.store {
            Some(store) => store.load_sweeps(&ids),
            None => Ok(Vec::new()),
        })
        .await
        .map_err(|e| ControllerError::Internal(format!("loading an archived sweep: {e}")))??;
        let mut view = State::default();
        for problem in view.restore(crate::store::Loaded {
            sweeps: loaded,
            agents: Vec::new(),
        }) {
            warn!(sweep_id = id, %problem, "archived sweep read back with a problem");
        }
        Ok(Some(view))
    }

    /// The Prometheus exposition, the fleet's gauges read from the state now.
    pub fn metrics_text(&self) -> String {
        let (points, sweeps) = self.state().counts_by_state();
        let queued = self.writes.max_capacity() - self.writes.capacity();
        self.metrics.render(&FleetGauges {
            agents_connected: self.sessions.len() as i64,
            points,
            sweeps,
            write_queue_jobs: queued as i64,
        })
    }

    /// Locks the fleet state. Never hold the guard across an `.await`.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends messages produced under the lock to their agents, once the state they reflect
    /// is durable (decision 2: nothing leaves, no point is acknowledged, before the store
    /// holds it). Group commit: the first caller while no commit runs becomes the leader and
    /// commits, in one store transaction (one fsync), everything the state holds by then,
    /// then sends every message queued so far, and repeats while more were queued; callers
    /// that come while a commit runs only queue their messages and return. With a thousand
    /// agents finishing points together this turned ~2,300 commits a sweep into a few dozen
    /// (`examples/fleet_bench.rs`). Returns the round whose commit covers `out` (see
    /// [`Controller::durable`]).
    pub fn dispatch(&self, out: Outgoing) -> u64 {
        let ticket = {
            let mut q = self.commit_queue();
            q.pending.push(out);
            let ticket = q.next_round;
            if q.leading {
                return ticket;
            }
            q.leading = true;
            ticket
        };
        loop {
            let batch = {
                let mut q = self.commit_queue();
                if q.pending.is_empty() {
                    q.leading = false;
                    break;
                }
                q.next_round += 1;
                std::mem::take(&mut q.pending)
            };
            let durable = off_the_workers(|| self.persist());
            for out in batch {
                self.send(out, durable);
            }
            self.committed.send_modify(|r| *r += 1);
        }
        ticket
    }

    /// Waits until the commit round `ticket` (from [`Controller::dispatch`]) has finished:
    /// what the state held when it was dispatched is durable (or its commit failed and is
    /// retried with the next one). An operator is answered only after this.
    pub async fn durable(&self, ticket: u64) {
        let mut rx = self.committed.subscribe();
        let _ = rx.wait_for(|done| *done > ticket).await;
    }

    fn commit_queue(&self) -> MutexGuard<'_, CommitQueue> {
        self.commits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `out` after its commit; `durable` false: the commit failed.
    fn send(&self, mut out: Outgoing, durable: bool) {
        if !durable {
            // A point is acknowledged only once its state is durable (decision 2): the
            // agent keeps it and resends it after its next reconnect.
            out.retain(|(_, m)| !matches!(m.msg, Some(pb::controller_message::Msg::PointAck(_))));
        }
        for (agent, msg) in out {
            let tx = self.sessions.get(&agent).map(|s| s.1.clone());
            match tx {
                Some(tx) => {
                    match tx.try_send(Ok(msg)) {
                        Ok(()) => {}
                        // The session's queue is full: wait for room rather than drop the
                        // message (a dropped PointAck would leave a result unacknowledged).
                        Err(mpsc::error::TrySendError::Full(msg)) => {
                            tokio::spawn(async move {
                                if tx.send(msg).await.is_err() {
                                    warn!(agent, "agent session closed; message dropped");
                                }
                            });
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            warn!(agent, "agent session closed; message dropped");
                        }
                    }
                }
                None => warn!(agent, "no session for agent; message dropped"),
            }
        }
    }

    pub fn attach_session(&self, name: &str, generation: u64, tx: AgentTx) {
        self.sessions.insert(name.to_string(), (generation, tx));
    }

    pub fn detach_session(&self, name: &str, generation: u64) {
        self.sessions.remove_if(name, |_, (g, _)| *g == generation);
        self.state().disconnect(name, generation);
    }

    /// Validates and queues a sweep; returns (sweep id, points).
    /// Also returns the commit round that makes the sweep durable: answer the operator
    /// only once [`Controller::durable`] says so.
    pub fn submit(
        &self,
        spec_toml: &str,
        file_name: &str,
    ) -> Result<(String, usize, Vec<String>, u64), ControllerError> {
        let spec = SweepSpec::parse_limited(spec_toml, file_name, self.max_points())?;
        let id = sweep_id(spec.name.get_ref());
        let (n, children, out) = {
            let mut st = self.state();
            if let Some(why) = st.unschedulable(&spec) {
                return Err(ControllerError::Status(tonic::Status::failed_precondition(
                    format!("sweep refused: {why}"),
                )));
            }
            let (n, children) = if spec.placement.strategy == Strategy::Replicate {
                // A child's id holds its agent's name: every derived path must still fit.
                let points = spec.point_count().unwrap_or(u64::MAX);
                if let Some(agent) = st
                    .replica_targets(&spec)
                    .into_iter()
                    .find(|a| !point_id_fits(longest_point_id(id.len() + 1 + a.len(), points)))
                {
                    return Err(ControllerError::Usage(format!(
                        "sweep name {:?} with agent name {agent:?} makes point ids too long for \
                         the agent's spool file names; shorten the sweep's name",
                        spec.name.get_ref()
                    )));
                }
                // One child sweep per matching agent, each pinned to it (`<id>.<agent>`).
                let children = st.add_replicas(&id, &spec)?;
                for (child, _) in &children {
                    st.set_source(child, spec_toml.to_string(), file_name.to_string());
                }
                let n = children.iter().map(|(_, n)| n).sum();
                (n, children.into_iter().map(|(c, _)| c).collect())
            } else {
                let n = st.add_sweep(id.clone(), spec);
                st.set_source(&id, spec_toml.to_string(), file_name.to_string());
                (n, Vec::new())
            };
            (n, children, st.schedule())
        };
        let ticket = self.dispatch(out);
        Ok((id, n, children, ticket))
    }

    /// Points one sweep may expand to on this controller.
    pub fn max_points(&self) -> u64 {
        self.config.max_points.clamp(1, MAX_POINTS_CEILING)
    }

    /// Queues a partition's freshly written `files` for the results mirror, if any;
    /// never waits for it.
    pub fn mirror<'a>(&self, sweep_id: &str, files: impl IntoIterator<Item = &'a std::path::Path>) {
        if let Some(m) = &self.mirror {
            m.queue(sweep_id, files);
        }
    }

    pub fn queue_write(&self, job: WriteJob) {
        if let Err(e) = self.writes.try_send(job) {
            // The writer is behind; keep the job rather than lose a result.
            let writes = self.writes.clone();
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            tokio::spawn(async move {
                if writes.send(job).await.is_err() {
                    warn!("results writer stopped; partition not written");
                }
            });
        }
    }
}

/// Runs `f` (a blocking store commit) so that the runtime's other tasks are not stuck
/// behind it: on a multi-threaded runtime the worker hands its queue over first
/// (`block_in_place`); elsewhere (tests on a current-thread runtime, no runtime) in line.
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// `<name>-<UTC yyyymmddThhmmss>-<4 hex>`: sortable, readable, unique enough per controller.
fn sweep_id(name: &str) -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos();
    let salt = (u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(17))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> 48;
    format!("{name}-{}-{salt:04x}", now.format("%Y%m%dT%H%M%S"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sweep_ids_are_safe_file_names() {
        let id = super::sweep_id("demo");
        assert!(id.starts_with("demo-"), "{id}");
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{id}"
        );
        assert_eq!(id.len(), "demo-".len() + 15 + 1 + 4);
    }
}
