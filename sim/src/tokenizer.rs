//! A deterministic synthetic tokenizer, a ChatML-like chat template, and the synthetic model's
//! output vocabulary.
//!
//! Real vLLM uses the model's own tokenizer; the simulator needs one that is cheap, stable
//! across versions and easy to reason about, so that a load generator can build prompts of an
//! exact token length through `/tokenize` and check `usage` against it.
//!
//! Tokens are the leftmost-first matches of
//! ` ?[A-Za-z0-9]+ | ?[^\sA-Za-z0-9]|\s+`:
//! 1. an optional single leading space followed by a run of ASCII alphanumerics (`" hello"`);
//! 2. an optional single leading space followed by one other non-whitespace character
//!    (`"."`, `" ("`; each non-ASCII character is its own token);
//! 3. any other run of whitespace (`"\n"`, `"  "`; a run is greedy, so `"a  b"` is
//!    `["a", "  ", "b"]`).
//!
//! [`tokenizer_json`] is a Hugging Face `tokenizer.json` with the same counts (not ids), for
//! clients that count prompts locally (`vllm-sim --sim-tokenizer-json PATH` writes it).
//!
//! A token's id is the 64-bit FNV-1a hash of its UTF-8 bytes modulo [`VOCAB_SIZE`]. The special
//! tokens `<|im_start|>` and `<|im_end|>` have the ids SmolLM2 gives them (1 and 2).

use std::collections::HashMap;
use std::sync::OnceLock;

/// Vocabulary size (SmolLM2's).
pub const VOCAB_SIZE: u32 = 49_152;
/// Id of `<|im_start|>`.
pub const IM_START: u32 = 1;
/// Id of `<|im_end|>`.
pub const IM_END: u32 = 2;
/// Template tokens around each chat message: `<|im_start|>`, role, `\n`, `<|im_end|>`, `\n`.
pub const TEMPLATE_TOKENS_PER_MESSAGE: usize = 5;
/// Tokens of the generation prompt: `<|im_start|>`, `assistant`, `\n`.
pub const GENERATION_PROMPT_TOKENS: usize = 3;
/// Characters of SmolLM2's longest vocabulary entry. vLLM rejects a text prompt longer than
/// `max_model_len × max_chars_per_token` characters before tokenizing it.
pub const MAX_CHARS_PER_TOKEN: usize = 81;

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(0xcbf2_9ce4_8422_2325, bytes)
}

/// Continues an FNV-1a hash with more bytes.
pub fn fnv1a_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64 finaliser: spreads a hash or counter over all 64 bits.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Id of one token string.
pub fn token_id(piece: &str) -> u32 {
    (fnv1a(piece.as_bytes()) % u64::from(VOCAB_SIZE)) as u32
}

/// Byte length of the first token of `s` (0 for an empty string).
fn first_piece_len(s: &str) -> usize {
    let whitespace_run = |s: &str| {
        s.chars()
            .take_while(|c| c.is_whitespace())
            .map(char::len_utf8)
            .sum::<usize>()
    };
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return 0;
    };
    let (lead, body) = if first == ' ' {
        match chars.next() {
            Some(c) if !c.is_whitespace() => (1, c),
            _ => return whitespace_run(s),
        }
    } else if first.is_whitespace() {
        return whitespace_run(s);
    } else {
        (0, first)
    };
    if body.is_ascii_alphanumeric() {
        lead + s
            .bytes()
            .skip(lead)
            .take_while(u8::is_ascii_alphanumeric)
            .count()
    } else {
        lead + body.len_utf8()
    }
}

/// Iterator over the token strings of a text.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let len = first_piece_len(self.rest);
        if len == 0 {
            return None;
        }
        let (piece, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(piece)
    }
}

/// The token strings of `text`.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces { rest: text }
}

/// Token ids of `text`.
pub fn encode(text: &str) -> Vec<u32> {
    pieces(text).map(token_id).collect()
}

