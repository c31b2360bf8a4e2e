//! Text generation over a loaded model: prompt processing in micro-batches, sampling, streaming
//! detokenization, stop conditions, and the timings a user sees in the summary.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::model::{LogitsWanted, Model, RouteObserver, State};
use crate::sampling::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Timings and counts of one generation.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub prompt_seconds: f64,
    pub generated_tokens: usize,
    pub generation_seconds: f64,
    pub stop_reason: String,
}

impl GenStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }
    pub fn generation_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_seconds.max(1e-9)
    }
}

/// Options of one generation.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub ubatch: usize,
}

/// A model, its tokenizer and one sequence's state, reusable across turns.
pub struct Session<'m> {
    pub model: &'m Model,
    pub tokenizer: &'m Tokenizer,
    pub state: State,
    /// Tokens in the KV cache, in order.
    pub tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, tokenizer: &'m Tokenizer, n_ctx: usize) -> Session<'m> {
        Session {
            model,
            tokenizer,
            state: model.new_state(n_ctx),
            tokens: Vec::new(),
        }
    }

    /// Evaluates `new_tokens` after what is cached, reusing the longest common prefix when
    /// `reuse_prefix_of` is the full desired sequence. Returns the last position's logits.
    pub fn feed(
        &mut self,
        new_tokens: &[u32],
        ubatch: usize,
        mut observer: Option<&mut dyn RouteObserver>,
    ) -> Result<Vec<f32>> {
        if new_tokens.is_empty() {
            bail!("nothing to evaluate: the prompt is empty");
        }
        if self.tokens.len() + new_tokens.len() > self.state.n_ctx {
            bail!(
                "the prompt ({} tokens{}) does not fit in the context of {} tokens (raise -c, up to the model's {})",
                new_tokens.len(),
                if self.tokens.is_empty() { String::new() } else { format!(" after {} cached", self.tokens.len()) },
                self.state.n_ctx,
                self.model.cfg.n_ctx_train
            );
        }
        let mut last = Vec::new();
        let chunks: Vec<&[u32]> = new_tokens.chunks(ubatch.max(1)).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let wanted = if i + 1 == chunks.len() {
                LogitsWanted::Last
            } else {
                LogitsWanted::None
            };
            let out = self.model.forward(
                &mut self.state,
                chunk,
                wanted,
                observer
                    .as_mut()
                    .map(|o| &mut **o as &mut dyn RouteObserver),
            )?;
            self.tokens.extend_from_slice(chunk);
            if wanted == LogitsWanted::Last {
                last = out.logits;
            }
        }
        Ok(last)
    }

    /// Sets the cache to `tokens`: keeps the common prefix, evaluates the rest.
    pub fn sync_to(
        &mut self,
        tokens: &[u32],
        ubatch: usize,
        observer: Option<&mut dyn RouteObserver>,
    ) -> Result<Vec<f32>> {
        let mut common = self
            .tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        if common == tokens.len() {
            // Re-evaluate the last token to get its logits.
            common = common.saturating_sub(1);
        }
        self.tokens.truncate(common);
        self.state.truncate(common);
        self.feed(&tokens[common..], ubatch, observer)
    }

    /// Generates after the cached tokens, given the last logits; `on_text` receives text as it
    /// becomes final. Returns the generated text and statistics.
    pub fn generate(
        &mut self,
        mut logits: Vec<f32>,
        opts: &GenOptions,
        on_text: &mut dyn FnMut(&str) -> Result<()>,
        mut observer: Option<&mut dyn RouteObserver>,
    ) -> Result<(String, GenStats)> {
        let mut sampler = Sampler::new(opts.sampler.clone());
        let mut decoder = StreamDecoder::new(self.tokenizer, false);
        let mut text = String::new();
        let mut emitted = 0usize;
        let mut stats = GenStats::default();
        let start = Instant::now();
        let max_stop = opts.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut stop_reason = "max tokens";
        for _ in 0..opts.max_tokens {
            let recent_from = self
                .tokens
                .len()
                .saturating_sub(opts.sampler.repeat_last_n.max(0) as usize);
            let id = sampler.sample(&mut logits, &self.tokens[recent_from..]);
            stats.generated_tokens += 1;
            if !opts.ignore_eos && self.tokenizer.is_eog(id) {
                stop_reason = "end of generation token";
                break;
            }
            text.push_str(&decoder.push(id));
            // Stop strings: cut at the first match; hold back text that may start one.
            if let Some((pos, _)) = opts
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()).map(|p| (p, s)))
                .min_by_key(|(p, _)| *p)
            {
                text.truncate(pos);
                if pos > emitted {
                    on_text(&text[emitted..])?;
                }
                emitted = text.len();
                stop_reason = "stop string";
                break;
            }
            let mut safe = text.len().saturating_sub(max_stop.saturating_sub(1));
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            if safe > emitted {
                on_text(&text[emitted..safe])?;
                emitted = safe;
            }
            if self.tokens.len() >= self.state.n_ctx {
                stop_reason = "context full";
                break;
            }
            // The step reuses the state's buffers and the logits vector: no allocation.
            self.model.forward_in_place(
                &mut self.state,
                &[id],
                LogitsWanted::Last,
                observer
                    .as_mut()
                    .map(|o| &mut **o as &mut dyn RouteObserver),
            )?;
            self.tokens.push(id);
            logits.copy_from_slice(self.state.logits());
        }
        if stop_reason != "stop string" {
            text.push_str(&decoder.finish());
            if text.len() > emitted {
                on_text(&text[emitted..])?;
            }
        }
        stats.generation_seconds = start.elapsed().as_secs_f64();
        stats.stop_reason = stop_reason.to_string();
        Ok((text, stats))
    }
}
