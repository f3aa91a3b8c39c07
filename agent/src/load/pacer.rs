//! The open-loop send clock: rate, staged-rate and trace points send each request at its
//! offset on the real clock with sub-millisecond precision.
//!
//! tokio's timer wheel has a 1 ms tick and rounds every deadline up to the next tick, so
//! a request due at 50.3 ms leaves at 51 ms or later: a Poisson or trace schedule (offsets
//! anywhere within a millisecond) lags 0.5 ms on median and 1 ms at worst before any
//! other cost (`loadbench trace` measured p50 1.15 ms, p99 2.04-2.11 ms with tokio's
//! timer). The pacer is one OS thread that sleeps until each offset on
//! `std::time::Instant` (a futex with an absolute timeout: an hrtimer, off by the
//! kernel's timer slack, 50 µs by default) and hands the request's position to the load
//! generator through a bounded channel; the launch itself stays on the runtime.
//!
//! The thread ends after the last offset, when `stop` is sent or dropped (a cancelled
//! point: a long gap in a trace is not slept through), or when the receiver is gone. It
//! runs on the real clock, so tokio's paused test clock does not move it.

use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::AgentError;

/// Sends due ahead of the launcher at most (the channel's bound): a launcher that falls
/// this far behind holds the pacer, which then sends late rather than buffer more.
const AHEAD: usize = 1024;

/// A running pacer: `due` yields each offset's position in order as it comes due;
/// dropping `stop` (or the whole pacer) ends the thread.
pub struct Pacer {
    pub due: mpsc::Receiver<usize>,
    stop: std_mpsc::Sender<()>,
}

impl Pacer {
    /// Starts the pacer thread for `offsets` (sorted) from `origin`.
    pub fn start(origin: Instant, offsets: Vec<Duration>) -> Result<Pacer, AgentError> {
        let (tx, due) = mpsc::channel(AHEAD);
        let (stop, stopped) = std_mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("fleetbench-pacer".into())
            .spawn(move || {
                for (i, offset) in offsets.into_iter().enumerate() {
                    let at = origin + offset;
                    loop {
                        let now = Instant::now();
                        if now >= at {
                            break;
                        }
                        match stopped.recv_timeout(at - now) {
                            Err(RecvTimeoutError::Timeout) => {}
                            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    if tx.blocking_send(i).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| AgentError::Engine(format!("cannot start the pacer thread: {e}")))?;
        Ok(Pacer { due, stop })
    }

    /// Ends the thread now (also done by dropping the pacer).
    pub fn stop(&self) {
        let _ = self.stop.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn positions_come_in_order_and_never_early() {
        let origin = Instant::now();
        let offsets: Vec<Duration> = (0..20).map(|i| Duration::from_micros(i * 700)).collect();
        let mut pacer = Pacer::start(origin, offsets.clone()).unwrap();
        let mut seen = Vec::new();
        while let Some(i) = pacer.due.recv().await {
            assert!(origin.elapsed() >= offsets[i], "{i} came early");
            seen.push(i);
        }
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn stopping_ends_a_long_wait() {
        let origin = Instant::now();
        let mut pacer =
            Pacer::start(origin, vec![Duration::ZERO, Duration::from_secs(3600)]).unwrap();
        assert_eq!(pacer.due.recv().await, Some(0));
        pacer.stop();
        // The thread ends without sending the hour-away position: the channel closes.
        assert_eq!(pacer.due.recv().await, None);
    }
}