/// Number of tokens of `text`.
pub fn count(text: &str) -> usize {
    pieces(text).count()
}

/// Token ids of a conversation under the ChatML-like template: each message is
/// `<|im_start|>` role `\n` content `<|im_end|>` `\n` (content tokens + 5), and
/// `add_generation_prompt` appends `<|im_start|>` `assistant` `\n` (3).
pub fn encode_chat<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
    add_generation_prompt: bool,
) -> Vec<u32> {
    let newline = token_id("\n");
    let mut ids = Vec::new();
    for (role, content) in messages {
        ids.push(IM_START);
        ids.push(token_id(role));
        ids.push(newline);
        ids.extend(pieces(content).map(token_id));
        ids.push(IM_END);
        ids.push(newline);
    }
    if add_generation_prompt {
        ids.extend([IM_START, token_id("assistant"), newline]);
    }
    ids
}

/// Token strings of a conversation, aligned with [`encode_chat`].
pub fn chat_pieces<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
    add_generation_prompt: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (role, content) in messages {
        out.extend(["<|im_start|>", role, "\n"].map(str::to_owned));
        out.extend(pieces(content).map(str::to_owned));
        out.extend(["<|im_end|>", "\n"].map(str::to_owned));
    }
    if add_generation_prompt {
        out.extend(["<|im_start|>", "assistant", "\n"].map(str::to_owned));
    }
    out
}

/// The text of a conversation under the chat template (what [`chat_pieces`] concatenate).
pub fn render_chat<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
    add_generation_prompt: bool,
) -> String {
    let mut out = String::new();
    for (role, content) in messages {
        out.push_str("<|im_start|>");
        out.push_str(role);
        out.push('\n');
        out.push_str(content);
        out.push_str("<|im_end|>\n");
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

/// The regex of the synthetic tokenizer's pieces, as written in [`tokenizer_json`].
pub const PIECE_REGEX: &str = r" ?[A-Za-z0-9]+| ?[^\sA-Za-z0-9]|\s+";

/// A Hugging Face `tokenizer.json` document that counts tokens exactly as [`count`] does, so a
/// client with the `tokenizers` library (or `transformers`) can count prompts locally the way
/// this simulator's `/tokenize` counts a completions prompt.
///
/// Only counts match, not ids: a `Split` pre-tokenizer on [`PIECE_REGEX`] (`Isolated`, so every
/// match is its own piece; the regex matches every character, so there are no gaps) and a
/// `WordLevel` model whose vocabulary is just `[UNK]`, so each piece is one token. No
/// normalizer, no added tokens (`<|im_start|>` in a completions prompt is seven pieces here, as
/// in [`count`]) and no post-processor: a completions prompt gets no BOS, as in
/// [`encode`]. The chat template's tokens are not in it; learn them from `/tokenize` with
/// `messages`.
pub fn tokenizer_json() -> serde_json::Value {
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Split",
            "pattern": {"Regex": PIECE_REGEX},
            "behavior": "Isolated",
            "invert": false,
        },
        "post_processor": null,
        "decoder": null,
        "model": {
            "type": "WordLevel",
            "vocab": {"[UNK]": 0},
            "unk_token": "[UNK]",
        },
    })
}

