//! Incremental parser for the Server-Sent Events stream of an OpenAI-compatible server.
//!
//! Bytes arrive in arbitrary pieces: an event may be split across reads and a read may
//! hold several events. The parser buffers raw bytes and only decodes complete events,
//! so multi-byte UTF-8 split across reads is never mangled. Each complete `data:` payload
//! becomes one [`SseEvent`]; comment lines (`:` keep-alives) and other fields are skipped.

use serde::Deserialize;

/// Largest event we accept before calling the stream malformed (guards memory).
const MAX_EVENT_BYTES: usize = 1 << 20;
/// The most buffer capacity a parser keeps between reads (more is released once drained).
const RETAINED_CAPACITY: usize = 16 << 10;

/// What one SSE `data:` payload meant to the load generator.
#[derive(Debug, Clone, PartialEq)]
pub enum SseEvent {
    /// A chunk with choices. `content` holds generated text (`delta.content`,
    /// `delta.reasoning_content` or completions' `text`); empty for the role-only chunk.
    Chunk {
        content: String,
        finish_reason: Option<String>,
    },
    /// A chunk's `usage`: vLLM's final chunk (with `choices: []`), or the usage riding on a
    /// chunk with choices (then it follows that chunk's [`SseEvent::Chunk`]).
    Usage {
        prompt_tokens: Option<u32>,
        completion_tokens: Option<u32>,
    },
    /// An error object sent inside the stream.
    Error(String),
    /// `data: [DONE]`
    Done,
}

/// Why the stream could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SseError {
    #[error("event is not valid UTF-8")]
    NotUtf8,
    #[error("event payload is not valid JSON: {0}")]
    BadJson(String),
    #[error("event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no event end, so a large event arriving in many
    /// small reads is searched once, not once per read.
    scanned: usize,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    /// `{"object": "error", "message": ...}`; a value, so that a chunk whose `message` is
    /// not a string still parses.
    #[serde(default)]
    message: Option<serde_json::Value>,
    #[serde(default)]
    object: Option<String>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes from one network read and returns the events it completed.
    ///
    /// The result does not depend on how the stream is cut into reads: the same bytes give
    /// the same events, or the same first error (see [`check_split_consistency`]). On an
    /// error the events completed earlier in the same read are not returned.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        if self.buf.is_empty() {
            // Nothing pending (the usual case: reads end on event boundaries): the events
            // are decoded straight from the read, and only an unfinished tail is copied.
            let (consumed, outcome) = scan(bytes, &mut self.scanned, &mut events);
            self.buf.extend_from_slice(&bytes[consumed..]);
            outcome?;
        } else {
            self.buf.extend_from_slice(bytes);
            let (consumed, outcome) = scan(&self.buf, &mut self.scanned, &mut events);
            self.buf.drain(..consumed);
            outcome?;
        }
        // A read of hundreds of kilobytes (a fast server, a slow client) must not leave each
        // stream holding that much for the rest of its life.
        if self.buf.capacity() > RETAINED_CAPACITY && self.buf.len() <= RETAINED_CAPACITY / 2 {
            self.buf.shrink_to(RETAINED_CAPACITY / 2);
        }
        // What is left is the start of one event, plus at most 2 bytes of its separator
        // (`\n\r`): past this it is certainly larger than an event may be, however the
        // rest arrives.
        if self.buf.len() > MAX_EVENT_BYTES + 2 {
            return Err(SseError::TooLarge);
        }
        Ok(events)
    }

    /// Whether undelivered bytes remain (a stream ending here was cut mid-event).
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// Decodes the complete events at the start of `buf` into `events`; returns how many bytes
/// they took and the first error. `scanned` is how much of the unfinished rest is known to
/// hold no event end (updated for the next call).
fn scan(
    buf: &[u8],
    scanned: &mut usize,
    events: &mut Vec<SseEvent>,
) -> (usize, Result<(), SseError>) {
    let mut consumed = 0;
    loop {
        let pending = &buf[consumed..];
        let Some((end, sep_len)) = find_event_end(pending, *scanned) else {
            // An event end found later may start at most 2 bytes before today's end.
            *scanned = pending.len().saturating_sub(2);
            return (consumed, Ok(()));
        };
        *scanned = 0;
        consumed += end + sep_len;
        if end > MAX_EVENT_BYTES {
            return (consumed, Err(SseError::TooLarge));
        }
        if let Err(e) = parse_event(&pending[..end], events) {
            return (consumed, Err(e));
        }
    }
}

/// Finds the end of the first complete event: a blank line (`\n\n`, `\r\n\r\n`, `\r\r`),
/// searching from `from` (no event ends before it). Returns (end, separator length).
fn find_event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        if buf[i] == b'\r' && buf.get(i + 1) == Some(&b'\r') {
            return Some((i, 2));
        }
        i += 1;
    }
    None
}

