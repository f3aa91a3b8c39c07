//! Unit tests of the SSE parser: a real vLLM capture, splits at every byte, errors, the size
//! limit, and the fuzz corpus replayed.

use super::*;

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/vllm-0.32-cpu/chat-stream.sse"
));

fn all_events(parts: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for part in parts {
        out.extend(p.push(part).unwrap());
    }
    assert!(!p.has_partial());
    out
}

#[test]
fn real_vllm_capture_parses_role_chunk_content_usage_done() {
    let events = all_events(&[FIXTURE.as_bytes()]);
    assert_eq!(
        events[0],
        SseEvent::Chunk {
            content: String::new(),
            finish_reason: None
        }
    );
    let content_chunks = events
        .iter()
        .filter(|e| matches!(e, SseEvent::Chunk { content, .. } if !content.is_empty()))
        .count();
    // 128 tokens, but real vLLM sends 4 content chunks with "" (tokens that end inside
    // a multi-byte character): like benchmark_serving, those are not content chunks,
    // and the token count comes from `usage`.
    assert_eq!(content_chunks, 124);
    assert_eq!(
        events[events.len() - 2],
        SseEvent::Usage {
            prompt_tokens: Some(33),
            completion_tokens: Some(128)
        }
    );
    assert_eq!(events.last(), Some(&SseEvent::Done));
}

#[test]
fn byte_at_a_time_gives_the_same_events() {
    let whole = all_events(&[FIXTURE.as_bytes()]);
    let bytes = FIXTURE.as_bytes();
    let parts: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(all_events(&parts), whole);
}

#[test]
fn utf8_split_across_reads_survives() {
    let ev = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"héllo ✓\"}}]}\n\n";
    let bytes = ev.as_bytes();
    let split = bytes.iter().position(|b| *b == 0xc3).unwrap() + 1; // inside 'é'
    let events = all_events(&[&bytes[..split], &bytes[split..]]);
    assert_eq!(
        events,
        vec![SseEvent::Chunk {
            content: "héllo ✓".into(),
            finish_reason: None
        }]
    );
}

#[test]
fn comments_crlf_reasoning_and_errors() {
    let stream = ": keep-alive\r\n\r\ndata: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think\"}}]}\r\n\r\ndata: {\"error\":{\"message\":\"boom\",\"code\":500}}\n\n";
    let events = all_events(&[stream.as_bytes()]);
    assert_eq!(
        events,
        vec![
            SseEvent::Chunk {
                content: "think".into(),
                finish_reason: None
            },
            SseEvent::Error("boom".into())
        ]
    );
}

#[test]
fn completions_text_chunks() {
    let s = "data: {\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\" a\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
    let events = all_events(&[s.as_bytes()]);
    assert_eq!(
        events,
        vec![
            SseEvent::Chunk {
                content: " a".into(),
                finish_reason: Some("length".into())
            },
            SseEvent::Done
        ]
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let mut p = SseParser::new();
    assert!(matches!(
        p.push(b"data: {not json\n\n"),
        Err(SseError::BadJson(_))
    ));
    let mut p = SseParser::new();
    assert_eq!(p.push(b"data: \xff\xfe\n\n"), Err(SseError::NotUtf8));
    let mut p = SseParser::new();
    p.push(b"data: {\"choices\":[").unwrap();
    assert!(p.has_partial());
}

#[test]
fn usage_riding_on_a_chunk_with_choices_is_kept() {
    // llama.cpp's last chunk, and every chunk with vLLM's `continuous_usage_stats`:
    // the usage used to be dropped, so output tokens fell back to the chunk count.
    let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ab\"},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n";
    assert_eq!(
        all_events(&[s.as_bytes()]),
        vec![
            SseEvent::Chunk {
                content: "ab".into(),
                finish_reason: Some("length".into())
            },
            SseEvent::Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(2)
            }
        ]
    );
    let nulls = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null,\"error\":null,\"message\":{\"x\":1}}\n\n";
    assert_eq!(
        all_events(&[nulls.as_bytes()]),
        vec![SseEvent::Chunk {
            content: "a".into(),
            finish_reason: None
        }]
    );
}

