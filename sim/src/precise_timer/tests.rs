//! Unit tests of [`super`]: sleeps end in deadline order and never early, also when concurrent,
//! past, dropped, re-polled or preempted by an earlier deadline.

use super::*;

/// A small deterministic generator (no `rand` dependency).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// 2,000 sleeps with random deadlines over 50 ms on one runtime thread: they end in
/// deadline order (the timer wakes them in that order and a current-thread runtime polls
/// remote wake-ups first come, first served), none early, none lost.
#[tokio::test]
async fn sleeps_end_in_deadline_order_never_early() {
    let base = Instant::now() + Duration::from_millis(50);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let deadlines: Vec<Instant> = (0..2000)
        .map(|_| base + Duration::from_micros(xorshift(&mut rng) % 50_000))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, deadline) in deadlines.iter().copied().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            precise_sleep_until(deadline).await;
            let _ = tx.send((i, Instant::now()));
        });
    }
    drop(tx);
    let mut order = Vec::new();
    while let Some((i, at)) = rx.recv().await {
        let deadline = deadlines[i];
        assert!(at >= deadline, "sleep {i} ended early");
        let late = at - deadline;
        assert!(late < TEST_TOLERANCE, "sleep {i} late by {late:?}");
        order.push(i);
    }
    assert_eq!(order.len(), deadlines.len());
    for pair in order.windows(2) {
        assert!(
            deadlines[pair[0]] <= deadlines[pair[1]],
            "{} (due {:?}) ended before {} (due {:?})",
            pair[0],
            deadlines[pair[0]] - base,
            pair[1],
            deadlines[pair[1]] - base
        );
    }
}

/// Many tasks on a multi-thread runtime: none early, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sleeps_are_never_early() {
    let mut rng = 7u64;
    let tasks: Vec<_> = (0..256)
        .map(|_| {
            let step = Duration::from_micros(1000 + xorshift(&mut rng) % 9000);
            tokio::spawn(async move {
                let start = Instant::now();
                let mut worst = Duration::ZERO;
                for k in 1..=5 {
                    let deadline = start + step * k;
                    precise_sleep_until(deadline).await;
                    let now = Instant::now();
                    assert!(now >= deadline, "early");
                    worst = worst.max(now - deadline);
                }
                worst
            })
        })
        .collect();
    for task in tasks {
        let worst = task.await.unwrap();
        assert!(worst < TEST_TOLERANCE, "late by {worst:?}");
    }
}

#[test]
fn a_past_deadline_is_ready_without_registering() {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for deadline in [Instant::now(), Instant::now() - Duration::from_millis(1)] {
        let mut sleep = precise_sleep_until(deadline);
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_ready());
        assert!(matches!(sleep.state, SleepState::Idle));
    }
}

/// A dropped sleep leaves a stale entry that fires at its deadline and goes away; a sleep
/// re-polled by the same task registers once.
#[tokio::test]
async fn dropped_and_repolled_sleeps() {
    let deadline = Instant::now() + Duration::from_millis(30);
    let mut sleep = precise_sleep_until(deadline);
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
    assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
    assert!(matches!(sleep.state, SleepState::Registered(_)));
    drop(sleep);
    // The stale entry's deadline passes; the timer pops it (waking a no-op waker).
    precise_sleep_until(deadline + Duration::from_millis(1)).await;
    let timer = Timer::global().unwrap();
    assert!(
        !timer
            .lock()
            .heap
            .iter()
            .any(|e| e.deadline == deadline && e.waker.will_wake(&waker)),
        "the stale entry is gone"
    );
}

/// A deadline earlier than the one the thread sleeps until wakes it.
#[tokio::test]
async fn an_earlier_deadline_preempts_a_later_one() {
    let far = Instant::now() + Duration::from_secs(3);
    let mut long = precise_sleep_until(far);
    let waker = futures::task::noop_waker();
    assert!(
        Pin::new(&mut long)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    tokio::time::sleep(Duration::from_millis(5)).await; // the thread sleeps until `far`
    let deadline = Instant::now() + Duration::from_millis(2);
    precise_sleep_until(deadline).await;
    let late = Instant::now() - deadline;
    assert!(late < TEST_TOLERANCE, "late by {late:?}");
}