/// Decodes one complete event (without its blank line) and appends what it meant to `out`:
/// nothing for comments and empty data, one event mostly, a chunk and then its usage when a
/// server sends `usage` alongside `choices` (vLLM's `continuous_usage_stats`, llama.cpp's
/// last chunk). Nothing is appended when it fails.
fn parse_event(raw: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
    let text = std::str::from_utf8(raw).map_err(|_| SseError::NotUtf8)?;
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => data = Some(rest.to_string()),
            }
        }
        // `event:`, `id:`, `retry:` carry nothing we measure.
    }
    let Some(data) = data else {
        return Ok(());
    };
    let data = data.trim();
    // An event with empty data is not dispatched (the SSE spec); some servers send
    // `data:` alone as a keep-alive.
    if data.is_empty() {
        return Ok(());
    }
    if data == "[DONE]" {
        out.push(SseEvent::Done);
        return Ok(());
    }
    let chunk: WireChunk =
        serde_json::from_str(data).map_err(|e| SseError::BadJson(e.to_string()))?;
    if let Some(err) = chunk.error {
        let msg = match err.get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None => err.as_str().map_or_else(|| err.to_string(), str::to_string),
        };
        out.push(SseEvent::Error(msg));
        return Ok(());
    }
    if chunk.object.as_deref() == Some("error") {
        let msg = chunk.message.as_ref().and_then(|m| m.as_str());
        out.push(SseEvent::Error(msg.unwrap_or(data).to_string()));
        return Ok(());
    }
    let choices = chunk.choices.unwrap_or_default();
    if !choices.is_empty() {
        let mut content = String::new();
        let mut finish_reason = None;
        for choice in choices {
            if let Some(delta) = choice.delta {
                for part in [delta.reasoning_content, delta.reasoning, delta.content]
                    .into_iter()
                    .flatten()
                {
                    content.push_str(&part);
                }
            }
            if let Some(t) = choice.text {
                content.push_str(&t);
            }
            if choice.finish_reason.is_some() {
                finish_reason = choice.finish_reason;
            }
        }
        out.push(SseEvent::Chunk {
            content,
            finish_reason,
        });
    }
    if let Some(u) = chunk.usage {
        out.push(SseEvent::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
    }
    Ok(())
}

/// The invariant the fuzz target (`fuzz/fuzz_targets/sse_parser.rs`) and the corpus replay
/// test check: `input[0]` seeds how `input[1..]` is cut into reads; fed whole, byte by byte
/// and in those pieces, the stream must give the same events and the same `has_partial`, or
/// the same first error (with, before it, a prefix of the byte-by-byte events: events
/// completed in the read that failed are not returned). `Err` describes the disagreement.
pub fn check_split_consistency(input: &[u8]) -> Result<(), String> {
    let Some((&seed, stream)) = input.split_first() else {
        return Ok(());
    };
    let reference = feed(stream.chunks(1));
    let whole = feed([stream]);
    let pieces = split_points(seed, stream.len());
    let split = feed(pieces.windows(2).map(|w| &stream[w[0]..w[1]]));
    for (name, got) in [("whole", &whole), ("split", &split)] {
        let agrees = match (&reference.error, &got.error) {
            (None, None) => got.events == reference.events && got.partial == reference.partial,
            (Some(want), Some(e)) => e == want && reference.events.starts_with(&got.events),
            _ => false,
        };
        if !agrees {
            return Err(format!(
                "{name} feed disagrees with byte-by-byte (pieces at {}):\n\
                 byte-by-byte: {}\n{name}: {}",
                clip(format!("{pieces:?}")),
                clip(format!("{reference:?}")),
                clip(format!("{got:?}")),
            ));
        }
    }
    Ok(())
}

/// At most 2000 characters of a long description.
fn clip(s: String) -> String {
    if s.chars().count() <= 2000 {
        return s;
    }
    let head: String = s.chars().take(2000).collect();
    format!("{head}… ({} bytes in all)", s.len())
}

#[derive(Debug)]
struct Fed {
    events: Vec<SseEvent>,
    error: Option<SseError>,
    partial: bool,
}

/// Feeds reads to a fresh parser until the first error.
fn feed<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> Fed {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for read in reads {
        match parser.push(read) {
            Ok(evs) => events.extend(evs),
            Err(e) => {
                return Fed {
                    events,
                    error: Some(e),
                    partial: parser.has_partial(),
                };
            }
        }
    }
    Fed {
        events,
        error: None,
        partial: parser.has_partial(),
    }
}

/// Cut points `0 = p0 < p1 < … = len` from a SplitMix64 seeded by `seed`: mostly short reads
/// (1–8 bytes), sometimes longer ones (up to 256), now and then an empty one.
fn split_points(seed: u8, len: usize) -> Vec<usize> {
    let mut state = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut points = vec![0];
    let mut at = 0;
    while at < len {
        let r = next();
        let step = match r % 16 {
            0 => 0,
            1..=3 => 9 + (r >> 8) % 248,
            _ => 1 + (r >> 8) % 8,
        };
        at = (at + usize::try_from(step).unwrap_or(1)).min(len);
        points.push(at);
    }
    points
}

#[cfg(test)]
mod tests;
