//! Unit tests of [`super`]: `vllm serve` flag parsing into a [`crate::SimConfig`] and the echoed
//! `non-default args` line.

use super::*;
use crate::config::Pacing;
use clap::error::ErrorKind;

fn parse(args: &[&str]) -> Result<(SimConfig, ServeOptions), String> {
    let mut argv = vec!["vllm-sim"];
    argv.extend_from_slice(args);
    Args::try_parse_vllm(argv)
        .map_err(|e| e.to_string())?
        .into_config()
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_match_vllm_serve() {
    let (c, s) = parse(&["serve", "models/smollm2-135m"]).unwrap();
    assert_eq!(c.model, "models/smollm2-135m");
    assert_eq!(c.served_model_names, ["models/smollm2-135m"]);
    assert_eq!(c.max_model_len, 2048);
    assert_eq!(c.engine.max_num_seqs, 256);
    assert_eq!(c.engine.max_num_batched_tokens, 8192);
    assert_eq!(c.engine.timing, TimingModel::default());
    assert_eq!(c.timing_mode, TimingMode::Model);
    assert!(!c.enable_log_requests);
    assert!(c.engine.prefix_caching);
    assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 8000));
    assert_eq!(s.startup_delay, Duration::ZERO);
}

#[test]
fn serve_is_optional_and_model_flag_works() {
    assert_eq!(parse(&["m1"]).unwrap().0.model, "m1");
    assert_eq!(parse(&["--model", "m2"]).unwrap().0.model, "m2");
    assert_eq!(parse(&["serve", "--model=m3"]).unwrap().0.model, "m3");
    assert!(parse(&["serve"]).is_err());
}

#[test]
fn vllm_flags_are_accepted() {
    let (c, s) = parse(&[
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "18100",
        "--served-model-name",
        "llama",
        "llama8b",
        "-tp",
        "2",
        "--max-model-len",
        "4096",
        "--gpu-memory-utilization",
        "0.92",
        "--block-size",
        "64",
        "--max_num_batched_tokens",
        "2048",
        "--max-num-seqs=32",
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--enable-chunked-prefill",
        "--kv-cache-dtype",
        "fp8",
        "--dtype",
        "bfloat16",
        "--trust-remote-code",
        "--seed",
        "7",
        "--enable-log-requests",
        "--uvicorn-log-level",
        "warning",
        "--sim-speedup",
        "10",
        "--sim-startup-ms",
        "500",
        "--disable-completions",
    ])
    .unwrap();
    assert_eq!(c.served_model_names, ["llama", "llama8b"]);
    assert_eq!(c.echo.tensor_parallel_size, 2);
    assert_eq!(c.max_model_len, 4096);
    assert_eq!(c.engine.block_size, 64);
    assert_eq!(c.engine.max_num_batched_tokens, 2048);
    assert_eq!(c.engine.max_num_seqs, 32);
    assert!(c.echo.enforce_eager && !c.engine.prefix_caching);
    assert_eq!(c.echo.kv_cache_dtype, "fp8");
    assert_eq!(c.seed, 7);
    assert!(c.enable_log_requests && c.disable_completions);
    assert_eq!(c.engine.timing.speedup, 10.0);
    assert_eq!(s.startup_delay, Duration::from_millis(50));
    assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 18100));
}

#[test]
fn non_default_args_look_like_vllms() {
    let line = Args::non_default_args([
        "vllm-sim",
        "serve",
        "models/smollm2-135m",
        "--host",
        "127.0.0.1",
        "--port",
        "18100",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "2048",
        "--served-model-name",
        "smol",
        "--no-enable-prefix-caching",
        "--enforce-eager",
    ]);
    assert_eq!(
        line,
        "{'model_tag': 'models/smollm2-135m', 'model': 'models/smollm2-135m', 'host': '127.0.0.1', \
         'port': 18100, 'served_model_name': ['smol'], 'max_model_len': 2048, \
         'enforce_eager': True, 'enable_prefix_caching': False, 'dtype': 'bfloat16'}"
    );
}

#[test]
fn sim_timing_modes() {
    let (c, _) = parse(&["m", "--sim-timing", "exact"]).unwrap();
    assert_eq!(
        c.timing_mode,
        TimingMode::Exact(ExactSchedule {
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(10),
            pacing: Pacing::Precise,
        })
    );
    let (c, s) = parse(&[
        "m",
        "--sim-timing=exact",
        "--sim-ttft-ms",
        "50",
        "--sim_itl_ms",
        "2.5",
        "--sim-speedup",
        "10",
        "--sim-startup-ms",
        "100",
    ])
    .unwrap();
    assert_eq!(
        c.timing_mode,
        TimingMode::Exact(ExactSchedule {
            ttft: Duration::from_millis(50),
            itl: Duration::from_micros(2500),
            pacing: Pacing::Precise,
        })
    );
    // The speedup still divides the start-up, never the exact schedule.
    assert_eq!(s.startup_delay, Duration::from_millis(10));
    let (c, _) = parse(&["m", "--sim-timing", "fast"]).unwrap();
    assert_eq!(
        c.timing_mode,
        TimingMode::Fast {
            chunks_per_frame: 16
        }
    );
    let (c, _) = parse(&[
        "m",
        "--sim-timing",
        "fast",
        "--sim-fast-chunks-per-frame",
        "1",
    ])
    .unwrap();
    assert_eq!(
        c.timing_mode,
        TimingMode::Fast {
            chunks_per_frame: 1
        }
    );
    assert!(parse(&["m", "--sim-timing", "slow"]).is_err());
    assert!(parse(&["m", "--sim-fast-chunks-per-frame", "0"]).is_err());
    assert!(parse(&["m", "--sim-ttft-ms", "-1"]).is_err());
    assert!(parse(&["m", "--sim-itl-ms", "1e9"]).is_err());
    assert!(
        Args::non_default_args(["vllm-sim", "m", "--sim-timing", "exact"])
            .contains("'sim_timing': 'exact'")
    );
}

