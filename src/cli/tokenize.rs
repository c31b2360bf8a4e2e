//! `moe-edge tokenize`: like llama.cpp's llama-tokenize. Works on vocab-only GGUF files.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// GGUF file with tokenizer metadata (default: the bundled model)
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// Text to tokenize
    #[arg(short = 'p', long = "prompt", group = "input")]
    pub prompt: Option<String>,
    /// Read the text from a file
    #[arg(short = 'f', long = "file", group = "input")]
    pub file: Option<PathBuf>,
    /// Read the text from standard input
    #[arg(long = "stdin", group = "input")]
    pub stdin: bool,
    /// Do not add BOS/EOS (llama.cpp's add_special = false)
    #[arg(long = "no-bos")]
    pub no_bos: bool,
    /// Treat special-token text (e.g. <|im_start|>) as plain text
    #[arg(long = "no-parse-special")]
    pub no_parse_special: bool,
    /// Print only a JSON array of ids on one line
    #[arg(long = "ids")]
    pub ids: bool,
    /// Print the number of tokens only
    #[arg(long = "show-count")]
    pub show_count: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let path = args.model.clone().unwrap_or_else(super::bundled_model_path);
    let file = GgufFile::open(&path)?;
    let tok = Tokenizer::from_gguf(file.metadata())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let text = match (&args.prompt, &args.file, args.stdin) {
        (Some(p), _, _) => p.clone(),
        (None, Some(f), _) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read standard input")?;
            s
        }
        (None, None, false) => anyhow::bail!("give the text with --prompt, --file or --stdin"),
    };
    let ids = tok.encode(&text, !args.no_bos, !args.no_parse_special);
    if args.show_count {
        println!("{}", ids.len());
    } else if args.ids {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in ids {
            let piece = String::from_utf8_lossy(&tok.token_to_piece(id, true)).into_owned();
            println!("{id:6} -> '{piece}'");
        }
    }
    Ok(())
}
