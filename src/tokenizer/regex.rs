//! A small backtracking regex engine with ECMAScript semantics (first alternative wins), for the
//! pre-tokenizer patterns llama.cpp runs through `std::regex`.
//!
//! It matches over a sequence of `u32` units: code points ("wide" mode) or, for patterns that use
//! Unicode categories, llama.cpp's *collapsed* text, where every code point ≥ 128 became one byte
//! standing for its category (see [`collapse`]) and `\p{X}` became a class of that byte plus the
//! ASCII members of X. Supported: literals and escapes, `.`, classes with ranges and negation,
//! `\s \S \d \D \w \W` (C-locale meaning, as `std::regex` has them), groups `( )`, `(?: )`,
//! lookahead `(?= )`, `(?! )`, quantifiers `? * + {n} {n,} {n,m}` (lazy forms too), `^ $ \b \B`.

use std::collections::HashSet;

use super::unicode::{flags, CpFlags};

/// Collapsed unit of a code point: ASCII stays, white space becomes 0x0B, letters 0xD2,
/// numbers 0xD1, punctuation 0xD3, marks 0xD4, symbols 0xD5, anything else 0xD0.
pub fn collapse(cp: u32) -> u32 {
    if cp < 128 {
        return cp;
    }
    let f = flags(cp);
    if f.is_whitespace() {
        return 0x0B;
    }
    match f.category() {
        CpFlags::NUMBER => 0xD1,
        CpFlags::LETTER => 0xD2,
        CpFlags::PUNCTUATION => 0xD3,
        CpFlags::MARK => 0xD4,
        CpFlags::SYMBOL => 0xD5,
        _ => 0xD0,
    }
}

/// Wide-mode unit: code points, with non-ASCII white space replaced by 0x0B (C-locale `\s`
/// knows only ASCII white space).
pub fn widen(cp: u32) -> u32 {
    if cp > 0x7F && flags(cp).is_whitespace() {
        0x0B
    } else {
        cp
    }
}

/// True if the pattern uses a Unicode category and therefore runs on collapsed text.
pub fn uses_categories(pattern: &str) -> bool {
    [
        "\\p{N}", "\\p{L}", "\\p{P}", "\\p{M}", "\\p{S}", "\\p{Lu}", "\\p{Ll}", "\\p{Lt}",
        "\\p{Lm}", "\\p{Lo}",
    ]
    .iter()
    .any(|c| pattern.contains(c))
}

#[derive(Clone, Debug)]
enum ClassItem {
    Range(u32, u32),
    Space(bool),
    Digit(bool),
    Word(bool),
}

#[derive(Clone, Debug)]
struct Class {
    items: Vec<ClassItem>,
    negated: bool,
}

fn is_c_space(u: u32) -> bool {
    matches!(u, 0x09..=0x0D | 0x20)
}
fn is_c_digit(u: u32) -> bool {
    (0x30..=0x39).contains(&u)
}
fn is_c_word(u: u32) -> bool {
    matches!(u, 0x30..=0x39 | 0x41..=0x5A | 0x61..=0x7A | 0x5F)
}

impl Class {
    fn matches(&self, u: u32) -> bool {
        let hit = self.items.iter().any(|it| match *it {
            ClassItem::Range(lo, hi) => lo <= u && u <= hi,
            ClassItem::Space(pos) => is_c_space(u) == pos,
            ClassItem::Digit(pos) => is_c_digit(u) == pos,
            ClassItem::Word(pos) => is_c_word(u) == pos,
        });
        hit != self.negated
    }
}

#[derive(Clone, Debug)]
enum Node {
    Empty,
    Unit(Class),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
    Look {
        node: Box<Node>,
        negate: bool,
    },
    Assert(AssertKind),
}

#[derive(Clone, Copy, Debug)]
enum AssertKind {
    Start,
    End,
    WordBoundary(bool),
}

/// Error for a pattern this engine does not understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexError(pub String);

