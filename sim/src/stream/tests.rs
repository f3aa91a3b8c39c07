//! Unit tests of [`super`]: the SSE chunks byte-for-byte against vLLM's captures, usage and faults.

use super::*;

const CHAT: &str = include_str!("../../../tests/fixtures/vllm-0.32-cpu/chat-stream.sse");
const COMPLETIONS: &str =
    include_str!("../../../tests/fixtures/vllm-0.32-cpu/completions-stream.sse");
const TOO_LONG: &str = include_str!("../../../tests/fixtures/vllm-0.32-cpu/too-long.txt");

fn ctx(endpoint: Endpoint) -> StreamContext {
    StreamContext {
        endpoint,
        id: "chatcmpl-852858eebd06c043".to_owned(),
        created: 1_795_813_601,
        model: "smol".to_owned(),
        prompt_tokens: 33,
        include_usage: true,
        continuous_usage: false,
        system_fingerprint: "vllm-0.32.0-898fdafa".to_owned(),
        output: SyntheticOutput {
            seed: 0,
            len: 128,
            ends_with_eos: false,
        },
        role: "assistant".to_owned(),
    }
}

/// Whether `chunk` is, byte for byte, one of the events of the capture `sse`.
fn found_in(sse: &str, chunk: &Bytes) -> bool {
    let chunk = std::str::from_utf8(chunk).unwrap();
    let line = chunk.strip_suffix("\n\n").unwrap();
    sse.lines().any(|l| l == line)
}

/// Chunks rebuilt from the id, times and texts of `fixtures/vllm-0.32-cpu/chat-stream.sse`.
#[test]
fn chat_chunks_match_the_capture_byte_for_byte() {
    let c = ctx(Endpoint::Chat);
    assert!(found_in(CHAT, &c.role_chunk()));
    assert!(found_in(CHAT, &c.content_chunk(" here", None, 3)));
    assert!(found_in(CHAT, &c.content_chunk("?", Some("length"), 128)));
    assert!(found_in(CHAT, &c.usage_chunk(128)));
}

/// The same for `completions-stream.sse` and the streamed over-long request of
/// `too-long.txt`.
#[test]
fn completion_chunks_match_the_capture_byte_for_byte() {
    let mut c = ctx(Endpoint::Completion);
    c.id = "cmpl-9fa7fd0861b19162".to_owned();
    c.created = 1_795_820_271;
    c.prompt_tokens = 2;
    c.system_fingerprint = "vllm-0.32.0-05bcb04d".to_owned();
    assert!(found_in(
        COMPLETIONS,
        &c.content_chunk(" positive", None, 2)
    ));
    assert!(found_in(
        COMPLETIONS,
        &c.content_chunk(" entirely", Some("length"), 32)
    ));
    assert!(found_in(COMPLETIONS, &c.usage_chunk(32)));

    c.id = "cmpl-a605052a425b8cb8".to_owned();
    c.created = 1_795_820_394;
    c.prompt_tokens = 2040;
    assert!(found_in(
        TOO_LONG,
        &c.content_chunk("where", Some("length"), 8)
    ));
    assert!(found_in(TOO_LONG, &c.usage_chunk(8)));
}

/// Without `include_usage` vLLM stamps `system_fingerprint` on the finishing chunk only.
#[test]
fn fingerprint_moves_to_the_last_chunk_without_usage() {
    for endpoint in [Endpoint::Chat, Endpoint::Completion] {
        let mut c = ctx(endpoint);
        c.include_usage = false;
        let last = c.content_chunk("x", Some("stop"), 2);
        let last = std::str::from_utf8(&last).unwrap();
        assert!(
            last.ends_with("null}],\"system_fingerprint\":\"vllm-0.32.0-898fdafa\"}\n\n"),
            "{last}"
        );
        let middle = c.content_chunk("x", None, 1);
        assert!(
            !std::str::from_utf8(&middle)
                .unwrap()
                .contains("system_fingerprint")
        );
    }
}

/// `continuous_usage_stats`: `usage` after `choices` in every chunk, as vLLM's
/// `exclude_unset` serialisation writes it.
#[test]
fn continuous_usage_rides_on_every_chunk() {
    let mut c = ctx(Endpoint::Chat);
    c.continuous_usage = true;
    let role = c.role_chunk();
    assert!(std::str::from_utf8(&role).unwrap().ends_with(
        "\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":33,\"total_tokens\":33,\"completion_tokens\":0,\"completion_tokens_details\":null},\"prompt_token_ids\":null,\"prompt_text\":null}\n\n"
    ));
    let content = c.content_chunk(" a", None, 1);
    assert!(std::str::from_utf8(&content).unwrap().ends_with(
        "\"token_ids\":null}],\"usage\":{\"prompt_tokens\":33,\"total_tokens\":34,\"completion_tokens\":1,\"completion_tokens_details\":null}}\n\n"
    ));
    let mut c = ctx(Endpoint::Completion);
    c.continuous_usage = true;
    let content = c.content_chunk(" a", Some("length"), 2);
    assert!(std::str::from_utf8(&content).unwrap().ends_with(
        "\"token_ids\":null}],\"usage\":{\"prompt_tokens\":33,\"total_tokens\":35,\"completion_tokens\":2}}\n\n"
    ));
}

