//! Rough throughput check of `vllm-sim --sim-timing fast`: many concurrent streamed chat
//! requests over raw HTTP/1.1, counting SSE events as they arrive.
//!
//! ```text
//! target/release/vllm-sim --model m --port 8123 --sim-timing fast &
//! cargo run --release -p fleetbench-sim --example fast_load -- 127.0.0.1:8123 1000 10 2000
//! ```
//!
//! Arguments: address, concurrent streams, seconds, `max_tokens` per request. Each stream
//! sends one request per connection (`Connection: close`) and starts the next when the answer
//! ends. Prints SSE events per second (content chunks plus the role, usage and `[DONE]`
//! events, three per request) and how many requests completed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8123".to_owned());
    let arg = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().context("numeric argument"))
    };
    let concurrency = arg(2, 1000)?;
    let seconds = arg(3, 10)?;
    let max_tokens = arg(4, 2000)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(addr, concurrency, seconds, max_tokens))
}

async fn run(addr: String, concurrency: u64, seconds: u64, max_tokens: u64) -> anyhow::Result<()> {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"go"}}],"max_tokens":{max_tokens},"ignore_eos":true,"stream":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let request: Arc<[u8]> = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (addr, request, counters) = (addr.clone(), request.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                if stream_once(&addr, &request, &counters, end).await.is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    // Report once per second.
    let mut last = 0;
    for s in 1..=seconds {
        tokio::time::sleep_until((start + Duration::from_secs(s)).into()).await;
        let now = counters.events.load(Ordering::Relaxed);
        println!("t={s:>3}s events/s={:>9}", now - last);
        last = now;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for task in tasks {
        task.abort();
    }
    let events = counters.events.load(Ordering::Relaxed);
    println!(
        "total: {events} events in {elapsed:.1} s = {:.0} events/s; {} requests completed, {} errors",
        events as f64 / elapsed,
        counters.requests.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One request: counts every `\n\n` (the end of an SSE event) until EOF or `end`.
async fn stream_once(
    addr: &str,
    request: &[u8],
    counters: &Counters,
    end: Instant,
) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    socket.write_all(request).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut previous = 0u8;
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut events = 0;
        for &b in &buf[..n] {
            if b == b'\n' && previous == b'\n' {
                events += 1;
            }
            previous = b;
        }
        counters.events.fetch_add(events, Ordering::Relaxed);
        if Instant::now() >= end {
            return Ok(());
        }
    }
}
