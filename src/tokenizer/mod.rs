//! Tokenizers built from GGUF metadata alone, matching llama.cpp token for token.
//!
//! * `tokenizer.ggml.model = "llama"`: SentencePiece (scores, byte fallback `<0xNN>`, leading
//!   space) — [`spm`].
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE (merge ranks, GPT-2 byte alphabet) after the
//!   pre-tokenizer `tokenizer.ggml.pre` names — [`bpe`], [`pretokenize`].
//!
//! Special tokens (control, user-defined, unknown) are cut out of the text first when asked
//! (`parse_special`); user-defined ones always are. Decoding follows llama.cpp's
//! `token_to_piece` / `detokenize`, and [`StreamDecoder`] yields only complete UTF-8.
//!
//! Unicode category data: Unicode 15.1 (as llama.cpp), see `tools/gen_unicode_tables.py`.

mod bpe;
mod pretokenize;
mod regex;
mod spm;
mod unicode;
mod unicode_tables;

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::gguf::{Metadata, Value};
use pretokenize::{pre_settings, PreTokenizer};
use unicode::ByteUnicode;

pub use unicode_tables::UNICODE_VERSION;

/// Why a vocabulary could not be loaded. Messages name the metadata key.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("missing metadata key '{0}'")]
    MissingKey(String),
    #[error("bad metadata key '{key}': {why}")]
    BadKey { key: String, why: String },
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
}

fn bad(key: &str, why: impl Into<String>) -> TokenizerError {
    TokenizerError::BadKey {
        key: key.to_string(),
        why: why.into(),
    }
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

// Token attributes (llama.cpp's `llama_token_attr` bits).
const ATTR_UNKNOWN: u32 = 1 << 0;
const ATTR_UNUSED: u32 = 1 << 1;
const ATTR_NORMAL: u32 = 1 << 2;
const ATTR_CONTROL: u32 = 1 << 3;
const ATTR_USER_DEFINED: u32 = 1 << 4;
const ATTR_BYTE: u32 = 1 << 5;
const ATTR_LSTRIP: u32 = 1 << 7;
const ATTR_RSTRIP: u32 = 1 << 8;

/// Attribute of a GGUF token type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
fn attr_of_type(t: i64) -> u32 {
    match t {
        1 => ATTR_NORMAL,
        2 => ATTR_UNKNOWN,
        3 => ATTR_CONTROL,
        4 => ATTR_USER_DEFINED,
        5 => ATTR_UNUSED,
        6 => ATTR_BYTE,
        _ => 0,
    }
}

/// A fast multiplicative hash for the vocabulary maps. Their keys come from the model file and
/// never change, so probe lengths are fixed by the vocabulary, whatever text is looked up.
#[derive(Default, Clone, Copy)]
struct VocabHasher(u64);

impl VocabHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for VocabHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type VocabMap<V> = HashMap<String, V, BuildHasherDefault<VocabHasher>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Spm,
    Bpe,
}

struct TokenData {
    text: String,
    score: f32,
    attr: u32,
}

/// Special token ids (None: the vocabulary has none).
#[derive(Clone, Copy, Debug, Default)]
struct SpecialIds {
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    sep: Option<u32>,
    pad: Option<u32>,
    mask: Option<u32>,
    fim_pre: Option<u32>,
    fim_suf: Option<u32>,
    fim_mid: Option<u32>,
    fim_pad: Option<u32>,
    fim_rep: Option<u32>,
    fim_sep: Option<u32>,
}

/// A tokenizer loaded from GGUF metadata.
pub struct Tokenizer {
    kind: Kind,
    model: String,
    pre_name: String,
    tokens: Vec<TokenData>,
    token_to_id: VocabMap<u32>,
    /// BPE merges keyed by "left right", value = rank (first occurrence wins).
    merge_ranks: VocabMap<u32>,
    pre: Option<PreTokenizer>,
    byte_unicode: ByteUnicode,
    byte_tokens: [Option<u32>; 256],
    special: SpecialIds,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    ignore_merges: bool,
    clean_spaces: bool,
    escape_whitespaces: bool,
    byte_encode: bool,
    /// Control, user-defined and unknown tokens, longest text first (for partitioning).
    special_cache: Vec<u32>,
    /// `token_to_piece(id, true)` for every id.
    pieces: Vec<Vec<u8>>,
}

