//! Replicas: a `strategy = "replicate"` submission runs the whole sweep once on every
//! matching agent, as child sweeps `<parent>.<agent>` pinned to their agent and grouped
//! under the parent id (which `status`, `watch` and `cancel` accept).

use fleetbench_proto::spec::SweepSpec;
use tracing::info;

use super::State;
use super::model::{Outgoing, Replica, Sweep};
use crate::error::ControllerError;

impl State {
    /// Connected agents that match `spec`'s placement, by name: the hosts a replicate
    /// submission makes one child sweep for.
    pub fn replica_targets(&self, spec: &SweepSpec) -> Vec<String> {
        let mut names: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.connected && spec.placement.matches(&a.inventory))
            .map(|a| a.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Adds one child sweep per connected agent matching `spec`'s placement (a
    /// `strategy = "replicate"` submission under `parent`); returns (child id, points).
    pub fn add_replicas(
        &mut self,
        parent: &str,
        spec: &SweepSpec,
    ) -> Result<Vec<(String, usize)>, ControllerError> {
        let targets = self.replica_targets(spec);
        if targets.is_empty() {
            let connected = self.agents.values().filter(|a| a.connected).count();
            return Err(ControllerError::NoMatchingAgent(format!(
                "{connected} agent(s) connected"
            )));
        }
        let children: Vec<(String, usize)> = targets
            .iter()
            .map(|agent| self.add_replica(parent, agent, spec.clone()))
            .collect();
        info!(sweep_id = %parent, children = children.len(), "replicate sweep submitted");
        Ok(children)
    }

    /// Adds the child sweep `<parent>.<agent>` of a replicate submission, pinned to
    /// `agent`; returns its id and number of points.
    pub fn add_replica(&mut self, parent: &str, agent: &str, spec: SweepSpec) -> (String, usize) {
        let id = format!("{parent}.{agent}");
        let n = self.add_sweep(id.clone(), spec);
        if let Some(s) = self.sweep_mut(&id) {
            s.replica = Some(Replica {
                parent: parent.to_string(),
                agent: agent.to_string(),
            });
        }
        (id, n)
    }

    /// The sweeps an id names: the sweep itself, or the children of a replicate parent.
    pub fn group(&self, id: &str) -> Vec<&Sweep> {
        match self.sweep(id) {
            Some(s) => vec![s],
            None => self
                .sweeps
                .iter()
                .filter(|s| s.replica.as_ref().is_some_and(|r| r.parent == id))
                .collect(),
        }
    }

    /// Cancels a sweep or every child of a replicate group; `None` when the id names
    /// nothing. Returns the messages to send (running points are stopped).
    pub fn cancel_group(&mut self, id: &str) -> Option<Outgoing> {
        let ids: Vec<String> = self.group(id).iter().map(|s| s.id.clone()).collect();
        if ids.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        for member in &ids {
            out.extend(self.cancel(member).unwrap_or_default());
        }
        Some(out)
    }
}
