//! The point lifecycle: agents registering, disconnecting and being reaped (their points
//! re-queued), record batches arriving, a point attempt finishing (summarized; its records
//! move into the partition's [`WriteJob`]), the engine-crash policy (`on_engine_crash`:
//! retry, skip-larger), cancellation, a sweep's end, and the end of a partition write.

use std::time::Duration;

use fleetbench_proto::limits::{MAX_TEXT_BYTES, truncate_text};
use fleetbench_proto::pb::{self, controller_message::Msg as CMsg};
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::spec::{OnEngineCrash, PlannedPoint};
use fleetbench_proto::unix_millis_now;
use fleetbench_results::summary::{
    ClientStats, Hardware, PointMeta, WarmupStats, load_failure, summarize,
};
use tokio::time::Instant;
use tracing::{info, warn};

use super::State;
use super::model::{AgentEntry, Outgoing, PointRef, PointState, Sweep, SweepState, msg};
use super::partition::{PointRows, WriteJob};

/// Log-tail lines an engine event keeps (the last ones).
const MAX_LOG_TAIL_LINES: usize = 200;
/// Engine metric samples a `PointFinished` keeps.
const MAX_METRIC_SAMPLES: usize = 100_000;

/// A `RecordBatch` with its records decoded (unreadable ones are logged and dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedBatch {
    pub point_id: String,
    pub attempt: u32,
    pub seq: u64,
    pub records: Vec<RequestRecord>,
    /// What the batch costs to buffer: its encoded size plus the records' in-memory
    /// overhead (counted against [`PointLimits::max_bytes`](super::PointLimits)).
    pub bytes: usize,
    /// Its encoded size (what came over the wire, for the metrics).
    pub encoded: usize,
}

impl DecodedBatch {
    /// Decodes the records of `batch`; done before taking the state lock.
    pub fn decode(batch: pb::RecordBatch) -> Self {
        let encoded = prost::Message::encoded_len(&batch);
        let bytes = encoded + batch.records.len() * std::mem::size_of::<RequestRecord>();
        let mut records = Vec::with_capacity(batch.records.len());
        for r in batch.records {
            match RequestRecord::try_from(r) {
                Ok(r) => records.push(r),
                Err(e) => warn!(point_id = %batch.point_id, error = %e, "unreadable record"),
            }
        }
        Self {
            point_id: batch.point_id,
            attempt: batch.attempt,
            seq: batch.seq,
            records,
            bytes,
            encoded,
        }
    }
}

impl State {
    /// An agent registered (or re-registered after a reconnect). Points this agent was
    /// running but no longer knows about are re-queued.
    pub fn register(&mut self, mut inventory: pb::Inventory, active_points: &[String]) -> u64 {
        bound_inventory(&mut inventory);
        self.next_generation += 1;
        let generation = self.next_generation;
        let name = inventory.agent_name.clone();
        let running: Vec<(PointRef, String)> = self
            .agents
            .get(&name)
            .map(|a| a.running.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pref| {
                let pid = self.sweep(&pref.0)?.points.get(pref.1)?.point_id.clone();
                Some((pref, pid))
            })
            .collect();
        let entry = self
            .agents
            .entry(name.clone())
            .or_insert_with(|| AgentEntry::new(name.clone(), inventory.clone(), generation));
        entry.inventory = inventory;
        entry.connected = true;
        entry.generation = generation;
        entry.disconnected_at = None;
        entry.last_seen_ms = unix_millis_now();
        self.persisted.dirty_agents.insert(name.clone());
        for (pref, pid) in running {
            if !active_points.contains(&pid) {
                warn!(agent = %name, point_id = %pid, "agent re-registered without its running point; re-queueing it");
                self.requeue(&pref, "agent restarted during the point");
            }
        }
        generation
    }

    /// The session of `generation` ended. The agent keeps its point for a grace period.
    pub fn disconnect(&mut self, name: &str, generation: u64) {
        if let Some(a) = self.agents.get_mut(name) {
            if a.generation == generation {
                a.connected = false;
                a.disconnected_at = Some(Instant::now());
            }
        }
    }

    pub fn heartbeat(&mut self, name: &str, hb: &pb::Heartbeat) {
        if let Some(a) = self.agents.get_mut(name) {
            a.last_seen_ms = unix_millis_now();
            a.state = hb.state.clone();
            truncate_text(&mut a.state, 64);
        }
    }

