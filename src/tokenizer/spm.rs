//! SentencePiece-style merging (llama.cpp's SPM tokenizer): start from single UTF-8 characters,
//! repeatedly merge the adjacent pair whose concatenation is the highest-scoring token (ties:
//! the leftmost pair), then emit each symbol as its token or, failing that, as byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::unicode::{utf8_symbols, Symbol};
use super::Tokenizer;

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Greater = popped first: higher score, then the smaller left index.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Appends the tokens of `text` (already escaped: spaces are U+2581) to `out`.
pub fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let bytes = text.as_bytes();
    let mut symbols = utf8_symbols(bytes);
    if symbols.is_empty() {
        return;
    }

    let mut queue = BinaryHeap::new();
    let try_add =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: isize, right: isize| {
            if left < 0 || right < 0 {
                return;
            }
            let (l, r) = (symbols[left as usize], symbols[right as usize]);
            let piece = &text[l.start..l.start + l.len + r.len];
            if let Some(id) = tok.token_id(piece) {
                queue.push(Bigram {
                    left: left as usize,
                    right: right as usize,
                    score: tok.score(id),
                    size: piece.len(),
                });
            }
        };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, i as isize - 1, i as isize);
    }

    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue; // stale: one side was merged since
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

    let mut i = 0isize;
    while i != -1 {
        let s = symbols[i as usize];
        let piece = &text[s.start..s.start + s.len];
        match tok.token_id(piece) {
            Some(id) => out.push(id),
            None => {
                for &byte in piece.as_bytes() {
                    if let Some(id) = tok.byte_token(byte) {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}
