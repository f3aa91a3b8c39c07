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
use crate::spool::{self, AttemptKey, Spool};

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
        })
    }

    /// Queues a message for sending. A record batch or point-finished message is first
    /// appended to the spool (fsync'd for a point-finished one). If that write fails the
    /// message is still queued and kept in memory, and the error is returned so the
    /// point can fail with the reason; it never blocks on the controller.
    pub fn push(&self, msg: pb::AgentMessage) -> Result<(), AgentError> {
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
mod tests {
    use super::*;

    fn batch(point: &str, seq: u64) -> pb::AgentMessage {
        pb::AgentMessage {
            msg: Some(Msg::RecordBatch(pb::RecordBatch {
                point_id: point.into(),
                seq,
                records: vec![pb::RequestRecord::default(); 2],
                ..Default::default()
            })),
        }
    }

    fn finished(point: &str) -> pb::AgentMessage {
        pb::AgentMessage {
            msg: Some(Msg::PointFinished(pb::PointFinished {
                point_id: point.into(),
                ok: true,
                ..Default::default()
            })),
        }
    }

    fn heartbeat() -> pb::AgentMessage {
        pb::AgentMessage {
            msg: Some(Msg::Heartbeat(pb::Heartbeat::default())),
        }
    }

    fn label(m: &pb::AgentMessage) -> String {
        match &m.msg {
            Some(Msg::RecordBatch(b)) => format!("{}/{}", b.point_id, b.seq),
            Some(Msg::PointFinished(f)) => format!("{}/end", f.point_id),
            Some(Msg::Heartbeat(_)) => "hb".into(),
            other => format!("{other:?}"),
        }
    }

    async fn drain(o: &Outbox, n: usize) -> Vec<String> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(label(&o.next().await));
        }
        v
    }

    fn spool_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".spool")
            })
            .count()
    }

    async fn batch_acks_do_not_release_and_point_acks_do(o: &Outbox) {
        o.push(batch("p1", 0)).unwrap();
        o.push(batch("p1", 1)).unwrap();
        o.push(batch("p1", 2)).unwrap();
        assert_eq!(drain(o, 3).await, ["p1/0", "p1/1", "p1/2"]);
        // Acknowledged on the old connection: still resent after a reconnect.
        o.ack_batch("p1", 0, 1);
        o.push(heartbeat()).unwrap();
        o.requeue_unacked();
        // Pushed after the reconnect: queued once, not twice.
        o.push(batch("p1", 3)).unwrap();
        assert_eq!(drain(o, 5).await, ["p1/0", "p1/1", "p1/2", "hb", "p1/3"]);
        assert_eq!(o.unacked_points(), vec!["p1".to_string()]);
        o.push(finished("p1")).unwrap();
        o.requeue_unacked();
        assert_eq!(
            drain(o, 5).await,
            ["p1/0", "p1/1", "p1/2", "p1/3", "p1/end"]
        );
        o.ack_point("p1", 0);
        assert_eq!(o.unacked_len(), 0);
        assert!(o.unacked_points().is_empty());
        o.requeue_unacked();
        o.push(heartbeat()).unwrap();
        assert_eq!(drain(o, 1).await, ["hb"]);
    }

    #[tokio::test]
    async fn in_memory_outbox_resends_until_point_ack() {
        batch_acks_do_not_release_and_point_acks_do(&Outbox::new()).await;
    }

    #[tokio::test]
    async fn spooled_outbox_resends_from_disk_until_point_ack() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        batch_acks_do_not_release_and_point_acks_do(&o).await;
        assert_eq!(spool_files(dir.path()), 0);
        // Nothing of an attempt is held in memory once it is sent: it comes from disk.
        o.push(batch("p2", 0)).unwrap();
        drain(&o, 1).await;
        {
            let s = o.state.lock().unwrap();
            let a = &s.attempts[&("p2".to_string(), 0)];
            assert!(a.mem.is_empty());
            assert!(a.disk_len > 0);
            assert!(s.queue.is_empty());
        }
    }

    #[tokio::test]
    async fn a_point_ack_drops_queued_messages_of_that_attempt_only() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        o.push(batch("a", 0)).unwrap();
        o.push(finished("a")).unwrap();
        o.push(batch("b", 0)).unwrap();
        o.ack_point("a", 0);
        assert_eq!(drain(&o, 1).await, ["b/0"]);
        assert_eq!(o.unacked_points(), vec!["b".to_string()]);
        assert_eq!(spool_files(dir.path()), 1);
    }

    #[tokio::test]
    async fn restart_resends_finished_attempts_and_forgets_interrupted_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path()).unwrap();
            o.push(batch("done", 0)).unwrap();
            o.push(batch("done", 1)).unwrap();
            o.push(finished("done")).unwrap();
            o.push(batch("running", 0)).unwrap();
            o.push(batch("running", 1)).unwrap();
            // The agent dies here (dropping the outbox stands in for it: nothing is
            // flushed or written on drop).
        }
        let o = Outbox::open(dir.path()).unwrap();
        // Register reports only the finished attempt as active: the interrupted one is
        // the controller's to re-queue.
        assert_eq!(o.unacked_points(), vec!["done".to_string()]);
        assert_eq!(spool_files(dir.path()), 1);
        o.push(heartbeat()).unwrap();
        o.requeue_unacked();
        assert_eq!(drain(&o, 4).await, ["done/0", "done/1", "done/end", "hb"]);
        o.ack_point("done", 0);
        assert_eq!(spool_files(dir.path()), 0);
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.unacked_len(), 0);
    }

    #[tokio::test]
    async fn a_spool_write_failure_is_an_error_and_keeps_the_message_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let o = Outbox::open(&spool_dir).unwrap();
        // The spool directory is gone and cannot be written: file creation fails.
        std::fs::remove_dir_all(&spool_dir).unwrap();
        std::fs::write(&spool_dir, b"not a directory").unwrap();
        o.push(batch("q", 0)).unwrap_err();
        let err = o.push(finished("q")).map(|_| ());
        // After the first failure the attempt stays in memory: no second disk write.
        assert!(err.is_ok(), "{err:?}");
        o.requeue_unacked();
        assert_eq!(drain(&o, 2).await, ["q/0", "q/end"]);
        assert_eq!(o.unacked_points(), vec!["q".to_string()]);
    }
}