    fn requeue(&mut self, pref: &PointRef, why: &str) {
        if let Some(agent) = self
            .sweep(&pref.0)
            .and_then(|s| s.points.get(pref.1))
            .and_then(|p| match &p.state {
                PointState::Running { agent } => Some(agent.clone()),
                _ => None,
            })
        {
            if let Some(a) = self.agents.get_mut(&agent) {
                a.running.retain(|r| r != pref);
            }
        }
        if let Some(s) = self.sweep_mut(&pref.0) {
            if let Some(p) = s.points.get_mut(pref.1) {
                if !p.state.is_terminal() {
                    info!(point_id = %p.point_id, why, "point re-queued; partial records of the attempt discarded");
                    p.state = PointState::Pending;
                    p.clear_batches();
                    p.error = why.to_string();
                }
            }
            s.requeued(pref.1);
            s.bump_point(pref.1);
        }
    }

    /// Re-queues the points of agents disconnected for longer than `grace`.
    pub fn reap(&mut self, grace: Duration) -> Outgoing {
        let now = Instant::now();
        let gone: Vec<PointRef> = self
            .agents
            .values_mut()
            .filter(|a| !a.connected && a.disconnected_at.is_some_and(|t| now - t >= grace))
            .flat_map(|a| std::mem::take(&mut a.running))
            .collect();
        for pref in &gone {
            // The agent's running list was emptied above; requeue only resets the point.
            self.requeue(pref, "agent lost during the point");
        }
        if gone.is_empty() {
            Vec::new()
        } else {
            self.schedule()
        }
    }

    /// Stores a record batch of a running attempt (duplicates are ignored). Returns the
    /// acknowledgement to send (stale batches are acknowledged too, so agents drop them).
    pub fn record_batch(&mut self, agent: &str, batch: pb::RecordBatch) -> pb::ControllerMessage {
        self.record_decoded(agent, DecodedBatch::decode(batch))
    }

    /// [`State::record_batch`] of a batch decoded beforehand, outside the state lock.
    pub fn record_decoded(&mut self, agent: &str, batch: DecodedBatch) -> pb::ControllerMessage {
        let ack = msg(CMsg::BatchAck(pb::BatchAck {
            point_id: batch.point_id.clone(),
            attempt: batch.attempt,
            seq: batch.seq,
        }));
        let limits = self.limits;
        let Some((sweep_id, idx)) = self.find_point(&batch.point_id) else {
            warn!(point_id = %batch.point_id, "record batch for an unknown point");
            return ack;
        };
        let Some(p) = self
            .sweep_mut(&sweep_id)
            .and_then(|s| s.points.get_mut(idx))
        else {
            return ack;
        };
        let current = p.attempt == batch.attempt
            && matches!(&p.state, PointState::Running { agent: a } if a == agent);
        if !current {
            // Records of a point this agent does not hold (never, or no longer): nothing
            // of them is kept. Acknowledged, so an agent that lost the point drops them.
            warn!(agent, point_id = %batch.point_id, attempt = batch.attempt, "record batch for a point the agent does not hold (or a stale attempt) ignored");
            return ack;
        }
        if p.overflow.is_some() || p.batches.contains_key(&batch.seq) {
            // Over a cap already (the attempt fails), or a duplicate.
            return ack;
        }
        let next = super::Buffered {
            batches: p.buffered.batches + 1,
            records: p.buffered.records + batch.records.len(),
            bytes: p.buffered.bytes.saturating_add(batch.bytes),
        };
        let over = if batch.seq >= limits.max_batches || next.batches as u64 > limits.max_batches {
            Some(format!(
                "more than {} record batches for one point (seq {})",
                limits.max_batches, batch.seq
            ))
        } else if next.records > limits.max_records {
            Some(format!(
                "more than {} records buffered for one point",
                limits.max_records
            ))
        } else if next.bytes > limits.max_bytes {
            Some(format!(
                "more than {} MiB of records buffered for one point",
                limits.max_bytes >> 20
            ))
        } else {
            None
        };
        if let Some(why) = over {
            // The attempt's records are dropped now (memory stays bounded); the point ends
            // failed with the reason when the agent finishes it.
            let why = format!("controller limit: {why}; the point's records were dropped");
            warn!(agent, point_id = %batch.point_id, reason = %why, "point over its buffer limit");
            p.batches.clear();
            p.buffered = super::Buffered::default();
            p.overflow = Some(why);
            return ack;
        }
        p.batches.insert(batch.seq, batch.records);
        p.buffered = next;
        ack
    }