#[test]
fn empty_data_is_not_an_event() {
    // The SSE spec does not dispatch an event whose data is empty; it is no JSON error.
    let s = "data:\n\ndata: \n\ndata: [DONE]\n\n";
    assert_eq!(all_events(&[s.as_bytes()]), vec![SseEvent::Done]);
}

#[test]
fn error_messages_from_every_shape() {
    let s = "data: {\"error\":\"plain\"}\n\ndata: {\"object\":\"error\",\"message\":\"oom\",\"code\":400}\n\ndata: {\"error\":{\"code\":500}}\n\n";
    assert_eq!(
        all_events(&[s.as_bytes()]),
        vec![
            SseEvent::Error("plain".into()),
            SseEvent::Error("oom".into()),
            SseEvent::Error("{\"code\":500}".into()),
        ]
    );
}

/// An event of `len` bytes (before its blank line), all of it one content string.
fn event_of_len(len: usize) -> String {
    let head = "data: {\"choices\":[{\"delta\":{\"content\":\"";
    let tail = "\"}}]}";
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

#[test]
fn size_limit_does_not_depend_on_how_reads_are_cut() {
    // Regression: the limit used to apply only to the bytes left over after a read, so
    // an over-large event that arrived in one read was accepted and the same event in
    // two reads was refused.
    let big = format!("{}\n\n", event_of_len(MAX_EVENT_BYTES + 1));
    assert_eq!(
        SseParser::new().push(big.as_bytes()),
        Err(SseError::TooLarge)
    );
    let mut p = SseParser::new();
    let (a, b) = big.as_bytes().split_at(big.len() / 2);
    assert_eq!(p.push(a), Ok(vec![]));
    assert_eq!(p.push(b), Err(SseError::TooLarge));
    // Exactly at the limit, with the longest separator that can wait for a byte
    // (`\n\r`, then `\n`), it is accepted however it is cut.
    let at_limit = format!("\x05{}\n\r\n", event_of_len(MAX_EVENT_BYTES));
    check_split_consistency(at_limit.as_bytes()).unwrap();
    let mut p = SseParser::new();
    assert_eq!(p.push(&at_limit.as_bytes()[1..]).unwrap().len(), 1);
    check_split_consistency(format!("\x05{big}").as_bytes()).unwrap();
}

#[test]
fn fuzz_corpus_replays_consistently() {
    // The fuzz target's invariant without nightly: every kept input, with its own split
    // seed and a few others.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/sse_parser");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        check_split_consistency(&input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some((_, stream)) = input.split_first() {
            for seed in [0u8, 1, 2, 0x80, 0xff] {
                let reseeded: Vec<u8> = std::iter::once(seed)
                    .chain(stream.iter().copied())
                    .collect();
                check_split_consistency(&reseeded)
                    .unwrap_or_else(|e| panic!("{} seed {seed}: {e}", path.display()));
            }
        }
        files += 1;
    }
    assert!(files >= 20, "only {files} corpus files in {dir}");
}

#[test]
fn a_huge_read_leaves_no_huge_buffer_behind() {
    // A fast server and a busy client: one read of ~300 KB holding thousands of events,
    // arriving after a partial event (so it is appended, not read in place).
    let event = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
    let many = event.repeat(300_000 / event.len());
    let mut p = SseParser::new();
    assert!(p.push(&event.as_bytes()[..10]).unwrap().is_empty());
    let mut read = event.as_bytes()[10..].to_vec();
    read.extend_from_slice(many.as_bytes());
    read.extend_from_slice(&event.as_bytes()[..7]);
    let events = p.push(&read).unwrap();
    assert_eq!(events.len(), 1 + many.len() / event.len());
    assert!(
        p.buf.capacity() <= RETAINED_CAPACITY,
        "{}",
        p.buf.capacity()
    );
    // In place: a read that ends on an event boundary copies nothing.
    let mut q = SseParser::new();
    assert_eq!(
        q.push(many.as_bytes()).unwrap().len(),
        many.len() / event.len()
    );
    assert_eq!(q.buf.capacity(), 0);
    // And the partial tail still completes.
    assert_eq!(p.push(&event.as_bytes()[7..]).unwrap().len(), 1);
}
