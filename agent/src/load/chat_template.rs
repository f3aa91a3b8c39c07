//! A model's chat template, rendered locally as the engine renders it, so a chat prompt's
//! exact token count needs no `/tokenize` (which `transformers serve`, TGI's chat path and
//! others lack).
//!
//! `transformers` (and vLLM, which calls it) renders the Jinja template with
//! `trim_blocks` and `lstrip_blocks` on, `messages`, `add_generation_prompt` and the
//! tokenizer's special tokens (`bos_token`, `eos_token`, …) as variables, `raise_exception`
//! as a function, and Python string methods on values; then it tokenizes the text without
//! adding special tokens (the template writes them). [`ChatTemplate`] does the same with
//! minijinja and its Python-compatibility methods.
//!
//! The template is the model folder's `chat_template.jinja` (newer `transformers` saves it
//! there), else `tokenizer_config.json`'s `chat_template` (a string, or a list of named
//! templates of which `default` is used).

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde_json::Value as Json;

use crate::error::AgentError;

/// A chat template and the special tokens its rendering sees.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Special tokens from `tokenizer_config.json` (`bos_token`, `eos_token`, …).
    tokens: Vec<(String, String)>,
    source: String,
}

const TEMPLATE: &str = "chat";

/// Special-token variables a template may use.
const TOKEN_KEYS: [&str; 5] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
];

impl ChatTemplate {
    /// The chat template of the model folder `dir`, if it has one.
    pub fn from_dir(dir: &Path) -> Result<Option<ChatTemplate>, AgentError> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Json = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                AgentError::Prompt(format!("cannot read {}: {e}", config_path.display()))
            })?,
            Err(_) => Json::Null,
        };
        let jinja = dir.join("chat_template.jinja");
        let (template, source) = match std::fs::read_to_string(&jinja) {
            Ok(t) => (t, jinja.display().to_string()),
            Err(_) => match template_in_config(&config) {
                Some(t) => (t, config_path.display().to_string()),
                None => return Ok(None),
            },
        };
        ChatTemplate::new(&template, &config, source).map(Some)
    }

    /// A template from its text and the tokenizer config holding its special tokens.
    pub fn new(template: &str, config: &Json, source: String) -> Result<Self, AgentError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE, template.to_owned())
            .map_err(|e| AgentError::Prompt(format!("chat template {source}: {e}")))?;
        let tokens = TOKEN_KEYS
            .iter()
            .filter_map(|k| special_token(config, k).map(|v| ((*k).to_owned(), v)))
            .collect();
        Ok(ChatTemplate {
            env,
            tokens,
            source,
        })
    }

    /// Where the template came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text the engine tokenizes for one user message, with the generation prompt.
    pub fn render_user(&self, content: &str) -> Result<String, AgentError> {
        let template = self
            .env
            .get_template(TEMPLATE)
            .map_err(|e| AgentError::Prompt(format!("chat template {}: {e}", self.source)))?;
        let tokens: std::collections::BTreeMap<&str, &str> = self
            .tokens
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ctx = context! {
            messages => vec![context! { role => "user", content => content }],
            add_generation_prompt => true,
            ..Value::from_serialize(&tokens)
        };
        template
            .render(ctx)
            .map_err(|e| AgentError::Prompt(format!("chat template {}: {e}", self.source)))
    }
}

/// `chat_template` of a tokenizer config: a string, or the `default` of a list of
/// `{name, template}`.
fn template_in_config(config: &Json) -> Option<String> {
    match &config["chat_template"] {
        Json::String(t) => Some(t.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_owned),
        _ => None,
    }
}

/// A special token of a tokenizer config: a string, or an added-token object's `content`.
fn special_token(config: &Json, key: &str) -> Option<String> {
    match &config[key] {
        Json::String(t) => Some(t.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// SmolLM2's template (the device recipe's model), as its `chat_template.jinja` holds it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_smollm2_as_transformers_does() {
        let t = ChatTemplate::new(SMOLLM2, &json!({}), "test".into()).unwrap();
        assert_eq!(
            t.render_user("the cat").unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nthe cat<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn special_tokens_python_methods_and_block_trimming_follow_transformers() {
        // A Llama-3-like template: bos_token from the config (as an added-token object),
        // `.strip()` (a Python method), and blocks on their own lines that trim_blocks /
        // lstrip_blocks remove.
        let template = "{{ bos_token }}\n{% for m in messages %}\n    {{ '<|' + m['role'] + '|>' + m['content'].strip() }}\n{% endfor %}\n{% if add_generation_prompt %}<|assistant|>{% endif %}";
        let config = json!({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>"});
        let t = ChatTemplate::new(template, &config, "test".into()).unwrap();
        // What Python's jinja2 renders with trim_blocks and lstrip_blocks (checked with
        // jinja2 3.1): the block lines vanish, the expression line keeps its indent.
        assert_eq!(
            t.render_user("  hi  ").unwrap(),
            "<s>\n    <|user|>hi\n<|assistant|>"
        );
    }

    #[test]
    fn a_template_that_raises_is_an_error_that_names_it() {
        let t = ChatTemplate::new(
            "{{ raise_exception('roles must alternate') }}",
            &json!({}),
            "cfg.json".into(),
        )
        .unwrap();
        let e = t.render_user("x").unwrap_err().to_string();
        assert!(
            e.contains("roles must alternate") && e.contains("cfg.json"),
            "{e}"
        );
    }

    #[test]
    fn finds_the_template_file_or_the_config_entry() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ChatTemplate::from_dir(dir.path()).unwrap().is_none());
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            json!({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ messages[0].content }}"}]}).to_string(),
        )
        .unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.render_user("x").unwrap(), "Dx");
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "J{{ messages[0].content }}",
        )
        .unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap().unwrap();
        assert_eq!(t.render_user("x").unwrap(), "Jx");
        assert!(t.source().ends_with("chat_template.jinja"));
    }
}
