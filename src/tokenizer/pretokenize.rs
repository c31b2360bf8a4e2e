//! Pre-tokenizers for byte-level BPE: the text is cut into words before merges run, by the
//! sequence of patterns `tokenizer.ggml.pre` selects (the patterns the models publish in their
//! `tokenizer.json`, as llama.cpp adapts them).
//!
//! Each pattern splits every piece the previous one produced, and the text between matches is
//! kept as pieces too. Where llama.cpp has a hand-written splitter for a pattern (GPT-2,
//! Llama-3, Qwen2, Qwen3.5, newline runs, digit groups) we have one with the same observable
//! behaviour; every other pattern runs on our regex engine (`regex.rs`), over llama.cpp's
//! collapsed representation when the pattern uses Unicode categories.

use super::regex::{collapse, widen, Regex, RegexError};
use super::unicode::{code_points, flags, CpFlags};

// The patterns, as the models publish them (adapted: case-insensitive groups spelled out).
const P_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const P_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_NEWLINES: &str = r"[^\n]+|[\n]+";
const P_DIGITS_FROM_RIGHT: &str = r"\p{AFMoE_digits}";
const P_TINY_AYA_DIGITS: &str = r"\d{1,3}(?=(?:\d{3})*\b)";
const P_JAIS2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}";
const P_CJK_KANA: &str = "[一-龥぀-ゟ゠-ヿ]+";
const P_DEEPSEEK3_MAIN: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
const P_SPARK_MAIN: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+"##;
const P_CASED_WORDS: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_YOUTU_WORDS: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_STARCODER_DIGITS: &str = r"\p{N}";
const P_BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const P_TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_GRANITE_EMB: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_BAILING: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const P_SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_UFAKZEKA: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_EXAONE_MOE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+";
const P_MINICPM5: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const P_DEFAULT_PUNCT: &str = r"[\p{P}\$\+<=>\^~\|]+";
const P_FALCON_PUNCT: &str = r"[\p{P}\$\+<=>\^~\|`]+";
const P_NUMBERS: &str = r"\p{N}+";
const P_THREE_DIGITS: &str = "[0-9][0-9][0-9]";
const P_CR_LF: &str = "[\r\n]";
const P_HAN_HANGUL: &str = "[一-龥ࠀ-一가-\u{D7FF}]+";
const P_DEEPSEEK_LLM_LETTERS: &str = "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
const P_DEEPSEEK_LLM_PUNCT: &str = "\\s?[!-/:-~！-／：-～‘-‟\u{3000}-。]+";
const P_YOUTU_CJK: &str = "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+";
const P_AFMOE_CJK: &str = "[一-鿿㐀-䶿豈-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+";

/// What `tokenizer.ggml.pre` selects: the split patterns and the flags llama.cpp ties to the name.
#[derive(Clone, Debug)]
pub struct PreSettings {
    pub patterns: Vec<&'static str>,
    /// Map bytes to GPT-2's printable code points before merging (false: raw UTF-8 words).
    pub byte_encode: bool,
    /// A word that is itself a token is taken whole, without merges.
    pub ignore_merges: bool,
    /// Detokenizer clean-up of spaces before punctuation (`clean_up_tokenization_spaces`).
    pub clean_spaces: bool,
    /// Default for `add_bos` when the file does not say.
    pub add_bos: bool,
    /// Spaces become U+2581 before splitting (SentencePiece-style BPE).
    pub escape_whitespaces: bool,
    /// The name disables the default BOS id.
    pub no_default_bos: bool,
}

