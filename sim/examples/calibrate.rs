//! Runs bursts through vllm-sim's engine loop with a GPU profile, on tokio's paused clock
//! (simulated time is free), and prints what a benchmark would measure, plus the CPU the
//! simulation itself cost. The numbers of docs/sim.md's calibration table come from here:
//!
//! ```text
//! cargo run --release -p fleetbench-sim --example calibrate -- \
//!     --gpu h100-sxm --model meta-llama/Llama-3.1-8B-Instruct --tp 1 \
//!     --input 1024 --output 512 --batches 1,8,32,256
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/burst.rs"]
mod burst;

use clap::Parser;
use fleetbench_sim::config::CrashAction;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "h100-sxm")]
    gpu: String,
    #[arg(long, default_value = "meta-llama/Llama-3.1-8B-Instruct")]
    model: String,
    #[arg(long, default_value_t = 1)]
    tp: u32,
    #[arg(long, default_value_t = 1024)]
    input: u32,
    #[arg(long, default_value_t = 512)]
    output: u32,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64,128,256"
    )]
    batches: Vec<usize>,
    #[arg(long)]
    eager: bool,
    #[arg(long, default_value_t = 0.9)]
    util: f64,
    #[arg(long, default_value_t = 16)]
    block_size: u32,
    #[arg(long, default_value_t = 8192)]
    max_num_batched_tokens: u64,
    /// Crash like vLLM when a step's workspace does not fit (`--sim-oom-crash`).
    #[arg(long)]
    oom: bool,
}

/// This process's user + system CPU seconds (from /proc/self/stat, 100 Hz ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state field (3) here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let model = burst::perf(&args.gpu, &args.model, args.tp, args.util, args.eager);
    println!(
        "{} × {} (TP {}), {} in / {} out, eager {}, KV cache {} tokens",
        model.model.name,
        model.gpu.name,
        args.tp,
        args.input,
        args.output,
        args.eager,
        model
            .kv_cache_blocks(args.block_size)
            .map(|b| b * u64::from(args.block_size))
            .unwrap_or(0)
    );
    println!(
        "{:>6} {:>11} {:>12} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "batch", "total tok/s", "tok/s/request", "TTFT s", "TPOT ms", "preempt", "crashed", "cpu s"
    );
    for &batch in &args.batches {
        let mut config = burst::engine(
            model.clone(),
            args.block_size,
            args.oom.then_some(CrashAction::Exit),
        );
        config.max_num_batched_tokens = args.max_num_batched_tokens;
        let cpu0 = cpu_seconds();
        let b = rt.block_on(burst::burst(config, batch, args.input, args.output));
        let cpu = cpu_seconds() - cpu0;
        if b.e2e.is_empty() {
            println!(
                "{batch:>6} {:>11} {:>12} {:>10} {:>10} {:>8} {:>8} {cpu:>8.2}",
                "-", "-", "-", "-", b.preemptions, b.crashed
            );
            continue;
        }
        let tpot_ms = b
            .e2e
            .iter()
            .zip(&b.ttft)
            .map(|(e, t)| (e.as_secs_f64() - t.as_secs_f64()) / f64::from(args.output.max(2) - 1))
            .sum::<f64>()
            / b.e2e.len() as f64
            * 1e3;
        println!(
            "{batch:>6} {:>11.0} {:>12.1} {:>10.3} {:>10.2} {:>8} {:>8} {cpu:>8.2}",
            b.output_throughput(args.output),
            b.per_request_speed(args.output),
            b.mean_ttft(),
            tpot_ms,
            b.preemptions,
            b.crashed
        );
    }
}
