//! Placement: which connected agent runs which pending point next. The rules the README
//! describes (placement filters, GPU fit, engine slots, warm engine groups, spread and
//! round-robin across sweeps, replicate children pinned to their agent) are all here, in
//! [`State::schedule`] and the helpers it calls.

use std::collections::{BTreeMap, HashMap};

use fleetbench_proto::pb::{self, controller_message::Msg as CMsg};
use fleetbench_proto::spec::{Strategy, SweepSpec};
use tracing::info;

use super::State;
use super::model::{Outgoing, PointRef, PointState, Sweep, SweepState, msg};

/// How many connected agents hold a warm engine of each group: sweep id → GPU count →
/// agents. Built once per [`State::schedule`] and kept up to date as it assigns (before,
/// every agent's pick rebuilt it from every other agent: agents² work per event).
type Held = HashMap<String, BTreeMap<u32, usize>>;

impl State {
    /// Why no known agent could ever run some of `spec`'s points, if so: none matches its
    /// `[placement]`, or a GPU count of `matrix.gpus` exceeds every matching agent's GPUs
    /// (for `replicate`, the GPUs of each connected matching agent, since each child runs
    /// on its own agent only). `None` when it can run, or while no agent is known at all
    /// (the sweep then waits for one).
    pub fn unschedulable(&self, spec: &SweepSpec) -> Option<String> {
        if self.agents.is_empty() {
            return None;
        }
        let replicate = spec.placement.strategy == Strategy::Replicate;
        let mut matching: Vec<(&str, u32)> = self
            .agents
            .values()
            .filter(|a| (!replicate || a.connected) && spec.placement.matches(&a.inventory))
            .map(|a| (a.name.as_str(), a.gpu_capacity()))
            .collect();
        matching.sort_unstable();
        let known = || {
            let mut names: Vec<String> = self
                .agents
                .values()
                .map(|a| format!("{} ({} GPUs)", a.name, a.gpu_capacity()))
                .collect();
            names.sort();
            names.join(", ")
        };
        if matching.is_empty() {
            if replicate {
                // `add_replicas` refuses it (`NoMatchingAgent`), in its own words.
                return None;
            }
            return Some(format!(
                "no known agent matches the sweep's [placement]; known agents: {}",
                known()
            ));
        }
        let need = spec
            .matrix
            .gpus
            .get_ref()
            .iter()
            .map(|g| *g.get_ref())
            .max()
            .unwrap_or(1);
        let too_small: Vec<String> = matching
            .iter()
            .filter(|(_, cap)| *cap < need)
            .map(|(name, cap)| format!("{name} ({cap} GPUs)"))
            .collect();
        let max_cap = matching.iter().map(|(_, c)| *c).max().unwrap_or(0);
        if need > max_cap || (replicate && !too_small.is_empty()) {
            return Some(format!(
                "matrix.gpus asks for {need} GPUs, more than {} has; the sweep could never finish",
                if replicate || matching.len() == 1 {
                    too_small.join(", ")
                } else {
                    format!("any known matching agent ({})", too_small.join(", "))
                }
            ));
        }
        None
    }

    /// GPUs agent `name` has free (its capacity less the GPUs of its running points) and
    /// whether it may start one more engine.
    fn room(&self, name: &str) -> (u32, bool) {
        let Some(agent) = self.agents.get(name) else {
            return (0, false);
        };
        let used: u32 = agent
            .running
            .iter()
            .filter_map(|(sid, idx)| self.sweep(sid)?.points.get(*idx))
            .map(|p| p.planned.gpus.max(1))
            .sum();
        (
            agent.gpu_capacity().saturating_sub(used),
            agent.running.len() < agent.engine_slots(),
        )
    }

