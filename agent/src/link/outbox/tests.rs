//! Unit tests of the outbox: queueing, acknowledgements, resends from the spool, spool
//! write failures.

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

#[tokio::test]
async fn secrets_are_redacted_before_the_spool_and_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hf_outbox_canary_0123";
    let env = std::collections::BTreeMap::from([("HF_TOKEN".to_string(), secret.to_string())]);
    let o = Outbox::open(dir.path())
        .unwrap()
        .scrubbing(Scrubber::new(&env));
    o.push(pb::AgentMessage {
        msg: Some(Msg::PointFinished(pb::PointFinished {
            point_id: "p".into(),
            error: format!("engine start failed: token {secret}"),
            ..Default::default()
        })),
    })
    .unwrap();
    let sent = o.next().await;
    let Some(Msg::PointFinished(pf)) = sent.msg else {
        panic!("{sent:?}")
    };
    assert_eq!(pf.error, "engine start failed: token [redacted:HF_TOKEN]");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the spool holds the secret"
        );
    }
}
