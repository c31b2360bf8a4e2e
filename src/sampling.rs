//! Token sampling with llama.cpp's default sampler chain, and stop strings.
//!
//! [`Sampler::sample`] applies, in the order llama.cpp's common sampler does:
//!
//! 1. **penalties** over the last `repeat_last_n` tokens: a token seen `c`
//!    times has its logit divided by `repeat_penalty` when positive
//!    (multiplied when `<= 0`), then `c * frequency_penalty + presence_penalty`
//!    subtracted;
//! 2. **top-k**: keep the `top_k` highest logits (`<= 0`: keep all);
//! 3. **top-p**: softmax over the survivors, keep the smallest prefix (by
//!    descending probability) whose mass reaches `top_p` (`>= 1`: off);
//! 4. **min-p**: keep tokens with `p >= min_p * p_max`, i.e. logit `>= max + ln(min_p)`
//!    (`<= 0`: off);
//! 5. **temperature**: divide logits by `temperature`;
//! 6. **dist**: softmax and draw one token with the seeded generator.
//!
//! Every filter keeps at least one token (llama.cpp's `min_keep`), so a draw
//! always has a candidate. `temperature <= 0` is greedy: after the penalties,
//! the highest logit wins, the lowest token id on ties.
//!
//! Differences from llama.cpp, on purpose: ties in the logits are ordered by
//! token id (llama.cpp's partial sort leaves them unspecified), NaN logits count
//! as `-inf`, and the random generator is our own xoshiro256** (seeded through
//! SplitMix64), so the same seed gives the same tokens here but not the same
//! tokens as llama.cpp's mt19937.

/// Settings of the sampler chain. `Default` gives llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// `<= 0`: greedy. Default 0.8.
    pub temperature: f32,
    /// `<= 0`: off. Default 40.
    pub top_k: i32,
    /// `>= 1`: off. Default 0.95.
    pub top_p: f32,
    /// `<= 0`: off. Default 0.05.
    pub min_p: f32,
    /// `1`: off. Default 1.0.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalties look at; `0` turns the
    /// penalties off, `-1` means all tokens passed in. Default 64.
    pub repeat_last_n: i32,
    /// Subtracted once from every token seen in the window. Default 0.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window. Default 0.
    pub frequency_penalty: f32,
    /// `None`: seed from the clock (llama.cpp's default); `Some(s)`: reproducible.
    pub seed: Option<u64>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: always the highest logit.
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    fn penalties_enabled(&self) -> bool {
        self.repeat_last_n != 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// A token still in the running after the filters, with its probability in
/// the final distribution (after temperature).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub id: u32,
    /// Logit after penalties and temperature.
    pub logit: f32,
    pub prob: f32,
}

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
#[derive(Clone, Debug)]
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn seed_from(seed: u64) -> Xoshiro256 {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Xoshiro256 {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Mix in a stack address so two samplers made in the same nanosecond differ.
    let local = 0u8;
    nanos ^ ((&local as *const u8 as u64).rotate_left(32))
}

/// Above this many candidates, top-p first tries the best [`TOP_P_PARTIAL`]
/// tokens before sorting everything (as llama.cpp does).
const TOP_P_PARTIAL: usize = 256;

/// Draws tokens from logits. Holds its random state and reusable buffers; a
/// call allocates nothing once the buffers have grown to the vocabulary size.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Xoshiro256,
    /// The candidates of the current (or last) call; its first `n_live` are
    /// the survivors.
    candidates: Vec<Candidate>,
    n_live: usize,
    /// Scratch for counting the penalty window.
    window: Vec<u32>,
}