fn get_str<'a>(meta: &'a Metadata, key: &str) -> Result<Option<&'a str>, TokenizerError> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| bad(key, format!("expected a string, found {}", v.type_name()))),
    }
}

fn get_bool(meta: &Metadata, key: &str) -> Result<Option<bool>, TokenizerError> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| bad(key, format!("expected a bool, found {}", v.type_name()))),
    }
}

fn get_array<'a>(meta: &'a Metadata, key: &str) -> Result<Option<&'a [Value]>, TokenizerError> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| bad(key, format!("expected an array, found {}", v.type_name()))),
    }
}

/// Texts llama.cpp recognizes as end-of-turn tokens when the file names none.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts that end generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

impl Tokenizer {
    /// Builds the tokenizer described by the `tokenizer.ggml.*` keys of `meta`.
    pub fn from_gguf(meta: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model = get_str(meta, KEY_MODEL)?
            .ok_or_else(|| TokenizerError::MissingKey(KEY_MODEL.into()))?
            .to_string();
        let mut pre_name = get_str(meta, KEY_PRE)?.unwrap_or("").to_string();
        let kind = match model.as_str() {
            "llama" => Kind::Spm,
            "gpt2" => Kind::Bpe,
            // SentencePiece-style BPE: merges over raw UTF-8 with spaces as U+2581.
            "gemma4" => {
                pre_name = "gemma4".to_string();
                Kind::Bpe
            }
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "{KEY_MODEL} = '{other}' (supported: llama, gpt2, gemma4)"
                )))
            }
        };

        // Vocabulary.
        let list = get_array(meta, KEY_TOKENS)?
            .ok_or_else(|| TokenizerError::MissingKey(KEY_TOKENS.into()))?;
        let n = list.len();
        if n == 0 || n > i32::MAX as usize {
            return Err(bad(KEY_TOKENS, format!("{n} tokens")));
        }
        let scores = get_array(meta, KEY_SCORES)?;
        if let Some(s) = scores {
            if s.len() < n {
                return Err(bad(
                    KEY_SCORES,
                    format!("{} scores for {n} tokens", s.len()),
                ));
            }
        }
        let types = get_array(meta, KEY_TYPES)?;
        if let Some(t) = types {
            if t.len() < n {
                return Err(bad(
                    KEY_TYPES,
                    format!("{} token types for {n} tokens", t.len()),
                ));
            }
        }
        let mut tokens = Vec::with_capacity(n);
        let mut token_to_id = VocabMap::with_capacity_and_hasher(n, Default::default());
        for (i, v) in list.iter().enumerate() {
            let mut text = v
                .as_str()
                .ok_or_else(|| bad(KEY_TOKENS, format!("item {i} is not a string")))?
                .to_string();
            if text.is_empty() {
                text = format!("[EMPTY_{i}]");
            }
            let score = match scores {
                Some(s) => s[i]
                    .as_f32()
                    .ok_or_else(|| bad(KEY_SCORES, format!("item {i} is not a number")))?,
                None => 0.0,
            };
            let attr = match types {
                Some(t) => attr_of_type(
                    t[i].as_i64()
                        .ok_or_else(|| bad(KEY_TYPES, format!("item {i} is not an integer")))?,
                ),
                None => ATTR_NORMAL,
            };
            token_to_id.insert(text.clone(), i as u32);
            tokens.push(TokenData { text, score, attr });
        }

        // Type-specific defaults (llama.cpp's per-model settings).
        let mut special = SpecialIds::default();
        let (mut add_bos, mut add_space_prefix, clean_spaces);
        let mut ignore_merges = false;
        let mut escape_whitespaces = false;
        let mut byte_encode = true;
        let mut merge_ranks = VocabMap::default();
        let mut pre = None;
        match kind {
            Kind::Spm => {
                special.bos = Some(1);
                special.eos = Some(2);
                special.unk = Some(0);
                add_bos = true;
                add_space_prefix = true;
                clean_spaces = false;
            }
            Kind::Bpe => {
                let merges = get_array(meta, KEY_MERGES)?
                    .ok_or_else(|| TokenizerError::MissingKey(KEY_MERGES.into()))?;
                merge_ranks.reserve(merges.len());
                for (i, m) in merges.iter().enumerate() {
                    let m = m
                        .as_str()
                        .ok_or_else(|| bad(KEY_MERGES, format!("item {i} is not a string")))?;
                    // Split at the first space after the first byte, as llama.cpp does.
                    if m.len() > 1 && m.as_bytes()[1..].contains(&b' ') {
                        merge_ranks.entry(m.to_string()).or_insert(i as u32);
                    }
                }
                let settings = pre_settings(&pre_name).map_err(|e| bad(KEY_PRE, e))?;
                if model == "gpt2" {
                    special.bos = Some(11);
                    special.eos = Some(11);
                }
                if settings.no_default_bos {
                    special.bos = None;
                }
                add_bos = settings.add_bos;
                add_space_prefix = false;
                clean_spaces = settings.clean_spaces;
                ignore_merges = settings.ignore_merges;
                escape_whitespaces = settings.escape_whitespaces;
                byte_encode = settings.byte_encode;
                pre = Some(
                    PreTokenizer::new(&settings.patterns)
                        .map_err(|e| bad(KEY_PRE, e.to_string()))?,
                );
            }
        }
        if let Some(v) = get_bool(meta, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        // Special ids: defaults out of range are dropped; file values in range win.
        {
            let n = n as u64;
            let apply = |key: &str, slot: &mut Option<u32>| -> Result<(), TokenizerError> {
                if slot.is_some_and(|id| id as u64 >= n) {
                    *slot = None;
                }
                if let Some(v) = meta.get(key) {
                    let id = v.as_u64().ok_or_else(|| {
                        bad(key, format!("expected a token id, found {}", v.summary()))
                    })?;
                    if id < n {
                        *slot = Some(id as u32);
                    } else {
                        log::warn!("{key} = {id} is outside the vocabulary ({n} tokens); ignored");
                    }
                }
                Ok(())
            };
            let s = &mut special;
            apply("tokenizer.ggml.bos_token_id", &mut s.bos)?;
            apply("tokenizer.ggml.eos_token_id", &mut s.eos)?;
            apply("tokenizer.ggml.eot_token_id", &mut s.eot)?;
            apply("tokenizer.ggml.eom_token_id", &mut s.eom)?;
            apply("tokenizer.ggml.unknown_token_id", &mut s.unk)?;
            apply("tokenizer.ggml.seperator_token_id", &mut s.sep)?;
            apply("tokenizer.ggml.padding_token_id", &mut s.pad)?;
            apply("tokenizer.ggml.mask_token_id", &mut s.mask)?;
            apply("tokenizer.ggml.fim_pre_token_id", &mut s.fim_pre)?;
            apply("tokenizer.ggml.fim_suf_token_id", &mut s.fim_suf)?;
            apply("tokenizer.ggml.fim_mid_token_id", &mut s.fim_mid)?;
            apply("tokenizer.ggml.fim_pad_token_id", &mut s.fim_pad)?;
            apply("tokenizer.ggml.fim_rep_token_id", &mut s.fim_rep)?;
            apply("tokenizer.ggml.fim_sep_token_id", &mut s.fim_sep)?;
            // Deprecated spellings of the first three FIM keys.
            apply("tokenizer.ggml.prefix_token_id", &mut s.fim_pre)?;
            apply("tokenizer.ggml.suffix_token_id", &mut s.fim_suf)?;
            apply("tokenizer.ggml.middle_token_id", &mut s.fim_mid)?;
        }
        if let Some(v) = get_bool(meta, "tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if is_gemma4_pre(&pre_name) {
            add_bos = true; // llama.cpp overrides the file for Gemma 4
        }
        let add_eos = get_bool(meta, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        // Tokens found by text when the file names none; they become control tokens.
        {
            let mark = |slot: &mut Option<u32>, texts: &[&str], tokens: &mut Vec<TokenData>| {
                if slot.is_some() {
                    return;
                }
                // llama.cpp takes the first match in hash order; we take the lowest id.
                let found = texts
                    .iter()
                    .filter_map(|t| token_to_id.get(*t).copied())
                    .min();
                if let Some(id) = found {
                    *slot = Some(id);
                    tokens[id as usize].attr |= ATTR_CONTROL;
                }
            };
            mark(&mut special.eot, EOT_TEXTS, &mut tokens);
            mark(&mut special.eom, EOM_TEXTS, &mut tokens);
            mark(&mut special.fim_pre, FIM_PRE_TEXTS, &mut tokens);
            mark(&mut special.fim_suf, FIM_SUF_TEXTS, &mut tokens);
            mark(&mut special.fim_mid, FIM_MID_TEXTS, &mut tokens);
            mark(&mut special.fim_pad, FIM_PAD_TEXTS, &mut tokens);
            mark(&mut special.fim_rep, FIM_REP_TEXTS, &mut tokens);
            mark(&mut special.fim_sep, FIM_SEP_TEXTS, &mut tokens);
        }

        // End-of-generation set.
        let mut eog = BTreeSet::new();
        eog.extend(special.fim_pad);
        eog.extend(special.fim_rep);
        eog.extend(special.fim_sep);
        for t in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*t) {
                eog.insert(id);
                tokens[id as usize].attr |= ATTR_CONTROL;
            }
        }
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(&id) = token_to_id.get(t) {
                tokens[id as usize].attr = ATTR_USER_DEFINED;
            }
        }
        eog.extend(special.eos);
        eog.extend(special.eot);
        eog.extend(special.eom);
        let has = |eog: &BTreeSet<u32>, tokens: &[TokenData], text: &str| {
            eog.iter()
                .find(|&&id| tokens[id as usize].text == text)
                .copied()
        };
        if let Some(end) = has(&eog, &tokens, "<|end|>") {
            let call = has(&eog, &tokens, "<|call|>")
                .or(has(&eog, &tokens, "<|calls|>"))
                .is_some();
            let ret = has(&eog, &tokens, "<|return|>").is_some();
            let flush = has(&eog, &tokens, "<|flush|>").is_some();
            if (ret && call) || (call && flush) {
                eog.remove(&end);
                tokens[end as usize].attr = ATTR_USER_DEFINED;
            }
        }
        if let Some(s) = has(&eog, &tokens, "</s>") {
            if has(&eog, &tokens, "<|tool_response>").is_some()
                || has(&eog, &tokens, "<|plamo:eos|>").is_some()
            {
                eog.remove(&s);
                tokens[s as usize].attr = ATTR_NORMAL;
            }
        }

        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = token_to_id
                .get(&format!("<0x{b:02X}>"))
                .copied()
                .or_else(|| {
                    std::str::from_utf8(&[b as u8])
                        .ok()
                        .and_then(|s| token_to_id.get(s).copied())
                });
        }

        let mut tok = Tokenizer {
            kind,
            model,
            pre_name,
            tokens,
            token_to_id,
            merge_ranks,
            pre,
            byte_unicode: ByteUnicode::new(),
            byte_tokens,
            special,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            ignore_merges,
            clean_spaces,
            escape_whitespaces,
            byte_encode,
            special_cache: Vec::new(),
            pieces: Vec::new(),
        };

        let mut cache: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                tok.tokens[id as usize].attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)
                    != 0
            })
            .collect();
        cache.sort_by(|&a, &b| {
            tok.tokens[b as usize]
                .text
                .len()
                .cmp(&tok.tokens[a as usize].text.len())
                .then(a.cmp(&b))
        });
        tok.special_cache = cache;
        tok.pieces = (0..n as u32).map(|id| tok.render_piece(id)).collect();

        // Per-model strip attributes llama.cpp sets by model name.
        let name = get_str(meta, "general.name")?.unwrap_or("").to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for &id in &tok.special_cache {
                tok.tokens[id as usize].attr |= ATTR_RSTRIP;
            }
            for (text, on) in [
                ("</s>", true),
                ("<unk>", false),
                ("<s>", false),
                ("<|endoftext|>", false),
            ] {
                if let Some(&id) = tok.token_to_id.get(text) {
                    let a = &mut tok.tokens[id as usize].attr;
                    *a = if on {
                        *a | ATTR_RSTRIP
                    } else {
                        *a & !ATTR_RSTRIP
                    };
                }
            }
        }
        if pre_name_has_lstrip_mask(&tok.pre_name) {
            if let Some(&id) = tok.token_to_id.get("<mask>") {
                tok.tokens[id as usize].attr |= ATTR_LSTRIP;
            }
        }
        Ok(tok)
    }

    // ---- small accessors used by the algorithms ----

    fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    fn score(&self, id: u32) -> f32 {
        self.tokens[id as usize].score
    }

    fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_tokens[b as usize]
    }

    /// Whether a word that is itself a token skips merging: with `ignore_merges`, and for
    /// Gemma 4 words made only of newlines.
    fn take_whole_word(&self, word: &str) -> bool {
        self.ignore_merges || (is_gemma4_pre(&self.pre_name) && word.bytes().all(|b| b == b'\n'))
    }

    fn merge_rank(&self, left: &str, right: &str, key: &mut String) -> Option<u32> {
        key.clear();
        key.push_str(left);
        key.push(' ');
        key.push_str(right);
        self.merge_ranks.get(key.as_str()).copied()
    }

    // ---- public API ----

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.special.eos
    }
    /// End-of-turn token (from the file, else found by text).
    pub fn eot(&self) -> Option<u32> {
        self.special.eot
    }
    pub fn unk(&self) -> Option<u32> {
        self.special.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.special.pad
    }
    /// Whether `id` ends generation (EOS, EOT, EOM and the end markers llama.cpp knows by text).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// All end-of-generation ids.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    /// Whether `id` is a control token (rendered only on request).
    pub fn is_control(&self, id: u32) -> bool {
        self.attr(id) & ATTR_CONTROL != 0
    }
    /// The token's text as stored in the vocabulary ("" for an id out of range).
    pub fn token_text(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map_or("", |t| t.text.as_str())
    }
    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.special.bos.is_some()
    }
    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos && self.special.eos.is_some()
    }
    /// `tokenizer.ggml.model`: "llama" or "gpt2".
    pub fn kind(&self) -> &str {
        &self.model
    }
    /// `tokenizer.ggml.pre` ("" when absent).
    pub fn pre(&self) -> &str {
        &self.pre_name
    }
    /// Id of an exact token text.
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.token_id(text)
    }

    fn attr(&self, id: u32) -> u32 {
        self.tokens.get(id as usize).map_or(0, |t| t.attr)
    }

    /// Tokenizes `text`. `add_special`: BOS/EOS as the vocabulary asks; `parse_special`: control
    /// and unknown tokens written in the text become those tokens (user-defined ones always do).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            self.partition(text, parse_special)
        };
        if add_special && self.add_bos {
            out.extend(self.special.bos);
        }
        match self.kind {
            Kind::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                for frag in &fragments {
                    match *frag {
                        Fragment::Text(s, e) => {
                            buf.clear();
                            if self.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for c in text[s..e].chars() {
                                buf.push(if c == ' ' { '▁' } else { c });
                            }
                            spm::tokenize(self, &buf, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Kind::Bpe => {
                let mut key = String::new();
                for frag in &fragments {
                    match *frag {
                        Fragment::Text(s, e) => {
                            let piece = &text[s..e];
                            let escaped;
                            let piece = if self.escape_whitespaces {
                                escaped = piece.replace(' ', "▁");
                                escaped.as_str()
                            } else {
                                piece
                            };
                            if let Some(pre) = &self.pre {
                                let bu = if self.byte_encode {
                                    Some(&self.byte_unicode)
                                } else {
                                    None
                                };
                                for word in pre.split(piece, bu) {
                                    bpe::tokenize_word(
                                        self,
                                        &word,
                                        self.byte_encode,
                                        &mut out,
                                        &mut key,
                                    );
                                }
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.special.eos);
        }
        out
    }

    /// Cuts special tokens out of `text` (llama.cpp's `tokenizer_st_partition`): each special
    /// token, longest first, splits every remaining text fragment at each of its occurrences.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = vec![Fragment::Text(0, text.len())];
        let bytes = text.as_bytes();
        let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r');
        for &id in &self.special_cache {
            let data = &self.tokens[id as usize];
            if !parse_special && data.attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let needle = data.text.as_bytes();
            if !frags.iter().any(
                |f| matches!(*f, Fragment::Text(s, e) if text[s..e].contains(data.text.as_str())),
            ) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for frag in frags {
                let Fragment::Text(mut start, end) = frag else {
                    next.push(frag);
                    continue;
                };
                while start < end {
                    let Some(rel) = find_bytes(&bytes[start..end], needle) else {
                        next.push(Fragment::Text(start, end));
                        break;
                    };
                    let m = start + rel;
                    let mut left_end = m;
                    if data.attr & ATTR_LSTRIP != 0 {
                        while left_end > start && is_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > start {
                        next.push(Fragment::Text(start, left_end));
                    }
                    next.push(Fragment::Token(id));
                    start = m + needle.len();
                    if data.attr & ATTR_RSTRIP != 0 {
                        while start < end && is_space(bytes[start]) {
                            start += 1;
                        }
                    }
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes token `id` stands for, as llama.cpp's `token_to_piece` renders them: SPM `▁`
    /// becomes a space and `<0xNN>` its byte; BPE text is mapped back from the byte alphabet;
    /// control and unknown tokens give their text only with `render_special`.
    pub fn token_to_piece(&self, id: u32, render_special: bool) -> Vec<u8> {
        self.piece(id, render_special).to_vec()
    }

    fn piece(&self, id: u32, render_special: bool) -> &[u8] {
        if !render_special && self.attr(id) & (ATTR_UNKNOWN | ATTR_CONTROL) != 0 {
            return &[];
        }
        self.pieces.get(id as usize).map_or(&[], |p| p.as_slice())
    }

    /// Rendering with specials shown (the piece cache).
    fn render_piece(&self, id: u32) -> Vec<u8> {
        let Some(t) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        let attr = t.attr;
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
            return t.text.as_bytes().to_vec();
        }
        if attr & ATTR_NORMAL != 0 {
            return match self.kind {
                Kind::Spm => t.text.replace('▁', " ").into_bytes(),
                Kind::Bpe if self.escape_whitespaces => t.text.replace('▁', " ").into_bytes(),
                Kind::Bpe => self.decode_byte_alphabet(&t.text),
            };
        }
        if attr & ATTR_BYTE != 0 {
            let hex = t.text.get(3..5).unwrap_or("");
            return vec![u8::from_str_radix(hex, 16).unwrap_or(0)];
        }
        Vec::new()
    }

    /// GPT-2 byte alphabet back to bytes; a character outside it is shown as llama.cpp does.
    fn decode_byte_alphabet(&self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.byte_unicode.char_to_byte(c) {
                Some(b) => out.push(b),
                None => {
                    out.extend_from_slice(b"[UNK_BYTE_0x");
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).as_bytes() {
                        out.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                    out.extend_from_slice(text.as_bytes());
                    out.push(b']');
                }
            }
        }
        out
    }

    /// Text of `ids` as llama.cpp's `detokenize` (no special-token removal) gives it: the
    /// leading space SPM adds is dropped from the first piece, and BPE vocabularies that ask for
    /// it get the clean-up of spaces before punctuation. Invalid UTF-8 is replaced at the end.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids, render_special)).into_owned()
    }

    /// [`Tokenizer::decode`] without the UTF-8 conversion.
    pub fn decode_bytes(&self, ids: &[u32], render_special: bool) -> Vec<u8> {
        let mut text = Vec::new();
        let mut remove_space = self.add_space_prefix;
        for &id in ids {
            let mut piece = self.piece(id, render_special);
            if remove_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream_decoder(&self, render_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, render_special)
    }
}

/// Names llama.cpp maps to its Gemma 4 pre-tokenizer type.
fn is_gemma4_pre(pre: &str) -> bool {
    pre == "gemma4" || pre == "granite-embed-multi-311m"
}

fn pre_name_has_lstrip_mask(pre: &str) -> bool {
    ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
        .iter()
        .any(|p| pre.contains(p))
}

#[derive(Clone, Copy, Debug)]
enum Fragment {
    /// Byte range of the input still to tokenize.
    Text(usize, usize),
    Token(u32),
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// llama.cpp's `clean_up_tokenization_spaces` passes, in place and index for index:
/// " ?", " !", " .", " ," lose the space; " ' " becomes "'"; " 's", " 'm", " 're", " 've" lose
/// the space.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // Pass 1: space before ? ! . ,
    let n1 = text.len();
    let mut total = usize::from(n1 > 0);
    for i in 1..n1 {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // Pass 2: a single apostrophe between spaces.
    let n2 = text.len();
    let mut total = usize::from(n2 > 0);
    let mut i = 1;
    while i < n2 {
        let x = text[i];
        if x == b'\'' && i + 1 < n2 && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // Pass 3: contractions.
    let n3 = text.len();
    let mut total = usize::from(n3 > 0);
    for i in 1..n3 {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n3 {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if x1 != b't' && x1 != b'd' && i + 2 < n3 {
                let x2 = text[i + 2];
                if (x1 == b'r' && x2 == b'e') || (x1 == b'v' && x2 == b'e') {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

/// Turns a stream of token ids into text, emitting only complete UTF-8 characters: a
/// character whose bytes are spread over several tokens is held back until it is whole.
/// Pieces are rendered as [`Tokenizer::token_to_piece`] does (llama.cpp's per-token streaming:
/// an SPM first piece keeps its leading space). Bytes that can never form a character are
/// emitted as U+FFFD.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    render_special: bool,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer, render_special: bool) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            render_special,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text that became complete.
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(self.tok.piece(id, self.render_special));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // The prefix is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..good]));
                    match e.error_len() {
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Bytes held back for an incomplete character.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream: what is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_matches_llama_cpp_passes() {
        let mut t = b"Hello , world ! it 's a ' quote ' and they 're here .".to_vec();
        clean_up_spaces(&mut t);
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "Hello, world! it's a'quote'and they're here."
        );
    }

    #[test]
    fn find_bytes_finds_first() {
        assert_eq!(find_bytes(b"abcabc", b"ca"), Some(2));
        assert_eq!(find_bytes(b"abc", b"abcd"), None);
        assert_eq!(find_bytes(b"aab", b"ab"), Some(1));
    }
}

/// The words a BPE pre-tokenizer name splits `text` into, before byte encoding (for tools and
/// cross-checks against llama.cpp's splitter).
#[doc(hidden)]
pub fn pretokenize_words(pre_name: &str, text: &str) -> Result<Vec<String>, String> {
    let settings = pre_settings(pre_name)?;
    let pre = PreTokenizer::new(&settings.patterns).map_err(|e| e.to_string())?;
    Ok(pre.split(text, None))
}

/// The split patterns llama.cpp uses for a BPE pre-tokenizer name.
#[doc(hidden)]
pub fn pretokenizer_patterns(pre_name: &str) -> Result<Vec<&'static str>, String> {
    Ok(pre_settings(pre_name)?.patterns)
}
