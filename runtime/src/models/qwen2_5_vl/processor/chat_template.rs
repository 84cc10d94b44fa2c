//! The checkpoint's Jinja chat template, rendered with minijinja as transformers renders it.
//!
//! transformers compiles chat templates with `trim_blocks` and `lstrip_blocks` on and the
//! `loopcontrols` extension, and provides `raise_exception`; the same environment is set up here
//! so a hub template renders to the same text. The template is looked up where transformers
//! looks: `chat_template.json` (key `chat_template`), then `chat_template.jinja`, then
//! `tokenizer_config.json` (key `chat_template`).

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Context, Error, Result};

/// Name under which the single template is registered in its environment.
const TEMPLATE_NAME: &str = "chat";

/// One part of a message's content, in the Hugging Face message format.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentPart {
    /// An image placeholder; the template renders `<|vision_start|><|image_pad|><|vision_end|>`.
    Image,
    Text {
        text: String,
    },
}

/// A chat message: `{role, content: [{type: "image"}, {type: "text", text}]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Vec<ContentPart>,
}

impl ChatMessage {
    /// A user turn: the image (if any) first, then the text.
    pub fn user(with_image: bool, text: &str) -> Self {
        let mut content = Vec::new();
        if with_image {
            content.push(ContentPart::Image);
        }
        content.push(ContentPart::Text { text: text.to_string() });
        ChatMessage { role: "user".into(), content }
    }

    /// An assistant turn holding `text`.
    pub fn assistant(text: &str) -> Self {
        ChatMessage { role: "assistant".into(), content: vec![ContentPart::Text { text: text.to_string() }] }
    }
}

/// A compiled chat template and the special tokens it may refer to.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token`, `pad_token`, `unk_token` strings from `tokenizer_config.json`.
    special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("special_tokens", &self.special_tokens).finish()
    }
}

impl ChatTemplate {
    /// Compile `source` with transformers' Jinja settings.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        env.set_syntax(syntax.build().map_err(|e| Error::msg(e.to_string()))?);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| Error::msg(format!("chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, special_tokens: Vec::new() })
    }

    /// Find and compile the template in a checkpoint directory; the error lists the places
    /// searched. `tokenizer_config.json`'s special token strings are made available to it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer_config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let (source, origin) = find_template(dir, tokenizer_config.as_ref())?;
        let mut template = Self::new(&source).with_context(|| origin.display().to_string())?;
        if let Some(cfg) = &tokenizer_config {
            template.special_tokens = special_token_strings(cfg);
        }
        Ok(template)
    }

    /// Compile a template found in a parsed `tokenizer_config.json` (the embedded tiny preset).
    pub(crate) fn from_tokenizer_config(cfg: &Value, origin: &str) -> Result<Self> {
        let source =
            template_in(cfg, origin)?.with_context(|| format!("{origin}: no key \"chat_template\""))?;
        let mut template = Self::new(&source).with_context(|| origin.to_string())?;
        template.special_tokens = special_token_strings(cfg);
        Ok(template)
    }

    /// Render `messages`; with `add_generation_prompt` the assistant header is appended.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| Error::msg(e.to_string()))?;
        let mut ctx = serde_json::Map::new();
        for (key, value) in &self.special_tokens {
            ctx.insert(key.clone(), Value::String(value.clone()));
        }
        ctx.insert("messages".into(), serde_json::to_value(messages)?);
        ctx.insert("add_generation_prompt".into(), Value::Bool(add_generation_prompt));
        template
            .render(minijinja::Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| Error::msg(format!("rendering the chat template: {e}")))
    }
}

fn read_json_if_present(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| path.display().to_string())?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The `chat_template` key of a JSON config: a string, or a list of named templates of which
/// transformers uses the one called `default`.
fn template_in(cfg: &Value, origin: &str) -> Result<Option<String>> {
    match cfg.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(items)) => {
            let default = items.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            let source = default.and_then(|t| t.get("template")).and_then(Value::as_str);
            Ok(Some(
                source
                    .with_context(|| {
                        format!("{origin}: key \"chat_template\" has no template named \"default\"")
                    })?
                    .to_string(),
            ))
        }
        Some(other) => crate::bail!("{origin}: key \"chat_template\": expected a string, got {other}"),
    }
}

