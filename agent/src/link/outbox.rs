//! Messages waiting to reach the controller.
//!
//! Record batches and point-finished messages ("acknowledgeable" messages) are written to
//! the [`Spool`] before they are queued, and stay there until the controller's
//! `PointAck{point_id, attempt}` says the attempt's rows and state are durable on its side.
//! A `BatchAck` only means "received on this connection": after every (re)connect all
//! spooled attempts are sent again, in (point, attempt, seq) order, re-read from disk (the
//! controller de-duplicates by agent, point, attempt and sequence). Other messages (engine
//! events) are sent once.
//!
//! Memory holds only the send queue and, per unacknowledged attempt, the byte length of
//! its spool file; a resend expands one attempt at a time from disk when it reaches the
//! front of the queue. Messages are held in memory only without a spool (unit tests) or
//! after a spool write failed for that attempt (the point then fails with the reason and
//! its finish is never on disk, so a restarted agent discards the attempt).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use fleetbench_proto::pb::{self, agent_message::Msg};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::error::AgentError;
use crate::link::spool::{self, AttemptKey, Spool};
use crate::policy::scrub::Scrubber;

/// One entry of the send queue.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every entry is a message: boxing would add an allocation to each"
)]
enum Item {
    Msg(pb::AgentMessage),
    /// Resend an attempt: its first `disk_len` spooled bytes, then its first `mem`
    /// in-memory messages (the lengths at requeue time, so frames appended later, which
    /// are queued on their own, are not sent twice).
    Replay {
        key: AttemptKey,
        disk_len: u64,
        mem: usize,
    },
}

/// An attempt whose messages the controller has not acknowledged.
#[derive(Debug, Default)]
struct Attempt {
    /// Bytes of its frames in the spool file.
    disk_len: u64,
    /// Its messages not on disk (no spool, or after a spool write failed).
    mem: Vec<pb::AgentMessage>,
    /// A spool write failed: later frames go to `mem` only.
    disk_failed: bool,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Item>,
    attempts: BTreeMap<AttemptKey, Attempt>,
    spool: Option<Spool>,
}

/// The agent's outgoing messages: a send queue plus the spool of unacknowledged results.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// Redacts the agent's `engine_env` values from every message before it is spooled
    /// or sent.
    scrubber: Scrubber,
}

fn is_finish(msg: &pb::AgentMessage) -> bool {
    matches!(msg.msg, Some(Msg::PointFinished(_)))
}