    /// An engine event from `agent`. Kept only for a point the agent holds: its running
    /// attempt, or its latest attempt ran there (an engine stops after its last point). An
    /// event for any other point is logged and dropped. Texts are cut to
    /// [`MAX_TEXT_BYTES`] and a point keeps at most `limits.max_events` events (the first
    /// and the latest).
    pub fn engine_event(&mut self, agent: &str, mut ev: pb::EngineEvent) {
        truncate_text(&mut ev.message, MAX_TEXT_BYTES);
        if ev.log_tail.len() > MAX_LOG_TAIL_LINES {
            let drop = ev.log_tail.len() - MAX_LOG_TAIL_LINES;
            ev.log_tail.drain(..drop);
        }
        for line in &mut ev.log_tail {
            truncate_text(line, MAX_TEXT_BYTES);
        }
        for s in [
            &mut ev.kind,
            &mut ev.engine_version,
            &mut ev.image,
            &mut ev.image_digest,
            &mut ev.container,
        ] {
            truncate_text(s, MAX_TEXT_BYTES);
        }
        let max_events = self.limits.max_events.max(2);
        let Some((sweep_id, idx)) = self.find_point(&ev.point_id) else {
            warn!(agent, point_id = %ev.point_id, "engine event for an unknown point dropped");
            return;
        };
        let Some(s) = self.sweep_mut(&sweep_id) else {
            return;
        };
        let Some(p) = s.points.get_mut(idx) else {
            return;
        };
        let running_here = matches!(&p.state, PointState::Running { agent: a } if a == agent);
        if !running_here && p.agent != agent {
            warn!(agent, point_id = %ev.point_id, holder = %p.agent, kind = %ev.kind, "engine event for a point the agent does not hold dropped");
            return;
        }
        info!(agent, sweep_id = %ev.sweep_id, point_id = %ev.point_id, kind = %ev.kind, exit_code = ?ev.exit_code, message = %ev.message, "engine event");
        // Only a death during this point's running attempt makes it a crash.
        if running_here && matches!(ev.kind.as_str(), "exited" | "start-failed") {
            p.engine_crashed = true;
        }
        if p.engine_events.len() >= max_events {
            let drop = p.engine_events.len() + 1 - max_events;
            p.engine_events.drain(1..1 + drop);
        }
        p.engine_events.push(ev);
        s.bump_point(idx);
    }

