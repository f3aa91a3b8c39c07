//! (Over 800 lines on purpose: about 100 of them are the measured figures and findings
//! below, kept with the code that produced them.)
//!
//! Ingest benchmark: how many per-request records one controller takes in per second from
//! several agents streaming at once, all the way to Parquet on disk.
//!
//! The controller runs in this process on `127.0.0.1:0` with a temporary results dir. Each
//! simulated agent is a plain gRPC client of `AgentService` speaking the real protocol: it
//! registers (one GPU), waits for its `Assignment`, streams `RecordBatch`es of realistic
//! records (consecutive `seq`, 64 records of 128 f64 ITLs each), sends `PointFinished` and
//! waits for its `PointAck`. The controller acknowledges a point only after the partition
//! holding it is on disk (see `writer.rs`), so the clock runs from the first batch sent to
//! the last `PointAck`. Afterwards the requests file is read back and its rows checked.
//!
//! ```sh
//! cargo run --release -p fleetbench-controller --example ingest_bench -- --agents 8 --records 250000
//! cargo run --release -p fleetbench-controller --example ingest_bench -- --agents 8 --points 8 --records 4000
//! ```
//!
//! What the figure includes: by default every point's records are generated and protobuf-
//! encoded before the clock starts (on all cores); while it runs, the agents only hand
//! those bytes to their gRPC streams (a raw-frame codec), so the figure is the controller's
//! (HTTP/2 receive, protobuf decode, storing, summaries, Parquet encoding, file writes and
//! fsyncs) plus the clients' HTTP/2 sends, all sharing this process and its two cores.
//! `--live` generates and encodes each batch while the clock runs, as a real agent does.
//! The controller sets TCP_NODELAY on every accepted connection (`server.rs`); the rows
//! marked `--nodelay` below were measured before it did, with a flag (since removed) that
//! set it on the listening socket.
//! `RUST_LOG=fleetbench_controller=debug` logs each partition write (rows, seconds) and each
//! prepared next requests file.
//!
//! Figures (release build, 2-core VM shared with another engineer's cargo builds and tests,
//! load average 0.8-1.7 during the runs, 3.0-3.7 for the "before" ones; each run of each
//! row at least twice; peak RSS from the report, which includes the pre-encoded batches):
//!
//! | run | records/s end to end | peak RSS at last ack |
//! |---|---|---|
//! | first version (whole partition rewritten per point), `--agents 8 --records 250000` | 15.7-17.1k | 10-12 GB |
//! | per-point appends (06d09ae), `--agents 8 --records 250000` | 28.3k (doc) / 57.7k (re-measured) | 4.5 GB |
//! | per-point appends (06d09ae), `--agents 8 --points 8 --records 4000` | 35.2k (doc) / 65-98k (re-measured) | 275 MiB |
//! | now, `--agents 8 --records 250000` | 108-193k (9 runs; 2.1 GB of batches) | 5.1-5.5 GB |
//! | now, `--agents 8 --points 8 --records 4000` | 148-224k (17 runs) | 490-515 MiB |
//! | now, `--live`, the same two | 115k (one run) / 151-184k | 3.2 GB / - |
//! | now `--nodelay`, `--agents 8 --records 250000` | 123-169k (3 runs) | 5.6 GB |
//! | now `--nodelay`, `--agents 8 --points 8 --records 4000` | 210-235k (5 runs; `--live` 213k) | - |
//! | TCP_NODELAY in `server.rs`, `--agents 8 --points 8 --records 4000` | 181-258k (15 runs, median 212k, 11 of 15 at 200k or more; streaming alone 339-364k) | 570 MiB at the last ack, 906 MiB after the read-back |
//! | TCP_NODELAY in `server.rs`, `--agents 8 --records 250000` | 134-180k (2 runs; streaming alone 228-314k) | 5.6 GB |
//! | TCP_NODELAY in `server.rs`, `--agents 8 --points 64 --records 256` (batch-256 points, the seed's largest) | 114-141k (5 runs) | - |
//! | TCP_NODELAY in `server.rs`, `--agents 8 --points 256 --records 256` (2048 points, 524k records) | 88-137k (4 runs; streaming alone 335-380k) | 1.9 GB |
//! | Snappy instead of zstd, `--agents 8 --points 256 --records 256` | 180-217k (4 runs alternating with the zstd build: 121-131k) | - |
//! | Snappy instead of zstd, `--agents 8 --points 64 --records 256` | 154-187k (5 runs; alternating: 166-172k against zstd's 128-139k) | - |
//! | Snappy instead of zstd, `--agents 8 --points 8 --records 4000` | 190-261k (12 runs, median 242k) | - |
//! | Snappy instead of zstd, `--agents 8 --records 250000` | 114-220k (4 runs: 114k and 119k right after the page cache was dropped, 220k and 207k alternating with the zstd build's 207k and 220k) | 5.7 GB |
//! | after the crate split, one-way record path, TLS/auth layer and input limits (stop 15), `--agents 8 --points 8 --records 4000`, alternating with 9f0b375 on a quiet VM | 174-227k (6 runs, median 205k; 9f0b375: 172-212k, median 188k) | 501-541 MiB |
//! | the same, `--agents 8 --points 64 --records 256` | 137-173k (3 runs; 9f0b375: 162-167k) | - |
//!
//! What changed (each measured with `perf record --call-graph dwarf` first): exact
//! percentiles by selection instead of sorting the pooled ITLs (the sort was ~20% of all CPU,
//! under the state lock); the ITL values stored uncompressed without statistics (zstd saved
//! ~5% of their bytes for ~1/3 of a write's CPU); new rows encoded on two threads in 2048-row
//! chunks while the writer copies the existing row groups; after each write the next
//! version of the requests file is prepared in the background (existing row groups copied
//! and written back), so a point's write only adds its own rows; a write with no new rows
//! leaves the requests file alone; the simulated agents' encoding moved before the clock.
//!
//! Where the time goes now (`--agents 8 --points 8 --records 4000` at 022d1de, perf at
//! 1999 Hz, the read-back and pre-encoding excluded): the background copy of the requests file for the
//! next write 22%, encoding new rows 15%, the writer's own appends/writes/fsyncs 14%,
//! protobuf decode in tonic 12%, point summaries 9% (still under the state lock), the
//! simulated agents' HTTP/2 sends 8%, the controller's HTTP/2 receive 6%. The process keeps
//! only ~1.2-1.4 of the 2 cores busy. While the batches stream, the tokio workers spend
//! about half their time parked or in `epoll_wait` (perf `sched:sched_switch`: ~1.7 s over
//! a 1.6 s run; the state mutex was contended for only ~0.05 s): one agent's stream tops
//! out near 30k records/s whatever the CPU (`--agents 2` streams 46-63k records/s with 0.3
//! cores busy). The cause is Nagle's algorithm on the controller's accepted sockets
//! (`server.rs` served a plain `TcpListenerStream`, without TCP_NODELAY): the controller's
//! small HTTP/2 frames (window updates, acks) wait for the peer's TCP acks and each stream
//! stalls. With `--nodelay`, `--agents 2` streams 364-377k records/s (1.3 cores busy) and
//! 8 agents 350-380k; the run is then CPU-bound while streaming (1.6-1.8 cores), and what
//! remains is the serial end: the last job waits for the background copy of the requests
//! file, then its own rows, fsyncs and the points file (0.4-0.5 s of a ~1.1 s run). The
//! fix, TCP_NODELAY on accepted connections, is now in `server.rs`. On the 250k-record
//! points the writes after the points finish dominate either way.
//! Writing a fresh page-cache page is slow on this VM (`dd` of 1 GiB: 2.6 s of system
//! time, 90% in `copy_folio_from_iter_atomic`, i.e. first touch of guest memory), so every
//! byte of the requests file costs ~2.5-3 ns each time it is written; the same run's CPU
//! time varies from 14 to 24 s with the state of the page cache. With one requests file per
//! sweep and GPU count, renamed into place on every point (design.md), each write copies
//! the file; preparing the copy ahead takes it off the critical path but not off the CPU.
//! Many small points (256 records, as a batch-256 burst gives) are the realistic shape: with
//! zstd, streaming took 1.4-1.6 s for 524k records, then 2.8-4.5 s went on writes (the
//! writer coalesces: 6 writes with rows for 2048 points, the last adding 304k rows in
//! 3.0 s). perf showed why: `ZSTD_createCCtx` 8.8% and `ZSTD_createDCtx` 8.2% of all
//! samples, plus the kernel clearing their pages (`clear_page_erms` 14%). parquet builds a
//! codec per column chunk, and a zstd codec makes both contexts each time, so with a row
//! group per point every point paid ~30 context set-ups. Snappy has no such set-up: the
//! same runs went from 121-131k to 180-217k records/s, for files 1.1% larger (8 x 8 x 4000:
//! 275.9 MB against 272.9 MB).
//! The 200k records/s target, with TCP_NODELAY and Snappy: reached on 8 x 8 x 4000 (median
//! 242k) and on 2048 points of 256 records in 3 of 4 runs (180-217k); not on 8 x 64 x 256
//! (154-187k, a ~0.7 s run where the last write is a large share); on the 250k-record points
//! it depends on the VM's page cache (114-220k), as the rows of the points that finish last
//! are encoded and written after they finish at the page-cache cost above. What would remain to try: f32
//! ITLs (half the bytes; loses the exact f64 round trip the tests check); summaries off the
//! state lock (`state/lifecycle.rs`; 0.30 s for a 250k-record point, `--breakdown`); encoding a
//! running point's rows while it streams.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{BufMut, Bytes};
use clap::Parser;
use fleetbench_controller::ControllerConfig;
use fleetbench_proto::pb::control_service_client::ControlServiceClient;
use fleetbench_proto::pb::{self, agent_message::Msg, controller_message::Msg as CMsg};
use fleetbench_proto::record::RequestRecord;
use fleetbench_proto::unix_micros_now;
use fleetbench_results::{layout, read, write};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tokio::sync::{Barrier, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

const MODEL: &str = "bench-org/ingest-model";

#[derive(Debug, Parser)]
#[command(about = "Records/s one in-process controller ingests from concurrent agents, to Parquet")]
struct Args {
    /// Simulated agents streaming at the same time (one point each).
    #[arg(long, default_value_t = 8)]
    agents: usize,
    /// Records each agent streams per point.
    #[arg(long, default_value_t = 250_000)]
    records: u64,
    /// Points each agent runs, one after the other (the sweep has agents x points points).
    #[arg(long, default_value_t = 1)]
    points: usize,
    /// Records per RecordBatch message (the controller decodes at most 4 MiB a message).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Inter-token latencies per record (output tokens = itl + 1).
    #[arg(long, default_value_t = 128)]
    itl: usize,
    /// RecordBatch messages an agent may have queued towards its stream.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Results directory to use and keep (default: a temporary one, removed at the end).
    #[arg(long)]
    results: Option<PathBuf>,
    /// After the run, time the controller's finishing steps one by one on the records read
    /// back (clone of every record, one point's summary, one write of the whole partition).
    #[arg(long)]
    breakdown: bool,
    /// Generate and protobuf-encode each batch while the clock runs, as a real agent does
    /// (default: every point's records are encoded before the clock starts, so the figure
    /// measures the controller rather than these simulated agents sharing its cores).
    #[arg(long)]
    live: bool,
}

/// What one simulated agent saw, on the benchmark's clock.
#[derive(Debug)]
struct AgentReport {
    name: String,
    records: u64,
    batches: u64,
    first_send: Instant,
    all_sent: Instant,
    last_batch_ack: Instant,
    finished_sent: Instant,
    point_ack: Instant,
}

/// xorshift64*: deterministic, fast, good enough for plausible latencies.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One successful streamed completion as the agent would measure it.
fn record(rng: &mut Rng, index: u64, itl_len: usize, base_us: i64) -> pb::RequestRecord {
    let ttft = 0.05 + 0.4 * rng.next_f64();
    let itl: Vec<f64> = (0..itl_len)
        .map(|_| 0.012 + 0.02 * rng.next_f64())
        .collect();
    let e2el = ttft + itl.iter().sum::<f64>();
    let output = u32::try_from(itl_len + 1).unwrap_or(u32::MAX);
    let scheduled = index as f64 * 0.001;
    let sent = scheduled + 0.0005 * rng.next_f64();
    let r = RequestRecord {
        request_index: u32::try_from(index).unwrap_or(u32::MAX),
        wave: 0,
        send_time_unix_us: base_us + (sent * 1e6) as i64,
        ttft_s: Some(ttft),
        e2el_s: Some(e2el),
        tpot_s: fleetbench_proto::record::tpot(ttft, e2el, output),
        itl_s: itl,
        input_tokens: Some(1024),
        output_tokens: Some(output),
        target_input_tokens: 1024,
        target_output_tokens: output,
        content_chunks: output,
        error_kind: None,
        error: String::new(),
        endpoint: "completions".into(),
        usage_reported: true,
        scheduled_offset_s: scheduled,
        send_offset_s: sent,
        retries: 0,
    };
    pb::RequestRecord::from(&r)
}

fn agent_msg(msg: Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(msg) }
}