impl std::fmt::Display for RegexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    collapsed: bool,
    pattern: &'a str,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> RegexError {
        RegexError(format!(
            "pattern {:?}: {what} at char {}",
            self.pattern, self.pos
        ))
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn parse_alt(&mut self) -> Result<Node, RegexError> {
        let mut branches = vec![self.parse_concat()?];
        while self.eat('|') {
            branches.push(self.parse_concat()?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(branches)
        })
    }

    fn parse_concat(&mut self) -> Result<Node, RegexError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.parse_atom()?;
            let atom = self.parse_quantifier(atom)?;
            items.push(atom);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        })
    }

    fn parse_number(&mut self) -> Option<u32> {
        let start = self.pos;
        while matches!(self.peek(), Some('0'..='9')) {
            self.pos += 1;
        }
        if start == self.pos {
            return None;
        }
        self.chars[start..self.pos]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
    }

    fn parse_quantifier(&mut self, atom: Node) -> Result<Node, RegexError> {
        let (min, max) = match self.peek() {
            Some('*') => {
                self.pos += 1;
                (0, None)
            }
            Some('+') => {
                self.pos += 1;
                (1, None)
            }
            Some('?') => {
                self.pos += 1;
                (0, Some(1))
            }
            Some('{') => {
                let save = self.pos;
                self.pos += 1;
                let Some(min) = self.parse_number() else {
                    self.pos = save;
                    return Ok(atom);
                };
                let max = if self.eat(',') {
                    self.parse_number()
                } else {
                    Some(min)
                };
                if !self.eat('}') {
                    return Err(self.err("unterminated {n,m}"));
                }
                if max.is_some_and(|m| m < min) {
                    return Err(self.err("bad {n,m}"));
                }
                (min, max)
            }
            _ => return Ok(atom),
        };
        if matches!(atom, Node::Assert(_) | Node::Look { .. }) {
            return Err(self.err("quantified assertion"));
        }
        let greedy = !self.eat('?');
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
            greedy,
        })
    }

    fn category_items(&self, name: &str) -> Result<Vec<ClassItem>, RegexError> {
        if !self.collapsed {
            return Err(self.err("\\p{..} outside collapsed mode"));
        }
        let r = |lo: u8, hi: u8| ClassItem::Range(lo as u32, hi as u32);
        let one = |c: u8| ClassItem::Range(c as u32, c as u32);
        Ok(match name {
            "N" => vec![one(0xD1), r(b'0', b'9')],
            "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => vec![one(0xD2), r(b'A', b'Z'), r(b'a', b'z')],
            "P" => vec![
                one(0xD3),
                r(0x21, 0x23),
                r(0x25, 0x2A),
                r(0x2C, 0x2F),
                r(0x3A, 0x3B),
                r(0x3F, 0x40),
                r(0x5B, 0x5D),
                one(0x5F),
                one(0x7B),
                one(0x7D),
            ],
            "M" => vec![one(0xD4)],
            "S" => vec![
                one(0xD5),
                one(0x24),
                one(0x2B),
                r(0x3C, 0x3E),
                one(0x5E),
                one(0x60),
                one(0x7C),
                one(0x7E),
            ],
            _ => return Err(self.err("unsupported \\p{..} category")),
        })
    }

    /// Parses an escape after the backslash; returns class items (a literal is a 1-wide range).
    fn parse_escape(&mut self) -> Result<Vec<ClassItem>, RegexError> {
        let Some(c) = self.peek() else {
            return Err(self.err("trailing backslash"));
        };
        self.pos += 1;
        let lit = |u: u32| Ok(vec![ClassItem::Range(u, u)]);
        match c {
            's' => Ok(vec![ClassItem::Space(true)]),
            'S' => Ok(vec![ClassItem::Space(false)]),
            'd' => Ok(vec![ClassItem::Digit(true)]),
            'D' => Ok(vec![ClassItem::Digit(false)]),
            'w' => Ok(vec![ClassItem::Word(true)]),
            'W' => Ok(vec![ClassItem::Word(false)]),
            'n' => lit(0x0A),
            'r' => lit(0x0D),
            't' => lit(0x09),
            'v' => lit(0x0B),
            'f' => lit(0x0C),
            '0' => lit(0),
            'x' => {
                let hex: String = self
                    .chars
                    .get(self.pos..self.pos + 2)
                    .unwrap_or(&[])
                    .iter()
                    .collect();
                let v = u32::from_str_radix(&hex, 16).map_err(|_| self.err("bad \\x escape"))?;
                self.pos += 2;
                lit(v)
            }
            'p' => {
                if !self.eat('{') {
                    return Err(self.err("\\p without {"));
                }
                let start = self.pos;
                while self.peek().is_some_and(|c| c != '}') {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                if !self.eat('}') {
                    return Err(self.err("unterminated \\p{"));
                }
                self.category_items(&name)
            }
            c if c.is_ascii_alphanumeric() => Err(self.err("unsupported escape")),
            c => lit(c as u32),
        }
    }

    fn parse_class(&mut self) -> Result<Class, RegexError> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated class"));
            };
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            self.pos += 1;
            let lo_items = if c == '\\' {
                self.parse_escape()?
            } else {
                vec![ClassItem::Range(c as u32, c as u32)]
            };
            // A range needs a single-unit left end and a following '-' that is not the last char.
            let single = match lo_items.as_slice() {
                [ClassItem::Range(a, b)] if a == b => Some(*a),
                _ => None,
            };
            if let Some(lo) = single {
                if self.peek() == Some('-')
                    && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']')
                {
                    self.pos += 1;
                    let hc = self.peek().ok_or_else(|| self.err("unterminated range"))?;
                    self.pos += 1;
                    let hi = if hc == '\\' {
                        match self.parse_escape()?.as_slice() {
                            [ClassItem::Range(a, b)] if a == b => *a,
                            _ => return Err(self.err("class escape as range end")),
                        }
                    } else {
                        hc as u32
                    };
                    if hi < lo {
                        return Err(self.err("reversed range"));
                    }
                    items.push(ClassItem::Range(lo, hi));
                    continue;
                }
            }
            items.extend(lo_items);
        }
        Ok(Class { items, negated })
    }

    fn parse_atom(&mut self) -> Result<Node, RegexError> {
        let Some(c) = self.peek() else {
            return Err(self.err("unexpected end"));
        };
        self.pos += 1;
        match c {
            '(' => {
                let look = if self.peek() == Some('?') {
                    self.pos += 1;
                    match self.peek() {
                        Some(':') => {
                            self.pos += 1;
                            None
                        }
                        Some('=') => {
                            self.pos += 1;
                            Some(false)
                        }
                        Some('!') => {
                            self.pos += 1;
                            Some(true)
                        }
                        _ => return Err(self.err("unsupported group kind")),
                    }
                } else {
                    None
                };
                let inner = self.parse_alt()?;
                if !self.eat(')') {
                    return Err(self.err("unbalanced parenthesis"));
                }
                Ok(match look {
                    Some(negate) => Node::Look {
                        node: Box::new(inner),
                        negate,
                    },
                    None => inner,
                })
            }
            '[' => Ok(Node::Unit(self.parse_class()?)),
            '.' => Ok(Node::Unit(Class {
                items: vec![
                    ClassItem::Range(0x0A, 0x0A),
                    ClassItem::Range(0x0D, 0x0D),
                    ClassItem::Range(0x2028, 0x2029),
                ],
                negated: true,
            })),
            '^' => Ok(Node::Assert(AssertKind::Start)),
            '$' => Ok(Node::Assert(AssertKind::End)),
            '\\' => {
                match self.peek() {
                    Some('b') => {
                        self.pos += 1;
                        return Ok(Node::Assert(AssertKind::WordBoundary(true)));
                    }
                    Some('B') => {
                        self.pos += 1;
                        return Ok(Node::Assert(AssertKind::WordBoundary(false)));
                    }
                    _ => {}
                }
                let items = self.parse_escape()?;
                Ok(Node::Unit(Class {
                    items,
                    negated: false,
                }))
            }
            '*' | '+' | '?' | ')' => Err(self.err("misplaced operator")),
            c => Ok(Node::Unit(Class {
                items: vec![ClassItem::Range(c as u32, c as u32)],
                negated: false,
            })),
        }
    }
}