    /// A point attempt ended on `agent`. Returns the partition write to make (which
    /// acknowledges the point once on disk) or, for a duplicate, the acknowledgement.
    ///
    /// The attempt's records leave the state here, moved into the write job; the point
    /// keeps its summary only.
    pub fn point_finished(
        &mut self,
        agent: &str,
        pf: pb::PointFinished,
    ) -> (Option<WriteJob>, Outgoing) {
        let ack = pb::PointAck {
            point_id: pf.point_id.clone(),
            attempt: pf.attempt,
        };
        let Some((sweep_id, idx)) = self.find_point(&pf.point_id) else {
            return (None, vec![(agent.to_string(), msg(CMsg::PointAck(ack)))]);
        };
        let host = self
            .agents
            .get(agent)
            .map(|a| a.inventory.host.clone())
            .unwrap_or_default();
        let (gpu_model, gpu_driver, hardware) = self
            .agents
            .get(agent)
            .map(|a| held_gpus(&a.inventory, &pf.gpu_ids))
            .unwrap_or_default();
        let unwritten = self
            .persisted
            .awaiting_write
            .contains(&(pf.point_id.clone(), pf.attempt));
        let self_limits = self.limits;
        let Some(sweep) = self.sweep_mut(&sweep_id) else {
            return (None, Vec::new());
        };
        let model = sweep.spec.model.get_ref().clone();
        let mode = sweep.spec.load.mode.as_str().to_string();
        let slo = sweep.spec.slo();
        // Each stage's duration and load (a rate stage has no concurrency and the other
        // way round), from the load settings the agents got.
        let stages: Vec<(f64, f64)> = sweep
            .load
            .stages
            .iter()
            .map(|s| (s.duration_s, s.rate.max(f64::from(s.concurrency))))
            .collect();
        let cancelled = sweep.state == SweepState::Cancelled;
        let on_crash = sweep.spec.policy.on_engine_crash;
        let max_retries = sweep.spec.policy.crash_retries();
        let max_failed_share = sweep.spec.policy.max_failed_share();
        let Some(p) = sweep.points.get_mut(idx) else {
            return (None, Vec::new());
        };
        let current = p.attempt == pf.attempt
            && matches!(&p.state, PointState::Running { agent: a } if a == agent);
        if !current {
            if p.state.is_terminal() && unwritten {
                // A resend of a point whose rows are not on disk yet (the job carrying them
                // is queued, or held by the writer for a retry): acknowledged only once
                // they are, so the agent keeps its spool until then. This job carries the
                // acknowledgement only; the writer sends it with the rows' write.
                let gpus = p.planned.gpus;
                sweep.pending_writes += 1;
                let job = WriteJob {
                    sweep_id,
                    gpus,
                    rows: None,
                    acks: vec![(agent.to_string(), ack)],
                };
                return (Some(job), Vec::new());
            }
            // A resend after reconnect, or an attempt that was re-queued: already handled.
            return (None, vec![(agent.to_string(), msg(CMsg::PointAck(ack)))]);
        }
        let mut pf = pf;
        truncate_text(&mut pf.error, MAX_TEXT_BYTES);
        if pf.batches > self_limits.max_batches && p.overflow.is_none() {
            p.overflow = Some(format!(
                "controller limit: the agent reported {} record batches; at most {} are accepted per point",
                pf.batches, self_limits.max_batches
            ));
            p.batches.clear();
            p.buffered = super::Buffered::default();
        }
        if p.overflow.is_none() {
            // Counted, never listed: `batches` comes from the agent and may be anything.
            let have = p.batches.range(..pf.batches).count() as u64;
            if have < pf.batches {
                let first: Vec<u64> = (0..pf.batches)
                    .filter(|s| !p.batches.contains_key(s))
                    .take(8)
                    .collect();
                warn!(point_id = %pf.point_id, missing = pf.batches - have, ?first, "point finished but record batches are missing; waiting for the resend");
                return (None, Vec::new());
            }
        }
        if pf.engine_metrics.len() > MAX_METRIC_SAMPLES {
            pf.engine_metrics.truncate(MAX_METRIC_SAMPLES);
        }
        // Moved out of the state, not cloned: the write job carries them to the writer.
        let records: Vec<RequestRecord> = std::mem::take(&mut p.batches)
            .into_values()
            .flatten()
            .collect();
        p.buffered = super::Buffered::default();
        if let Some(why) = p.overflow.take() {
            pf.ok = false;
            pf.error = if pf.error.is_empty() {
                why
            } else {
                format!("{why}; agent: {}", pf.error)
            };
        }
        // A point whose load ran to its end but measured (almost) nothing is failed: no
        // successful request, or more failed than the sweep's policy allows.
        let load_failed = if pf.ok {
            load_failure(&records, max_failed_share)
        } else {
            None
        };
        if let Some(why) = &load_failed {
            pf.ok = false;
            pf.error = why.clone();
        }
        let state = if pf.ok {
            PointState::Done
        } else if cancelled || pf.error == "cancelled" {
            PointState::Cancelled
        } else {
            PointState::Failed
        };
        // An engine crash: the attempt failed and its engine died or never started.
        // The agent says so in the PointFinished too: its engine events are not spooled,
        // so a controller restart mid-point may have missed them. A point whose requests
        // failed is treated the same way by the failure policy.
        let crashed = state == PointState::Failed
            && (p.engine_crashed || pf.engine_crashed || load_failed.is_some());
        if crashed && on_crash == OnEngineCrash::Retry && p.crash_retries < max_retries {
            // Back to the queue for a fresh engine; nothing of this attempt is kept (the
            // next attempt's records are never mixed with these) but its engine events.
            p.crash_retries += 1;
            p.state = PointState::Pending;
            p.clear_batches();
            p.summary = None;
            p.finished = None;
            p.error = format!(
                "{}; retry {} of {max_retries}: {}",
                failure_cause(p.engine_crashed || pf.engine_crashed),
                p.crash_retries,
                pf.error
            );
            info!(point_id = %p.point_id, attempt = p.attempt, error = %p.error, "point re-queued (policy retry)");
            sweep.requeued(idx);
            sweep.bump_point(idx);
            if let Some(a) = self.agents.get_mut(agent) {
                a.running.retain(|r| *r != (sweep_id.clone(), idx));
            }
            let mut out = vec![(agent.to_string(), msg(CMsg::PointAck(ack)))];
            out.extend(self.schedule());
            return (None, out);
        }
        let error = if state == PointState::Failed && p.crash_retries > 0 {
            format!(
                "{}; retry {} of {max_retries} failed: {}",
                failure_cause(p.engine_crashed || pf.engine_crashed),
                p.crash_retries,
                pf.error
            )
        } else {
            pf.error.clone()
        };
        let meta = PointMeta {
            sweep_id: sweep_id.clone(),
            point_id: p.point_id.clone(),
            point_index: p.planned.index,
            attempt: p.attempt,
            model,
            gpus: p.planned.gpus,
            host: host.clone(),
            agent: agent.to_string(),
            batch_size: p.planned.batch_size,
            input_tokens: p.planned.workload.input,
            output_tokens: p.planned.workload.output,
            state: state.as_str().into(),
            error: error.clone(),
            endpoint: pf.endpoint.clone(),
            started_unix_us: pf.started_unix_us,
            finished_unix_us: pf.finished_unix_us,
            mode,
            request_rate: p.planned.request_rate,
            client: ClientStats {
                cpu_s: pf.client_cpu_s,
                wall_s: pf.load_wall_s,
                cores: pf.client_cores,
            },
            fallbacks: pf.fallbacks.clone(),
            warmup: pf
                .warmup
                .as_ref()
                .map(|w| WarmupStats {
                    wave_output_tps: w.wave_output_tps.clone(),
                    converged: w.converged,
                    tolerance: w.tolerance,
                })
                .unwrap_or_default(),
            gpu_model,
            gpu_driver,
            hardware,
            slo,
            workload: p.planned.workload.to_string(),
            data_sha256: pf
                .data_file
                .as_ref()
                .map(|d| d.sha256.clone())
                .unwrap_or_default(),
            data_skipped: pf.data_file.as_ref().map_or(0, |d| d.skipped),
            stage_durations_s: stages.iter().map(|s| s.0).collect(),
            stage_loads: stages.iter().map(|s| s.1).collect(),
        };
        let template = meta.clone();
        let summary = summarize(meta, &records, &pf.engine_metrics);
        p.summary = Some(summary.clone());
        let rows = PointRows { summary, records };
        let awaiting = (p.point_id.clone(), p.attempt);
        p.state = state;
        p.error = error;
        p.host = host;
        p.finished = Some(pf);
        p.pending_write = Some(Default::default());
        let planned = p.planned.clone();
        let gpus = planned.gpus;
        sweep.pending_writes += 1;
        if crashed && on_crash == OnEngineCrash::SkipLarger {
            let cause = failure_cause(load_failed.is_none());
            skip_larger(sweep, &planned, &template, cause);
            // Other points changed too.
            sweep.bump();
        } else {
            sweep.bump_point(idx);
        }
        self.persisted.awaiting_write.insert(awaiting);
        if let Some(a) = self.agents.get_mut(agent) {
            a.running.retain(|r| *r != (sweep_id.clone(), idx));
        }
        // Assign the agent's next point before releasing this sweep's engines: an agent
        // whose next point (of another sweep) needs the same engine keeps it running.
        // A search sweep's group whose probe just ended gets its next probe first.
        self.advance_search(&sweep_id);
        let mut out = self.schedule();
        out.extend(self.finish_sweep_if_complete(&sweep_id));
        let job = WriteJob {
            sweep_id,
            gpus,
            rows: Some(rows),
            acks: vec![(agent.to_string(), ack)],
        };
        (Some(job), out)
    }

