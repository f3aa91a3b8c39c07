//! OpenAI/vLLM request bodies the simulator reads and the non-streaming response bodies it
//! writes. Field order of the responses follows vLLM 0.32's JSON; unknown request fields are
//! ignored, as vLLM does (it only logs them).

use serde::{Deserialize, Serialize};

/// A JSON `null` that always serialises as `null`.
pub type Null = Option<()>;

/// `stream_options` of chat and completion requests, kept as JSON: vLLM rejects them without
/// `stream` only when they are truthy (a non-empty object).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct StreamOptions(pub serde_json::Value);

impl StreamOptions {
    /// Python truthiness of the value.
    pub fn is_truthy(&self) -> bool {
        match &self.0 {
            serde_json::Value::Null => false,
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => n.as_f64().is_some_and(|v| v != 0.0),
            serde_json::Value::String(s) => !s.is_empty(),
            serde_json::Value::Array(a) => !a.is_empty(),
            serde_json::Value::Object(o) => !o.is_empty(),
        }
    }

    /// `include_usage`.
    pub fn include_usage(&self) -> bool {
        self.flag("include_usage")
    }

    /// `continuous_usage_stats` (vLLM only honours it with `include_usage`).
    pub fn continuous_usage_stats(&self) -> bool {
        self.flag("continuous_usage_stats")
    }

    fn flag(&self, name: &str) -> bool {
        self.0
            .get(name)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

/// Deserialises a field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One chat message; `content` is a string or an array of `{type, text}` parts.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl ChatMessage {
    /// The text the chat template sees: a string content as is; text parts joined with `\n`
    /// (vLLM's "string" content format); other parts and `null` contribute nothing.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(s)) => s.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Body of `POST /v1/chat/completions` (the fields the simulator uses).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub min_tokens: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub add_generation_prompt: Option<bool>,
}

/// `prompt` of `/v1/completions`: text, or token ids (one prompt per request).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// Body of `POST /v1/completions` (the fields the simulator uses).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<PromptInput>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Absent means vLLM's default 16; `null` means "up to the context length".
    #[serde(deserialize_with = "present")]
    pub max_tokens: Option<Option<i64>>,
    pub min_tokens: Option<i64>,
    pub ignore_eos: Option<bool>,
}

/// Body of `POST /tokenize`: `{"prompt": ...}` or `{"messages": [...]}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub add_generation_prompt: Option<bool>,
    pub return_token_strs: Option<bool>,
}

/// Answer of `POST /tokenize`.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: u32,
    pub tokens: Vec<u32>,
    pub token_strs: Option<Vec<String>>,
}

/// Body of `POST /detokenize`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionResponse {
    pub version: &'static str,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub root: String,
    pub parent: Null,
    pub max_model_len: u32,
    pub permission: Vec<ModelPermission>,
}

/// vLLM's `ModelPermission` entry of a model card.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPermission {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub allow_create_engine: bool,
    pub allow_sampling: bool,
    pub allow_logprobs: bool,
    pub allow_search_indices: bool,
    pub allow_view: bool,
    pub allow_fine_tuning: bool,
    pub organization: &'static str,
    pub group: Null,
    pub is_blocking: bool,
}

/// `usage` of non-streaming responses (vLLM's `UsageInfo`, every field).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UsageInfo {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
    pub completion_tokens: u32,
    pub prompt_tokens_details: Null,
    pub completion_tokens_details: Null,
}

/// Non-streaming chat answer (vLLM 0.32's `ChatCompletionResponse`).
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub service_tier: Null,
    pub system_fingerprint: String,
    pub usage: UsageInfo,
    pub prompt_logprobs: Null,
    pub prompt_token_ids: Null,
    pub prompt_text: Null,
    pub kv_transfer_params: Null,
    pub ec_transfer_params: Null,
    pub metrics: Null,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Null,
    pub finish_reason: &'static str,
    pub stop_reason: Null,
    pub token_ids: Null,
    pub routed_experts: Null,
}

/// vLLM's `ChatMessage`; an empty `tool_calls` is left out, as vLLM's serializer does.
#[derive(Debug, Clone, Serialize)]
pub struct AssistantMessage {
    pub role: String,
    pub content: String,
    pub refusal: Null,
    pub annotations: Null,
    pub audio: Null,
    pub function_call: Null,
    pub reasoning: Null,
}

/// Non-streaming completion answer (vLLM 0.32's `CompletionResponse`).
#[derive(Debug, Clone, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub service_tier: Null,
    pub system_fingerprint: String,
    pub usage: UsageInfo,
    pub kv_transfer_params: Null,
    pub ec_transfer_params: Null,
    pub metrics: Null,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Null,
    pub finish_reason: &'static str,
    pub stop_reason: Null,
    pub token_ids: Null,
    pub prompt_logprobs: Null,
    pub prompt_token_ids: Null,
    pub routed_experts: Null,
}
