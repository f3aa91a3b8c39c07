//! The controller as a shared service: the fleet state under a lock, the open agent
//! sessions, and the queue of partition writes. Both gRPC services hold an `Arc` of it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use fleetbench_proto::pb;
use fleetbench_proto::spec::SweepSpec;
use tokio::sync::mpsc;
use tracing::warn;

use crate::error::ControllerError;
use crate::state::{Outgoing, State, WriteJob};

/// The sending half of an agent's session stream.
pub type AgentTx = mpsc::Sender<Result<pb::ControllerMessage, tonic::Status>>;

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Root of the Hive-partitioned results tree.
    pub results_dir: PathBuf,
    /// How long a disconnected agent keeps its running point before it is re-queued.
    pub agent_grace: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            results_dir: PathBuf::from("results"),
            agent_grace: Duration::from_secs(60),
        }
    }
}

pub struct Controller {
    pub config: ControllerConfig,
    state: Mutex<State>,
    /// Open agent sessions by agent name, with their registration generation.
    sessions: DashMap<String, (u64, AgentTx)>,
    writes: mpsc::Sender<WriteJob>,
}

impl Controller {
    pub fn new(config: ControllerConfig, writes: mpsc::Sender<WriteJob>) -> Arc<Self> {
        Arc::new(Controller {
            config,
            state: Mutex::new(State::default()),
            sessions: DashMap::new(),
            writes,
        })
    }

    /// Locks the fleet state. Never hold the guard across an `.await`.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends messages produced under the lock to their agents.
    pub fn dispatch(&self, out: Outgoing) {
        for (agent, msg) in out {
            let tx = self.sessions.get(&agent).map(|s| s.1.clone());
            match tx {
                Some(tx) => {
                    if let Err(e) = tx.try_send(Ok(msg)) {
                        warn!(agent, error = %e, "cannot queue message for agent");
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
    pub fn submit(
        &self,
        spec_toml: &str,
        file_name: &str,
    ) -> Result<(String, usize), ControllerError> {
        let spec = SweepSpec::parse(spec_toml, file_name)?;
        let id = sweep_id(spec.name.get_ref());
        let (n, out) = {
            let mut st = self.state();
            let n = st.add_sweep(id.clone(), spec);
            (n, st.schedule())
        };
        self.dispatch(out);
        Ok((id, n))
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
