//! How text becomes a model's token sequence for SFT and DPO: the Stanford Alpaca prompt (the
//! paper's "Alpaca-style" QA format), the model's own chat template (tokenizer_config.json's
//! `chat_template`, or chat_template.jinja, which wins as it does in transformers) rendered
//! with minijinja under HF's conventions, and the model's BOS/EOS conventions, so a sequence
//! gets exactly one BOS and exactly one EOS after each response.

use crate::error::{Result, TrainError};
use minijinja::{Environment, ErrorKind, Value};
use serde_json::Value as Json;
use solar_model::tokenizer::Tokenizer;
use solar_model::LlamaConfig;
use std::collections::BTreeMap;
use std::path::Path;

/// Stanford Alpaca's prompt for an instruction with an input; `{instruction}` and `{input}` are
/// replaced, the response follows the prompt directly.
pub const ALPACA_PROMPT_WITH_INPUT: &str =
    "Below is an instruction that describes a task, paired with an input \
that provides further context. Write a response that appropriately completes the request.\n\n\
### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

/// Stanford Alpaca's prompt for an instruction alone.
pub const ALPACA_PROMPT_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response \
that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// The chat template used when the model has none: the Alpaca format turn by turn. A system
/// message takes the place of Alpaca's preamble; EOS closes each response, as HF templates do.
pub const BUILTIN_CHAT_TEMPLATE: &str = "{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{{ message['content'] + '\\n\\n' }}
{%- elif message['role'] == 'user' -%}
{%- if loop.first -%}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\\n\\n' }}{%- endif -%}
{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}
{%- elif message['role'] == 'assistant' -%}
{{ '### Response:\\n' + message['content'] + eos_token }}{%- if not loop.last -%}{{ '\\n\\n' }}{%- endif -%}
{%- else -%}
{{ raise_exception('unknown role: ' + message['role']) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '### Response:\\n' }}{%- endif -%}";

/// The Alpaca prompt for one instruction (with its input when that is not empty).
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    if input.trim().is_empty() {
        ALPACA_PROMPT_NO_INPUT.replace("{instruction}", instruction)
    } else {
        // Input first, so an instruction that happens to contain "{input}" stays as written.
        ALPACA_PROMPT_WITH_INPUT.replace("{input}", input).replacen("{instruction}", instruction, 1)
    }
}

/// The Alpaca format with a system prompt in place of the preamble (OpenOrca rows carry one).
pub fn system_prompt(system: &str, question: &str) -> String {
    if system.trim().is_empty() {
        return alpaca_prompt(question, "");
    }
    format!("{system}\n\n### Instruction:\n{question}\n\n### Response:\n")
}

/// One chat message as HF templates see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    fn to_value(&self) -> Value {
        let fields = [("role", self.role.as_str()), ("content", self.content.as_str())];
        Value::from(
            fields.map(|(k, v)| (k.to_string(), Value::from(v))).into_iter().collect::<BTreeMap<_, _>>(),
        )
    }
}

/// The messages of a JSON field (`[{role, content}, ...]`); errors name the field and index.
pub fn parse_messages(field: &str, v: &Json) -> std::result::Result<Vec<Message>, String> {
    let Json::Array(items) = v else {
        return Err(format!("field `{field}` must be a list of messages, got {v}"));
    };
    let text = |m: &serde_json::Map<String, Json>, i: usize, key: &str| match m.get(key) {
        Some(Json::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("field `{field}[{i}].{key}` must be a string, got {other}")),
        None => Err(format!("missing field `{field}[{i}].{key}`")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Json::Object(m) = item else {
            return Err(format!("field `{field}[{i}]` must be an object with `role` and `content`"));
        };
        out.push(Message { role: text(m, i, "role")?, content: text(m, i, "content")? });
    }
    if out.is_empty() {
        return Err(format!("field `{field}` is an empty list of messages"));
    }
    Ok(out)
}

/// A special token's text in tokenizer_config.json: a string or an AddedToken object.
fn token_text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn read_tokenizer_config(model_dir: &Path) -> Result<serde_json::Map<String, Json>> {
    let path = model_dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(serde_json::Map::new());
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, format!("cannot read: {e}")))?;
    match serde_json::from_str(&text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(TrainError::file(&path, "expected a JSON object")),
        Err(e) => Err(TrainError::file(&path, format!("not valid JSON: {e}"))),
    }
}

/// The model's BOS and EOS, as ids and as the text templates write them.
#[derive(Clone, Debug)]
pub struct Specials {
    pub bos: Option<(u32, String)>,
    pub eos: u32,
    pub eos_text: String,
    /// What the tokenizer's post-processor puts before a text when asked for special tokens.
    prefix: Vec<u32>,
}

