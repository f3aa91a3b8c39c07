//! [`StopSignal`]: the engine's stop, as the streaming responses see it, both the engine's
//! ([`crate::stream`]) and those that bypass it ([`crate::direct`]): a lock-free flag read
//! per token, the cancellation token for long waits, and deadline sleeps that end early when
//! the engine stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Pacing;
use crate::precise_timer::precise_sleep_until;

/// Waits at least this long also watch the shutdown token (which takes locks); shorter ones
/// only sleep, and shutdown is noticed at the next token.
const WATCH_SHUTDOWN_AFTER: Duration = Duration::from_millis(50);

/// The engine's stop signal, readable per token without a lock: a flag set once the token is
/// cancelled, plus the token itself for long waits.
#[derive(Debug, Clone)]
pub struct StopSignal {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl StopSignal {
    /// Watches `token` on `tracker`.
    pub fn new(token: CancellationToken, tracker: &TaskTracker) -> Self {
        let flag = Arc::new(AtomicBool::new(token.is_cancelled()));
        let watched = token.clone();
        let set = flag.clone();
        tracker.spawn(async move {
            watched.cancelled().await;
            set.store(true, Ordering::Release);
        });
        Self { token, flag }
    }

    /// Whether the engine has stopped.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once the engine has stopped.
    pub async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Sleeps until `deadline` (at once if it has passed) on `pacing`'s timer. Returns false
    /// if the engine stopped.
    pub(crate) async fn sleep_until(&self, deadline: Instant, pacing: Pacing) -> bool {
        let now = Instant::now();
        if deadline <= now {
            return !self.is_stopped();
        }
        let watch = deadline - now >= WATCH_SHUTDOWN_AFTER;
        match pacing {
            Pacing::Precise => {
                self.wait(precise_sleep_until(deadline.into_std()), watch)
                    .await
            }
            Pacing::Tokio => self.wait(tokio::time::sleep_until(deadline), watch).await,
        }
    }

    /// Awaits `sleep`, and also the shutdown token if `watch`. Returns false if the engine
    /// stopped.
    async fn wait(&self, sleep: impl Future<Output = ()>, watch: bool) -> bool {
        if !watch {
            sleep.await;
            return !self.is_stopped();
        }
        tokio::select! {
            biased;
            () = self.token.cancelled() => false,
            () = sleep => !self.is_stopped(),
        }
    }
}