    /// The point agent `name` should run next on `gpu_count` free GPUs, if any (see
    /// [`State::schedule`]).
    fn pick_point(
        &mut self,
        name: &str,
        gpu_count: u32,
        held: &mut Option<Held>,
    ) -> Option<PointRef> {
        let agent = self.agents.get(name)?;
        let eligible: Vec<usize> = self
            .sweeps
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.state == SweepState::Running
                    && s.spec.placement.matches(&agent.inventory)
                    && s.replica.as_ref().is_none_or(|r| r.agent == name)
            })
            .map(|(i, _)| i)
            .collect();
        let first_pending = |si: usize, fits: &dyn Fn(&Sweep, u32) -> bool| {
            self.sweeps.get(si).and_then(|s| {
                s.points
                    .iter()
                    .enumerate()
                    .skip(s.pending_from)
                    .find(|(_, p)| p.state == PointState::Pending && fits(s, p.planned.gpus))
                    .map(|(i, _)| (s.id.clone(), i))
            })
        };
        let warm = agent.engines.iter().rev().find_map(|(ws, wg)| {
            eligible
                .iter()
                .filter(|&&si| self.sweeps.get(si).is_some_and(|s| s.id == *ws))
                .find_map(|&si| first_pending(si, &|_, g| g == *wg && g <= gpu_count))
        });
        if warm.is_some() {
            return warm;
        }
        let held: &Held = held.get_or_insert_with(|| {
            let mut held = Held::new();
            for a in self.agents.values().filter(|a| a.connected) {
                for (sid, g) in &a.engines {
                    *held.entry(sid.clone()).or_default().entry(*g).or_default() += 1;
                }
            }
            held
        });
        // Whether another connected agent holds a warm engine of the group.
        let held_by_other = |s: &Sweep, g: u32| {
            let holders = held.get(&s.id).and_then(|m| m.get(&g)).copied();
            let mine = agent.engines.iter().any(|(ws, wg)| *ws == s.id && *wg == g);
            holders.unwrap_or(0) > usize::from(mine)
        };
        let start = self
            .last_sweep
            .as_ref()
            .and_then(|last| {
                eligible
                    .iter()
                    .position(|&si| self.sweeps.get(si).is_some_and(|s| s.id == *last))
            })
            .map_or(0, |p| p + 1);
        let order: Vec<usize> = eligible
            .iter()
            .cycle()
            .skip(start)
            .take(eligible.len())
            .copied()
            .collect();
        let free = |s: &Sweep, g: u32| g <= gpu_count && !held_by_other(s, g);
        let any = |_: &Sweep, g: u32| g <= gpu_count;
        let chosen = order
            .iter()
            .find_map(|&si| first_pending(si, &free))
            .or_else(|| order.iter().find_map(|&si| first_pending(si, &any)));
        if let Some((sid, _)) = &chosen {
            self.last_sweep = Some(sid.clone());
        }
        chosen
    }

    /// Assigns pending points to connected agents that match the sweep's placement and
    /// have enough free GPUs (an agent without GPUs counts as one, for simulated engines)
    /// and a free engine slot (`max_engines`: one point at a time unless the agent runs
    /// engines side by side on disjoint GPUs). Agents take one point per round, so a
    /// many-GPU agent does not take every point before the others get one.
    ///
    /// Spread: an agent first keeps taking points of its warm engine group (same sweep
    /// and GPU count) so engines restart rarely; a free agent takes a group no other agent
    /// holds, and only when there is none, shares a held group (so every matching host
    /// works). Free agents serve the running sweeps round-robin, starting after the sweep
    /// that got the last new group, rather than strictly in submission order. Replicate
    /// children run only on their own agent.
    pub fn schedule(&mut self) -> Outgoing {
        let mut out = Vec::new();
        // Nothing to hand out: the usual case once a sweep's last points run, when every
        // idle agent would otherwise look for a point in vain after each event.
        let mut pending = false;
        for s in self
            .sweeps
            .iter_mut()
            .filter(|s| s.state == SweepState::Running)
        {
            pending |= s.first_pending().is_some();
        }
        if !pending {
            return out;
        }
        // Built on first need: an agent that keeps its warm group never asks.
        let mut held: Option<Held> = None;
        // Only agents with a free engine slot can take a point (most are busy).
        let mut open: Vec<String> = self
            .agents
            .values()
            .filter(|a| a.connected && a.running.len() < a.engine_slots())
            .map(|a| a.name.clone())
            .collect();
        open.sort();
        while !open.is_empty() {
            open.retain(|name| self.assign_one(name, &mut held, &mut out));
        }
        out
    }

    /// Gives agent `name` one more point if it has room and there is one for it; false
    /// when it got none.
    fn assign_one(&mut self, name: &str, held: &mut Option<Held>, out: &mut Outgoing) -> bool {
        let name = name.to_string();
        let (free_gpus, slot) = self.room(&name);
        if free_gpus == 0 || !slot {
            return false;
        }
        {
            let Some((sid, idx)) = self.pick_point(&name, free_gpus, held) else {
                return false;
            };
            let Some(s) = self.sweep_mut(&sid) else {
                return false;
            };
            let (engine, load) = (s.engine.clone(), s.load.clone());
            s.agents_used.insert(name.clone());
            let Some(p) = s.points.get_mut(idx) else {
                return false;
            };
            p.attempt += 1;
            p.state = PointState::Running {
                agent: name.clone(),
            };
            p.agent = name.clone();
            p.clear_batches();
            p.error.clear();
            p.engine_crashed = false;
            let spec = pb::PointSpec {
                sweep_id: sid.clone(),
                point_id: p.point_id.clone(),
                index: p.planned.index,
                engine: Some(engine),
                gpus: p.planned.gpus,
                workload: Some(p.planned.workload.to_wire()),
                batch_size: p.planned.batch_size,
                load: Some(load),
                attempt: p.attempt,
                request_rate: p.planned.request_rate,
            };
            let gpus = p.planned.gpus;
            info!(agent = %name, point_id = %spec.point_id, attempt = spec.attempt, "point assigned");
            s.bump_point(idx);
            if let Some(a) = self.agents.get_mut(&name) {
                a.running.push((sid.clone(), idx));
                let before = a.engines.clone();
                a.warm((sid, gpus));
                if let Some(held) = held.as_mut() {
                    for (ws, wg) in before.iter().filter(|g| !a.engines.contains(g)) {
                        if let Some(n) = held.get_mut(ws).and_then(|m| m.get_mut(wg)) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    for (ws, wg) in a.engines.iter().filter(|g| !before.contains(g)) {
                        *held.entry(ws.clone()).or_default().entry(*wg).or_default() += 1;
                    }
                }
            }
            out.push((
                name,
                msg(CMsg::Assignment(pb::Assignment { point: Some(spec) })),
            ));
        }
        true
    }
}
