//! A point's requests from its workload (`pb::Workload`): the prompts and each request's
//! target input and output lengths.
//!
//! - Fixed lengths: distinct seeded prompts of exactly the input length (as before
//!   distributions existed: [`build_prompts`]).
//! - Length distributions: each request's lengths drawn ([`draw_lengths`]), its prompt
//!   built to exactly its own input length.
//! - Shared prefixes: request i belongs to group i mod N; its prompt is the group's
//!   prefix (seeded words, one per token of `prefix_tokens` in the usual vocabularies and
//!   exactly so in vllm-sim's) and a suffix of its own, the whole counted to exactly the
//!   request's input length. Each group's prefix is its own seeded word sequence, so
//!   groups share no cached block.

use fleetbench_proto::pb;

use crate::error::AgentError;
use crate::load::dataset::{Dataset, DatasetPrompt};
use crate::load::lengths::{Lengths, draw_lengths};
use crate::load::prompt::{Filler, Prompt, TokenCounter, build_prompts_from, exact_prompt, mix};
use crate::load::request::{ApiEndpoint, joined};

/// Seed offsets of the shared prefixes and of the suffixes, so they never repeat the
/// request prompts' own word sequences.
const PREFIX_STREAM: u64 = 0x5EED_0F9E_F1C5;

/// Builds the prompts of `count` requests of `workload`, seeded by `seed`.
pub async fn build_requests(
    filler: &Filler,
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    workload: &pb::Workload,
    count: usize,
    seed: u64,
) -> Result<Vec<Prompt>, AgentError> {
    let fixed = matches!(
        workload.dist(),
        pb::LengthDist::Unspecified | pb::LengthDist::Fixed
    );
    if fixed && workload.prefix_groups == 0 {
        let mut prompts = build_prompts_from(
            filler,
            counter,
            endpoint,
            workload.input_tokens,
            count,
            seed,
        )
        .await?;
        for p in &mut prompts {
            p.target_output = workload.output_tokens;
        }
        return Ok(prompts);
    }
    let lengths = draw_lengths(workload, count, seed);
    build_exact(filler, counter, endpoint, workload, &lengths, seed).await
}

/// Prompts exact to each of `lengths` (and their outputs), with `workload`'s shared
/// prefixes if it has them: distributions and trace replays.
pub async fn build_exact(
    filler: &Filler,
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    workload: &pb::Workload,
    lengths: &[Lengths],
    seed: u64,
) -> Result<Vec<Prompt>, AgentError> {
    let count = lengths.len();
    // Bounded by what the requests use, whatever the spec says: no more groups than
    // requests, no prefix longer than the shortest prompt.
    let groups = workload
        .prefix_groups
        .min(u32::try_from(count).unwrap_or(u32::MAX));
    let prefix_words = workload
        .prefix_tokens
        .min(lengths.iter().map(|l| l.input).min().unwrap_or(0));
    let prefixes: Vec<String> = (0..groups)
        .map(|g| {
            filler.words(
                mix(seed ^ PREFIX_STREAM, u64::from(g)),
                usize::try_from(prefix_words).unwrap_or(0),
            )
        })
        .collect();
    let mut prompts = Vec::with_capacity(count);
    let first = lengths.first().map_or(workload.input_tokens, |l| l.input);
    let mut guess = usize::try_from(first).unwrap_or(1);
    let mut last_target = first;
    for (i, l) in lengths.iter().enumerate() {
        let prefix = match groups {
            0 => "",
            n => prefixes
                .get(i % usize::try_from(n).unwrap_or(1))
                .map_or("", String::as_str),
        };
        // Words after the prefix: the last prompt's count, moved by the length difference.
        let start = i64::try_from(guess).unwrap_or(1) + i64::from(l.input)
            - i64::from(last_target)
            - if i == 0 && !prefix.is_empty() {
                i64::from(workload.prefix_tokens)
            } else {
                0
            };
        let start = usize::try_from(start.max(1)).unwrap_or(1);
        let (mut prompt, k) = exact_prompt(
            filler,
            counter,
            endpoint,
            prefix,
            l.input,
            mix(seed, i as u64),
            start,
        )
        .await?;
        prompt.target_output = l.output;
        guess = k;
        last_target = l.input;
        prompts.push(prompt);
    }
    Ok(prompts)
}

/// Prompts of a dataset workload, and the entries passed over.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetPrompts {
    pub prompts: Vec<Prompt>,
    /// Entries drawn but not used: their prompt and output would not fit
    /// `max_model_len` (skipped and counted, never truncated).
    pub too_long: usize,
}

