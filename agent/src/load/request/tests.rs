//! Unit tests of one measured request: its metrics (TTFT, ITL, TPOT, E2EL) from stream
//! traces, and the request body.

use super::*;

fn trace(times_ms: &[u64], usage: Option<u32>) -> StreamTrace {
    StreamTrace {
        content_times: times_ms.iter().map(|t| Duration::from_millis(*t)).collect(),
        prompt_tokens: Some(10),
        completion_tokens: usage,
        finished: true,
        done: true,
        retries: 0,
        text: None,
    }
}

#[test]
fn metrics_follow_the_definitions() {
    let mut r = RequestRecord::default();
    finish_record(&mut r, &trace(&[100, 150, 250, 300], Some(4)), Ok(()));
    assert!(r.success());
    assert_eq!(r.ttft_s, Some(0.1));
    assert_eq!(r.e2el_s, Some(0.3));
    assert_eq!(r.itl_s, vec![0.05, 0.1, 0.05]);
    let tpot = r.tpot_s.unwrap();
    assert!((tpot - (0.3 - 0.1) / 3.0).abs() < 1e-12, "{tpot}");
    assert_eq!(r.output_tokens, Some(4));
    assert!(r.usage_reported);
}

#[test]
fn multi_token_chunks_use_usage_for_tpot() {
    // 2 chunks but 8 tokens: TPOT divides by tokens, ITL lists chunk gaps.
    let mut r = RequestRecord::default();
    finish_record(&mut r, &trace(&[100, 800], Some(8)), Ok(()));
    let tpot = r.tpot_s.unwrap();
    assert!((tpot - 0.1).abs() < 1e-12, "{tpot}");
    assert_eq!(r.itl_s.len(), 1);
}

#[test]
fn failures_keep_partial_timing_but_no_tpot() {
    let mut r = RequestRecord::default();
    finish_record(
        &mut r,
        &trace(&[100, 200], None),
        Err((ErrorKind::Truncated, "eof".into())),
    );
    assert_eq!(r.error_kind, Some(ErrorKind::Truncated));
    assert_eq!(r.ttft_s, Some(0.1));
    assert_eq!(r.tpot_s, None);
    assert!(!r.usage_reported);
    assert_eq!(r.output_tokens, Some(2));
}

#[test]
fn empty_stream_is_no_content() {
    let mut r = RequestRecord::default();
    finish_record(&mut r, &trace(&[], Some(0)), Ok(()));
    assert_eq!(r.error_kind, Some(ErrorKind::NoContent));
}

#[test]
fn body_forces_output_length() {
    let plan = RequestPlan {
        index: 0,
        wave: 0,
        endpoint: ApiEndpoint::Chat,
        model: "m".into(),
        prompt: "hi".into(),
        messages: None,
        target_input_tokens: 2,
        target_output_tokens: 32,
        scheduled_offset: Duration::ZERO,
        extensions: Extensions::ALL,
    };
    let b = request_body(&plan);
    assert_eq!(b["max_tokens"], 32);
    assert_eq!(b["min_tokens"], 32);
    assert_eq!(b["ignore_eos"], true);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["messages"][0]["content"], "hi");
    let bare = request_body(&RequestPlan {
        extensions: Extensions {
            ignore_eos: false,
            min_tokens: false,
            include_usage: false,
        },
        ..plan
    });
    assert_eq!(bare["max_tokens"], 32);
    for refused in ["min_tokens", "ignore_eos", "stream_options"] {
        assert!(bare.get(refused).is_none(), "{refused} in {bare}");
    }
}
