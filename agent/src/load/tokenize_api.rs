//! Each engine kind's own way to count a prompt's tokens, as it will count them when the
//! request arrives:
//!
//! | kind | completions prompt | chat prompt |
//! |---|---|---|
//! | vLLM, SGLang | `POST /tokenize {model, prompt}` → `count` | `POST /tokenize {model, messages, add_generation_prompt}` → `count` |
//! | llama.cpp | `POST /tokenize {content, add_special}` → `tokens` | `POST /apply-template {messages}` → `prompt`, then `/tokenize` of it |
//! | TGI | `POST /tokenize {inputs}` → a list of tokens | `POST /chat_tokenize {model, messages}` → `tokenize_response` |
//! | transformers | – | – |
//!
//! `None` means the engine has no such endpoint (404, or a kind without one): the caller
//! counts locally or marks prompts inexact. llama.cpp tokenizes a templated chat prompt with
//! `add_special` and `parse_special` on, as its chat completions handler does.

use fleetbench_proto::pb::EngineKind;
use serde_json::{Value, json};

use crate::error::AgentError;
use crate::load::request::ApiEndpoint;
use crate::load::retry::send_idempotent;

/// Where and how a prompt is counted remotely.
#[derive(Debug, Clone)]
pub struct TokenizeApi {
    pub client: reqwest::Client,
    /// The engine's base URL, without a trailing `/`.
    pub base_url: String,
    pub model: String,
    pub kind: EngineKind,
}

impl TokenizeApi {
    /// The engine's count of `text` sent to `endpoint`, or `None` without an endpoint.
    pub async fn count(
        &self,
        endpoint: ApiEndpoint,
        text: &str,
    ) -> Result<Option<u32>, AgentError> {
        let user = json!([{"role": "user", "content": text}]);
        match (self.kind, endpoint) {
            (EngineKind::Transformers, _) => Ok(None),
            (EngineKind::LlamaCpp, ApiEndpoint::Completions) => self.llama_tokens(text).await,
            (EngineKind::LlamaCpp, ApiEndpoint::Chat) => {
                let Some(templated) = self
                    .post("/apply-template", &json!({"messages": user}))
                    .await?
                else {
                    return Ok(None);
                };
                let prompt = templated["prompt"].as_str().ok_or_else(|| {
                    self.unexpected("/apply-template", "no `prompt` string", &templated)
                })?;
                self.llama_tokens(prompt).await
            }
            (EngineKind::Tgi, ApiEndpoint::Completions) => {
                let Some(tokens) = self.post("/tokenize", &json!({"inputs": text})).await? else {
                    return Ok(None);
                };
                let list = tokens
                    .as_array()
                    .ok_or_else(|| self.unexpected("/tokenize", "not a list", &tokens))?;
                Ok(Some(len(list.len())))
            }
            (EngineKind::Tgi, ApiEndpoint::Chat) => {
                let body = json!({"model": self.model, "messages": user});
                self.tgi_chat_count(&body).await
            }
            (EngineKind::Vllm | EngineKind::Sglang | EngineKind::Unspecified, _) => {
                let body = match endpoint {
                    ApiEndpoint::Chat => json!({
                        "model": self.model,
                        "messages": user,
                        "add_generation_prompt": true,
                    }),
                    ApiEndpoint::Completions => json!({"model": self.model, "prompt": text}),
                };
                self.vllm_count(&body).await
            }
        }
    }

    /// The engine's count of a chat request with `messages` (a whole conversation), or
    /// `None` where the kind has no way to count one (llama.cpp, transformers) or the
    /// engine no endpoint.
    pub async fn count_messages(&self, messages: &Value) -> Result<Option<u32>, AgentError> {
        match self.kind {
            EngineKind::Vllm | EngineKind::Sglang | EngineKind::Unspecified => {
                let body = json!({
                    "model": self.model,
                    "messages": messages,
                    "add_generation_prompt": true,
                });
                self.vllm_count(&body).await
            }
            EngineKind::Tgi => {
                let body = json!({"model": self.model, "messages": messages});
                self.tgi_chat_count(&body).await
            }
            EngineKind::LlamaCpp | EngineKind::Transformers => Ok(None),
        }
    }

    /// vLLM's and SGLang's `POST /tokenize` answer's `count` for `body`.
    async fn vllm_count(&self, body: &Value) -> Result<Option<u32>, AgentError> {
        let Some(answer) = self.post("/tokenize", body).await? else {
            return Ok(None);
        };
        let count = answer["count"]
            .as_u64()
            .ok_or_else(|| self.unexpected("/tokenize", "no `count`", &answer))?;
        Ok(Some(u32::try_from(count).unwrap_or(u32::MAX)))
    }

    /// TGI's `POST /chat_tokenize` answer's token count for `body`.
    async fn tgi_chat_count(&self, body: &Value) -> Result<Option<u32>, AgentError> {
        let Some(answer) = self.post("/chat_tokenize", body).await? else {
            return Ok(None);
        };
        let list = answer["tokenize_response"].as_array().ok_or_else(|| {
            self.unexpected("/chat_tokenize", "no `tokenize_response` list", &answer)
        })?;
        Ok(Some(len(list.len())))
    }

    /// llama.cpp's count of `content` as its completion and chat handlers tokenize it.
    async fn llama_tokens(&self, content: &str) -> Result<Option<u32>, AgentError> {
        let body = json!({"content": content, "add_special": true, "parse_special": true});
        let Some(answer) = self.post("/tokenize", &body).await? else {
            return Ok(None);
        };
        let tokens = answer["tokens"]
            .as_array()
            .ok_or_else(|| self.unexpected("/tokenize", "no `tokens` list", &answer))?;
        Ok(Some(len(tokens.len())))
    }

    /// POSTs `body` to `path`: the JSON answer, `None` on 404, an error otherwise.
    async fn post(&self, path: &str, body: &Value) -> Result<Option<Value>, AgentError> {
        let url = format!("{}{path}", self.base_url);
        let resp = send_idempotent(|| self.client.post(&url).json(body)).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(AgentError::Prompt(format!(
                "{path} answered {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        Ok(Some(resp.json::<Value>().await?))
    }

    fn unexpected(&self, path: &str, what: &str, answer: &Value) -> AgentError {
        let shown: String = answer.to_string().chars().take(200).collect();
        AgentError::Prompt(format!("{}{path} answered {what}: {shown}", self.base_url))
    }
}

fn len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
