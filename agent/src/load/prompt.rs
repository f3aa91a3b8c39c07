//! Synthetic prompts of an exact token count, counted the way the server counts them.
//!
//! Prompts are seeded sequences of common English words, each a single token in the usual
//! BPE vocabularies (and in vllm-sim's tokenizer). The count comes from the server's own
//! `/tokenize` endpoint — with the chat template applied for chat requests — so the input
//! length is what the server will see, not a characters-per-token guess (the seed's
//! 2-chars/token rule). When the server has no `/tokenize`, prompts are built at one word
//! per token and marked inexact.
//!
//! With the model's `tokenizer.json` ([`TokenCounter::with_local`]) the count is local:
//! completions prompts never ask the server; chat prompts neither when the model's chat
//! template is beside it, else they ask once, for the number of tokens the chat template
//! adds around one user message.

use std::sync::Arc;

use fleetbench_proto::pb::EngineKind;

use crate::error::AgentError;
use crate::load::request::{ApiEndpoint, ChatMessage, joined, messages_json};
use crate::load::tokenize_api::TokenizeApi;
use crate::load::tokenizer::LocalTokenizer;

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "be",
    "at", "by", "this", "have", "from", "or", "one", "had", "not", "but", "what", "all", "were",
    "when", "we", "there", "can", "an", "your", "which", "their", "said", "if", "do", "will",
    "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so", "these",
    "would", "other", "into", "has", "more", "her", "two", "like", "him", "see", "time", "could",
    "no", "make", "than", "first", "been", "its", "who", "now", "people", "my", "made", "over",
    "did", "down", "only", "way", "find", "use", "may", "water", "long", "little", "very", "after",
    "words", "called", "just", "where", "most", "know", "get", "through", "back", "much", "before",
    "go", "good", "new", "write", "our", "used", "me", "man", "too", "any", "day", "same", "right",
    "look",
];

/// A prompt, what the server said its length is, and the lengths its request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub text: String,
    /// Token count as the server counts it: by its `/tokenize` or the local tokenizer (None
    /// when neither is available).
    pub counted_tokens: Option<u32>,
    /// The input length the prompt was built to.
    pub target_input: u32,
    /// The output length its request asks for (`max_tokens`).
    pub target_output: u32,
    /// A dataset entry's conversation, sent as the chat request's `messages` instead of
    /// one user message of `text`.
    pub messages: Option<Vec<ChatMessage>>,
}

impl Prompt {
    pub fn is_exact(&self, target: u32) -> bool {
        self.counted_tokens == Some(target)
    }
}

/// SplitMix64: small, seedable, good enough to pick words reproducibly.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `words` seeded words joined by spaces.
pub fn words(seed: u64, count: usize) -> String {
    let mut rng = SplitMix64::new(seed);
    let mut out = String::with_capacity(count * 6);
    for i in 0..count {
        if i > 0 {
            out.push(' ');
        }
        let idx = usize::try_from(rng.next_u64() % WORDS.len() as u64).unwrap_or(0);
        out.push_str(WORDS[idx]);
    }
    out
}

/// Counts tokens of a prompt as the server will for the given endpoint: through the
/// server's `/tokenize` ([`TokenCounter::new`]), or with the model's tokenizer
/// ([`TokenCounter::with_local`]).
#[derive(Debug, Clone)]
pub struct TokenCounter {
    remote: TokenizeApi,
    local: Option<LocalTokenizer>,
    /// Tokens the chat template adds around one user message (with the generation prompt),
    /// learned from the server once when counting locally.
    chat_overhead: Arc<tokio::sync::OnceCell<u32>>,
}

impl TokenCounter {
    /// Counts through vLLM's `{base_url}/tokenize` for `model`.
    pub fn new(client: reqwest::Client, base_url: &str, model: &str) -> Self {
        let base_url = base_url.trim_end_matches('/');
        TokenCounter {
            remote: TokenizeApi {
                client,
                base_url: base_url.to_owned(),
                model: model.to_string(),
                kind: EngineKind::Vllm,
            },
            local: None,
            chat_overhead: Arc::default(),
        }
    }

    /// Counts remotely the way engine `kind` does (see [`crate::load::tokenize_api`]).
    pub fn with_engine_kind(mut self, kind: EngineKind) -> Self {
        self.remote.kind = kind;
        self
    }

