//! Unit tests of [`super`]: [`crate::SimConfig`]'s defaults, derived values and validation.

use super::*;

#[test]
fn step_duration_is_exact_for_the_documented_example() {
    let t = TimingModel::default();
    assert_eq!(t.step_duration(4, 400), Duration::from_micros(60_800));
    assert_eq!(t.step_duration(4, 0), Duration::from_micros(20_800));
    let fast = TimingModel {
        speedup: 10.0,
        ..TimingModel::default()
    };
    assert_eq!(fast.step_duration(4, 400), Duration::from_micros(6_080));
}

#[test]
fn validate_rejects_bad_values() {
    assert!(SimConfig::new("m").validate().is_ok());
    let mut c = SimConfig::new("m");
    c.engine.timing.speedup = 0.0;
    assert!(c.validate().is_err());
    let mut c = SimConfig::new("m");
    c.engine.max_num_seqs = 0;
    assert!(c.validate().is_err());
    assert!(SimConfig::new("").validate().is_err());
    let mut c = SimConfig::new("m");
    c.timing_mode = TimingMode::Fast {
        chunks_per_frame: 0,
    };
    assert!(c.validate().is_err());
    c.timing_mode = TimingMode::Exact(ExactSchedule::from_ms(MAX_EXACT_MS + 1.0, 1.0));
    assert!(c.validate().is_err());
    c.timing_mode = TimingMode::Exact(ExactSchedule::from_ms(50.0, 20.0));
    assert!(c.validate().is_ok());
}

#[test]
fn a_crash_needs_the_engine_timing() {
    let mut c = SimConfig::new("m");
    c.engine.crash = Some(CrashAt::exit_at(4));
    assert!(c.validate().is_ok());
    c.timing_mode = TimingMode::Fast {
        chunks_per_frame: 16,
    };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("--sim-crash-at-running"), "{err}");
    c.timing_mode = TimingMode::Exact(ExactSchedule::default());
    assert!(c.validate().is_err());
    c.timing_mode = TimingMode::Model;
    c.engine.crash = Some(CrashAt::exit_at(0));
    assert!(c.validate().is_err());
}

#[test]
fn crash_actions_compare_by_identity() {
    let hook: Arc<dyn Fn(usize) + Send + Sync> = Arc::new(|_: usize| {});
    let a = CrashAction::Hook(hook.clone());
    assert_eq!(a, CrashAction::Hook(hook));
    assert_ne!(a, CrashAction::Hook(Arc::new(|_: usize| {})));
    assert_ne!(a, CrashAction::Exit);
    assert_eq!(CrashAction::default(), CrashAction::Exit);
    assert_eq!(format!("{a:?}"), "Hook(..)");
}

#[test]
fn exact_offsets_are_ttft_plus_k_itl_without_rounding_drift() {
    let s = ExactSchedule::from_ms(50.0, 20.0);
    assert_eq!(s.offset(0), Duration::from_millis(50));
    assert_eq!(s.offset(9), Duration::from_millis(230));
    // 0.1 ms is not exact in binary floating point; the nanosecond grid keeps
    // 10,000 steps at exactly one second.
    let fine = ExactSchedule::from_ms(0.0, 0.1);
    assert_eq!(fine.offset(10_000), Duration::from_secs(1));
    assert_eq!(
        ExactSchedule::from_ms(1.0, MAX_EXACT_MS).offset(u32::MAX),
        Duration::from_millis(1) + Duration::from_secs(3600) * u32::MAX
    );
}

/// Deadlines are absolute: each one is `t0 + offset(k)`, whenever it is computed.
#[tokio::test(start_paused = true)]
async fn exact_deadlines_are_anchored_at_t0() {
    let s = ExactSchedule::from_ms(20.0, 10.0);
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(37)).await;
    assert_eq!(s.deadline(t0, 0) - t0, Duration::from_millis(20));
    assert_eq!(s.deadline(t0, 5) - t0, Duration::from_millis(70));
    // Absurd offsets saturate instead of overflowing the clock.
    let huge = ExactSchedule {
        ttft: Duration::MAX,
        itl: Duration::MAX,
        pacing: Pacing::Tokio,
    };
    assert!(huge.deadline(t0, u32::MAX) > t0 + Duration::from_secs(86_400));
}

#[test]
fn fingerprint_has_vllms_shape() {
    let mut c = SimConfig::new("m");
    let f = c.system_fingerprint();
    let hash = f.strip_prefix("vllm-0.32.0-").unwrap();
    assert_eq!(hash.len(), 8);
    assert!(
        hash.chars()
            .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase())
    );
    c.echo.tensor_parallel_size = 2;
    assert!(c.system_fingerprint().starts_with("vllm-0.32.0-tp2-"));
}

#[test]
fn at_most_one_stream_fault_after_at_least_one_token() {
    let mut c = SimConfig::new("m");
    assert_eq!(c.faults.armed(), None);
    c.faults.stall_after_tokens = Some(3);
    assert!(c.validate().is_ok());
    assert_eq!(
        c.faults.armed(),
        Some(StreamFault {
            after_tokens: 3,
            action: FaultAction::Stall
        })
    );
    // Every timing mode supports them.
    for mode in [
        TimingMode::Exact(ExactSchedule::default()),
        TimingMode::Fast {
            chunks_per_frame: 16,
        },
    ] {
        c.timing_mode = mode;
        assert!(c.validate().is_ok());
    }
    c.faults.disconnect_after_tokens = Some(5);
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("cannot be combined"), "{err}");
    c.faults.stall_after_tokens = None;
    assert!(c.validate().is_ok());
    let fault = c.faults.armed().unwrap();
    assert_eq!(fault.action, FaultAction::Disconnect);
    assert!(!fault.fires_within(4) && fault.fires_within(5));
    c.faults.disconnect_after_tokens = Some(0);
    assert!(c.validate().is_err());
    c.faults = StreamFaults {
        stall_after_tokens: Some(0),
        disconnect_after_tokens: None,
    };
    assert!(c.validate().is_err());
}