/// `count` prompts from `dataset`, sampled with `seed` (without replacement while the
/// data lasts, see [`Dataset::sample`]; with the workload's `replacement`, independent
/// draws), each sent verbatim: its target input length is
/// the engine's count of it, its output length the entry's `output_tokens`, else the
/// workload's `output` (when set), else the token count of the entry's reference reply
/// (vLLM's ShareGPT rule). An entry without any of these is an error, as is a dataset
/// none of whose entries fits `max_model_len`.
pub async fn build_from_dataset(
    counter: &TokenCounter,
    endpoint: ApiEndpoint,
    workload: &pb::Workload,
    dataset: &Dataset,
    count: usize,
    seed: u64,
    max_model_len: u32,
) -> Result<DatasetPrompts, AgentError> {
    // Without replacement: one walk through the whole data in seeded order; entries that
    // fit are used, and reused in the same order once the walk is over. With: independent
    // draws (twice as many as needed, so entries too long to fit can be passed over).
    let order = if workload.replacement {
        dataset.sample_with_replacement(count.saturating_mul(2).max(16), seed)
    } else {
        dataset.sample(dataset.entries.len(), seed)
    };
    let mut fitting: Vec<Prompt> = Vec::new();
    let mut too_long = 0;
    for entry in order {
        if fitting.len() >= count {
            break;
        }
        let (text, messages, counted) = match &entry.prompt {
            DatasetPrompt::Text(text) => {
                let counted = counter.count(endpoint, text).await?;
                (text.clone(), None, counted)
            }
            DatasetPrompt::Messages(messages) => {
                let counted = counter.count_messages(endpoint, messages).await?;
                (joined(messages), Some(messages.clone()), counted)
            }
        };
        let output = match (entry.output_tokens, workload.output_tokens, &entry.reply) {
            (Some(n), _, _) => n,
            (None, n, _) if n > 0 => n,
            (None, _, Some(reply)) => counter
                .count(ApiEndpoint::Completions, reply)
                .await?
                .unwrap_or_else(|| u32::try_from(reply.split_whitespace().count()).unwrap_or(0))
                .max(1),
            (None, _, None) => {
                return Err(AgentError::Dataset(format!(
                    "{}: an entry names no output length (no output_tokens, no reply): set                      `output` on the workload",
                    dataset.name
                )));
            }
        };
        let input = counted.unwrap_or(0);
        if u64::from(input) + u64::from(output) > u64::from(max_model_len) {
            too_long += 1;
            continue;
        }
        fitting.push(Prompt {
            text,
            counted_tokens: counted,
            // The data decides the length: what the engine counted is the target (no
            // count: unknown, and the point says its lengths are not exact).
            target_input: input,
            target_output: output,
            messages,
        });
    }
    if fitting.is_empty() {
        return Err(AgentError::Dataset(format!(
            "{}: none of its {} entries fits max_model_len {max_model_len} with its output",
            dataset.name,
            dataset.entries.len()
        )));
    }
    let prompts = fitting.iter().cycle().take(count).cloned().collect();
    Ok(DatasetPrompts { prompts, too_long })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tokenizer::LocalTokenizer;

    fn counter() -> TokenCounter {
        let tokenizer =
            LocalTokenizer::from_json(&fleetbench_sim::tokenizer::tokenizer_json().to_string())
                .unwrap();
        // Nothing listens on port 9: completions counts are local.
        TokenCounter::new(reqwest::Client::new(), "http://127.0.0.1:9/", "m").with_local(tokenizer)
    }

    #[tokio::test]
    async fn distributed_lengths_give_prompts_exact_to_each_draw() {
        let w = pb::Workload {
            input_tokens: 100,
            output_tokens: 20,
            dist: pb::LengthDist::Normal.into(),
            input_spread: 30,
            output_spread: 5,
            input_min: 10,
            input_max: 220,
            output_min: 1,
            output_max: 40,
            ..Default::default()
        };
        let prompts = build_requests(
            &Filler::Common,
            &counter(),
            ApiEndpoint::Completions,
            &w,
            64,
            3,
        )
        .await
        .unwrap();
        let drawn = draw_lengths(&w, 64, 3);
        for (p, l) in prompts.iter().zip(&drawn) {
            assert_eq!((p.target_input, p.target_output), (l.input, l.output));
            assert!(p.is_exact(l.input), "{p:?}");
        }
        let distinct: std::collections::BTreeSet<u32> =
            prompts.iter().map(|p| p.target_input).collect();
        assert!(distinct.len() > 20, "{distinct:?}");
    }

    #[tokio::test]
    async fn shared_prefix_groups_share_exactly_their_prefix() {
        let w = pb::Workload {
            input_tokens: 60,
            output_tokens: 8,
            prefix_groups: 3,
            prefix_tokens: 40,
            ..Default::default()
        };
        let prompts = build_requests(
            &Filler::Common,
            &counter(),
            ApiEndpoint::Completions,
            &w,
            9,
            11,
        )
        .await
        .unwrap();
        assert!(
            prompts
                .iter()
                .all(|p| p.is_exact(60) && p.target_output == 8)
        );
        let words_of = |p: &Prompt| p.text.split(' ').map(str::to_owned).collect::<Vec<_>>();
        for (i, a) in prompts.iter().enumerate() {
            for (j, b) in prompts.iter().enumerate().skip(i + 1) {
                let (wa, wb) = (words_of(a), words_of(b));
                let common = wa.iter().zip(&wb).take_while(|(x, y)| x == y).count();
                if i % 3 == j % 3 {
                    // Same group: the 40-word prefix, and not (much) more.
                    assert!((40..45).contains(&common), "{i} {j}: {common}");
                } else {
                    assert!(common < 5, "{i} {j}: {common}");
                }
            }
        }
    }
}
