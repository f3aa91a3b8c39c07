//! Messages waiting to reach the controller.
//!
//! Record batches and point-finished messages stay here until the controller acknowledges
//! them; after a reconnect they are sent again (the controller de-duplicates by
//! point, attempt and sequence number). Other messages (engine events) are sent once.
//! Unacknowledged results are kept in memory for now; spooling them to disk is the
//! durable-controller issue's job.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use fleetbench_proto::pb::{self, agent_message::Msg};
use tokio::sync::Notify;

/// Key of an acknowledgeable message: (point id, attempt, sequence). Point-finished
/// messages use `u64::MAX` as their sequence so they sort after their batches.
type AckKey = (String, u32, u64);

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<pb::AgentMessage>,
    unacked: BTreeMap<AckKey, pb::AgentMessage>,
}

#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
}

fn ack_key(msg: &pb::AgentMessage) -> Option<AckKey> {
    match &msg.msg {
        Some(Msg::RecordBatch(b)) => Some((b.point_id.clone(), b.attempt, b.seq)),
        Some(Msg::PointFinished(f)) => Some((f.point_id.clone(), f.attempt, u64::MAX)),
        _ => None,
    }
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a message for sending.
    pub fn push(&self, msg: pb::AgentMessage) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(key) = ack_key(&msg) {
                s.unacked.insert(key, msg.clone());
            }
            s.queue.push_back(msg);
        }
        self.notify.notify_one();
    }

    /// Next message to send, waiting until there is one.
    pub async fn next(&self) -> pb::AgentMessage {
        loop {
            let notified = self.notify.notified();
            if let Some(m) = self.state.lock().ok().and_then(|mut s| s.queue.pop_front()) {
                return m;
            }
            notified.await;
        }
    }

    /// After a reconnect: everything unacknowledged goes out again, in order, before the
    /// messages queued since.
    pub fn requeue_unacked(&self) {
        if let Ok(mut s) = self.state.lock() {
            let fresh: Vec<pb::AgentMessage> =
                s.queue.drain(..).filter(|m| ack_key(m).is_none()).collect();
            let resend: Vec<pb::AgentMessage> = s.unacked.values().cloned().collect();
            s.queue.extend(resend);
            s.queue.extend(fresh);
        }
        self.notify.notify_one();
    }

    pub fn ack_batch(&self, point_id: &str, attempt: u32, seq: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.unacked.remove(&(point_id.to_string(), attempt, seq));
        }
    }

    /// The point's results are stored: forget it (and any stray batch of that attempt).
    pub fn ack_point(&self, point_id: &str, attempt: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.unacked
                .retain(|(p, a, _), _| !(p == point_id && *a == attempt));
        }
    }

    /// Point ids with results the controller has not acknowledged.
    pub fn unacked_points(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| {
                let mut v: Vec<String> = s.unacked.keys().map(|k| k.0.clone()).collect();
                v.dedup();
                v
            })
            .unwrap_or_default()
    }

    pub fn unacked_len(&self) -> usize {
        self.state.lock().map(|s| s.unacked.len()).unwrap_or(0)
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
                ..Default::default()
            })),
        }
    }

    #[tokio::test]
    async fn unacked_batches_are_resent_in_order_after_reconnect() {
        let o = Outbox::new();
        o.push(batch("p1", 0));
        o.push(batch("p1", 1));
        o.push(batch("p1", 2));
        // All three sent on the first connection; only seq 1 acknowledged.
        for _ in 0..3 {
            o.next().await;
        }
        o.ack_batch("p1", 0, 1);
        o.push(pb::AgentMessage {
            msg: Some(Msg::Heartbeat(pb::Heartbeat::default())),
        });
        o.requeue_unacked();
        let mut seqs = Vec::new();
        for _ in 0..3 {
            match o.next().await.msg {
                Some(Msg::RecordBatch(b)) => seqs.push(b.seq),
                Some(Msg::Heartbeat(_)) => seqs.push(99),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, vec![0, 2, 99]);
        assert_eq!(o.unacked_points(), vec!["p1".to_string()]);
        o.ack_point("p1", 0);
        assert_eq!(o.unacked_len(), 0);
    }
}
