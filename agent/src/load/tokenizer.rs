//! Local token counting with a model's Hugging Face `tokenizer.json`.
//!
//! vLLM counts a prompt with the model's Hugging Face tokenizer: a completions prompt with
//! `add_special_tokens=True` (so a BOS when the tokenizer's post-processor adds one), a chat
//! prompt by rendering the chat template and tokenizing the result without adding special
//! tokens (the template writes them). [`LocalTokenizer`] loads the same `tokenizer.json`
//! (truncation and padding off, as `transformers` calls it) and counts the same way, so
//! prompts can be sized without a `/tokenize` round trip each. [`find_tokenizer_json`] finds a
//! model's file in its local folder or the Hugging Face cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::AgentError;
use crate::load::chat_template::ChatTemplate;

/// A model's tokenizer, loaded from its `tokenizer.json`, with the chat template beside it
/// when the folder has one. Cheap to clone.
#[derive(Clone)]
pub struct LocalTokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    source: Arc<str>,
    chat: Option<Arc<ChatTemplate>>,
}

impl std::fmt::Debug for LocalTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTokenizer")
            .field("source", &self.source)
            .field("chat_template", &self.chat.as_ref().map(|c| c.source()))
            .finish_non_exhaustive()
    }
}

impl LocalTokenizer {
    /// Loads the `tokenizer.json` at `path`, and the model's chat template from the same
    /// folder when there is one (see [`ChatTemplate::from_dir`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AgentError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| AgentError::Prompt(format!("cannot load tokenizer {source}: {e}")))?;
        let mut tokenizer = Self::wrap(inner, source)?;
        if let Some(dir) = path.parent() {
            tokenizer.chat = ChatTemplate::from_dir(dir)?.map(Arc::new);
        }
        Ok(tokenizer)
    }

    /// The model's chat template, when its folder has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_deref()
    }

    /// Loads a tokenizer from the text of a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self, AgentError> {
        let inner = tokenizers::Tokenizer::from_bytes(json.as_bytes())
            .map_err(|e| AgentError::Prompt(format!("cannot load tokenizer JSON: {e}")))?;
        Self::wrap(inner, "<json>".to_owned())
    }

    fn wrap(mut inner: tokenizers::Tokenizer, source: String) -> Result<Self, AgentError> {
        // `transformers` calls the tokenizer with truncation and padding off whatever the file
        // says, and so does vLLM for a prompt it counts.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| AgentError::Prompt(format!("tokenizer {source}: {e}")))?;
        Ok(LocalTokenizer {
            inner: Arc::new(inner),
            source: source.into(),
            chat: None,
        })
    }

    /// Where the tokenizer came from (its path, or `<json>`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of tokens of `text`. `add_special_tokens` as in vLLM: `true` for a
    /// completions prompt (adds what the post-processor adds, e.g. a BOS), `false` for text
    /// inside a chat template.
    pub fn count(&self, text: &str, add_special_tokens: bool) -> Result<u32, AgentError> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| AgentError::Prompt(format!("tokenizer {}: {e}", self.source)))?;
        u32::try_from(encoding.len())
            .map_err(|_| AgentError::Prompt(format!("tokenizer {}: too many tokens", self.source)))
    }

    /// Number of tokens of a chat request with `text` as its one user message, as vLLM and
    /// `transformers` count it: the model's chat template rendered with the generation
    /// prompt, tokenized without adding special tokens (the template writes them). An error
    /// without a chat template.
    pub fn count_chat(&self, text: &str) -> Result<u32, AgentError> {
        let template = self.chat_template().ok_or_else(|| {
            AgentError::Prompt(format!(
                "tokenizer {}: no chat template beside it",
                self.source
            ))
        })?;
        self.count(&template.render_user(text)?, false)
    }
}

/// The `tokenizer.json` of `model`, if one is on this host: in the folder `model_paths` maps
/// it to, in `model` itself when it is a local folder, or in the Hugging Face cache
/// (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`;
/// `models--org--name/snapshots/<rev>/tokenizer.json`, the `main` revision first, else the
/// newest snapshot). A `model_paths` value that is not a folder is looked up in the cache as a
/// repository id before `model`.
pub fn find_tokenizer_json(model: &str, model_paths: &BTreeMap<String, String>) -> Option<PathBuf> {
    find_in(model, model_paths, hf_hub_cache().as_deref())
}

fn find_in(
    model: &str,
    model_paths: &BTreeMap<String, String>,
    hub: Option<&Path>,
) -> Option<PathBuf> {
    let names: Vec<&str> = model_paths
        .get(model)
        .map(String::as_str)
        .into_iter()
        .chain([model])
        .collect();
    names
        .iter()
        .map(|name| Path::new(name).join("tokenizer.json"))
        .find(|p| p.is_file())
        .or_else(|| {
            let hub = hub?;
            names
                .iter()
                .find_map(|name| cached_tokenizer_json(hub, name))
        })
}

/// The Hugging Face hub cache folder, as `huggingface_hub` resolves it.
fn hf_hub_cache() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let home = var("HF_HOME").map(PathBuf::from).or_else(|| {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|cache| cache.join("huggingface"))
    })?;
    Some(home.join("hub"))
}

/// `tokenizer.json` of repository `repo` (`org/name`) in the hub cache at `hub`.
fn cached_tokenizer_json(hub: &Path, repo: &str) -> Option<PathBuf> {
    if repo.is_empty() || repo.starts_with(['/', '.']) || repo.split('/').count() > 2 {
        return None;
    }
    let dir = hub.join(format!("models--{}", repo.replace('/', "--")));
    let snapshots = dir.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(dir.join("refs").join("main")) {
        let path = snapshots.join(rev.trim()).join("tokenizer.json");
        if !rev.trim().is_empty() && path.is_file() {
            return Some(path);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("tokenizer.json"))
        .filter_map(|path| {
            let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
            Some((modified, path))
        })
        .max()
        .map(|(_, path)| path)
}

#[cfg(test)]
mod tests;