/// `RecordBatch.records`: the field number the pre-encoded records are tagged with.
const RECORDS_FIELD: u32 = 5;
/// `AgentMessage.record_batch`.
const RECORD_BATCH_FIELD: u32 = 4;

/// One `AgentMessage` on the wire, as two pieces: `head` (encoded when sent) and `body`
/// (the records of a batch, encoded ahead of time). The two concatenated are exactly the
/// bytes `prost` would produce for the whole message.
struct Frame {
    head: Vec<u8>,
    body: Bytes,
}

impl Frame {
    fn message(msg: Msg) -> Self {
        Frame {
            head: agent_msg(msg).encode_to_vec(),
            body: Bytes::new(),
        }
    }

    /// A `RecordBatch` message around records encoded by [`encode_records`].
    fn batch(point: &pb::PointSpec, seq: u64, records: Bytes) -> Self {
        let header = pb::RecordBatch {
            sweep_id: point.sweep_id.clone(),
            point_id: point.point_id.clone(),
            attempt: point.attempt,
            seq,
            records: Vec::new(),
        }
        .encode_to_vec();
        let mut head = Vec::with_capacity(header.len() + 16);
        encode_key(RECORD_BATCH_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint((header.len() + records.len()) as u64, &mut head);
        head.extend_from_slice(&header);
        Frame {
            head,
            body: records,
        }
    }
}

/// The `records` field of a `RecordBatch`, encoded (tag, length, record; per record).
fn encode_records(records: &[pb::RequestRecord]) -> Bytes {
    let len: usize = records
        .iter()
        .map(|r| prost::encoding::message::encoded_len(RECORDS_FIELD, r))
        .sum();
    let mut buf = Vec::with_capacity(len);
    for r in records {
        prost::encoding::message::encode(RECORDS_FIELD, r, &mut buf);
    }
    buf.into()
}

/// Sends [`Frame`]s as they are, decodes `ControllerMessage`s with prost.
#[derive(Debug, Clone, Copy, Default)]
struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Frame;
    type Decode = pb::ControllerMessage;
    type Encoder = FrameCodec;
    type Decoder = FrameCodec;