#[test]
fn crash_at_running_needs_the_model_timing() {
    let (c, _) = parse(&["m"]).unwrap();
    assert_eq!(c.engine.crash, None);
    let (c, _) = parse(&["m", "--sim-crash-at-running", "4"]).unwrap();
    assert_eq!(c.engine.crash, Some(CrashAt::exit_at(4)));
    let (c, _) = parse(&["m", "--sim_crash_at_running=2", "--sim-timing", "model"]).unwrap();
    assert_eq!(c.engine.crash, Some(CrashAt::exit_at(2)));
    assert!(parse(&["m", "--sim-crash-at-running", "0"]).is_err());
    assert!(parse(&["m", "--sim-crash-at-running", "-1"]).is_err());
    for timing in ["exact", "fast"] {
        let err = parse(&["m", "--sim-crash-at-running", "4", "--sim-timing", timing]).unwrap_err();
        assert!(
            err.contains("--sim-crash-at-running needs --sim-timing model"),
            "{err}"
        );
    }
    assert!(
        Args::non_default_args(["vllm-sim", "m", "--sim-crash-at-running", "8"])
            .contains("'sim_crash_at_running': 8")
    );
}

#[test]
fn stream_fault_flags_parse_in_every_timing() {
    use crate::config::{FaultAction, StreamFault};
    let (c, _) = parse(&["m"]).unwrap();
    assert_eq!(c.faults, StreamFaults::default());
    assert_eq!(c.faults.armed(), None);
    let (c, _) = parse(&["m", "--sim-stall-after-tokens", "3"]).unwrap();
    assert_eq!(c.faults.stall_after_tokens, Some(3));
    assert_eq!(
        c.faults.armed(),
        Some(StreamFault {
            after_tokens: 3,
            action: FaultAction::Stall
        })
    );
    let (c, _) = parse(&["m", "--sim_disconnect_after_tokens=7"]).unwrap();
    assert_eq!(
        c.faults,
        StreamFaults {
            stall_after_tokens: None,
            disconnect_after_tokens: Some(7),
        }
    );
    for timing in ["model", "exact", "fast"] {
        for flag in ["--sim-stall-after-tokens", "--sim-disconnect-after-tokens"] {
            let (c, _) = parse(&["m", flag, "2", "--sim-timing", timing]).unwrap();
            assert_eq!(c.faults.armed().map(|f| f.after_tokens), Some(2));
        }
    }
    for flag in ["--sim-stall-after-tokens", "--sim-disconnect-after-tokens"] {
        assert!(parse(&["m", flag, "0"]).is_err());
        assert!(parse(&["m", flag, "-1"]).is_err());
        assert!(parse(&["m", flag, "x"]).is_err());
    }
    let err = parse(&[
        "m",
        "--sim-stall-after-tokens",
        "3",
        "--sim-disconnect-after-tokens",
        "3",
    ])
    .unwrap_err();
    assert!(err.contains("cannot be combined"), "{err}");
    assert!(
        Args::non_default_args(["vllm-sim", "m", "--sim-stall-after-tokens", "4"])
            .contains("'sim_stall_after_tokens': 4")
    );
    assert!(
        Args::non_default_args(["vllm-sim", "m", "--sim-disconnect-after-tokens", "5"])
            .contains("'sim_disconnect_after_tokens': 5")
    );
}

#[test]
fn last_boolean_flag_wins() {
    let (c, _) = parse(&["m", "--enable-log-requests", "--disable-log-requests"]).unwrap();
    assert!(!c.enable_log_requests);
    let (c, _) = parse(&["m", "--no-enable-log-requests", "--enable-log-requests"]).unwrap();
    assert!(c.enable_log_requests);
}

#[test]
fn unknown_flags_and_bad_values_are_rejected() {
    let err = Args::try_parse_vllm(["vllm-sim", "serve", "m", "--bogus-flag"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownArgument);
    assert!(err.to_string().contains("--bogus-flag"));
    assert!(parse(&["m", "--sim-speedup", "0"]).is_err());
    assert!(parse(&["m", "--sim-step-ms", "-1"]).is_err());
    assert!(parse(&["m", "--max-num-seqs", "0"]).is_err());
    assert!(parse(&["m", "--uvicorn-log-level", "loud"]).is_err());
}