    /// Counts with `tokenizer` (the served model's `tokenizer.json`) instead: completions
    /// prompts entirely locally (with the special tokens the tokenizer adds, as vLLM does);
    /// chat prompts entirely locally too when the model folder has its chat template
    /// (rendered as the engine renders it, see [`crate::load::chat_template`]), else as the
    /// local count of the content plus the chat template's tokens, which one `/tokenize`
    /// call with `messages` gives (the first time a chat prompt is counted) — without a
    /// template or the server's `/tokenize`, counting chat prompts fails.
    pub fn with_local(mut self, tokenizer: LocalTokenizer) -> Self {
        self.local = Some(tokenizer);
        self.chat_overhead = Arc::default();
        self
    }

    /// The local tokenizer, if counting locally.
    pub fn local(&self) -> Option<&LocalTokenizer> {
        self.local.as_ref()
    }

    /// Token count, or `None` when the server has no `/tokenize` (never `None` when
    /// counting locally).
    pub async fn count(
        &self,
        endpoint: ApiEndpoint,
        text: &str,
    ) -> Result<Option<u32>, AgentError> {
        let Some(local) = &self.local else {
            return self.count_remote(endpoint, text).await;
        };
        match endpoint {
            ApiEndpoint::Completions => Ok(Some(
                on_blocking_thread(local, text, |t, s| t.count(s, true)).await?,
            )),
            ApiEndpoint::Chat if local.chat_template().is_some() => Ok(Some(
                on_blocking_thread(local, text, LocalTokenizer::count_chat).await?,
            )),
            ApiEndpoint::Chat => {
                let content = on_blocking_thread(local, text, |t, s| t.count(s, false)).await?;
                let overhead = *self
                    .chat_overhead
                    .get_or_try_init(|| self.learn_chat_overhead(text, content))
                    .await?;
                Ok(Some(content.saturating_add(overhead)))
            }
        }
    }

    /// Token count of a dataset conversation: for completions, of its contents joined by
    /// newlines (as sent); for chat, the server's count of the whole conversation (a local
    /// tokenizer does not render multi-message templates here: `None` without a server
    /// count).
    pub async fn count_messages(
        &self,
        endpoint: ApiEndpoint,
        messages: &[ChatMessage],
    ) -> Result<Option<u32>, AgentError> {
        match endpoint {
            ApiEndpoint::Completions => self.count(endpoint, &joined(messages)).await,
            ApiEndpoint::Chat => self.remote.count_messages(&messages_json(messages)).await,
        }
    }

    /// The chat template's tokens around one user message: the server's count of a chat
    /// request with `text` minus the local count of `text` (`content` tokens).
    async fn learn_chat_overhead(&self, text: &str, content: u32) -> Result<u32, AgentError> {
        let Some(total) = self.count_remote(ApiEndpoint::Chat, text).await? else {
            return Err(AgentError::Prompt(format!(
                "counting chat prompts with a local tokenizer needs the model's chat template \
                 (chat_template.jinja or tokenizer_config.json's chat_template beside {}) or \
                 the server's /tokenize to learn the chat template's tokens, and {}/tokenize \
                 answered 404",
                self.local.as_ref().map_or("", LocalTokenizer::source),
                self.remote.base_url
            )));
        };
        total.checked_sub(content).ok_or_else(|| {
            AgentError::Prompt(format!(
                "the server counts {total} tokens for a chat prompt whose content the local \
                 tokenizer ({}) counts as {content}: is it the served model's tokenizer?",
                self.local.as_ref().map_or("", LocalTokenizer::source)
            ))
        })
    }

    async fn count_remote(
        &self,
        endpoint: ApiEndpoint,
        text: &str,
    ) -> Result<Option<u32>, AgentError> {
        self.remote.count(endpoint, text).await
    }
}

/// Counts `text` with `tokenizer` on a blocking thread: a long prompt takes milliseconds,
/// and prompt building must stay cancellable.
async fn on_blocking_thread(
    tokenizer: &LocalTokenizer,
    text: &str,
    count: impl FnOnce(&LocalTokenizer, &str) -> Result<u32, AgentError> + Send + 'static,
) -> Result<u32, AgentError> {
    let tokenizer = tokenizer.clone();
    let text = text.to_owned();
    tokio::task::spawn_blocking(move || count(&tokenizer, &text))
        .await
        .map_err(|e| AgentError::Prompt(format!("tokenizer task: {e}")))?
}

/// Where a synthetic prompt's words come from: the common-word list, or a text corpus
/// (a workload's `corpus` file), so prompts read as real text.
#[derive(Debug, Clone, Default)]
pub enum Filler {
    #[default]
    Common,
    /// The corpus's words in order; a prompt is a run of them from a seeded start
    /// (wrapping around the end).
    Corpus(Arc<[String]>),
}