/// Settings for a BPE vocabulary's pre-tokenizer name (empty: the file has no name).
pub fn pre_settings(name: &str) -> Result<PreSettings, String> {
    let mut s = PreSettings {
        patterns: Vec::new(),
        byte_encode: true,
        ignore_merges: false,
        clean_spaces: true,
        add_bos: false,
        escape_whitespaces: false,
        no_default_bos: false,
    };
    let default = vec![P_DEFAULT_PUNCT, P_GPT2, P_NUMBERS, P_THREE_DIGITS];
    let starcoder = vec![P_STARCODER_DIGITS, P_GPT2];
    let deepseek3 = vec![P_NUMBERS_1_3, P_CJK_KANA, P_DEEPSEEK3_MAIN];
    let patterns = match name {
        "" | "default" => default,
        "minicpm5" => {
            s.ignore_merges = true;
            vec![P_NUMBERS_1_3, P_MINICPM5]
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => {
            s.ignore_merges = true;
            s.add_bos = true;
            vec![P_LLAMA3]
        }
        "deepseek-llm" => {
            s.clean_spaces = false;
            vec![
                P_CR_LF,
                P_DEEPSEEK_LLM_LETTERS,
                P_DEEPSEEK_LLM_PUNCT,
                r"\s+$",
                P_HAN_HANGUL,
                P_NUMBERS,
            ]
        }
        "deepseek-coder" => {
            s.clean_spaces = false;
            vec![
                P_CR_LF,
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                P_HAN_HANGUL,
                P_STARCODER_DIGITS,
            ]
        }
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => {
            s.clean_spaces = false;
            deepseek3
        }
        "spark2_5" => {
            s.clean_spaces = false;
            vec![P_NUMBERS_1_3, P_CJK_KANA, P_SPARK_MAIN, P_STARCODER_DIGITS]
        }
        "youtu" => {
            s.clean_spaces = false;
            s.ignore_merges = true;
            vec![P_YOUTU_CJK, P_YOUTU_WORDS]
        }
        "falcon" => vec![P_FALCON_PUNCT, P_GPT2, P_THREE_DIGITS],
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => starcoder,
        "command-r" | "smollm" => {
            s.clean_spaces = false;
            starcoder
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "exaone4" => {
            vec![P_GPT2]
        }
        "trillion" | "granite-docling" => {
            s.clean_spaces = false;
            vec![P_GPT2]
        }
        "jais-2" => vec![P_JAIS2],
        "gemma4" | "granite-embed-multi-311m" => {
            s.escape_whitespaces = true;
            s.byte_encode = false;
            vec![P_NEWLINES]
        }
        "sarvam-moe" => {
            s.escape_whitespaces = true;
            s.byte_encode = false;
            s.clean_spaces = false;
            vec![P_NEWLINES]
        }
        "whitespace" => {
            s.byte_encode = false;
            vec![r"\S+"]
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "grok-2"
        | "solar-open" => {
            s.clean_spaces = false;
            vec![P_QWEN2]
        }
        "stablelm2" | "megrez" => vec![P_QWEN2],
        "qwen35" => {
            s.clean_spaces = false;
            vec![P_QWEN35]
        }
        "dbrx" | "smaug-bpe" => vec![P_LLAMA3],
        "poro-chat" => {
            s.clean_spaces = false;
            vec![P_BLOOM]
        }
        "bloom" | "gpt3-finnish" => vec![P_BLOOM],
        "chatglm-bpe" => {
            s.no_default_bos = true;
            vec![P_LLAMA3]
        }
        "glm4" | "glm5" => {
            s.no_default_bos = true;
            s.ignore_merges = true;
            vec![P_LLAMA3]
        }
        "viking" => {
            s.clean_spaces = false;
            vec![P_BLOOM, P_STARCODER_DIGITS]
        }
        "tekken" => {
            s.clean_spaces = false;
            s.ignore_merges = true;
            s.add_bos = true;
            vec![P_TEKKEN]
        }
        "exaone-moe" => vec![P_EXAONE_MOE],
        "chameleon" => {
            s.add_bos = true;
            s.clean_spaces = false;
            vec![
                "<sentinel:[0-9]+>",
                "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                "([\\t\\n]|    |  )",
                P_STARCODER_DIGITS,
                r"[\p{P}!-/:-@\[-`{-~]",
                P_GPT2,
            ]
        }
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
            s.clean_spaces = false;
            vec![P_GPT4O]
        }
        "granite-embed-multi-97m" => {
            s.clean_spaces = false;
            s.ignore_merges = true;
            vec![P_GRANITE_EMB]
        }
        "tiny_aya" | "cohere2moe" => {
            s.clean_spaces = false;
            vec![P_TINY_AYA_DIGITS, P_CASED_WORDS]
        }
        "superbpe" => {
            s.clean_spaces = false;
            vec![P_NUMBERS, r"(?=(\d{3})+(?!\d))"]
        }
        "bailingmoe" | "bailingmoe2" | "llada-moe" => {
            s.clean_spaces = false;
            vec![P_BAILING]
        }
        "seed-coder" => {
            s.clean_spaces = false;
            vec![P_SEED_CODER]
        }
        "ufakzeka" => {
            s.clean_spaces = false;
            vec![P_UFAKZEKA]
        }
        "afmoe" => {
            s.clean_spaces = false;
            vec![P_DIGITS_FROM_RIGHT, P_AFMOE_CJK, P_DEEPSEEK3_MAIN]
        }
        "laguna" => {
            s.clean_spaces = false;
            vec![P_NEWLINES, P_QWEN2]
        }
        "kimi-k2" => return Err("pre-tokenizer 'kimi-k2' is not supported yet".to_string()),
        other => return Err(format!("unknown pre-tokenizer type '{other}'")),
    };
    s.patterns = patterns;
    Ok(s)
}

const P_NUMBERS_1_3: &str = r"\p{N}{1,3}";

/// One split step.
#[derive(Debug)]
enum Stage {
    /// GPT-2's pattern ([`P_GPT2`]).
    Gpt2,
    /// Llama-3's pattern family: digit runs cut every `max_digits`; `marks` lets letter runs
    /// take combining marks (Qwen3.5).
    Llama3 {
        max_digits: usize,
        marks: bool,
    },
    /// Runs of '\n' and runs of anything else.
    Newlines,
    /// Digit runs cut into groups of three counted from the right; other text left whole.
    DigitsFromRight,
    Regex(Regex),
}

/// A compiled pre-tokenizer.
#[derive(Debug)]
pub struct PreTokenizer {
    stages: Vec<Stage>,
    any_collapsed: bool,
    any_wide: bool,
}

const OUT: u32 = u32::MAX;

impl PreTokenizer {
    pub fn new(patterns: &[&str]) -> Result<PreTokenizer, RegexError> {
        let mut stages = Vec::new();
        for &p in patterns {
            let stage = match p {
                P_GPT2 => Stage::Gpt2,
                P_LLAMA3 => Stage::Llama3 {
                    max_digits: 3,
                    marks: false,
                },
                P_QWEN2 => Stage::Llama3 {
                    max_digits: 1,
                    marks: false,
                },
                P_QWEN35 => Stage::Llama3 {
                    max_digits: 1,
                    marks: true,
                },
                P_NEWLINES => Stage::Newlines,
                P_DIGITS_FROM_RIGHT | P_TINY_AYA_DIGITS => Stage::DigitsFromRight,
                _ => Stage::Regex(Regex::new(p)?),
            };
            stages.push(stage);
        }
        let any_collapsed = stages
            .iter()
            .any(|s| matches!(s, Stage::Regex(r) if r.is_collapsed()));
        let any_wide = stages
            .iter()
            .any(|s| matches!(s, Stage::Regex(r) if !r.is_collapsed()));
        Ok(PreTokenizer {
            stages,
            any_collapsed,
            any_wide,
        })
    }

    /// Splits `text` into words (as code-point ranges, in order, covering the text).
    pub fn split_ranges(&self, text: &str) -> (Vec<u32>, Vec<usize>) {
        let cps = code_points(text);
        let collapsed: Vec<u32> = if self.any_collapsed {
            cps.iter().map(|&c| collapse(c)).collect()
        } else {
            Vec::new()
        };
        let wide: Vec<u32> = if self.any_wide {
            cps.iter().map(|&c| widen(c)).collect()
        } else {
            Vec::new()
        };
        let mut lens = vec![cps.len()];
        for stage in &self.stages {
            let mut out = Vec::with_capacity(lens.len() * 2);
            let mut start = 0;
            for &len in &lens {
                let end = start + len;
                match stage {
                    Stage::Gpt2 => split_gpt2(&cps, start, end, &mut out),
                    Stage::Llama3 { max_digits, marks } => {
                        split_llama3(&cps, start, end, *max_digits, *marks, &mut out)
                    }
                    Stage::Newlines => split_newlines(&cps, start, end, &mut out),
                    Stage::DigitsFromRight => split_digits_from_right(&cps, start, end, &mut out),
                    Stage::Regex(re) => {
                        let units = if re.is_collapsed() { &collapsed } else { &wide };
                        let mut last = start;
                        for (s, e) in re.find_all(units, start, end) {
                            if s > last {
                                out.push(s - last);
                            }
                            out.push(e - s);
                            last = e;
                        }
                        if last < end {
                            out.push(end - last);
                        }
                    }
                }
                start = end;
            }
            lens = out;
        }
        (cps, lens)
    }

    /// Splits `text` into words; with `byte_encode` each word is in GPT-2's byte alphabet.
    pub fn split(
        &self,
        text: &str,
        byte_unicode: Option<&super::unicode::ByteUnicode>,
    ) -> Vec<String> {
        let (cps, lens) = self.split_ranges(text);
        let mut words = Vec::with_capacity(lens.len());
        let mut start = 0;
        let mut buf = String::new();
        for len in lens {
            buf.clear();
            for &cp in &cps[start..start + len] {
                buf.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
            }
            start += len;
            match byte_unicode {
                Some(bu) => {
                    let mut w = String::with_capacity(buf.len() * 2);
                    bu.encode_into(&buf, &mut w);
                    words.push(w);
                }
                None => words.push(buf.clone()),
            }
        }
        words
    }
}

/// Reader over one piece `[start, end)` of the code points; outside it, `OUT` and no flags.
struct Piece<'a> {
    cps: &'a [u32],
    start: usize,
    end: usize,
}

impl Piece<'_> {
    fn cp(&self, pos: usize) -> u32 {
        if self.start <= pos && pos < self.end {
            self.cps[pos]
        } else {
            OUT
        }
    }
    fn flags(&self, pos: usize) -> CpFlags {
        if self.start <= pos && pos < self.end {
            flags(self.cps[pos])
        } else {
            CpFlags::NONE
        }
    }
}