    /// Marks the sweep finished when every point is terminal, and releases its engines.
    pub(super) fn finish_sweep_if_complete(&mut self, sweep_id: &str) -> Outgoing {
        let Some(s) = self.sweep_mut(sweep_id) else {
            return Vec::new();
        };
        if !s.points.iter().all(|p| p.state.is_terminal()) || s.finished_ms != 0 {
            return Vec::new();
        }
        if s.state == SweepState::Running {
            s.state = SweepState::Done;
        }
        s.finished_ms = unix_millis_now();
        s.bump_sweep();
        info!(sweep_id, state = s.state.as_str(), "sweep finished");
        release_engines(s)
    }

    /// Cancels a sweep: pending points are cancelled, running ones are told to stop, and
    /// the sweep's engines are released. Finished points keep their results.
    pub fn cancel(&mut self, sweep_id: &str) -> Option<Outgoing> {
        let s = self.sweep_mut(sweep_id)?;
        if s.state != SweepState::Running {
            return Some(Vec::new());
        }
        s.state = SweepState::Cancelled;
        let mut out = Vec::new();
        for p in &mut s.points {
            match &p.state {
                PointState::Pending => p.state = PointState::Cancelled,
                PointState::Running { agent } => out.push((
                    agent.clone(),
                    msg(CMsg::CancelPoint(pb::CancelPoint {
                        sweep_id: sweep_id.to_string(),
                        point_id: p.point_id.clone(),
                        reason: "sweep cancelled".into(),
                    })),
                )),
                _ => {}
            }
        }
        s.bump();
        out.extend(self.finish_sweep_if_complete(sweep_id));
        Some(out)
    }

