//! Cost of the agent's results spool: pushes record batches (64 realistic records each,
//! with ITL lists) through a spooled [`Outbox`] in a temp dir, then a point-finished
//! message (fsync), then re-reads everything as a reconnect would.
//!
//! `cargo run --release -p fleetbench-agent --example spool_bench -- [batches] [output_tokens]`

use std::time::Instant;

use fleetbench_agent::link::outbox::Outbox;
use fleetbench_proto::pb::{self, agent_message::Msg};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let batches: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let output: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let dir = tempfile::tempdir()?;
    let outbox = Outbox::open(dir.path())?;
    let record = pb::RequestRecord {
        request_index: 1,
        ttft_s: Some(0.05),
        e2el_s: Some(2.5),
        tpot_s: Some(0.01),
        itl_s: vec![0.0123; output.saturating_sub(1)],
        input_tokens: Some(1024),
        output_tokens: Some(output as u32),
        ..Default::default()
    };
    let started = Instant::now();
    for seq in 0..batches {
        outbox.push(pb::AgentMessage {
            msg: Some(Msg::RecordBatch(pb::RecordBatch {
                point_id: "p".into(),
                attempt: 1,
                seq,
                records: vec![record.clone(); 64],
                ..Default::default()
            })),
        })?;
    }
    let write = started.elapsed();
    let fin = Instant::now();
    outbox.push(pb::AgentMessage {
        msg: Some(Msg::PointFinished(pb::PointFinished {
            point_id: "p".into(),
            attempt: 1,
            batches,
            ok: true,
            ..Default::default()
        })),
    })?;
    let fsync = fin.elapsed();
    let bytes: u64 = std::fs::read_dir(dir.path())?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    // Drain what was queued, then replay from disk as after a reconnect.
    rt.block_on(async {
        for _ in 0..=batches {
            outbox.next().await;
        }
    });
    outbox.requeue_unacked();
    let replay = Instant::now();
    rt.block_on(async {
        for _ in 0..=batches {
            outbox.next().await;
        }
    });
    let read = replay.elapsed();
    let records = batches * 64;
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{batches} batches ({records} records, {output} output tokens each), {mib:.1} MiB spooled"
    );
    println!(
        "append: {:.3} s = {:.0} records/s, {:.0} MiB/s; point-finished + fsync: {:.1} ms; replay from disk: {:.3} s = {:.0} records/s",
        write.as_secs_f64(),
        records as f64 / write.as_secs_f64(),
        mib / write.as_secs_f64(),
        fsync.as_secs_f64() * 1e3,
        read.as_secs_f64(),
        records as f64 / read.as_secs_f64()
    );
    Ok(())
}
