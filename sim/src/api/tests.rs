//! Unit tests of [`super`]: how a request is planned (`max_tokens` clamped to the context,
//! `ignore_eos`, `min_tokens`, natural stops) and rejected like vLLM.

use super::*;

fn params(max_tokens: Option<i64>, min_tokens: i64, ignore_eos: bool) -> LengthParams {
    LengthParams {
        max_tokens,
        max_tokens_param: "max_tokens",
        min_tokens,
        ignore_eos,
    }
}

fn text(t: &str) -> Prompt {
    Prompt {
        ids: tokenizer::encode(t),
        text_chars: Some(t.chars().count()),
    }
}

#[test]
fn plan_honours_ignore_eos_and_min_tokens() {
    let config = SimConfig::new("m");
    let prompt = text("a prompt of a few tokens");
    let p = plan(&config, &prompt, params(Some(50), 0, true)).unwrap();
    assert_eq!((p.output.len, p.finish_reason), (50, FinishReason::Length));
    assert!(!p.output.ends_with_eos);

    let natural = plan(&config, &prompt, params(Some(1000), 0, false)).unwrap();
    assert!((1..=1000).contains(&natural.output.len));
    let floored = plan(&config, &prompt, params(Some(1000), 999, false)).unwrap();
    assert!(floored.output.len >= 999);

    // Chat default: everything left in the context.
    let default = plan(&config, &prompt, params(None, 0, true)).unwrap();
    assert_eq!(default.max_tokens, 2048 - prompt.ids.len() as u32);
}

#[test]
fn plan_stops_naturally_below_max_tokens() {
    let config = SimConfig::new("m");
    let stopped = (0..20)
        .map(|i| text(&format!("prompt number {i}")))
        .filter_map(|prompt| plan(&config, &prompt, params(Some(500), 0, false)).ok())
        .find(|p| p.output.len < 500)
        .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert!(stopped.output.ends_with_eos);
}

/// vLLM 0.32 (`fixtures/vllm-0.32-cpu/too-long.txt`): prompt + max_tokens over the context
/// is clamped, not rejected.
#[test]
fn plan_clamps_max_tokens_to_the_context() {
    let config = SimConfig::new("m");
    let hello = text("hello world");
    assert_eq!(hello.ids.len(), 2);
    let p = plan(&config, &hello, params(Some(2047), 0, true)).unwrap();
    assert_eq!((p.max_tokens, p.output.len), (2046, 2046));
    assert_eq!(p.finish_reason, FinishReason::Length);
    // Without ignore_eos a natural stop may come first, but never past the context.
    let natural = plan(&config, &hello, params(Some(2047), 0, false)).unwrap();
    assert!(natural.output.len <= 2046);

    let long = text(&"hello ".repeat(2039));
    assert_eq!(long.ids.len(), 2040);
    let p = plan(&config, &long, params(Some(64), 0, true)).unwrap();
    assert_eq!((p.max_tokens, p.output.len), (8, 8));
    // min_tokens is checked against the clamped max_tokens, as vLLM does.
    let err = plan(&config, &long, params(Some(64), 64, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "min_tokens must be less than or equal to max_tokens=8, got 64."
    );
}

#[test]
fn plan_rejects_prompts_that_do_not_fit() {
    let config = SimConfig::new("m");
    let expected = "This model's maximum context length is 2048 tokens. However, your prompt \
                    contains at least 2049 input tokens, which exceeds this limit even \
                    without any output tokens. Please reduce the length of the input \
                    prompt. (parameter=input_tokens, value=2049)";
    // Text: "at least max_model_len + 1", whatever the real length (2101 here).
    let err = plan(
        &config,
        &text(&"hello ".repeat(2100)),
        params(Some(16), 0, true),
    );
    assert_eq!(err.unwrap_err().to_string(), expected);
    // Token ids are not truncated: the real count.
    let ids = Prompt {
        ids: vec![7; 3000],
        text_chars: None,
    };
    let err = plan(&config, &ids, params(Some(16), 0, true)).unwrap_err();
    assert!(
        err.to_string()
            .contains("your prompt contains 3000 input tokens")
    );
    assert!(
        err.to_string()
            .ends_with("(parameter=input_tokens, value=3000)")
    );
    // Exactly max_model_len leaves no room for output.
    let full = Prompt {
        ids: vec![7; 2048],
        text_chars: None,
    };
    let err = plan(&config, &full, params(None, 0, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"
    );
    // Absurdly long text is refused before tokenizing.
    let huge = Prompt {
        ids: Vec::new(),
        text_chars: Some(2048 * 81 + 1),
    };
    let err = plan(&config, &huge, params(Some(1), 0, true)).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("(parameter=input_text, value=165889)")
    );
}

#[test]
fn plan_rejects_bad_lengths_like_vllm() {
    let config = SimConfig::new("m");
    let prompt = text("one two three");
    let err = plan(&config, &prompt, params(Some(2049), 0, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_tokens=2049 cannot be greater than max_model_len=2048. Please request fewer \
         output tokens. (parameter=max_tokens, value=2049)"
    );
    let mut completion = params(Some(4000), 0, true);
    completion.max_tokens_param = "max_completion_tokens";
    let err = plan(&config, &prompt, completion).unwrap_err();
    assert!(matches!(
        err,
        SimError::Validation {
            param: "max_completion_tokens",
            ..
        }
    ));
    let err = plan(&config, &prompt, params(Some(0), 0, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"
    );
    let err = plan(&config, &prompt, params(Some(3), 4, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "min_tokens must be less than or equal to max_tokens=3, got 4."
    );
    assert!(plan(&config, &prompt, params(Some(3), -1, true)).is_err());
}