    /// A write job is done; `files` are what its write wrote (empty when nothing was
    /// written) and `durable` the (point id, attempt) pairs whose rows it put on disk:
    /// their terminal state and summary go to the store with the next
    /// [`State::store_ops`].
    pub fn write_done(
        &mut self,
        sweep_id: &str,
        files: impl IntoIterator<Item = String>,
        durable: &[(String, u32)],
    ) {
        for pair in durable {
            self.persisted.awaiting_write.remove(pair);
        }
        // The written points, found through the point index (a scan of every point per
        // write was quadratic in the sweep's size).
        let written: Vec<(usize, u32)> = durable
            .iter()
            .filter_map(|(id, attempt)| {
                let (sid, i) = self.find_point(id)?;
                (sid == sweep_id).then_some((i, *attempt))
            })
            .collect();
        if let Some(s) = self.sweep_mut(sweep_id) {
            s.pending_writes = s.pending_writes.saturating_sub(1);
            // Rows that failed to write before are on disk now: the points are what their
            // attempt made of them again. They left `awaiting_write` (above): stored anew
            // with the next commit.
            let written: Vec<usize> = written
                .into_iter()
                .filter(|&(i, attempt)| {
                    s.points.get_mut(i).is_some_and(|p| {
                        let same = p.attempt == attempt;
                        if same {
                            p.pending_write = None;
                        }
                        same
                    })
                })
                .map(|(i, _)| i)
                .collect();
            s.result_files.extend(files);
            s.bump_sweep();
            for i in written {
                s.bump_point(i);
            }
        }
    }
}

/// What made a point's attempt fail, for the failure policy's messages.
fn failure_cause(engine_crashed: bool) -> &'static str {
    if engine_crashed {
        "engine crashed"
    } else {
        "requests failed"
    }
}

/// `on_engine_crash = "skip-larger"`: `crashed` took its engine down, so every still-pending
/// point of the sweep with the same GPU count and workload and a larger load (batch size;
/// rate mode: request rate) is skipped. Skipped points get an empty summary, so they are
/// written with the partition (state "skipped", the reason in `error`).
fn skip_larger(sweep: &mut Sweep, crashed: &PlannedPoint, template: &PointMeta, cause: &str) {
    let rate_mode = crashed.batch_size == 0;
    let reason = if rate_mode {
        format!(
            "skipped: {cause} at rate {} req/s (policy skip-larger)",
            crashed.request_rate
        )
    } else {
        format!(
            "skipped: {cause} at batch {} (policy skip-larger)",
            crashed.batch_size
        )
    };
    for q in &mut sweep.points {
        let larger = if rate_mode {
            q.planned.request_rate > crashed.request_rate
        } else {
            q.planned.batch_size > crashed.batch_size
        };
        if q.state != PointState::Pending
            || q.planned.gpus != crashed.gpus
            || q.planned.workload != crashed.workload
            || !larger
        {
            continue;
        }
        info!(point_id = %q.point_id, reason, "point skipped");
        let meta = PointMeta {
            point_id: q.point_id.clone(),
            point_index: q.planned.index,
            attempt: q.attempt,
            host: String::new(),
            agent: String::new(),
            batch_size: q.planned.batch_size,
            request_rate: q.planned.request_rate,
            state: PointState::Skipped.as_str().into(),
            error: reason.clone(),
            endpoint: String::new(),
            started_unix_us: 0,
            finished_unix_us: 0,
            client: ClientStats::default(),
            fallbacks: Vec::new(),
            warmup: Default::default(),
            gpu_model: String::new(),
            gpu_driver: String::new(),
            hardware: Default::default(),
            workload: q.planned.workload.to_string(),
            ..template.clone()
        };
        q.summary = Some(summarize(meta, &[], &[]));
        q.state = PointState::Skipped;
        q.error = reason.clone();
    }
}

