//! A sub-millisecond timer for `--sim-timing exact` ([`precise_sleep_until`]).
//!
//! tokio's timer wheel has a 1 ms tick and rounds every deadline up to the next tick, so a
//! token due at `t0 + 50.3 ms` is written at 51 ms or later: 0–1 ms late, which is as large
//! as the client error the exact mode is meant to measure. This timer keeps the deadlines on
//! the real clock (`std::time::Instant`) instead:
//!
//! - One OS thread (`vllm-sim-timer`) owns a min-heap of `(deadline, Waker)` behind a mutex
//!   and sleeps on a condition variable until the earliest deadline (a futex with an
//!   absolute `CLOCK_MONOTONIC` timeout on Linux, an hrtimer; the thread asks for no timer
//!   slack, so the kernel does not defer it by the default 50 µs).
//! - When it wakes it takes every due entry off the heap in one batch and wakes the tasks
//!   outside the lock, in deadline order. An entry is due once `now >= deadline`, so a sleep
//!   never ends early. After a batch the thread sleeps at least [`MIN_INTERVAL`]: deadlines
//!   closer together than that are woken together, up to `MIN_INTERVAL` late, which bounds
//!   the thread's wake-ups (each costs some µs of CPU on the timer thread and on the worker
//!   it wakes) at 20,000 a second whatever the number of streams.
//! - A registration only notifies the thread when the new deadline is earlier than the one
//!   it sleeps until (or it sleeps with no deadline): a stream registering its next token
//!   10 ms ahead costs a lock, a heap push and two waker clones (reference counts), no
//!   wake-up and no allocation beyond the heap's amortised growth.
//! - A dropped sleep leaves its entry in the heap until its deadline; the entry then wakes a
//!   task that no longer waits for it, a harmless spurious wake-up, and is gone. A cancelled
//!   stream so keeps its task's waker (not its connection) for at most one token interval.
//!
//! Spinning on the timer thread through the last tens of µs before a deadline was measured
//! (`examples/timer_lateness.rs`): it halves the median lateness but costs up to a core, so
//! the thread does not spin.
//!
//! The timer runs on the real clock: tokio's paused test clock does not move it (see
//! [`crate::config::Pacing`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Shortest time between two wake-ups of the timer thread: deadlines closer than this to the
/// previous batch are woken with the next one.
pub const MIN_INTERVAL: Duration = Duration::from_micros(50);

/// Sleeps until `deadline` on the real clock, with microsecond rather than millisecond
/// precision: ready at the first poll at or after `deadline`, never before. Cancel-safe
/// (dropping it is enough).
pub fn precise_sleep_until(deadline: Instant) -> PreciseSleep {
    PreciseSleep {
        deadline,
        state: SleepState::Idle,
    }
}

/// The future of [`precise_sleep_until`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct PreciseSleep {
    deadline: Instant,
    state: SleepState,
}

#[derive(Debug)]
enum SleepState {
    /// Not registered yet.
    Idle,
    /// In the timer's heap with (a clone of) this waker.
    Registered(Waker),
    /// The timer thread could not be started: tokio's timer instead.
    Fallback(Pin<Box<tokio::time::Sleep>>),
}

impl PreciseSleep {
    /// The instant this sleep ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for PreciseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let SleepState::Fallback(sleep) = &mut this.state {
            return sleep.as_mut().poll(cx);
        }
        if Instant::now() >= this.deadline {
            this.state = SleepState::Idle;
            return Poll::Ready(());
        }
        if let SleepState::Registered(waker) = &this.state {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        // First poll, or polled by another task: (re-)register. A replaced entry stays in the
        // heap and fires as a spurious wake-up of the old waker.
        match Timer::global() {
            Some(timer) => {
                timer.register(this.deadline, cx.waker().clone());
                this.state = SleepState::Registered(cx.waker().clone());
            }
            None => {
                let mut sleep = Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                    this.deadline,
                )));
                let poll = sleep.as_mut().poll(cx);
                this.state = SleepState::Fallback(sleep);
                return poll;
            }
        }
        Poll::Pending
    }
}

