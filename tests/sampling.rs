//! The sampler chain (penalties → top-k → top-p → min-p → temperature → dist)
//! and stop-string streaming.

use moe_edge::sampling::{Sampler, SamplerConfig, StopFilter, StopStrings};

/// Only the stage under test switched on.
fn plain(temperature: f32) -> SamplerConfig {
    SamplerConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        seed: Some(1234),
    }
}

fn survivors(s: &Sampler) -> Vec<u32> {
    let mut ids: Vec<u32> = s.last_candidates().iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn defaults_are_llama_cpp_defaults() {
    let c = SamplerConfig::default();
    assert_eq!(
        (c.temperature, c.top_k, c.top_p, c.min_p),
        (0.8, 40, 0.95, 0.05)
    );
    assert_eq!((c.repeat_penalty, c.repeat_last_n), (1.0, 64));
    assert_eq!((c.presence_penalty, c.frequency_penalty), (0.0, 0.0));
}

#[test]
fn greedy_picks_argmax_lowest_id_on_ties() {
    let mut s = Sampler::new(SamplerConfig::greedy());
    assert_eq!(s.sample(&mut [0.1, 2.0, -1.0, 1.9], &[]), 1);
    assert_eq!(s.sample(&mut [0.5, 3.0, 3.0, 1.0], &[]), 1);
    assert_eq!(s.sample(&mut [f32::NAN, -5.0, -4.0], &[]), 2);
    assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 3], &[]), 0);
    assert_eq!(s.sample(&mut [], &[]), 0);
    let mut neg = plain(-1.0);
    neg.top_k = 40;
    assert_eq!(Sampler::new(neg).sample(&mut [1.0, 7.0, 2.0], &[]), 1);
}

#[test]
fn top_k_one_equals_greedy() {
    let mut cfg = plain(1.5);
    cfg.top_k = 1;
    let mut s = Sampler::new(cfg);
    let mut g = Sampler::new(SamplerConfig::greedy());
    let mut state = 7u64;
    for _ in 0..200 {
        let logits: Vec<f32> = (0..50)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 10.0 - 5.0
            })
            .collect();
        let a = s.sample(&mut logits.clone(), &[]);
        let b = g.sample(&mut logits.clone(), &[]);
        assert_eq!(a, b);
        assert_eq!(s.last_candidates().len(), 1);
    }
}

#[test]
fn top_k_keeps_the_k_best() {
    let mut cfg = plain(1.0);
    cfg.top_k = 3;
    let mut s = Sampler::new(cfg);
    s.sample(&mut [0.0, 5.0, 1.0, 4.0, 3.0, -2.0], &[]);
    assert_eq!(survivors(&s), vec![1, 3, 4]);
}

#[test]
fn top_p_cuts_at_cumulative_mass() {
    // probabilities 0.5, 0.25, 0.15, 0.1 (as logits ln p).
    let probs = [0.5f32, 0.25, 0.15, 0.1];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let run = |top_p: f32| {
        let mut cfg = plain(1.0);
        cfg.top_p = top_p;
        let mut s = Sampler::new(cfg);
        s.sample(&mut logits.clone(), &[]);
        survivors(&s)
    };
    assert_eq!(run(0.5), vec![0]); // 0.5 reaches 0.5 exactly
    assert_eq!(run(0.6), vec![0, 1]); // 0.75 >= 0.6
    assert_eq!(run(0.76), vec![0, 1, 2]); // 0.90 >= 0.76
    assert_eq!(run(0.95), vec![0, 1, 2, 3]);
    assert_eq!(run(0.0), vec![0]); // min_keep = 1
                                   // Renormalized probabilities of the survivors.
    let mut cfg = plain(1.0);
    cfg.top_p = 0.6;
    let mut s = Sampler::new(cfg);
    s.sample(&mut logits.clone(), &[]);
    let c = s.last_candidates();
    assert!((c[0].prob - 2.0 / 3.0).abs() < 1e-5 && (c[1].prob - 1.0 / 3.0).abs() < 1e-5);
}

#[test]
fn top_p_on_large_vocab_uses_partial_sort_correctly() {
    // 5000 tokens, one dominant block of 300 tokens so the cut is beyond 256.
    let logits: Vec<f32> = (0..5000)
        .map(|i| {
            if i % 16 == 0 && i < 16 * 300 {
                5.0 - (i as f32) * 1e-5
            } else {
                -10.0
            }
        })
        .collect();
    let mut cfg = plain(1.0);
    cfg.top_p = 0.99;
    let mut s = Sampler::new(cfg);
    s.sample(&mut logits.clone(), &[]);
    let ids = survivors(&s);
    // 300 dominant tokens hold e^15 times the mass of each of the 4700 others:
    // mass 300*e^15 / (300*e^15 + 4700) ≈ 0.99999; 0.99 needs 297 of them.
    assert_eq!(ids.len(), 297);
    assert!(ids.iter().all(|&i| i % 16 == 0));
    // The cut keeps the highest: the lowest ids (logit falls with i).
    assert_eq!(*ids.last().unwrap(), 16 * 296);
}