#[derive(Clone, Debug)]
enum Inst {
    Unit(usize),
    /// Try the first target, on failure the second.
    Split(usize, usize),
    Jmp(usize),
    /// Remember the position in a register (loop entry).
    Mark(usize),
    /// Fail if the position equals the register (an empty loop iteration).
    Progress(usize),
    Look {
        prog: usize,
        negate: bool,
    },
    Assert(AssertKind),
    Match,
}

#[derive(Debug)]
struct Program {
    insts: Vec<Inst>,
}

/// A compiled pattern.
#[derive(Debug)]
pub struct Regex {
    classes: Vec<Class>,
    /// Program 0 is the pattern; the others are lookahead bodies.
    progs: Vec<Program>,
    n_regs: usize,
    collapsed: bool,
    /// No loop of the main program can iterate without consuming input, so a failed
    /// (instruction, position) state fails again whatever path reaches it: the search may then
    /// remember failures, which keeps it linear on inputs where plain backtracking is quadratic.
    memo_safe: bool,
}

/// Whether `node` can match the empty string.
fn nullable(node: &Node) -> bool {
    match node {
        Node::Empty | Node::Look { .. } | Node::Assert(_) => true,
        Node::Unit(_) => false,
        Node::Concat(items) => items.iter().all(nullable),
        Node::Alt(branches) => branches.iter().any(nullable),
        Node::Repeat { node, min, .. } => *min == 0 || nullable(node),
    }
}