impl Specials {
    /// tokenizer_config.json's `bos_token`/`eos_token` when the vocabulary has them (they are
    /// what HF templates and trainers use), else config.json's ids.
    pub fn load(tokenizer: &Tokenizer, model_dir: &Path, cfg: &LlamaConfig) -> Result<Specials> {
        let tc = read_tokenizer_config(model_dir)?;
        let named = |key: &str| {
            let text = token_text(tc.get(key))?;
            tokenizer.token_to_id(&text).map(|id| (id, text))
        };
        let from_id = |id: u32| -> Result<(u32, String)> { Ok((id, tokenizer.decode(&[id], false)?)) };
        let bos = match named("bos_token") {
            Some(b) => Some(b),
            None => cfg.bos_token_id.map(from_id).transpose()?,
        };
        let (eos, eos_text) = match named("eos_token") {
            Some(e) => e,
            None => match cfg.eos_token_ids.first() {
                Some(&id) => from_id(id)?,
                None => {
                    return Err(TrainError::file(
                        &model_dir.join("config.json"),
                        "the model has no eos_token_id: SFT and DPO close every response with EOS",
                    ))
                }
            },
        };
        // The post-processor's own leading tokens, found by encoding a probe both ways.
        let with = tokenizer.encode("a", true)?;
        let plain = tokenizer.encode("a", false)?;
        let at = with.windows(plain.len().max(1)).position(|w| w == plain.as_slice()).unwrap_or(0);
        Ok(Specials { bos, eos, eos_text, prefix: with[..at].to_vec() })
    }

    /// Tokens of the text that starts a sequence: the tokenizer's own leading special tokens
    /// unless the text already starts with the BOS text (a template that writes `bos_token`),
    /// so BOS is never doubled. Trailing special tokens are left out: EOS is ours to place.
    pub fn encode_start(&self, tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        let has_bos = self.bos.as_ref().is_some_and(|(_, b)| !b.is_empty() && text.starts_with(b.as_str()));
        let mut ids = if has_bos { Vec::new() } else { self.prefix.clone() };
        ids.extend(tokenizer.encode(text, false)?);
        Ok(ids)
    }

    /// A response without the EOS text a template (or the data) closed it with: (body, what
    /// followed the EOS). The caller appends the EOS id itself, exactly once.
    pub fn split_eos<'a>(&self, text: &'a str) -> (&'a str, &'a str) {
        let kept = text.trim_end();
        match kept.strip_suffix(self.eos_text.as_str()) {
            Some(body) if !self.eos_text.is_empty() => (body, &text[kept.len()..]),
            _ => (text, ""),
        }
    }
}

/// A chat template ready to render.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_text: String,
    eos_text: String,
    /// Where the template came from, for error messages.
    pub origin: String,
}

/// `raise_exception(msg)`: HF templates call it to reject a conversation.
fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// The model folder's template (chat_template.jinja, else tokenizer_config.json's
    /// `chat_template`, a string or a list of named templates where "default" is used), or
    /// the built-in Alpaca-style one.
    pub fn load(model_dir: &Path, specials: &Specials) -> Result<ChatTemplate> {
        let jinja = model_dir.join("chat_template.jinja");
        let (source, origin) = if jinja.is_file() {
            let s = std::fs::read_to_string(&jinja)
                .map_err(|e| TrainError::file(&jinja, format!("cannot read: {e}")))?;
            (s, jinja.display().to_string())
        } else {
            let origin = model_dir.join("tokenizer_config.json").display().to_string();
            match read_tokenizer_config(model_dir)?.get("chat_template") {
                Some(Json::String(s)) => (s.clone(), origin),
                Some(Json::Array(named)) => {
                    let pick = |want: Option<&str>| {
                        named
                            .iter()
                            .find(|t| want.is_none_or(|w| t.get("name").and_then(Json::as_str) == Some(w)))
                    };
                    match pick(Some("default")).or(pick(None)).and_then(|t| t.get("template")?.as_str()) {
                        Some(s) => (s.to_string(), origin),
                        None => {
                            return Err(TrainError::Msg(format!("{origin}: `chat_template` has no template")))
                        }
                    }
                }
                _ => (BUILTIN_CHAT_TEMPLATE.to_string(), "the built-in Alpaca chat template".to_string()),
            }
        };
        Self::from_source(source, origin, specials)
    }

    /// A template from its text, with HF's jinja settings: trim_blocks, lstrip_blocks,
    /// Python string methods (`.strip()`, ...), `raise_exception`, `tojson`.
    pub fn from_source(source: String, origin: String, specials: &Specials) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build();
        env.set_syntax(syntax.map_err(|e| TrainError::Msg(format!("{origin}: {e}")))?);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source)
            .map_err(|e| TrainError::Msg(format!("{origin}: not a valid chat template: {e}")))?;
        let bos_text = specials.bos.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
        Ok(ChatTemplate { env, bos_text, eos_text: specials.eos_text.clone(), origin })
    }

    /// The conversation as text; an error is the template's own message.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, String> {
        let template = self.env.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! {
                messages => messages.iter().map(Message::to_value).collect::<Vec<_>>(),
                bos_token => &self.bos_text,
                eos_token => &self.eos_text,
                add_generation_prompt => add_generation_prompt,
            })
            .map_err(|e| format!("chat template ({}): {e}", self.origin))
    }

    /// The template's text for `messages` (a prompt) followed by `more` (what answers it):
    /// (prompt rendered with the generation prompt, the text `more` adds after it). Templates
    /// whose prompt is not a prefix of the whole cannot be split into prompt and answer.
    pub fn render_split(
        &self,
        messages: &[Message],
        more: &[Message],
    ) -> std::result::Result<(String, String), String> {
        let prompt = self.render(messages, true)?;
        let all: Vec<Message> = messages.iter().chain(more).cloned().collect();
        let full = self.render(&all, false)?;
        match full.strip_prefix(prompt.as_str()) {
            Some(rest) => Ok((prompt, rest.to_string())),
            None => Err(format!(
                "chat template ({}): the prompt's text is not a prefix of the conversation's, so the answer \
                 cannot be told apart",
                self.origin
            )),
        }
    }
}