/// Starts the timer thread now rather than at the first sleep. Returns false if it cannot be
/// started (sleeps then fall back to tokio's timer).
pub fn start() -> bool {
    Timer::global().is_some()
}

/// One registration: the heap orders by deadline, then registration order.
#[derive(Debug)]
struct Entry {
    deadline: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// What the timer thread does, as registrations see it.
#[derive(Debug, Clone, Copy)]
enum Thread {
    /// Awake (or already notified): it looks at the heap before it sleeps again.
    Awake,
    /// Asleep with an empty heap: any registration wakes it.
    Idle,
    /// Asleep until this deadline: an earlier registration wakes it.
    Until(Instant),
    /// Asleep until [`MIN_INTERVAL`] after its last batch, which no registration moves.
    Coalescing,
}

#[derive(Debug)]
struct State {
    heap: BinaryHeap<Entry>,
    seq: u64,
    thread: Thread,
}

#[derive(Debug)]
struct Timer {
    state: Mutex<State>,
    wake: Condvar,
}

impl Timer {
    /// The process's timer, its thread started on first use; `None` if the thread cannot be
    /// spawned.
    fn global() -> Option<&'static Timer> {
        static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
        *TIMER.get_or_init(|| {
            let timer: &'static Timer = Box::leak(Box::new(Timer {
                state: Mutex::new(State {
                    heap: BinaryHeap::with_capacity(4096),
                    seq: 0,
                    thread: Thread::Awake,
                }),
                wake: Condvar::new(),
            }));
            match std::thread::Builder::new()
                .name("vllm-sim-timer".to_owned())
                .spawn(move || timer.run())
            {
                Ok(_) => Some(timer),
                Err(e) => {
                    tracing::warn!("cannot start the precise timer thread ({e}); using tokio's");
                    None
                }
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned heap is still a valid heap.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, deadline: Instant, waker: Waker) {
        let notify = {
            let mut state = self.lock();
            let seq = state.seq;
            state.seq = seq.wrapping_add(1);
            state.heap.push(Entry {
                deadline,
                seq,
                waker,
            });
            let notify = match state.thread {
                Thread::Awake | Thread::Coalescing => false,
                Thread::Idle => true,
                Thread::Until(next) => deadline < next,
            };
            if notify {
                // Later registrations need not notify again: the thread re-reads the heap.
                state.thread = Thread::Awake;
            }
            notify
        };
        if notify {
            self.wake.notify_one();
        }
    }

    /// The timer thread: forever, wake what is due, then sleep until the next deadline (but
    /// at least `MIN_INTERVAL` after the last batch).
    fn run(&self) {
        reduce_timer_slack();
        let mut due: Vec<Waker> = Vec::with_capacity(1024);
        let mut floor = Instant::now();
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            while state.heap.peek().is_some_and(|e| e.deadline <= now) {
                if let Some(entry) = state.heap.pop() {
                    due.push(entry.waker);
                }
            }
            if !due.is_empty() {
                state.thread = Thread::Awake;
                drop(state);
                for waker in due.drain(..) {
                    waker.wake();
                }
                floor = now + MIN_INTERVAL;
                state = self.lock();
                continue;
            }
            state = match state.heap.peek().map(|e| e.deadline) {
                None => {
                    state.thread = Thread::Idle;
                    self.wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(next) => {
                    state.thread = if next > floor {
                        Thread::Until(next)
                    } else {
                        Thread::Coalescing
                    };
                    let until = next.max(floor);
                    self.wake
                        .wait_timeout(state, until - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.thread = Thread::Awake;
        }
    }
}

/// Asks the kernel not to defer this thread's timeouts (Linux's default timer slack lets a
/// 10 ms sleep end up to 50 µs late, to batch wake-ups).
fn reduce_timer_slack() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_timerslack(1) {
        tracing::debug!("cannot reduce the timer slack of the precise timer: {e}");
    }
}

/// Lateness the real-clock tests tolerate: well under a millisecond on an idle machine
/// (`examples/timer_lateness.rs` measures it), but a CPU-starved CI machine deschedules threads
/// for whole time slices. Early or out of order is never tolerated.
#[cfg(test)]
pub(crate) const TEST_TOLERANCE: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests;
