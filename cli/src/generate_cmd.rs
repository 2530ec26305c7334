//! `solar-train generate`: text from a prompt, streamed to stdout token by token as it is
//! chosen. With --chat the prompt is a user message (after an optional --system message)
//! rendered through the model's own chat template (chat_template.jinja, else
//! tokenizer_config.json's `chat_template`) and encoded without adding special tokens, as
//! transformers' `apply_chat_template(..., add_generation_prompt=True)` does, so an instruct
//! model is talked to as it was trained. --chat with no --prompt on a terminal is a chat
//! session: one user line at a time, the conversation kept, an empty line or EOF ends it.

use crate::common::{load_adapted, CliError, Common};
use clap::Args;
use solar_model::generate::GenerateOptions;
use solar_model::tokenizer::Tokenizer;
use solar_model::Llama;
use solar_train::data::template::{ChatTemplate, Message, Specials};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  solar-train generate --model runs/demo/models/sft_both --prompt 'Q: What is 3+4?' --max-new-tokens 4
  solar-train generate --model SOLAR-10.7B-Instruct --chat --system 'Be brief.' --prompt 'Hi'")]
pub struct GenerateArgs {
    /// The model folder (HF layout, with tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// A LoRA adapter folder (PEFT's format) applied to --model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// The prompt: raw text (encoded with the tokenizer's special tokens, so BOS as the model
    /// expects), or with --chat the user's message. Needed unless --chat runs on a terminal.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Apply the model's chat template to the prompt (an instruct model's way).
    #[arg(long)]
    pub chat: bool,
    /// A system message before the user's (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 picks the most likely token every step (greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: draw from the smallest set of tokens holding this much probability.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep going past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print {"prompt_ids": [...], "output_ids": [...], "text": ...} (the generated tokens and
    /// their text) on stdout, once, instead of streaming.
    #[arg(long)]
    pub json: bool,
}

/// Usage errors only the combination shows (exit 2, before any work).
pub fn check(a: &GenerateArgs) -> Result<(), String> {
    let valid = a.temperature.is_finite() && a.temperature >= 0.0 && a.top_p > 0.0 && a.top_p <= 1.0;
    if !valid {
        return Err("--temperature must be finite and >= 0, --top-p in (0, 1]".into());
    }
    let interactive = a.chat && std::io::stdin().is_terminal() && !a.json;
    if a.prompt.is_none() && !interactive {
        return Err("generate needs --prompt TEXT (or --chat on a terminal for a chat session)".into());
    }
    Ok(())
}

struct Session<'a> {
    model: &'a Llama,
    tok: &'a Tokenizer,
    opts: GenerateOptions,
    stream: bool,
}

impl Session<'_> {
    /// Generates after `prompt`, printing the text as it grows when streaming; returns the
    /// new token ids and their text (special tokens skipped).
    fn run(&self, prompt: &[u32]) -> Result<(Vec<u32>, String), CliError> {
        let mut ids = Vec::new();
        let mut shown = String::new();
        let mut out = std::io::stdout().lock();
        self.model.generate_streaming(prompt, &self.opts, |id| {
            ids.push(id);
            if self.stream {
                // Decode the whole answer each time: a character split over tokens appears
                // once it is complete, never as a replacement character.
                let text = self.tok.decode(&ids, true)?;
                if let Some(new) = text.strip_prefix(shown.as_str()).filter(|n| !n.contains('\u{fffd}')) {
                    let _ = write!(out, "{new}").and_then(|()| out.flush());
                    shown = text;
                }
            }
            Ok(())
        })?;
        let text = self.tok.decode(&ids, true)?;
        if self.stream {
            let rest = text.strip_prefix(shown.as_str()).unwrap_or("");
            let _ = writeln!(out, "{rest}");
        }
        Ok((ids, text))
    }
}

pub fn generate(args: &GenerateArgs, common: &Common) -> Result<(), CliError> {
    let model = load_adapted(&args.model, args.adapter.as_deref(), common.run_on)?;
    let tok = Tokenizer::from_model_dir(&args.model)?;
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: common.seed,
        ignore_eos: args.ignore_eos,
    };
    let session = Session { model: &model, tok: &tok, opts, stream: !args.json };
    if !args.chat {
        let prompt = tok.encode(args.prompt.as_deref().unwrap_or_default(), true)?;
        return finish(args, &session, &prompt);
    }
    let specials = Specials::load(&tok, &args.model, &model.config)?;
    let template = ChatTemplate::load(&args.model, &specials)?;
    let mut messages: Vec<Message> = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message { role: "system".into(), content: system.clone() });
    }
    let encode = |messages: &[Message]| -> Result<Vec<u32>, CliError> {
        let text = template.render(messages, true).map_err(CliError)?;
        Ok(tok.encode(&text, false)?)
    };
    if let Some(prompt) = &args.prompt {
        messages.push(Message { role: "user".into(), content: prompt.clone() });
        return finish(args, &session, &encode(&messages)?);
    }
    eprintln!("chat with {} ({}); an empty line ends it", args.model.display(), template.origin);
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        let read =
            stdin.lock().read_line(&mut line).map_err(|e| CliError(format!("cannot read stdin: {e}")))?;
        let line = line.trim_end_matches(['\n', '\r']);
        if read == 0 || line.is_empty() {
            return Ok(());
        }
        messages.push(Message { role: "user".into(), content: line.to_string() });
        let (_, text) = session.run(&encode(&messages)?)?;
        messages.push(Message { role: "assistant".into(), content: text });
    }
}

/// One generation after `prompt`: streamed, or one JSON object.
fn finish(args: &GenerateArgs, session: &Session, prompt: &[u32]) -> Result<(), CliError> {
    let (ids, text) = session.run(prompt)?;
    if args.json {
        println!("{}", serde_json::json!({"prompt_ids": prompt, "output_ids": ids, "text": text}));
    }
    Ok(())
}