struct Compiler {
    classes: Vec<Class>,
    progs: Vec<Program>,
    n_regs: usize,
}

impl Compiler {
    fn compile_node(&mut self, insts: &mut Vec<Inst>, node: &Node) {
        match node {
            Node::Empty => {}
            Node::Unit(class) => {
                self.classes.push(class.clone());
                insts.push(Inst::Unit(self.classes.len() - 1));
            }
            Node::Concat(items) => {
                for it in items {
                    self.compile_node(insts, it);
                }
            }
            Node::Alt(branches) => {
                let mut jumps = Vec::new();
                for (i, b) in branches.iter().enumerate() {
                    if i + 1 < branches.len() {
                        let split = insts.len();
                        insts.push(Inst::Split(split + 1, 0));
                        self.compile_node(insts, b);
                        jumps.push(insts.len());
                        insts.push(Inst::Jmp(0));
                        let next = insts.len();
                        insts[split] = Inst::Split(split + 1, next);
                    } else {
                        self.compile_node(insts, b);
                    }
                }
                let end = insts.len();
                for j in jumps {
                    insts[j] = Inst::Jmp(end);
                }
            }
            Node::Repeat {
                node,
                min,
                max,
                greedy,
            } => {
                for _ in 0..*min {
                    self.compile_node(insts, node);
                }
                match max {
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(insts.len());
                            insts.push(Inst::Split(0, 0));
                            self.compile_node(insts, node);
                        }
                        let end = insts.len();
                        for s in splits {
                            insts[s] = if *greedy {
                                Inst::Split(s + 1, end)
                            } else {
                                Inst::Split(end, s + 1)
                            };
                        }
                    }
                    None => {
                        // A body that always consumes needs no empty-iteration guard.
                        let guard = nullable(node).then(|| {
                            self.n_regs += 1;
                            self.n_regs - 1
                        });
                        let head = insts.len();
                        insts.push(Inst::Split(0, 0));
                        if let Some(reg) = guard {
                            insts.push(Inst::Mark(reg));
                        }
                        self.compile_node(insts, node);
                        if let Some(reg) = guard {
                            insts.push(Inst::Progress(reg));
                        }
                        insts.push(Inst::Jmp(head));
                        let end = insts.len();
                        insts[head] = if *greedy {
                            Inst::Split(head + 1, end)
                        } else {
                            Inst::Split(end, head + 1)
                        };
                    }
                }
            }
            Node::Look { node, negate } => {
                let mut sub = Vec::new();
                self.compile_node(&mut sub, node);
                sub.push(Inst::Match);
                self.progs.push(Program { insts: sub });
                insts.push(Inst::Look {
                    prog: self.progs.len() - 1,
                    negate: *negate,
                });
            }
            Node::Assert(kind) => insts.push(Inst::Assert(*kind)),
        }
    }
}

enum Frame {
    Alt(usize, usize),
    Reg(usize, usize),
}