/// Orders by logit, highest first; ties by lower token id.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        let seed = cfg.seed.unwrap_or_else(clock_seed);
        Sampler {
            cfg,
            rng: Xoshiro256::seed_from(seed),
            candidates: Vec::new(),
            n_live: 0,
            window: Vec::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Restarts the random sequence from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Xoshiro256::seed_from(seed);
    }

    /// The candidates that survived the filters in the last [`Sampler::sample`]
    /// call, highest probability first, with their final probabilities. Empty
    /// after a greedy call.
    pub fn last_candidates(&self) -> &[Candidate] {
        &self.candidates[..self.n_live]
    }

    /// Picks the next token. `logits` has one entry per vocabulary token; the
    /// penalties are applied to it in place (so the caller sees what was
    /// sampled from). `recent_tokens` is the context so far, oldest first
    /// (prompt and generated tokens, as llama.cpp feeds its penalty window);
    /// ids outside the vocabulary are ignored.
    ///
    /// Returns 0 when `logits` is empty (there is nothing to choose from).
    pub fn sample(&mut self, logits: &mut [f32], recent_tokens: &[u32]) -> u32 {
        self.n_live = 0;
        if logits.is_empty() {
            return 0;
        }
        if self.cfg.penalties_enabled() {
            self.apply_penalties(logits, recent_tokens);
        }
        if self.cfg.temperature.is_nan() || self.cfg.temperature <= 0.0 {
            return argmax(logits);
        }

        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| Candidate {
                id: i as u32,
                logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
                prob: 0.0,
            }));
        let mut n = self.candidates.len();
        // `sorted_upto`: the first this-many candidates are in descending order
        // and are the best of all `n`.
        let mut sorted_upto = 0usize;

        // top-k
        if self.cfg.top_k > 0 && (self.cfg.top_k as usize) < n {
            let k = self.cfg.top_k as usize;
            self.candidates.select_nth_unstable_by(k - 1, by_logit_desc);
            n = k;
        }
        if self.cfg.top_k > 0 {
            self.candidates[..n].sort_unstable_by(by_logit_desc);
            sorted_upto = n;
        }

        // top-p
        if self.cfg.top_p < 1.0 {
            n = self.top_p(n, &mut sorted_upto);
        }

        // min-p: keep logit >= max + ln(min_p); the best token always stays.
        if self.cfg.min_p > 0.0 && n > 1 {
            let max = self.candidates[..n]
                .iter()
                .map(|c| c.logit)
                .fold(f32::NEG_INFINITY, f32::max);
            // min_p > 1 would drop even the best token; it stays (min_keep).
            let floor = (max + self.cfg.min_p.ln()).min(max);
            if sorted_upto >= n {
                let keep = self.candidates[1..n]
                    .iter()
                    .position(|c| c.logit < floor)
                    .map_or(n, |p| p + 1);
                n = keep;
            } else {
                let mut kept = 0;
                for i in 0..n {
                    if self.candidates[i].logit >= floor {
                        self.candidates.swap(kept, i);
                        kept += 1;
                    }
                }
                n = kept.max(1);
                sorted_upto = 0;
            }
        }

        // temperature
        let inv_t = 1.0 / self.cfg.temperature;
        for c in &mut self.candidates[..n] {
            c.logit *= inv_t;
        }
        if sorted_upto < n {
            self.candidates[..n].sort_unstable_by(by_logit_desc);
        }
        self.n_live = n;

        // dist
        let live = &mut self.candidates[..n];
        let max = live[0].logit;
        if max == f32::NEG_INFINITY || n == 1 {
            // Nothing has any mass (all logits -inf), or a single survivor:
            // the best one (lowest id among equals). Draw anyway so the
            // random sequence does not depend on how many survived.
            self.rng.next_f64();
            for (i, c) in live.iter_mut().enumerate() {
                c.prob = if i == 0 { 1.0 } else { 0.0 };
            }
            return live[0].id;
        }
        let mut sum = 0.0f64;
        for c in live.iter_mut() {
            c.prob = (c.logit - max).exp();
            sum += c.prob as f64;
        }
        let target = self.rng.next_f64() * sum;
        let mut run = 0.0f64;
        let mut chosen = live[n - 1].id;
        let mut found = false;
        for c in live.iter_mut() {
            run += c.prob as f64;
            if !found && run > target {
                chosen = c.id;
                found = true;
            }
            c.prob = (c.prob as f64 / sum) as f32;
        }
        chosen
    }

    /// top-p over the first `n` candidates; returns the new count.
    fn top_p(&mut self, n: usize, sorted_upto: &mut usize) -> usize {
        let max = self.candidates[..n]
            .iter()
            .map(|c| c.logit)
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return n;
        }
        let mut total = 0.0f64;
        for c in &mut self.candidates[..n] {
            c.prob = (c.logit - max).exp();
            total += c.prob as f64;
        }
        let target = self.cfg.top_p as f64 * total;
        // Usually the mass is reached within the best few hundred tokens: sort
        // only those first.
        if *sorted_upto < n && n > TOP_P_PARTIAL {
            self.candidates[..n].select_nth_unstable_by(TOP_P_PARTIAL - 1, by_logit_desc);
            self.candidates[..TOP_P_PARTIAL].sort_unstable_by(by_logit_desc);
            *sorted_upto = TOP_P_PARTIAL;
            if let Some(keep) = cut_at_mass(&self.candidates[..TOP_P_PARTIAL], target) {
                return keep;
            }
        }
        if *sorted_upto < n {
            self.candidates[..n].sort_unstable_by(by_logit_desc);
            *sorted_upto = n;
        }
        cut_at_mass(&self.candidates[..n], target).unwrap_or(n)
    }

    fn apply_penalties(&mut self, logits: &mut [f32], recent: &[u32]) {
        let window = match self.cfg.repeat_last_n {
            n if n < 0 => recent,
            n => &recent[recent.len().saturating_sub(n as usize)..],
        };
        self.window.clear();
        self.window.extend(
            window
                .iter()
                .copied()
                .filter(|&t| (t as usize) < logits.len()),
        );
        self.window.sort_unstable();
        let mut i = 0;
        while i < self.window.len() {
            let token = self.window[i];
            let run = self.window[i..].iter().take_while(|&&t| t == token).count();
            let logit = &mut logits[token as usize];
            if *logit <= 0.0 {
                *logit *= self.cfg.repeat_penalty;
            } else {
                *logit /= self.cfg.repeat_penalty;
            }
            *logit -= run as f32 * self.cfg.frequency_penalty + self.cfg.presence_penalty;
            i += run;
        }
    }
}