impl Outbox {
    /// An outbox without a spool: unacknowledged results are kept in memory only (tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// An outbox spooling to `dir`. Finished attempts an earlier run left are resent after
    /// the first connect; interrupted ones (no point-finished frame) are deleted.
    pub fn open(dir: &Path) -> Result<Self, AgentError> {
        let (spool, recovery) = Spool::open(dir)?;
        for (point_id, attempt) in &recovery.discarded {
            warn!(%point_id, attempt, "interrupted attempt dropped from the spool");
        }
        let mut attempts = BTreeMap::new();
        for r in recovery.resend {
            info!(point_id = %r.key.0, attempt = r.key.1, frames = r.frames, "finished attempt in the spool awaits the controller's acknowledgement");
            attempts.insert(
                r.key,
                Attempt {
                    disk_len: r.len,
                    ..Attempt::default()
                },
            );
        }
        Ok(Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                attempts,
                spool: Some(spool),
            }),
            notify: Notify::new(),
            scrubber: Scrubber::default(),
        })
    }

    /// This outbox, redacting `scrubber`'s secrets from every message pushed (see
    /// [`Scrubber::scrub_message`]): nothing the agent sends carries them.
    pub fn scrubbing(mut self, scrubber: Scrubber) -> Self {
        self.scrubber = scrubber;
        self
    }

    /// Queues a message for sending. A record batch or point-finished message is first
    /// appended to the spool (fsync'd for a point-finished one). If that write fails the
    /// message is still queued and kept in memory, and the error is returned so the
    /// point can fail with the reason; it never blocks on the controller.
    pub fn push(&self, mut msg: pb::AgentMessage) -> Result<(), AgentError> {
        self.scrubber.scrub_message(&mut msg);
        let mut result = Ok(());
        if let Ok(mut guard) = self.state.lock() {
            let s = &mut *guard;
            if let Some(key) = spool::attempt_of(&msg) {
                let entry = s.attempts.entry(key.clone()).or_default();
                match s.spool.as_mut() {
                    Some(sp) if !entry.disk_failed => {
                        let frame = spool::encode_frame(&msg);
                        match sp.append(&key, &frame, is_finish(&msg)) {
                            Ok(()) => entry.disk_len += frame.len() as u64,
                            Err(e) => {
                                error!(point_id = %key.0, attempt = key.1, error = %e, "spool write failed; keeping this attempt's results in memory");
                                entry.disk_failed = true;
                                entry.mem.push(msg.clone());
                                result = Err(e);
                            }
                        }
                    }
                    _ => entry.mem.push(msg.clone()),
                }
            }
            s.queue.push_back(Item::Msg(msg));
        }
        self.notify.notify_one();
        result
    }

    /// Next message to send, waiting until there is one.
    pub async fn next(&self) -> pb::AgentMessage {
        loop {
            let notified = self.notify.notified();
            if let Some(m) = self.state.lock().ok().and_then(|mut s| s.pop()) {
                return m;
            }
            notified.await;
        }
    }

    /// After a (re)connect: every unacknowledged attempt goes out again, in (point,
    /// attempt, seq) order, before the other messages queued since.
    pub fn requeue_unacked(&self) {
        if let Ok(mut guard) = self.state.lock() {
            let s = &mut *guard;
            let fresh: Vec<Item> = s
                .queue
                .drain(..)
                .filter(|i| matches!(i, Item::Msg(m) if spool::attempt_of(m).is_none()))
                .collect();
            for (key, a) in &s.attempts {
                s.queue.push_back(Item::Replay {
                    key: key.clone(),
                    disk_len: a.disk_len,
                    mem: a.mem.len(),
                });
            }
            s.queue.extend(fresh);
        }
        self.notify.notify_one();
    }

    /// The controller received this batch on the current connection. Nothing is
    /// forgotten: only a `PointAck` releases an attempt.
    pub fn ack_batch(&self, _point_id: &str, _attempt: u32, _seq: u64) {}

    /// The attempt's results are durable at the controller: delete its spool file and
    /// drop whatever of it is still queued.
    pub fn ack_point(&self, point_id: &str, attempt: u32) {
        if let Ok(mut guard) = self.state.lock() {
            let s = &mut *guard;
            let key = (point_id.to_string(), attempt);
            if s.attempts.remove(&key).is_none() {
                return;
            }
            s.queue.retain(|i| match i {
                Item::Msg(m) => spool::attempt_of(m).as_ref() != Some(&key),
                Item::Replay { key: k, .. } => k != &key,
            });
            if let Some(sp) = s.spool.as_mut() {
                if let Err(e) = sp.remove(&key) {
                    warn!(%point_id, attempt, error = %e, "cannot delete acknowledged spool file");
                }
            }
        }
    }

    /// Point ids with results the controller has not acknowledged (attempts interrupted
    /// by an earlier death of this agent were discarded at start and are not among them).
    pub fn unacked_points(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| {
                let mut v: Vec<String> = s.attempts.keys().map(|k| k.0.clone()).collect();
                v.dedup();
                v
            })
            .unwrap_or_default()
    }

    /// Number of attempts not acknowledged yet.
    /// Bytes of unacknowledged results in the spool.
    pub fn spooled_bytes(&self) -> u64 {
        self.state
            .lock()
            .map(|s| s.attempts.values().map(|a| a.disk_len).sum())
            .unwrap_or(0)
    }

    pub fn unacked_len(&self) -> usize {
        self.state.lock().map(|s| s.attempts.len()).unwrap_or(0)
    }
}

impl State {
    /// Pops the next message, expanding a replay from the spool when it reaches the front.
    fn pop(&mut self) -> Option<pb::AgentMessage> {
        loop {
            match self.queue.pop_front()? {
                Item::Msg(m) => return Some(m),
                Item::Replay { key, disk_len, mem } => {
                    let Some(a) = self.attempts.get(&key) else {
                        continue;
                    };
                    let mut msgs = match (&self.spool, disk_len) {
                        (Some(sp), len) if len > 0 => match sp.read(&key, len) {
                            Ok(m) => m,
                            Err(e) => {
                                error!(point_id = %key.0, attempt = key.1, error = %e, "cannot re-read spooled results; they cannot be resent");
                                Vec::new()
                            }
                        },
                        _ => Vec::new(),
                    };
                    msgs.extend(a.mem.iter().take(mem).cloned());
                    for m in msgs.into_iter().rev() {
                        self.queue.push_front(Item::Msg(m));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
