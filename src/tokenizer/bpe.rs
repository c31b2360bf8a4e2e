//! Byte-pair merging of one pre-tokenized word (llama.cpp's BPE session): start from single
//! UTF-8 characters, repeatedly merge the adjacent pair with the lowest merge rank (ties: the
//! leftmost pair), then emit each symbol as its token or, failing that, byte by byte.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::unicode::{utf8_symbols, Symbol};
use super::Tokenizer;

#[derive(PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    left_len: usize,
    right_len: usize,
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Greater = popped first: the lower rank, then the smaller left index.
    fn cmp(&self, other: &Self) -> Ordering {
        (Reverse(self.rank), Reverse(self.left)).cmp(&(Reverse(other.rank), Reverse(other.left)))
    }
}

/// Appends the tokens of one word to `out`. `key` is scratch space for rank look-ups.
pub fn tokenize_word(
    tok: &Tokenizer,
    word: &str,
    byte_encoded: bool,
    out: &mut Vec<u32>,
    key: &mut String,
) {
    if word.is_empty() {
        return;
    }
    if tok.take_whole_word(word) {
        if let Some(id) = tok.token_id(word) {
            out.push(id);
            return;
        }
    }
    let bytes = word.as_bytes();
    let mut symbols = utf8_symbols(bytes);

    let mut queue = BinaryHeap::new();
    let mut try_add =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: isize, right: isize| {
            if left < 0 || right < 0 {
                return;
            }
            let (l, r) = (symbols[left as usize], symbols[right as usize]);
            let lt = &word[l.start..l.start + l.len];
            let rt = &word[r.start..r.start + r.len];
            if let Some(rank) = tok.merge_rank(lt, rt, key) {
                queue.push(Bigram {
                    rank,
                    left: left as usize,
                    right: right as usize,
                    left_len: l.len,
                    right_len: r.len,
                });
            }
        };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, i as isize - 1, i as isize);
    }

    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        // Stale unless both sides are still exactly the two pieces the pair was made of.
        if l.len == 0
            || r.len == 0
            || l.len != b.left_len
            || r.len != b.right_len
            || l.next != b.right as isize
        {
            continue;
        }
        symbols[b.left].len += r.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = r.next;
        if r.next >= 0 {
            symbols[r.next as usize].prev = b.left as isize;
        }
        let left = symbols[b.left];
        try_add(&symbols, &mut queue, left.prev, b.left as isize);
        try_add(&symbols, &mut queue, b.left as isize, left.next);
    }

    for s in symbols.iter().filter(|s| s.len > 0) {
        let piece = &word[s.start..s.start + s.len];
        match tok.token_id(piece) {
            Some(id) => out.push(id),
            None => {
                // llama.cpp looks each byte up as a one-byte token text (byte-level vocabularies),
                // or as <0xNN> (SentencePiece-style BPE); bytes without a token are dropped.
                for &byte in piece.as_bytes() {
                    let id = if byte_encoded {
                        if byte < 0x80 {
                            let s = [byte];
                            std::str::from_utf8(&s).ok().and_then(|t| tok.token_id(t))
                        } else {
                            None
                        }
                    } else {
                        tok.byte_token(byte)
                    };
                    if let Some(id) = id {
                        out.push(id);
                    }
                }
            }
        }
    }
}
