//! `moe-edge chat`: an interactive conversation using the model's chat template.
//!
//! Each turn re-renders the whole conversation with the template and reuses the KV cache for the
//! common prefix, so only the new text is evaluated. `/reset` clears the history; Ctrl-D quits.

use std::io::{BufRead, Write};

use anyhow::Result;
use clap::Args;

use super::run::SamplingArgs;
use super::ModelArgs;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::generate::{GenOptions, Session};
use crate::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// System message placed first in the conversation
    #[arg(long = "system")]
    pub system: Option<String>,
    /// Most tokens per reply
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    pub n_predict: usize,
}

pub fn run(args: ChatArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let meta = model.file.metadata();
    let tokenizer = Tokenizer::from_gguf(meta)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.file.path().display()))?;
    let piece = |id: Option<u32>| {
        id.map(|i| tokenizer.token_text(i).to_string())
            .unwrap_or_default()
    };
    let (bos, eos) = (piece(tokenizer.bos()), piece(tokenizer.eos()));
    let template = match meta.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        Some(src) => ChatTemplate::new(Some(src), &bos, &eos)?,
        None => {
            let has_chatml = tokenizer.encode("<|im_start|>", false, true).len() == 1;
            eprintln!(
                "moe-edge: this model has no chat template; using the {} fallback",
                if has_chatml {
                    "ChatML"
                } else {
                    "plain 'role: content'"
                }
            );
            ChatTemplate::fallback(has_chatml, &bos, &eos)?
        }
    };
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &args.system {
        history.push(ChatMessage::new("system", s.clone()));
    }
    let mut session = Session::new(model, &tokenizer, loaded.n_ctx);
    let opts = GenOptions {
        max_tokens: args.n_predict,
        sampler: args.sampling.config(),
        stop: Vec::new(),
        ignore_eos: false,
        ubatch: args.model.ubatch,
    };
    eprintln!("moe-edge chat: type a message; /reset clears the history; Ctrl-D quits.");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            writeln!(stdout)?;
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if line.trim() == "/reset" {
            history.retain(|m| m.role == "system");
            eprintln!("(history cleared)");
            continue;
        }
        history.push(ChatMessage::new("user", line));
        let prompt = template.render(&history, true)?;
        let add_bos = tokenizer.add_bos() && !bos.is_empty() && !prompt.starts_with(&bos);
        let tokens = tokenizer.encode(&prompt, add_bos, true);
        let logits = match session.sync_to(&tokens, args.model.ubatch, None) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e:#}; use /reset to start over");
                history.pop();
                continue;
            }
        };
        let (reply, _) = session.generate(
            logits,
            &opts,
            &mut |t| {
                stdout.write_all(t.as_bytes())?;
                stdout.flush()?;
                Ok(())
            },
            None,
        )?;
        writeln!(stdout)?;
        history.push(ChatMessage::new("assistant", reply.trim()));
    }
    Ok(())
}