/// The template's source and the file it came from, in transformers' lookup order.
fn find_template(dir: &Path, tokenizer_config: Option<&Value>) -> Result<(String, PathBuf)> {
    let json_path = dir.join("chat_template.json");
    if let Some(cfg) = read_json_if_present(&json_path)? {
        let origin = json_path.display().to_string();
        let source =
            template_in(&cfg, &origin)?.with_context(|| format!("{origin}: no key \"chat_template\""))?;
        return Ok((source, json_path));
    }
    let jinja_path = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&jinja_path) {
        Ok(source) => return Ok((source, jinja_path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&jinja_path, e)),
    }
    let config_path = dir.join("tokenizer_config.json");
    if let Some(cfg) = tokenizer_config {
        if let Some(source) = template_in(cfg, &config_path.display().to_string())? {
            return Ok((source, config_path));
        }
    }
    crate::bail!(
        "no chat template in {}: looked for chat_template.json, chat_template.jinja and the \"chat_template\" key of tokenizer_config.json",
        dir.display()
    )
}

/// `bos_token` and friends as strings; transformers also accepts `{content: ...}` objects.
fn special_token_strings(cfg: &Value) -> Vec<(String, String)> {
    ["bos_token", "eos_token", "pad_token", "unk_token"]
        .iter()
        .filter_map(|key| {
            let v = cfg.get(*key)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(Value::as_str))?;
            Some((key.to_string(), s.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2.5-VL-Instruct's template, as carried by the tiny preset's `tokenizer_config.json`.
    fn qwen_template() -> ChatTemplate {
        let cfg: Value = serde_json::from_str(super::super::TINY_TOKENIZER_CONFIG).unwrap();
        ChatTemplate::from_tokenizer_config(&cfg, "tiny tokenizer_config.json").unwrap()
    }

    #[test]
    fn qwen_user_turn_with_image_renders_exactly() {
        let t = qwen_template();
        let text = t.render(&[ChatMessage::user(true, "What is shown?")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
             <|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn assistant_turn_closes_with_im_end() {
        let t = qwen_template();
        let messages = [ChatMessage::user(false, "Hi"), ChatMessage::assistant("B")];
        let text = t.render(&messages, false).unwrap();
        assert!(
            text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n"),
            "{text:?}"
        );
    }

    #[test]
    fn lookup_order_is_json_then_jinja_then_tokenizer_config() {
        let dir = tempfile::tempdir().unwrap();
        let render = |dir: &Path| {
            ChatTemplate::from_dir(dir).unwrap().render(&[ChatMessage::user(false, "x")], false).unwrap()
        };
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"chat_template": "from tokenizer_config"}"#,
        )
        .unwrap();
        assert_eq!(render(dir.path()), "from tokenizer_config");
        std::fs::write(dir.path().join("chat_template.jinja"), "from jinja").unwrap();
        assert_eq!(render(dir.path()), "from jinja");
        std::fs::write(dir.path().join("chat_template.json"), r#"{"chat_template": "from json"}"#).unwrap();
        assert_eq!(render(dir.path()), "from json");
    }

    #[test]
    fn missing_template_lists_the_places_searched() {
        let dir = tempfile::tempdir().unwrap();
        let err = ChatTemplate::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chat_template.json") && err.contains("tokenizer_config.json"), "{err}");
    }

    #[test]
    fn template_helpers_transformers_provides_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}\
             {% if not add_generation_prompt %}{{ raise_exception('no prompt') }}{% endif %}",
        )
        .unwrap();
        let two = [ChatMessage::user(false, "a"), ChatMessage::assistant("b")];
        assert_eq!(t.render(&two, true).unwrap(), "user");
        assert!(t.render(&two, false).unwrap_err().to_string().contains("no prompt"));
    }
}
