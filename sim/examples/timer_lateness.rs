//! How late sleeps end: `fleetbench_sim::precise_timer` (the `--sim-timing exact` timer) versus
//! `tokio::time::sleep_until`, on a multi-thread runtime with many concurrent sleepers.
//!
//! ```text
//! cargo run --release -p fleetbench-sim --example timer_lateness -- [tasks] [sleeps per task] [itl ms]
//! ```
//!
//! Defaults: 256 tasks × 40 sleeps, 10 ms apart, the tasks' schedules spread over one interval
//! at odd microseconds (as `t0 + ttft + k × itl` is for requests parsed at arbitrary
//! instants). Prints, for each timer, p50 / p90 / p99 / max lateness in µs, the number of early
//! wake-ups, and the CPU time of the process and of the precise timer's thread
//! (`/proc/self/task/*/schedstat`, Linux).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use fleetbench_sim::precise_timer::{self, precise_sleep_until};

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Tokio,
    Precise,
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let tasks = args.first().copied().unwrap_or(256);
    let per_task = args.get(1).copied().unwrap_or(40) as u32;
    let itl = Duration::from_micros(args.get(2).copied().unwrap_or(10) * 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    precise_timer::start();
    let cpu0 = timer_thread_cpu_ns();
    for which in [Which::Tokio, Which::Precise, Which::Tokio, Which::Precise] {
        let cpu_before = timer_thread_cpu_ns();
        let proc_before = process_cpu_ns();
        let started = Instant::now();
        let mut lateness = runtime.block_on(run(which, tasks, per_task, itl));
        let wall = started.elapsed();
        let cpu = timer_thread_cpu_ns().saturating_sub(cpu_before);
        let proc_cpu = process_cpu_ns().saturating_sub(proc_before);
        lateness.sort_unstable();
        let early = lateness.iter().filter(|&&l| l < 0).count();
        let q = |p: f64| lateness[((lateness.len() - 1) as f64 * p).round() as usize];
        let name = if which == Which::Tokio {
            "tokio  "
        } else {
            "precise"
        };
        println!(
            "{name} n={} lateness µs: p50 {:>6.1} p90 {:>6.1} p99 {:>6.1} max {:>7.1} early {early} \
             | process CPU {:.0} ms, timer thread {:.1} ms in {:.2} s wall ({:.1}% of a core, {:.2} µs/sleep)",
            lateness.len(),
            q(0.5) as f64 / 1e3,
            q(0.9) as f64 / 1e3,
            q(0.99) as f64 / 1e3,
            lateness[lateness.len() - 1] as f64 / 1e3,
            proc_cpu as f64 / 1e6,
            cpu as f64 / 1e6,
            wall.as_secs_f64(),
            cpu as f64 / wall.as_nanos() as f64 * 100.0,
            cpu as f64 / 1e3 / lateness.len() as f64,
        );
    }
    let idle_before = timer_thread_cpu_ns();
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "timer thread CPU while idle: {:.3} ms in 0.5 s (total {:.1} ms)",
        timer_thread_cpu_ns().saturating_sub(idle_before) as f64 / 1e6,
        timer_thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e6
    );
}

/// Lateness in ns (negative: early) of every sleep of `tasks` tasks.
async fn run(which: Which, tasks: u64, per_task: u32, itl: Duration) -> Vec<i64> {
    let base = Instant::now() + Duration::from_millis(20);
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            // Spread the schedules over one ITL at odd microseconds.
            let start = base + Duration::from_nanos((i * 7_919_003) % itl.as_nanos() as u64);
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per_task as usize);
                for k in 0..per_task {
                    let deadline = start + itl * k;
                    match which {
                        Which::Tokio => {
                            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline))
                                .await;
                        }
                        Which::Precise => precise_sleep_until(deadline).await,
                    }
                    let now = Instant::now();
                    out.push(if now >= deadline {
                        (now - deadline).as_nanos() as i64
                    } else {
                        -((deadline - now).as_nanos() as i64)
                    });
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

/// CPU time of this process's live threads so far.
fn process_cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU time of the `vllm-sim-timer` thread so far (0 if not found).
fn timer_thread_cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for task in dir.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "vllm-sim-timer" {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            return stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}