impl Regex {
    /// Compiles `pattern`; patterns using `\p{..}` run on collapsed units.
    pub fn new(pattern: &str) -> Result<Regex, RegexError> {
        let collapsed = uses_categories(pattern);
        let mut parser = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
            collapsed,
            pattern,
        };
        let ast = parser.parse_alt()?;
        if parser.pos != parser.chars.len() {
            return Err(parser.err("unbalanced parenthesis"));
        }
        let mut c = Compiler {
            classes: Vec::new(),
            progs: vec![Program { insts: Vec::new() }],
            n_regs: 0,
        };
        let mut main = Vec::new();
        c.compile_node(&mut main, &ast);
        main.push(Inst::Match);
        let memo_safe = !main.iter().any(|i| matches!(i, Inst::Progress(_)));
        c.progs[0] = Program { insts: main };
        Ok(Regex {
            classes: c.classes,
            progs: c.progs,
            n_regs: c.n_regs,
            collapsed,
            memo_safe,
        })
    }

    /// Whether the pattern runs on collapsed units ([`collapse`]) rather than wide ones ([`widen`]).
    pub fn is_collapsed(&self) -> bool {
        self.collapsed
    }

    /// Runs program `prog` anchored at `start` within `text[..end]`; returns the match end.
    /// `memo` (main program only) records failed states; it is switched on once `steps` passes
    /// `budget`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        prog: usize,
        text: &[u32],
        begin: usize,
        start: usize,
        end: usize,
        not_null: bool,
        memo: &mut Option<HashSet<u64>>,
        steps: &mut usize,
        budget: usize,
    ) -> Option<usize> {
        let may_memo = prog == 0 && !not_null && self.memo_safe;
        let insts = &self.progs[prog].insts;
        let mut regs = vec![usize::MAX; self.n_regs];
        let mut stack: Vec<Frame> = Vec::new();
        let (mut pc, mut pos) = (0usize, start);
        loop {
            *steps += 1;
            if may_memo && memo.is_none() && *steps > budget {
                *memo = Some(HashSet::new());
            }
            let fresh = match memo {
                Some(m) if may_memo => m.insert(((pc as u64) << 40) | pos as u64),
                _ => true,
            };
            let ok = fresh
                && match &insts[pc] {
                    Inst::Unit(ci) => {
                        if pos < end && self.classes[*ci].matches(text[pos]) {
                            pos += 1;
                            pc += 1;
                            true
                        } else {
                            false
                        }
                    }
                    Inst::Split(a, b) => {
                        stack.push(Frame::Alt(*b, pos));
                        pc = *a;
                        true
                    }
                    Inst::Jmp(a) => {
                        pc = *a;
                        true
                    }
                    Inst::Mark(r) => {
                        stack.push(Frame::Reg(*r, regs[*r]));
                        regs[*r] = pos;
                        pc += 1;
                        true
                    }
                    Inst::Progress(r) => {
                        if regs[*r] == pos {
                            false
                        } else {
                            pc += 1;
                            true
                        }
                    }
                    Inst::Look { prog, negate } => {
                        let mut sub_steps = 0;
                        let found = self
                            .run(
                                *prog,
                                text,
                                begin,
                                pos,
                                end,
                                false,
                                &mut None,
                                &mut sub_steps,
                                usize::MAX,
                            )
                            .is_some();
                        *steps += sub_steps;
                        if found != *negate {
                            pc += 1;
                            true
                        } else {
                            false
                        }
                    }
                    Inst::Assert(kind) => {
                        let holds = match kind {
                            AssertKind::Start => pos == begin,
                            AssertKind::End => pos == end,
                            AssertKind::WordBoundary(want) => {
                                let before = pos > begin && is_c_word(text[pos - 1]);
                                let after = pos < end && is_c_word(text[pos]);
                                (before != after) == *want
                            }
                        };
                        if holds {
                            pc += 1;
                        }
                        holds
                    }
                    Inst::Match => {
                        if not_null && pos == start {
                            false
                        } else {
                            return Some(pos);
                        }
                    }
                };
            if ok {
                continue;
            }
            // Backtrack.
            loop {
                match stack.pop() {
                    None => return None,
                    Some(Frame::Reg(r, v)) => regs[r] = v,
                    Some(Frame::Alt(p, q)) => {
                        pc = p;
                        pos = q;
                        break;
                    }
                }
            }
        }
    }

    /// Leftmost match in `text[from..end]` (the subject is `text[begin..end]`).
    fn search(
        &self,
        text: &[u32],
        begin: usize,
        from: usize,
        end: usize,
    ) -> Option<(usize, usize)> {
        let mut memo = None;
        let mut steps = 0;
        let budget = 64 * (end - from) + 4096;
        (from..=end).find_map(|s| {
            self.run(0, text, begin, s, end, false, &mut memo, &mut steps, budget)
                .map(|e| (s, e))
        })
    }

    /// All matches in `text[begin..end]`, iterated as `std::regex_iterator` does: after an empty
    /// match, first a non-empty match at the same place, else the search resumes one unit later.
    pub fn find_all(&self, text: &[u32], begin: usize, end: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let Some(mut m) = self.search(text, begin, begin, end) else {
            return out;
        };
        loop {
            out.push(m);
            let (s, e) = m;
            let next = if s == e {
                if e == end {
                    None
                } else {
                    match self.run(0, text, begin, e, end, true, &mut None, &mut 0, usize::MAX) {
                        Some(e2) => Some((e, e2)),
                        None => self.search(text, begin, e + 1, end),
                    }
                }
            } else {
                self.search(text, begin, e, end)
            };
            match next {
                Some(n) => m = n,
                None => return out,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str, collapsed: bool) -> Vec<u32> {
        s.chars()
            .map(|c| {
                if collapsed {
                    collapse(c as u32)
                } else {
                    widen(c as u32)
                }
            })
            .collect()
    }

    fn split(pattern: &str, s: &str) -> Vec<String> {
        let re = Regex::new(pattern).unwrap();
        let u = units(s, re.is_collapsed());
        let chars: Vec<char> = s.chars().collect();
        re.find_all(&u, 0, u.len())
            .into_iter()
            .map(|(a, b)| chars[a..b].iter().collect())
            .collect()
    }

    #[test]
    fn alternation_is_ordered_not_longest() {
        assert_eq!(split("a|ab", "ab"), vec!["a"]);
        assert_eq!(split("ab|a", "ab"), vec!["ab"]);
    }

    #[test]
    fn categories_work_on_collapsed_text() {
        assert_eq!(split(r"\p{N}+", "ab12٣4x"), vec!["12٣4"]);
        assert_eq!(split(r"\s?\p{L}+", "héllo wörld"), vec!["héllo", " wörld"]);
        assert_eq!(split(r"[^\s\p{L}\p{N}]+", "a+-é…!b"), vec!["+-", "…!"]);
    }

    #[test]
    fn lookahead_and_counted_repeats() {
        assert_eq!(split(r"\s+(?!\S)", "a   b"), vec!["  "]);
        assert_eq!(split(r"[0-9][0-9][0-9]", "1234567"), vec!["123", "456"]);
        assert_eq!(split(r"\p{N}{1,3}", "12345"), vec!["123", "45"]);
        assert_eq!(split(r"\s+$", "a  \t"), vec!["  \t"]);
    }

    #[test]
    fn empty_matches_advance() {
        // Zero-width matches at every place where a multiple of three digits follows.
        let re = Regex::new(r"(?=(\d{3})+(?!\d))").unwrap();
        let u = units("1234567", false);
        let m = re.find_all(&u, 0, u.len());
        assert_eq!(m, vec![(1, 1), (4, 4)]);
    }

    #[test]
    fn failing_searches_stay_linear() {
        // Plain backtracking is quadratic here: every start in the run of spaces scans to its end.
        let re = Regex::new(r"\s+$").unwrap();
        let text = units(&(" ".repeat(50_000) + "1"), false);
        let t = std::time::Instant::now();
        assert!(re.find_all(&text, 0, text.len()).is_empty());
        assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
        // The remembered failures do not change what matches.
        let text = units(&(" ".repeat(50_000) + "1  "), false);
        assert_eq!(re.find_all(&text, 0, text.len()), vec![(50_001, 50_003)]);
    }

    #[test]
    fn nullable_loops_terminate() {
        assert_eq!(split("(a?)*b", "aab"), vec!["aab"]);
        assert_eq!(split("(?:x*)*y", "xxy"), vec!["xxy"]);
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Regex::new("(ab").is_err());
        assert!(Regex::new("[ab").is_err());
        assert!(Regex::new(r"\p{Han}+").is_err());
    }
}