#[test]
fn min_p_cuts_relative_to_best() {
    // probabilities 0.5, 0.3, 0.12, 0.05, 0.03
    let probs = [0.5f32, 0.3, 0.12, 0.05, 0.03];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let run = |min_p: f32, top_k: i32| {
        let mut cfg = plain(1.0);
        cfg.min_p = min_p;
        cfg.top_k = top_k; // 0 takes the unsorted path, 5 the sorted one
        let mut s = Sampler::new(cfg);
        s.sample(&mut logits.clone(), &[]);
        survivors(&s)
    };
    for top_k in [0, 5] {
        assert_eq!(run(0.2, top_k), vec![0, 1, 2]); // floor 0.1
        assert_eq!(run(0.5, top_k), vec![0, 1]); // floor 0.25
        assert_eq!(run(0.05, top_k), vec![0, 1, 2, 3, 4]); // floor 0.025
        assert_eq!(run(0.9, top_k), vec![0]);
        assert_eq!(run(2.0, top_k), vec![0]); // never drops the best token
    }
}

#[test]
fn penalties_follow_llama_cpp_formula() {
    let mut cfg = plain(0.0);
    cfg.repeat_penalty = 2.0;
    cfg.frequency_penalty = 0.5;
    cfg.presence_penalty = 0.25;
    cfg.repeat_last_n = 4;
    let mut s = Sampler::new(cfg);
    let mut logits = [4.0f32, -3.0, 1.0, 0.0, 6.0];
    // Window = last 4: [1, 1, 0, 3]; token 4 falls out of it.
    let picked = s.sample(&mut logits, &[4, 4, 1, 1, 0, 3]);
    // token 0: 4/2 - (1*0.5 + 0.25) = 1.25
    // token 1: -3*2 - (2*0.5 + 0.25) = -7.25
    // token 3: 0*2 - 0.75 = -0.75
    assert_eq!(logits, [1.25, -7.25, 1.0, -0.75, 6.0]);
    assert_eq!(picked, 4);
    // Ids outside the vocabulary take a window slot but change nothing.
    let mut logits = [4.0f32, -3.0];
    s.sample(&mut logits, &[99, 1_000_000]);
    assert_eq!(logits, [4.0, -3.0]);

    // Repeat penalty alone turns the choice.
    let mut cfg = plain(0.0);
    cfg.repeat_penalty = 1.5;
    let mut s = Sampler::new(cfg);
    let mut logits = [3.0f32, 2.5];
    assert_eq!(s.sample(&mut logits, &[0]), 1);
    assert_eq!(logits, [2.0, 2.5]);

    // repeat_last_n = 0 disables; -1 uses every token passed.
    let mut cfg = plain(0.0);
    cfg.repeat_penalty = 2.0;
    cfg.repeat_last_n = 0;
    let mut logits = [3.0f32, 2.5];
    Sampler::new(cfg.clone()).sample(&mut logits, &[0]);
    assert_eq!(logits, [3.0, 2.5]);
    cfg.repeat_last_n = -1;
    let mut logits = [3.0f32, 2.5];
    Sampler::new(cfg).sample(&mut logits, &[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    assert_eq!(logits, [1.5, 1.25]);
}

#[test]
fn same_seed_same_sequence() {
    let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 17) as f32 * 0.3).collect();
    let draw = |seed: u64| {
        let mut s = Sampler::new(SamplerConfig {
            seed: Some(seed),
            temperature: 1.2,
            ..SamplerConfig::default()
        });
        (0..200)
            .map(|_| s.sample(&mut logits.clone(), &[]))
            .collect::<Vec<u32>>()
    };
    let a = draw(42);
    assert_eq!(a, draw(42));
    assert_ne!(a, draw(43));
    // More than one token is drawn (it is not greedy in disguise).
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() > 3, "{distinct:?}");

    // reseed restarts the sequence.
    let mut s = Sampler::new(SamplerConfig {
        seed: Some(42),
        temperature: 1.2,
        ..SamplerConfig::default()
    });
    let first: Vec<u32> = (0..10)
        .map(|_| s.sample(&mut logits.clone(), &[]))
        .collect();
    s.reseed(42);
    let again: Vec<u32> = (0..10)
        .map(|_| s.sample(&mut logits.clone(), &[]))
        .collect();
    assert_eq!(first, again);
    assert_eq!(first[..], a[..10]);
}

