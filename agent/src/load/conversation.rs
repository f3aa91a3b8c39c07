//! Multi-turn conversations (a workload with `turns >= 2`, concurrency mode): each of the
//! point's users runs conversations back to back. Turn k+1 sends, as chat `messages`,
//! every earlier user message with the engine's actual answer to it, then a new user
//! message; the user waits `think_time_ms` after an answer before the next turn. So the
//! prompts grow turn by turn and share their history with the previous turn, which an
//! engine's prefix cache can reuse.
//!
//! Each turn's target input length is the engine's own count of the whole conversation
//! (`/tokenize` with the messages, taken just before the turn leaves: part of the gap
//! between turns, and so of its send lag), checked against `usage` like every request.
//! Records: `wave` is the turn (0-based), `request_index` is conversation × turns + turn,
//! so a reader can follow each conversation. A failed turn ends its conversation (the
//! next turn would carry no answer); the user starts a new one. `requests` caps the turns
//! sent, `duration_s` the time new turns leave.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fleetbench_proto::record::RequestRecord;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::AgentError;
use crate::load::clients::StreamClient;
use crate::load::prompt::TokenCounter;
use crate::load::request::{
    ApiEndpoint, ChatMessage, Extensions, PreparedRequest, RequestContext, RequestPlan,
    measure_keeping_text,
};

/// History slots reserved up front at most (a sweep allows 64 turns; a longer one grows).
const MAX_TURNS_RESERVED: u32 = 64;

/// What a point's conversations are.
#[derive(Debug, Clone)]
pub struct Conversations {
    /// Users talking at the same time (the point's concurrency).
    pub users: u32,
    pub turns: u32,
    pub think: Duration,
    /// Turns sent at most.
    pub requests: Option<u32>,
    /// New turns leave only this long after the load's start.
    pub duration: Option<Duration>,
    /// The users' messages, each of the workload's input length, used in turn.
    pub messages: Vec<String>,
    pub output_tokens: u32,
    pub model: String,
    pub extensions: Extensions,
}

/// Where the turns go and where their records go.
pub struct Wire<'a> {
    pub client: &'a StreamClient,
    pub base_url: &'a str,
    pub counter: &'a TokenCounter,
    pub ctx: RequestContext,
    pub cancel: &'a CancellationToken,
    pub sink: &'a mpsc::Sender<RequestRecord>,
}

/// Runs the users' conversations until the request cap or the duration; returns the
/// turns sent.
pub async fn drive_conversations(c: &Conversations, wire: &Wire<'_>) -> Result<u32, AgentError> {
    let next_conversation = AtomicU32::new(0);
    let sent = AtomicU32::new(0);
    let mut users: FuturesUnordered<_> = (0..c.users.max(1))
        .map(|_| user(c, wire, &next_conversation, &sent))
        .collect();
    while let Some(done) = users.next().await {
        done?;
    }
    Ok(sent.load(Ordering::Relaxed))
}

/// One user: conversations back to back until the cap, the end of the duration or a
/// cancel.
async fn user(
    c: &Conversations,
    wire: &Wire<'_>,
    next_conversation: &AtomicU32,
    sent: &AtomicU32,
) -> Result<(), AgentError> {
    let end = c.duration.map(|d| wire.ctx.origin + d);
    let turns = c.turns.max(1);
    loop {
        let conversation = next_conversation.fetch_add(1, Ordering::Relaxed);
        let mut history: Vec<ChatMessage> =
            Vec::with_capacity(2 * turns.min(MAX_TURNS_RESERVED) as usize);
        for turn in 0..turns {
            if wire.cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            if end.is_some_and(|e| Instant::now() >= e) {
                return Ok(());
            }
            if let Some(limit) = c.requests
                && sent.fetch_add(1, Ordering::Relaxed) >= limit
            {
                sent.fetch_sub(1, Ordering::Relaxed);
                return Ok(());
            } else if c.requests.is_none() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            let index = conversation.saturating_mul(turns).saturating_add(turn);
            let text = c
                .messages
                .get(index as usize % c.messages.len().max(1))
                .cloned()
                .unwrap_or_default();
            history.push(ChatMessage {
                role: "user".into(),
                content: text,
            });
            let counted = wire
                .counter
                .count_messages(ApiEndpoint::Chat, &history)
                .await?;
            let plan = RequestPlan {
                index,
                wave: turn,
                endpoint: ApiEndpoint::Chat,
                model: c.model.clone(),
                prompt: String::new(),
                messages: Some(history.clone()),
                target_input_tokens: counted.unwrap_or(0),
                target_output_tokens: c.output_tokens,
                scheduled_offset: Instant::now().saturating_duration_since(wire.ctx.origin),
                extensions: c.extensions,
            };
            let prepared = PreparedRequest::new(wire.base_url, plan)?;
            let (record, answer) =
                measure_keeping_text(wire.client, &prepared, &wire.ctx, wire.cancel).await;
            let ok = record.success();
            if wire.sink.send(record).await.is_err() {
                warn!("record sink closed; a measured record was dropped");
            }
            if !ok {
                // Without its answer the next turn has no history to carry.
                break;
            }
            history.push(ChatMessage {
                role: "assistant".into(),
                content: answer,
            });
            if turn + 1 < turns && !c.think.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(c.think) => {}
                    () = wire.cancel.cancelled() => return Err(AgentError::Cancelled),
                }
            }
        }
    }
}