/// Writes [`tokenizer_json`] to `path` (pretty-printed), creating its parent folder.
pub fn write_tokenizer_json(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let text = serde_json::to_string_pretty(&tokenizer_json()).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

/// Tokens of the synthetic model's output: common English words with one leading space, each
/// exactly one token under this tokenizer.
pub const WORDS: &[&str] = &[
    " the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " was", " with",
    " be", " by", " on", " not", " he", " this", " are", " or", " his", " from", " at", " which",
    " but", " have", " an", " had", " they", " you", " were", " their", " one", " all", " we",
    " can", " her", " has", " there", " been", " if", " more", " when", " will", " would", " who",
    " so", " no", " time", " people", " some", " what", " only", " new", " other", " also",
    " about", " into", " many", " then", " them", " these", " may", " first", " any", " like",
    " now", " my", " such", " make", " over", " our", " even", " most", " me", " state", " after",
    " could", " made", " world", " work", " way", " because", " good", " well", " through",
    " years", " where", " much", " should", " very", " system", " each", " just", " those",
    " help", " model", " data", " between", " long", " small", " light", " water", " number",
];

/// The output of the synthetic model for one request: `len` tokens, a pure function of `seed`.
/// When the request ends naturally (`ends_with_eos`), the last token is the end-of-sequence
/// token, which counts in `usage.completion_tokens` but has empty text (as in vLLM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticOutput {
    pub seed: u64,
    pub len: u32,
    pub ends_with_eos: bool,
}

impl SyntheticOutput {
    /// Text of token `index` (0-based): `" word"`, or `""` for a final end-of-sequence token.
    pub fn piece(&self, index: u32) -> &'static str {
        if self.ends_with_eos && index + 1 >= self.len {
            return "";
        }
        let h = mix64(self.seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        WORDS
            .get((h % WORDS.len() as u64) as usize)
            .copied()
            .unwrap_or(" the")
    }

    /// Concatenated text of tokens `first .. first + count`.
    pub fn text(&self, first: u32, count: u32) -> String {
        (first..first.saturating_add(count))
            .map(|i| self.piece(i))
            .collect()
    }
}

/// A deterministic length in `[1, max_tokens]` for a request that is allowed to stop on its own
/// (no `ignore_eos`): a hash of the prompt tokens and the seed.
pub fn natural_length(prompt_ids: &[u32], seed: u64, max_tokens: u32) -> u32 {
    let h = mix64(prompt_hash(prompt_ids) ^ mix64(seed) ^ 0x6e61_7475_7261_6c00);
    1 + (h % u64::from(max_tokens.max(1))) as u32
}

/// Hash of a prompt's token ids (the seed of its synthetic output).
pub fn prompt_hash(prompt_ids: &[u32]) -> u64 {
    prompt_ids
        .iter()
        .fold(fnv1a(b"prompt"), |h, id| fnv1a_extend(h, &id.to_le_bytes()))
}

/// Best-effort inverse of [`token_id`]: ids of the special tokens, the output words (with and
/// without leading space, lower- and capitalised), roles, single ASCII characters (with and
/// without leading space) and short whitespace runs decode to their text; other ids decode to
/// nothing.
pub fn decode(ids: &[u32]) -> String {
    let table = REVERSE.get_or_init(build_reverse);
    ids.iter()
        .filter_map(|id| table.get(id).map(String::as_str))
        .collect()
}

static REVERSE: OnceLock<HashMap<u32, String>> = OnceLock::new();

fn build_reverse() -> HashMap<u32, String> {
    // Earlier candidates win id collisions: the output vocabulary first.
    let mut candidates: Vec<String> = WORDS.iter().map(|w| (*w).to_owned()).collect();
    let words = WORDS.iter().map(|w| w.trim_start());
    for w in words.chain(["system", "user", "assistant", "tool"]) {
        let mut cap = w.to_string();
        if let Some(first) = cap.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        for s in [w.to_string(), cap] {
            candidates.push(format!(" {s}"));
            candidates.push(s);
        }
    }
    for b in 0x21u8..0x7f {
        let c = char::from(b);
        candidates.push(c.to_string());
        candidates.push(format!(" {c}"));
    }
    for ws in ["\n", " ", "\n\n", "  ", "\t", " \n"] {
        candidates.push(ws.to_owned());
    }
    let mut table = HashMap::new();
    for s in candidates {
        table.entry(token_id(&s)).or_insert(s);
    }
    table.insert(IM_START, "<|im_start|>".to_owned());
    table.insert(IM_END, "<|im_end|>".to_owned());
    table
}

#[cfg(test)]
mod tests;