#[test]
fn frequencies_match_softmax_over_temperature() {
    let logits = [1.0f32, 0.5, 0.0, -0.5, -1.0, 2.0];
    let t = 0.7f32;
    let mut cfg = plain(t);
    cfg.seed = Some(99);
    let mut s = Sampler::new(cfg);
    let draws = 20_000;
    let mut counts = [0usize; 6];
    for _ in 0..draws {
        counts[s.sample(&mut logits.clone(), &[]) as usize] += 1;
    }
    let max = logits.iter().cloned().fold(f32::MIN, f32::max);
    let w: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / t) as f64).exp())
        .collect();
    let z: f64 = w.iter().sum();
    for i in 0..6 {
        let p = w[i] / z;
        let got = counts[i] as f64 / draws as f64;
        // 5 standard deviations of a binomial proportion.
        let tol = 5.0 * (p * (1.0 - p) / draws as f64).sqrt();
        assert!(
            (got - p).abs() < tol,
            "token {i}: got {got:.4}, want {p:.4} ± {tol:.4}"
        );
    }
}

#[test]
fn full_default_chain_only_draws_survivors() {
    // Default chain: top-k 40 then top-p 0.95 then min-p 0.05.
    let logits: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.05).collect();
    let mut s = Sampler::new(SamplerConfig {
        seed: Some(5),
        ..SamplerConfig::default()
    });
    for _ in 0..500 {
        let tok = s.sample(&mut logits.clone(), &[]);
        // min-p 0.05: logit >= ln(0.05) ≈ -2.996 → ids 0..=59; top-k 40 is tighter.
        assert!(tok < 40, "{tok}");
        let n = s.last_candidates().len();
        assert!((1..=40).contains(&n));
        let total: f32 = s.last_candidates().iter().map(|c| c.prob).sum();
        assert!((total - 1.0).abs() < 1e-4);
    }
}

#[test]
fn stop_strings_hold_back_possible_prefixes() {
    let stops = StopStrings::new(["</s>", "\nUser:"]);
    // A tail that may become a stop string is held back.
    let scan = stops.scan("Hello </", 0);
    assert_eq!((scan.safe_len, scan.stopped_by), (6, None));
    let scan = stops.scan("Hello\nUs", 0);
    assert_eq!((scan.safe_len, scan.stopped_by), (5, None));
    let scan = stops.scan("Hello <", 0);
    assert_eq!((scan.safe_len, scan.stopped_by), (6, None));
    let scan = stops.scan("Hello", 0);
    assert_eq!((scan.safe_len, scan.stopped_by), (5, None));
    // A complete stop string ends the text before it; the earliest wins.
    let scan = stops.scan("Hi\nUser: x</s>", 0);
    assert_eq!((scan.safe_len, scan.stopped_by), (2, Some(1)));
    // Empty stop strings are ignored.
    assert!(StopStrings::new([""]).is_empty());
}

#[test]
fn stop_filter_streams_pieces() {
    let mut f = StopFilter::new(StopStrings::new(["<|end|>"]));
    assert_eq!(f.push("Hello"), "Hello");
    assert_eq!(f.push(" wor"), " wor");
    assert_eq!(f.push("ld<"), "ld");
    assert_eq!(f.push("|e"), "");
    assert_eq!(f.push("x"), "<|ex"); // not a stop string after all
    assert_eq!(f.push(" <|en"), " ");
    assert_eq!(f.push("d|> tail"), "");
    assert_eq!(f.stopped_by(), Some(0));
    assert_eq!(f.text(), "Hello world<|ex ");
    assert_eq!(f.push("more"), "");

    // Without a stop, finish() releases what was held.
    let mut f = StopFilter::new(StopStrings::new(["###"]));
    assert_eq!(f.push("a #"), "a ");
    assert_eq!(f.push("#"), "");
    assert_eq!(f.finish(), "##");
    assert_eq!(f.text(), "a ##");

    // Multi-byte text never splits a character.
    let mut f = StopFilter::new(StopStrings::new(["é!"]));
    assert_eq!(f.push("caf"), "caf");
    assert_eq!(f.push("é"), "");
    assert_eq!(f.push("é"), "é");
    assert_eq!(f.push("!"), "");
    assert_eq!(f.text(), "café");
}