/// GPUs, images and labels an agent's inventory may list, and the longest text kept of
/// each: the inventory stays in the state and goes out with every `ListAgents`.
const MAX_INVENTORY_GPUS: usize = 256;
const MAX_INVENTORY_IMAGES: usize = 1024;
const MAX_INVENTORY_LABELS: usize = 64;
const MAX_INVENTORY_TEXT: usize = 256;

/// Cuts an inventory to the limits above (extra entries dropped, texts cut).
fn bound_inventory(inv: &mut pb::Inventory) {
    inv.gpus.truncate(MAX_INVENTORY_GPUS);
    for g in &mut inv.gpus {
        truncate_text(&mut g.vendor, MAX_INVENTORY_TEXT);
        truncate_text(&mut g.model, MAX_INVENTORY_TEXT);
    }
    inv.engine_images.truncate(MAX_INVENTORY_IMAGES);
    for i in &mut inv.engine_images {
        truncate_text(i, MAX_INVENTORY_TEXT);
    }
    if inv.labels.len() > MAX_INVENTORY_LABELS
        || inv
            .labels
            .iter()
            .any(|(k, v)| k.len() > MAX_INVENTORY_TEXT || v.len() > MAX_INVENTORY_TEXT)
    {
        let mut labels: Vec<(String, String)> =
            std::mem::take(&mut inv.labels).into_iter().collect();
        labels.sort();
        inv.labels = labels
            .into_iter()
            .filter(|(k, v)| k.len() <= MAX_INVENTORY_TEXT && v.len() <= MAX_INVENTORY_TEXT)
            .take(MAX_INVENTORY_LABELS)
            .collect();
    }
    for s in [&mut inv.host, &mut inv.driver, &mut inv.fleetbench_version] {
        truncate_text(s, MAX_INVENTORY_TEXT);
    }
}

fn release_engines(s: &Sweep) -> Outgoing {
    s.agents_used
        .iter()
        .map(|a| {
            (
                a.clone(),
                msg(CMsg::ReleaseEngine(pb::ReleaseEngine {
                    sweep_id: s.id.clone(),
                })),
            )
        })
        .collect()
}

/// The model names of the inventory's GPUs among `ids` (distinct, in index order, joined
/// with ` + `), the inventory's driver, and the rest of the hardware: the held GPUs'
/// vendors (likewise), the smallest one's memory, their PCI bus ids and the host's CPU.
/// No GPU fields when the engine held no GPU.
fn held_gpus(inventory: &pb::Inventory, ids: &[u32]) -> (String, String, Hardware) {
    let held: Vec<&pb::Gpu> = inventory
        .gpus
        .iter()
        .filter(|g| ids.contains(&g.index))
        .collect();
    let distinct = |f: fn(&pb::Gpu) -> &str| {
        let mut out: Vec<&str> = Vec::new();
        for g in &held {
            if !f(g).is_empty() && !out.contains(&f(g)) {
                out.push(f(g));
            }
        }
        out.join(" + ")
    };
    let hardware = Hardware {
        gpu_vendor: distinct(|g| &g.vendor),
        gpu_memory_gib: held
            .iter()
            .map(|g| g.memory_bytes)
            .min()
            .map_or(0.0, |b| b as f64 / f64::from(1u32 << 30)),
        gpu_pci_bus_ids: held
            .iter()
            .map(|g| g.pci_bus_id.as_str())
            .filter(|b| !b.is_empty())
            .collect::<Vec<_>>()
            .join(","),
        cpu_model: inventory.cpu_model.clone(),
    };
    (distinct(|g| &g.model), inventory.driver.clone(), hardware)
}