    fn encoder(&mut self) -> Self::Encoder {
        FrameCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        FrameCodec
    }
}

impl Encoder for FrameCodec {
    type Item = Frame;
    type Error = tonic::Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item.head);
        dst.put_slice(&item.body);
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = pb::ControllerMessage;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<pb::ControllerMessage>, tonic::Status> {
        pb::ControllerMessage::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// The records of one point as the agents stream them: batch `seq` holds records
/// `seq * batch ..`. Seeded by the point index, so a point's records do not depend on
/// which agent runs it.
fn point_batches(point_index: u32, args: &Args, base_us: i64) -> Vec<Bytes> {
    let mut rng = Rng((0x9E37_79B9_7F4A_7C15
        ^ u64::from(point_index).wrapping_mul(0xA24B_AED4_963E_E407))
        | 1);
    let batch = args.batch.max(1) as u64;
    (0..args.records.div_ceil(batch))
        .map(|seq| {
            let from = seq * batch;
            let to = (from + batch).min(args.records);
            let records: Vec<pb::RequestRecord> = (from..to)
                .map(|i| record(&mut rng, i, args.itl, base_us))
                .collect();
            encode_records(&records)
        })
        .collect()
}

/// Every point's batches, encoded before the clock starts (on all cores).
fn encode_all_points(args: &Args, points: usize) -> Vec<Vec<Bytes>> {
    let base_us = unix_micros_now();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out: Vec<Vec<Bytes>> = vec![Vec::new(); points];
    std::thread::scope(|scope| {
        for (w, chunk) in out.chunks_mut(points.div_ceil(workers).max(1)).enumerate() {
            let first = w * points.div_ceil(workers).max(1);
            scope.spawn(move || {
                for (k, slot) in chunk.iter_mut().enumerate() {
                    let index = u32::try_from(first + k).unwrap_or(u32::MAX);
                    *slot = point_batches(index, args, base_us);
                }
            });
        }
    });
    out
}

async fn run_agent(
    url: String,
    name: String,
    args: Arc<Args>,
    encoded: Arc<Vec<Vec<Bytes>>>,
    start: Arc<Barrier>,
    acked: Arc<AtomicUsize>,
    all_done: CancellationToken,
) -> Result<AgentReport> {
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);
    let (tx, rx) = mpsc::channel::<Frame>(args.queue.max(1));
    tx.send(Frame::message(Msg::Register(pb::Register {
        inventory: Some(pb::Inventory {
            agent_name: name.clone(),
            host: format!("{name}.bench"),
            gpus: vec![pb::Gpu {
                index: 0,
                vendor: "none".into(),
                model: "bench".into(),
                memory_bytes: 24 << 30,
                pci_bus_id: String::new(),
            }],
            driver: "bench".into(),
            fleetbench_version: fleetbench_proto::FLEETBENCH_VERSION.into(),
            ..Default::default()
        }),
        active_points: Vec::new(),
    })))
    .await
    .map_err(|_| anyhow!("{name}: stream closed before Register"))?;
    client.ready().await?;
    let mut inbound = client
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static("/fleetbench.v1.AgentService/Session"),
            FrameCodec,
        )
        .await?
        .into_inner();

    // Drains the controller's messages: hands assignments over, counts batch acks and
    // point acks (the next assignment comes before the previous point's ack, as it does
    // for a real agent, whose next point runs while the controller writes).
    let total_points = args.agents * args.points.max(1);
    let (assign_tx, mut assignments) = mpsc::channel::<pb::PointSpec>(total_points);
    let receiver = tokio::spawn({
        let name = name.clone();
        let (acked, all_done) = (acked.clone(), all_done.clone());
        async move {
            let (mut acks, mut last_ack, mut point_ack) = (0u64, None, None);
            loop {
                let m = tokio::select! {
                    m = inbound.message() => m?,
                    () = all_done.cancelled() => return Ok((acks, last_ack, point_ack)),
                };
                match m {
                    Some(pb::ControllerMessage { msg: Some(m) }) => match m {
                        CMsg::Assignment(a) => {
                            let point = a.point.context("Assignment without a point")?;
                            let _ = assign_tx.try_send(point);
                        }
                        CMsg::BatchAck(_) => {
                            acks += 1;
                            last_ack = Some(Instant::now());
                        }
                        CMsg::PointAck(_) => {
                            point_ack = Some(Instant::now());
                            if acked.fetch_add(1, Ordering::SeqCst) + 1 == total_points {
                                all_done.cancel();
                            }
                        }
                        CMsg::CancelPoint(c) => bail!("{name}: point cancelled: {}", c.reason),
                        _ => {}
                    },
                    Some(_) => {}
                    None => bail!("{name}: session ended before the PointAcks"),
                }
            }
        }
    });

    let batch = args.batch.max(1) as u64;
    let batches = args.records.div_ceil(batch);
    start.wait().await;
    let first_send = Instant::now();
    let mut all_sent = first_send;
    let mut done = 0u64;
    loop {
        // Points go to whichever agent is idle: run assignments until every point is acked.
        let point = tokio::select! {
            p = assignments.recv() => match p {
                Some(p) => p,
                // The receiver stopped: every point is acked, or it failed (its error
                // comes out of `receiver` below).
                None => break,
            },
            () = all_done.cancelled() => break,
        };
        done += 1;
        let started_unix_us = unix_micros_now();
        let point_start = Instant::now();
        let pre_encoded = usize::try_from(point.index)
            .ok()
            .and_then(|i| encoded.get(i))
            .filter(|b| !b.is_empty());
        let mut rng = Rng((0x9E37_79B9_7F4A_7C15
            ^ u64::from(point.index).wrapping_mul(0xA24B_AED4_963E_E407))
            | 1);
        for seq in 0..batches {
            let records = match pre_encoded {
                Some(batches) => batches
                    .get(usize::try_from(seq)?)
                    .cloned()
                    .context("a pre-encoded batch is missing")?,
                None => {
                    let from = seq * batch;
                    let to = (from + batch).min(args.records);
                    let records: Vec<pb::RequestRecord> = (from..to)
                        .map(|i| record(&mut rng, i, args.itl, started_unix_us))
                        .collect();
                    encode_records(&records)
                }
            };
            tx.send(Frame::batch(&point, seq, records))
                .await
                .map_err(|_| anyhow!("{name}: stream closed while sending batch {seq}"))?;
        }
        all_sent = Instant::now();
        tx.send(Frame::message(Msg::PointFinished(pb::PointFinished {
            sweep_id: point.sweep_id.clone(),
            point_id: point.point_id.clone(),
            attempt: point.attempt,
            batches,
            ok: true,
            endpoint: "completions".into(),
            engine_version: "bench".into(),
            started_unix_us,
            finished_unix_us: unix_micros_now(),
            load_wall_s: point_start.elapsed().as_secs_f64(),
            client_cores: 1,
            ..Default::default()
        })))
        .await
        .map_err(|_| anyhow!("{name}: stream closed before PointFinished"))?;
    }
    let finished_sent = all_sent;
    // `tx` stays alive until the acks: closing the stream would end the session.
    let (acks, last_ack, point_ack) = receiver.await??;
    drop(tx);
    let all_batches = batches * done;
    ensure!(
        acks == all_batches,
        "{name}: {acks} batch acks for {all_batches} batches"
    );
    Ok(AgentReport {
        name,
        records: args.records * done,
        batches: all_batches,
        first_send,
        all_sent,
        last_batch_ack: last_ack.unwrap_or(all_sent),
        finished_sent,
        point_ack: point_ack.unwrap_or(all_sent),
    })
}