/// Smallest prefix of `sorted` (descending, `prob` = unnormalized mass) whose
/// mass reaches `target`; `None` if the whole slice falls short.
fn cut_at_mass(sorted: &[Candidate], target: f64) -> Option<usize> {
    let mut cum = 0.0f64;
    for (i, c) in sorted.iter().enumerate() {
        cum += c.prob as f64;
        if cum >= target {
            return Some(i + 1);
        }
    }
    None
}

/// Index of the highest logit, the lowest index on ties; NaN never wins.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_l = f32::NEG_INFINITY;
    let mut seen = false;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_nan() && (!seen || l > best_l) {
            best = i;
            best_l = l;
            seen = true;
        }
    }
    best as u32
}

/// What [`StopStrings::scan`] found in the text generated so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopScan {
    /// Bytes of the text that are final and may be shown: everything before a
    /// stop string, or everything except a tail that may grow into one.
    pub safe_len: usize,
    /// Index (into the list given to [`StopStrings::new`]) of the stop string
    /// found, if generation must stop.
    pub stopped_by: Option<usize>,
}

/// Stop strings for generation (e.g. `"</s>"`, `"\nUser:"`).
///
/// While streaming, text that might be the start of a stop string is held
/// back until it is clear it is not; when a stop string appears, the text
/// before it is final and the rest is dropped.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
}

impl StopStrings {
    /// Empty stop strings are ignored.
    pub fn new<I, S>(stops: I) -> StopStrings
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopStrings {
            stops: stops
                .into_iter()
                .map(Into::into)
                .filter(|s: &String| !s.is_empty())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Looks at the whole text generated so far, from byte `from` on (bytes
    /// before `from` are known to hold no stop string and no pending prefix).
    /// The earliest stop string wins; at the same position the longer one.
    pub fn scan(&self, text: &str, from: usize) -> StopScan {
        let from = from.min(text.len());
        let mut found: Option<(usize, usize)> = None; // (byte position, stop index)
        for (idx, stop) in self.stops.iter().enumerate() {
            if let Some(rel) = text.get(from..).and_then(|t| t.find(stop.as_str())) {
                let pos = from + rel;
                let better = match found {
                    None => true,
                    Some((p, j)) => pos < p || (pos == p && stop.len() > self.stops[j].len()),
                };
                if better {
                    found = Some((pos, idx));
                }
            }
        }
        if let Some((pos, idx)) = found {
            return StopScan {
                safe_len: pos,
                stopped_by: Some(idx),
            };
        }
        // Hold back the longest tail that is a proper prefix of a stop string.
        let bytes = text.as_bytes();
        let mut hold = 0usize;
        for stop in &self.stops {
            let s = stop.as_bytes();
            let max = (s.len() - 1).min(bytes.len() - from);
            for len in (hold + 1..=max).rev() {
                if bytes[bytes.len() - len..] == s[..len] {
                    hold = len;
                    break;
                }
            }
        }
        StopScan {
            safe_len: text.len() - hold,
            stopped_by: None,
        }
    }
}

/// Streams generated text through [`StopStrings`]: push each decoded piece,
/// get back the part that is safe to show.
#[derive(Clone, Debug, Default)]
pub struct StopFilter {
    stops: StopStrings,
    text: String,
    emitted: usize,
    stopped_by: Option<usize>,
}

impl StopFilter {
    pub fn new(stops: StopStrings) -> StopFilter {
        StopFilter {
            stops,
            ..StopFilter::default()
        }
    }

    /// Adds a piece of generated text; returns the newly final text (possibly
    /// empty while a possible stop string is pending). After a stop string
    /// was seen, further pieces are ignored.
    pub fn push(&mut self, piece: &str) -> &str {
        if self.stopped_by.is_some() {
            return "";
        }
        self.text.push_str(piece);
        let scan = self.stops.scan(&self.text, self.emitted);
        let start = self.emitted;
        self.emitted = scan.safe_len.max(start);
        if let Some(idx) = scan.stopped_by {
            self.stopped_by = Some(idx);
            self.text.truncate(scan.safe_len);
        }
        &self.text[start..self.emitted]
    }

    /// Generation ended without a stop string: releases the held-back tail.
    pub fn finish(&mut self) -> &str {
        let start = self.emitted;
        self.emitted = self.text.len();
        &self.text[start..]
    }

    /// Index of the stop string that ended generation, if any.
    pub fn stopped_by(&self) -> Option<usize> {
        self.stopped_by
    }

    /// All final text so far (without the stop string).
    pub fn text(&self) -> &str {
        &self.text[..self.emitted]
    }
}
