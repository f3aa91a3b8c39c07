//! The agent's own CPU time, to tell a point that measured the server from one that
//! measured a saturated client.

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;

/// User + system CPU time of this process (all threads) so far; `None` if the kernel
/// would not say.
pub fn cpu_time() -> Option<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let micros = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
    Some(Duration::from_micros(u64::try_from(micros).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_time().unwrap();
        // Spin until the process has used at least 20 ms more CPU (bounded loop).
        let mut x = 0u64;
        for i in 0..2_000_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
            if i % 1_000_000 == 0 && cpu_time().unwrap() >= before + Duration::from_millis(20) {
                break;
            }
        }
        std::hint::black_box(x);
        assert!(cpu_time().unwrap() >= before + Duration::from_millis(20));
    }
}