impl Filler {
    /// The corpus's whitespace-separated words (`Common` when it has none).
    pub fn corpus(text: &str) -> Filler {
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            Filler::Common
        } else {
            Filler::Corpus(words.into())
        }
    }

    /// `count` words, seeded.
    pub fn words(&self, seed: u64, count: usize) -> String {
        match self {
            Filler::Common => words(seed, count),
            Filler::Corpus(corpus) => {
                let start = usize::try_from(seed % corpus.len() as u64).unwrap_or(0);
                let mut out = String::with_capacity(count * 6);
                for i in 0..count {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(&corpus[(start + i) % corpus.len()]);
                }
                out
            }
        }
    }
}

/// Builds `count` distinct prompts of exactly `target` tokens (as the server counts them
/// for `endpoint`), seeded by `seed`.
pub async fn build_prompts(
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    target: u32,
    count: usize,
    seed: u64,
) -> Result<Vec<Prompt>, AgentError> {
    build_prompts_from(&Filler::Common, counter, endpoint, target, count, seed).await
}

/// [`build_prompts`] with words from `filler`.
pub async fn build_prompts_from(
    filler: &Filler,
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    target: u32,
    count: usize,
    seed: u64,
) -> Result<Vec<Prompt>, AgentError> {
    let words = |seed: u64, k: usize| filler.words(seed, k);
    let target_words = usize::try_from(target).unwrap_or(usize::MAX);
    // Find how many words hit the target for the first variant.
    let Some(mut k) = solve_word_count(filler, counter, endpoint, target, seed).await? else {
        return Ok((0..count)
            .map(|i| Prompt {
                text: words(mix(seed, i as u64), target_words),
                counted_tokens: None,
                target_input: target,
                target_output: 0,
                messages: None,
            })
            .collect());
    };
    let mut prompts = Vec::with_capacity(count);
    for i in 0..count {
        let variant_seed = mix(seed, i as u64);
        let build = |k: usize| words(variant_seed, k);
        let (text, counted, took) = fit(filler, counter, endpoint, target, k, build).await?;
        k = took;
        prompts.push(Prompt {
            text,
            counted_tokens: counted,
            target_input: target,
            target_output: 0,
            messages: None,
        });
    }
    Ok(prompts)
}

/// One prompt of exactly `target` tokens that starts with `prefix` (empty: none) followed
/// by seeded words; `guess` is the word count to try first (the last prompt's, adjusted
/// by the length difference, saves most counts). Returns the prompt (its target output
/// 0) and the word count it took.
pub async fn exact_prompt(
    filler: &Filler,
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    prefix: &str,
    target: u32,
    seed: u64,
    guess: usize,
) -> Result<(Prompt, usize), AgentError> {
    let build = |k: usize| {
        if prefix.is_empty() {
            filler.words(seed, k)
        } else {
            format!("{prefix} {}", filler.words(seed, k))
        }
    };
    let (text, counted, k) = fit(filler, counter, endpoint, target, guess.max(1), build).await?;
    Ok((
        Prompt {
            text,
            counted_tokens: counted,
            target_input: target,
            target_output: 0,
            messages: None,
        },
        k,
    ))
}

/// `build(k)` (a text of k filler words) made exactly `target` tokens long: k moves by the
/// count's difference, a few tries. A corpus's words can be several tokens each, so whole
/// words may step over the target: then the largest k under it is topped up with one-token
/// common words. Returns the text, its count (`None`: nothing counts here) and k.
async fn fit(
    filler: &Filler,
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    target: u32,
    guess: usize,
    build: impl Fn(usize) -> String,
) -> Result<(String, Option<u32>, usize), AgentError> {
    let mut k = guess.max(1);
    let mut text = build(k);
    let mut counted = counter.count(endpoint, &text).await?;
    let mut tries = 0;
    while let Some(c) = counted {
        if c == target || tries >= 8 {
            break;
        }
        k = adjust(k, target, c);
        text = build(k);
        counted = counter.count(endpoint, &text).await?;
        tries += 1;
    }
    if matches!(filler, Filler::Common) || counted.is_none_or(|c| c == target) {
        return Ok((text, counted, k));
    }
    // Step down to a count under the target, then top up word by word.
    while let Some(c) = counted
        && c > target
        && k > 1
    {
        k -= 1;
        text = build(k);
        counted = counter.count(endpoint, &text).await?;
    }
    let mut padded = text.clone();
    let mut pad_counted = counted;
    for round in 0..4u64 {
        let Some(c) = pad_counted else { break };
        if c >= target {
            break;
        }
        let missing = usize::try_from(target - c).unwrap_or(0);
        padded = format!("{padded} {}", words(mix(round, k as u64), missing));
        pad_counted = counter.count(endpoint, &padded).await?;
    }
    Ok((padded, pad_counted, k))
}