/// Emits words as they end; `prev` is the end of the last one.
struct Emitter<'a> {
    prev: usize,
    out: &'a mut Vec<usize>,
}

impl Emitter<'_> {
    fn emit(&mut self, end: usize) -> usize {
        let len = end - self.prev;
        if len > 0 {
            self.out.push(len);
        }
        self.prev = end;
        len
    }
}

fn ascii_lower(cp: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&cp) {
        cp + 32
    } else {
        cp
    }
}

/// `'s 't 're 've 'm 'll 'd` at `pos` (optionally case-insensitive): the contraction's length.
fn contraction_len(p: &Piece, pos: usize, any_case: bool) -> Option<usize> {
    if p.cp(pos) != '\'' as u32 || pos + 1 >= p.end {
        return None;
    }
    let lower = |c: u32| if any_case { ascii_lower(c) } else { c };
    let c1 = lower(p.cp(pos + 1));
    if [b's', b't', b'm', b'd'].iter().any(|&c| c as u32 == c1) {
        return Some(2);
    }
    if pos + 2 < p.end {
        let c2 = lower(p.cp(pos + 2));
        let pair = |a: u8, b: u8| c1 == a as u32 && c2 == b as u32;
        if pair(b'r', b'e') || pair(b'v', b'e') || pair(b'l', b'l') {
            return Some(3);
        }
    }
    None
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn split_gpt2(cps: &[u32], start: usize, end: usize, out: &mut Vec<usize>) {
    let p = Piece { cps, start, end };
    let mut em = Emitter { prev: start, out };
    let mut pos = start;
    while pos < end {
        let cp = p.cp(pos);
        let f = p.flags(pos);
        if let Some(n) = contraction_len(&p, pos, false) {
            pos += em.emit(pos + n);
            continue;
        }
        let space = cp == ' ' as u32;
        let mut f2 = if space { p.flags(pos + 1) } else { f };
        if f2.is_letter() || f2.is_number() {
            let letter = f2.is_letter();
            pos += space as usize;
            while if letter {
                f2.is_letter()
            } else {
                f2.is_number()
            } {
                pos += 1;
                f2 = p.flags(pos);
            }
            em.emit(pos);
            continue;
        }
        let other =
            |g: CpFlags| !(g.is_whitespace() || g.is_letter() || g.is_number()) && g.is_some();
        if other(f2) {
            pos += space as usize;
            while other(f2) {
                pos += 1;
                f2 = p.flags(pos);
            }
            em.emit(pos);
            continue;
        }
        let mut n_ws = 0;
        while p.flags(pos + n_ws).is_whitespace() {
            n_ws += 1;
        }
        if n_ws > 1 && p.cp(pos + n_ws) != OUT {
            pos += n_ws - 1;
            em.emit(pos);
            continue;
        }
        if n_ws > 0 {
            pos += n_ws;
            em.emit(pos);
            continue;
        }
        pos += 1;
        em.emit(pos);
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// (with `marks`, letters are `[\p{L}\p{M}]` and the symbol run excludes marks).
fn split_llama3(
    cps: &[u32],
    start: usize,
    end: usize,
    max_digits: usize,
    marks: bool,
    out: &mut Vec<usize>,
) {
    let p = Piece { cps, start, end };
    let mut em = Emitter { prev: start, out };
    let is_cr_lf = |c: u32| c == '\r' as u32 || c == '\n' as u32;
    let wordish = |g: CpFlags| g.is_letter() || (marks && g.is_mark());
    let other = |g: CpFlags| {
        !(g.is_whitespace() || g.is_letter() || g.is_number() || (marks && g.is_mark()))
    };
    let mut pos = start;
    while pos < end {
        let cp = p.cp(pos);
        let f = p.flags(pos);
        if let Some(n) = contraction_len(&p, pos, true) {
            pos += em.emit(pos + n);
            continue;
        }
        if !(is_cr_lf(cp) || f.is_number()) && (wordish(f) || wordish(p.flags(pos + 1))) {
            pos += 1;
            while wordish(p.flags(pos)) {
                pos += 1;
            }
            em.emit(pos);
            continue;
        }
        if f.is_number() {
            let mut first = pos;
            while p.flags(pos).is_number() {
                pos += 1;
                if pos - first >= max_digits {
                    em.emit(pos);
                    first = pos;
                }
            }
            em.emit(pos);
            continue;
        }
        let mut f2 = if cp == ' ' as u32 {
            p.flags(pos + 1)
        } else {
            f
        };
        if other(f2) && f.is_some() {
            pos += (cp == ' ' as u32) as usize;
            while other(f2) && f2.is_some() {
                pos += 1;
                f2 = p.flags(pos);
            }
            while is_cr_lf(p.cp(pos)) {
                pos += 1;
            }
            em.emit(pos);
            continue;
        }
        let mut n_ws = 0;
        let mut last_cr_lf_end = 0;
        while p.flags(pos + n_ws).is_whitespace() {
            if is_cr_lf(p.cp(pos + n_ws)) {
                last_cr_lf_end = pos + n_ws + 1;
            }
            n_ws += 1;
        }
        if last_cr_lf_end > 0 {
            pos = last_cr_lf_end;
            em.emit(pos);
            continue;
        }
        if n_ws > 1 && p.cp(pos + n_ws) != OUT {
            pos += n_ws - 1;
            em.emit(pos);
            continue;
        }
        if n_ws > 0 {
            pos += n_ws;
            em.emit(pos);
            continue;
        }
        pos += 1;
        em.emit(pos);
    }
}

/// `[^\n]+|[\n]+`
fn split_newlines(cps: &[u32], start: usize, end: usize, out: &mut Vec<usize>) {
    let mut pos = start;
    while pos < end {
        let nl = cps[pos] == '\n' as u32;
        let run = pos;
        while pos < end && (cps[pos] == '\n' as u32) == nl {
            pos += 1;
        }
        out.push(pos - run);
    }
}

/// Digit runs (`\p{N}`) cut as 1–2 leading digits then threes. As in llama.cpp, text before a
/// digit run is not cut off: it joins the run's first group (`"ab1234"` gives `"ab1"`, `"234"`).
fn split_digits_from_right(cps: &[u32], start: usize, end: usize, out: &mut Vec<usize>) {
    let p = Piece { cps, start, end };
    let mut em = Emitter { prev: start, out };
    let mut pos = start;
    while pos < end {
        if p.flags(pos).is_number() {
            let first = pos;
            while pos < end && p.flags(pos).is_number() {
                pos += 1;
            }
            let count = pos - first;
            let mut cur = first;
            if !count.is_multiple_of(3) {
                cur += count % 3;
                em.emit(cur);
            }
            while cur < first + count {
                cur += 3;
                em.emit(cur);
            }
            continue;
        }
        pos += 1;
    }
    if em.prev < end {
        em.emit(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(name: &str, text: &str) -> Vec<String> {
        let s = pre_settings(name).unwrap();
        PreTokenizer::new(&s.patterns).unwrap().split(text, None)
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words("gpt-2", "Hello world's  end!!\n"),
            vec!["Hello", " world", "'s", " ", " end", "!!", "\n"]
        );
    }

    #[test]
    fn llama3_digits_and_contractions() {
        assert_eq!(
            words("llama-bpe", "I'M 12345 ok\n\n x"),
            vec!["I", "'M", " ", "123", "45", " ok", "\n\n", " x"]
        );
    }

    #[test]
    fn qwen2_single_digits() {
        assert_eq!(words("qwen2", "a 123"), vec!["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn regex_stages_chain() {
        // default: punctuation runs, then GPT-2 words, then numbers, then three-digit groups.
        assert_eq!(
            words("default", "x=12345;"),
            vec!["x", "=", "123", "45", ";"]
        );
        assert_eq!(words("starcoder", "ab 42"), vec!["ab", " ", "4", "2"]);
    }

    #[test]
    fn digits_from_right() {
        assert_eq!(words("afmoe", "1234567"), vec!["1", "234", "567"]);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(pre_settings("no-such-pre").is_err());
        assert!(pre_settings("kimi-k2").is_err());
    }
}