/// A `/proc/self/status` field in kB.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, USER_HZ = 100).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(|| "?".into(), |kb| format!("{:.0} MiB", kb as f64 / 1024.0))
}

fn sweep_toml(points: usize, itl: usize) -> String {
    let batch_sizes: Vec<String> = (1..=points).map(|b| b.to_string()).collect();
    format!(
        r#"
name = "ingest-bench"
model = "{MODEL}"

[engine]
kind = "vllm"
runtime = "external"
url = "http://127.0.0.1:9"

[matrix]
gpus = [1]
batch_sizes = [{}]
workloads = [{{ input = 1024, output = {} }}]

[load]
mode = "burst"
endpoint = "completions"
timeout_s = 3600
"#,
        batch_sizes.join(", "),
        itl + 1
    )
}

async fn wait_for_agents(url: &str, n: usize) -> Result<()> {
    let mut c = ControlServiceClient::connect(url.to_string()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = c
            .list_agents(pb::ListAgentsRequest {})
            .await?
            .into_inner()
            .agents;
        if agents.iter().filter(|a| a.connected).count() >= n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "only {} of {n} agents registered",
            agents.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file_size(path: &Path) -> String {
    std::fs::metadata(path).map_or_else(
        |e| e.to_string(),
        |m| format!("{:.1} MiB", m.len() as f64 / (1 << 20) as f64),
    )
}

/// Times, outside the controller, the steps it takes between the last batch and the acks.
fn breakdown(
    rows: &[(String, u32, RequestRecord)],
    summaries: &[fleetbench_results::summary::PointSummary],
    sweep_id: &str,
    scratch: &Path,
) -> Result<()> {
    let mut by_point: Vec<(
        fleetbench_results::summary::PointSummary,
        Vec<RequestRecord>,
    )> = summaries.iter().map(|s| (s.clone(), Vec::new())).collect();
    for (point_id, _, r) in rows {
        let slot = by_point
            .iter_mut()
            .find(|(s, _)| &s.meta.point_id == point_id)
            .context("a row of an unknown point")?;
        slot.1.push(r.clone());
    }
    let (first, records) = by_point.first().context("no points")?;
    let t = Instant::now();
    let _ = fleetbench_results::summary::summarize(first.meta.clone(), records, &[]);
    println!(
        "breakdown: summarize() of one point ({} records; runs under the state lock in point_finished): {:.2} s",
        records.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let copies: Vec<Vec<RequestRecord>> = by_point.iter().map(|(_, r)| r.clone()).collect();
    println!(
        "breakdown: cloning every record of the partition (what the writer once did under the state lock; write jobs now carry the records moved): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    drop(copies);
    let refs: Vec<(fleetbench_results::summary::PointSummary, &[RequestRecord])> = by_point
        .iter()
        .map(|(s, r)| (s.clone(), r.as_slice()))
        .collect();
    let t = Instant::now();
    write::write_partition(
        &scratch.join("breakdown"),
        sweep_id,
        MODEL,
        1,
        &refs,
        &[],
        &fleetbench_results::PartitionMetadata::default(),
    )?;
    println!(
        "breakdown: one write_partition() of all {} points ({} rows, incl. fsync): {:.2} s",
        refs.len(),
        rows.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Arc::new(Args::parse());
    ensure!(
        args.agents >= 1 && args.records >= 1,
        "--agents and --records must be at least 1"
    );
    let tmp = tempfile::tempdir()?;
    let root = args
        .results
        .clone()
        .unwrap_or_else(|| tmp.path().join("results"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let controller = tokio::spawn(fleetbench_controller::run(
        ControllerConfig {
            results_dir: root.clone(),
            ..ControllerConfig::default()
        },
        listener,
        stop.clone(),
    ));

    let total_points = args.agents * args.points.max(1);
    let encoded = Arc::new(if args.live {
        Vec::new()
    } else {
        let t = Instant::now();
        let encoded = encode_all_points(&args, total_points);
        let bytes: usize = encoded.iter().flatten().map(Bytes::len).sum();
        println!(
            "pre-encoded {total_points} points' RecordBatches ({:.1} MiB) in {:.2} s, before the clock",
            bytes as f64 / (1 << 20) as f64,
            t.elapsed().as_secs_f64()
        );
        encoded
    });
    let start = Arc::new(Barrier::new(args.agents));
    let acked = Arc::new(AtomicUsize::new(0));
    let all_done = CancellationToken::new();
    let agents: Vec<_> = (0..args.agents)
        .map(|i| {
            tokio::spawn(run_agent(
                url.clone(),
                format!("bench-agent-{i:02}"),
                args.clone(),
                encoded.clone(),
                start.clone(),
                acked.clone(),
                all_done.clone(),
            ))
        })
        .collect();
    wait_for_agents(&url, args.agents).await?;
    let mut control = ControlServiceClient::connect(url.clone()).await?;
    let cpu_before = cpu_seconds();
    let submitted = control
        .submit_sweep(pb::SubmitSweepRequest {
            spec_toml: sweep_toml(args.agents * args.points.max(1), args.itl),
            file_name: "ingest-bench.toml".into(),
        })
        .await?
        .into_inner();
    ensure!(
        submitted.points as usize == args.agents * args.points.max(1),
        "the sweep has {} points for {} agents x {} points",
        submitted.points,
        args.agents,
        args.points
    );

    let mut reports = Vec::new();
    for a in agents {
        reports.push(a.await??);
    }
    let cpu_after = cpu_seconds();
    let hwm_at_ack = status_kb("VmHWM");
    let rss_at_ack = status_kb("VmRSS");

    let t0 = reports
        .iter()
        .map(|r| r.first_send)
        .min()
        .context("no agents")?;
    let t_sent = reports
        .iter()
        .map(|r| r.all_sent)
        .max()
        .context("no agents")?;
    let t_batches = reports
        .iter()
        .map(|r| r.last_batch_ack)
        .max()
        .context("no agents")?;
    let t_finished = reports
        .iter()
        .map(|r| r.finished_sent)
        .max()
        .context("no agents")?;
    let t_end = reports
        .iter()
        .map(|r| r.point_ack)
        .max()
        .context("no agents")?;
    let total: u64 = reports.iter().map(|r| r.records).sum();
    let batches: u64 = reports.iter().map(|r| r.batches).sum();
    let wall = (t_end - t0).as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;

    println!(
        "ingest_bench: {} agents x {} points x {} records (batch {}, itl {}) = {total} records in {batches} batches",
        args.agents, args.points, args.records, args.batch, args.itl
    );
    println!("wall, first batch sent -> last PointAck: {wall:.3} s");
    println!(
        "records/s (end to end, Parquet on disk): {:.0}",
        total as f64 / wall
    );
    println!(
        "  streaming, first batch -> last BatchAck: {:.3} s ({:.0} records/s into memory; last batch queued at {:.3} s)",
        (t_batches - t0).as_secs_f64(),
        total as f64 / (t_batches - t0).as_secs_f64(),
        (t_sent - t0).as_secs_f64()
    );
    println!(
        "  finishing, last BatchAck -> last PointAck: {:.3} s (summaries + Parquet writes; last PointFinished sent at {:.3} s)",
        (t_end - t_batches).as_secs_f64(),
        (t_finished - t0).as_secs_f64()
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        println!(
            "process CPU (agents + controller) from submit to last ack: {:.2} s = {:.2} cores on average",
            b - a,
            (b - a) / wall
        );
    }
    println!(
        "peak RSS (VmHWM) at the last ack: {}; RSS then: {}",
        mib(hwm_at_ack),
        mib(rss_at_ack)
    );
    let mut by_ack: Vec<&AgentReport> = reports.iter().collect();
    by_ack.sort_by_key(|r| r.point_ack);
    println!(
        "per agent, ms since the first batch: all batches queued / last BatchAck / PointFinished sent / PointAck"
    );
    for r in by_ack {
        println!(
            "  {}: {:9.1} {:9.1} {:9.1} {:9.1}",
            r.name,
            ms(r.all_sent - t0),
            ms(r.last_batch_ack - t0),
            ms(r.finished_sent - t0),
            ms(r.point_ack - t0)
        );
    }

    // Read back what is on disk.
    let status = control
        .get_sweep(pb::GetSweepRequest {
            sweep_id: submitted.sweep_id.clone(),
        })
        .await?
        .into_inner();
    let dir = layout::partition_dir(&root, MODEL, 1);
    let requests = dir.join(format!("{}.requests.parquet", submitted.sweep_id));
    let points = dir.join(format!("{}.points.parquet", submitted.sweep_id));
    let read_start = Instant::now();
    let rows = read::read_requests(&requests)?;
    let read_s = read_start.elapsed().as_secs_f64();
    let summaries = read::read_point_summaries(&points)?;
    ensure!(
        rows.len() as u64 == total,
        "{} rows in {} for {total} records sent",
        rows.len(),
        requests.display()
    );
    ensure!(
        rows.iter().all(|(_, _, r)| r.itl_s.len() == args.itl),
        "a row lost its ITL values"
    );
    let completed: u64 = summaries.iter().map(|s| u64::from(s.completed)).sum();
    ensure!(
        summaries.len() == args.agents * args.points.max(1) && completed == total,
        "{} point rows with {completed} completed for {} points / {total} records",
        summaries.len(),
        args.agents * args.points.max(1)
    );
    println!(
        "read back: {} rows in {} ({}), {} point rows, in {read_s:.2} s; sweep state {}, files {:?}",
        rows.len(),
        requests.display(),
        file_size(&requests),
        summaries.len(),
        status.state,
        status.result_files.len()
    );
    println!(
        "peak RSS (VmHWM) after the read-back: {}",
        mib(status_kb("VmHWM"))
    );
    if args.breakdown {
        breakdown(&rows, &summaries, &submitted.sweep_id, tmp.path())?;
    }
    drop(rows);

    stop.cancel();
    controller.await??;
    Ok(())
}