async fn solve_word_count(
    filler: &Filler,
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    target: u32,
    seed: u64,
) -> Result<Option<usize>, AgentError> {
    let variant_seed = mix(seed, 0);
    let mut k = usize::try_from(target).unwrap_or(1).max(1);
    for _ in 0..12 {
        let Some(c) = counter
            .count(endpoint, &filler.words(variant_seed, k))
            .await?
        else {
            return Ok(None);
        };
        if c == target {
            return Ok(Some(k));
        }
        k = adjust(k, target, c);
    }
    Ok(Some(k))
}

fn adjust(k: usize, target: u32, counted: u32) -> usize {
    let diff = i64::from(target) - i64::from(counted);
    let next = i64::try_from(k)
        .unwrap_or(i64::MAX)
        .saturating_add(diff)
        .max(1);
    usize::try_from(next).unwrap_or(1)
}

/// Mixes the point seed with a request index into an independent seed.
pub fn mix(seed: u64, index: u64) -> u64 {
    SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corpus_fills_prompts_with_runs_of_its_words() {
        let corpus = Filler::corpus("It was the best of times,\nit was the worst of times.");
        assert_eq!(corpus.words(0, 4), "It was the best");
        // A seeded start, wrapping round the end.
        assert_eq!(corpus.words(10, 4), "of times. It was");
        assert_eq!(corpus.words(7, 3), corpus.words(7 + 12, 3));
        assert!(matches!(Filler::corpus(" \n\t"), Filler::Common));
    }

    #[tokio::test]
    async fn corpus_prompts_are_exact_too() {
        let counter = TokenCounter::new(reqwest::Client::new(), "http://127.0.0.1:9/", "m")
            .with_local(sim_tokenizer());
        let corpus = Filler::corpus(&"alpha beta gamma, delta: epsilon! ".repeat(40));
        let prompts = build_prompts_from(&corpus, &counter, ApiEndpoint::Completions, 37, 5, 9)
            .await
            .unwrap();
        assert!(prompts.iter().all(|p| p.is_exact(37)), "{prompts:?}");
        assert!(prompts.iter().all(|p| p.text.contains("gamma")));
    }

    #[test]
    fn words_are_seeded_and_distinct() {
        assert_eq!(words(7, 50), words(7, 50));
        assert_ne!(words(7, 50), words(8, 50));
        assert_eq!(words(7, 50).split(' ').count(), 50);
        assert_ne!(words(mix(1, 0), 20), words(mix(1, 1), 20));
    }

    fn sim_tokenizer() -> LocalTokenizer {
        LocalTokenizer::from_json(&fleetbench_sim::tokenizer::tokenizer_json().to_string()).unwrap()
    }

    #[tokio::test]
    async fn local_completions_counts_never_ask_the_server() {
        // Nothing listens on loopback port 9: a server call would fail.
        let counter = TokenCounter::new(reqwest::Client::new(), "http://127.0.0.1:9/", "m")
            .with_local(sim_tokenizer());
        assert!(counter.local().is_some());
        let text = words(3, 40);
        assert_eq!(
            counter
                .count(ApiEndpoint::Completions, &text)
                .await
                .unwrap(),
            Some(40)
        );
        let prompts = build_prompts(&counter, ApiEndpoint::Completions, 33, 4, 5)
            .await
            .unwrap();
        assert!(prompts.iter().all(|p| p.is_exact(33)));
        // Chat needs the server once, for the template: here it is unreachable.
        assert!(counter.count(ApiEndpoint::Chat, &text).await.is_err());
    }

    #[test]
    fn new_counts_through_the_server() {
        let counter = TokenCounter::new(reqwest::Client::new(), "http://h:1/", "m");
        assert_eq!(
            format!("{}/tokenize", counter.remote.base_url),
            "http://h:1/tokenize"
        );
        assert!(counter.local().is_none());
    }

    #[test]
    fn adjust_moves_toward_target() {
        assert_eq!(adjust(100, 128, 120), 108);
        assert_eq!(adjust(100, 128, 140), 88);
        assert_eq!(adjust(1, 1, 50), 1);
    }
}