/// The template writes what `content_chunk` serialises, for both endpoints, with and
/// without `include_usage`, for texts that need escaping and ids or names that contain
/// JSON-special characters.
#[test]
fn content_template_matches_content_chunk_byte_for_byte() {
    let texts = [
        " here",
        "",
        "?",
        "say \"hi\"",
        "a\\b",
        "tab\tnew\nline\u{1}",
        "é ✓ 🚀",
    ];
    for endpoint in [Endpoint::Chat, Endpoint::Completion] {
        for include_usage in [true, false] {
            let mut c = ctx(endpoint);
            c.include_usage = include_usage;
            c.model = "we\"ird \\ model\n".to_owned();
            let template = c.content_template().unwrap();
            let mut buf = BytesMut::new();
            for (k, text) in texts.iter().enumerate() {
                template.write(&mut buf, text);
                let written = buf.split().freeze();
                assert_eq!(
                    written,
                    c.content_chunk(text, None, k as u32 + 1),
                    "{text:?}"
                );
                if !text.contains(['"', '\\', '\t', '\n', '\u{1}']) {
                    assert_eq!(written.len(), template.len_for(text));
                }
            }
        }
    }
    // Continuous usage changes every chunk: no template.
    let mut c = ctx(Endpoint::Chat);
    c.continuous_usage = true;
    assert!(c.content_template().is_none());
    // A model name holding the sentinel makes the text ambiguous: no template either.
    let mut c = ctx(Endpoint::Chat);
    c.model = TEXT_SENTINEL.to_owned();
    assert!(c.content_template().is_none());
}

#[test]
fn role_follows_the_last_message_without_generation_prompt() {
    let mut c = ctx(Endpoint::Chat);
    c.role = "user".to_owned();
    let role = c.role_chunk();
    assert!(
        std::str::from_utf8(&role)
            .unwrap()
            .contains("\"delta\":{\"role\":\"user\",\"content\":\"\"}")
    );
}

/// The body of an SSE response: its data, and the error that ended it, if any.
async fn read_body(response: Response) -> (Vec<u8>, Option<axum::Error>) {
    use futures::StreamExt as _;
    let mut body = response.into_body().into_data_stream();
    let mut data = Vec::new();
    while let Some(item) = body.next().await {
        match item {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(e) => return (data, Some(e)),
        }
    }
    (data, None)
}

/// An engine event that carries the fault's token is cut there (no `finish_reason`); a
/// disconnect then ends the body with an error, a stall waits for the engine to stop.
#[tokio::test(start_paused = true)]
async fn a_fault_cuts_the_event_that_reaches_its_token() {
    use crate::config::{FaultAction, StreamFault};
    use crate::finish::FinishReason;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    for action in [FaultAction::Disconnect, FaultAction::Stall] {
        let c = ctx(Endpoint::Chat);
        let (tx, rx) = mpsc::channel(4);
        let at = tokio::time::Instant::now();
        tx.send(TokenEvent {
            first_index: 0,
            count: 2,
            finish_reason: None,
            at,
        })
        .await
        .unwrap();
        // The lagging client gets tokens 2..=4 at once, the last of the request.
        tx.send(TokenEvent {
            first_index: 2,
            count: 3,
            finish_reason: Some(FinishReason::Length),
            at,
        })
        .await
        .unwrap();
        let token = CancellationToken::new();
        let stop = StopSignal::new(token.clone(), &TaskTracker::new());
        let fault = StreamFault {
            after_tokens: 3,
            action,
        };
        let response = sse_response(c.clone(), rx, Some(fault), stop);
        let expected = [
            c.role_chunk(),
            c.content_chunk(&c.output.text(0, 2), None, 2),
            c.content_chunk(&c.output.text(2, 1), None, 3),
        ]
        .concat();
        let (data, error) = match action {
            FaultAction::Disconnect => read_body(response).await,
            FaultAction::Stall => {
                let reading = tokio::spawn(read_body(response));
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                assert!(!reading.is_finished());
                // The engine's sender is still open: the engine sees its client.
                assert!(!tx.is_closed());
                token.cancel();
                reading.await.unwrap()
            }
        };
        assert_eq!(data, expected, "{action:?}");
        assert_eq!(error.is_some(), action == FaultAction::Disconnect);
        // A cut stream drops its receiver.
        assert!(tx.is_closed());
    }
}
