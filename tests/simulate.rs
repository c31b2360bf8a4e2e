//! `simulate`: hand-made request sequences with known hit counts, and Belady's optimum never
//! beaten on random traces.

use moe_edge::analysis::replay_order;
use moe_edge::analysis::simulate::{
    capacities_from_fractions, simulate, Policy, RequestTrace, LFU_AGING_PERIOD,
};
use moe_edge::rng::XorShift64;
use moe_edge::trace::TraceRecord;

/// One-expert groups in layer 0: the classic paging setting.
fn singles(seq: &[usize]) -> RequestTrace {
    let groups: Vec<Vec<(usize, usize)>> = seq.iter().map(|&e| vec![(0, e)]).collect();
    RequestTrace::from_groups(groups.iter().map(|g| g.as_slice()))
}

fn hits(t: &RequestTrace, cap: usize, p: Policy) -> u64 {
    simulate(t, cap, p).unwrap().hits
}

#[test]
fn known_hit_counts() {
    // A B C A B C with 2 slots: LRU thrashes (0 hits); Belady keeps A: hits on A and then...
    let t = singles(&[0, 1, 2, 0, 1, 2]);
    assert_eq!(hits(&t, 2, Policy::Lru), 0);
    // Belady: miss A, miss B, miss C (evict B: next use 4 > A's 3), hit A, miss B (evict A, never
    // used again... A's next use none) , hit C.
    assert_eq!(hits(&t, 2, Policy::Belady), 2);
    // LFU: A,B miss (count 1 each), C evicts A (count 1, older), A evicts B, B evicts C,
    // C evicts A: 0 hits.
    assert_eq!(hits(&t, 2, Policy::Lfu), 0);
    assert_eq!(hits(&t, 3, Policy::Lru), 3);

    // LFU keeps the popular expert where LRU drops it:
    // A A A B C A with 2 slots.
    let t = singles(&[0, 0, 0, 1, 2, 0]);
    // LRU: A miss, A hit, A hit, B miss, C miss (evicts A, older), A miss → 2 hits.
    assert_eq!(hits(&t, 2, Policy::Lru), 2);
    // LFU: C evicts B (count 1 < A's 3), A hits → 3 hits.
    assert_eq!(hits(&t, 2, Policy::Lfu), 3);
    assert_eq!(hits(&t, 2, Policy::Belady), 3);

    let r = simulate(&t, 2, Policy::Lru).unwrap();
    assert_eq!((r.requests, r.hits, r.misses, r.evictions), (6, 2, 4, 2));
    assert!((r.hit_rate() - 2.0 / 6.0).abs() < 1e-12);
}

#[test]
fn lfu_ties_go_to_the_least_recently_used() {
    // A B (both count 1), then C: evicts A (older); then A misses, B hits? B was kept.
    let t = singles(&[0, 1, 2, 1]);
    assert_eq!(hits(&t, 2, Policy::Lfu), 1);
    let t = singles(&[0, 1, 2, 0]);
    assert_eq!(hits(&t, 2, Policy::Lfu), 0);
}

#[test]
fn lfu_aging_halves_counts_every_period() {
    // A ×4000 (count 4000), then B ×3000 (requests 4001..7000), then C, then B, with 2 slots.
    // At request 4096 the counts are halved: A 2000, B 96/2 = 48, and B ends at 48 + 2904 = 2952.
    // So C evicts A (2000 < 2952) and B hits. Without aging A (4000) beats B (3000): C would
    // evict B and B would miss.
    assert_eq!(LFU_AGING_PERIOD, 4096);
    let mut seq = vec![0usize; 4000];
    seq.extend(std::iter::repeat_n(1, 3000));
    seq.extend([2, 1]);
    let t = singles(&seq);
    assert_eq!(hits(&t, 2, Policy::Lfu), 3999 + 2999 + 1);
    assert_eq!(reference_lfu(&seq, 2), 3999 + 2999 + 1);
    assert_eq!(reference_lfu_no_aging(&seq, 2), 3999 + 2999);
}

/// A slow, literal transcription of `CachedExpertStore`'s slot logic (slots, ticks, victim scan).
fn reference_lfu_impl(seq: &[usize], slots: usize, aging: bool) -> u64 {
    #[derive(Clone, Copy)]
    struct Slot {
        key: Option<usize>,
        last_use: u64,
        freq: u64,
    }
    let mut s = vec![
        Slot {
            key: None,
            last_use: 0,
            freq: 0
        };
        slots
    ];
    let (mut tick, mut requests, mut hits) = (0u64, 0u64, 0u64);
    for &k in seq {
        tick += 1;
        requests += 1;
        if aging && requests % LFU_AGING_PERIOD == 0 {
            s.iter_mut().for_each(|x| x.freq /= 2);
        }
        if let Some(x) = s.iter_mut().find(|x| x.key == Some(k)) {
            x.last_use = tick;
            x.freq += 1;
            hits += 1;
            continue;
        }
        let victim = match s.iter().position(|x| x.key.is_none()) {
            Some(i) => i,
            None => {
                let mut best = 0;
                for i in 1..slots {
                    if (s[i].freq, s[i].last_use) < (s[best].freq, s[best].last_use) {
                        best = i;
                    }
                }
                best
            }
        };
        s[victim] = Slot {
            key: Some(k),
            last_use: tick,
            freq: 1,
        };
    }
    hits
}

fn reference_lfu(seq: &[usize], slots: usize) -> u64 {
    reference_lfu_impl(seq, slots, true)
}

fn reference_lfu_no_aging(seq: &[usize], slots: usize) -> u64 {
    reference_lfu_impl(seq, slots, false)
}

/// A random trace: `tokens` tokens, `layers` layers, top-`k` of `ne` experts with a skew.
fn random_trace(
    rng: &mut XorShift64,
    tokens: usize,
    layers: usize,
    ne: usize,
    k: usize,
) -> RequestTrace {
    let mut groups = Vec::new();
    for _ in 0..tokens {
        for l in 0..layers {
            let mut g: Vec<(usize, usize)> = Vec::new();
            while g.len() < k {
                // Skewed: half the draws from the first quarter of the experts.
                let e = if rng.next_u64().is_multiple_of(2) {
                    rng.below((ne / 4).max(1) as u64)
                } else {
                    rng.below(ne as u64)
                };
                if !g.contains(&(l, e)) {
                    g.push((l, e));
                }
            }
            groups.push(g);
        }
    }
    RequestTrace::from_groups(groups.iter().map(|g| g.as_slice()))
}

#[test]
fn belady_is_never_beaten_on_random_traces() {
    let mut rng = XorShift64(0x2545_f491_4f6c_dd1d);
    let mut cases = 0;
    for round in 0..40 {
        let (layers, ne, k) = [(1, 8, 1), (2, 8, 2), (3, 16, 4), (4, 6, 3)][round % 4];
        let t = random_trace(&mut rng, 60, layers, ne, k);
        for cap in [k, k + 1, 2 * k, layers * ne / 2, layers * ne] {
            let best = hits(&t, cap, Policy::Belady);
            let lru = hits(&t, cap, Policy::Lru);
            let lfu = hits(&t, cap, Policy::Lfu);
            for p in [
                Policy::Reuse,
                Policy::ReuseLookahead,
                Policy::ReuseNextVisit,
                Policy::ReuseDensity,
                Policy::Context,
                Policy::ContextDensity,
            ] {
                let h = hits(&t, cap, p);
                assert!(
                    best >= h,
                    "round {round} cap {cap}: belady {best} < {p} {h}"
                );
            }
            assert!(
                best >= lru,
                "round {round} cap {cap}: belady {best} < lru {lru}"
            );
            assert!(
                best >= lfu,
                "round {round} cap {cap}: belady {best} < lfu {lfu}"
            );
            if cap == layers * ne {
                // Everything fits: only cold misses, for every policy.
                let want = (t.len() - t.distinct()) as u64;
                assert_eq!((best, lru, lfu), (want, want, want));
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 200);
}

#[test]
fn lfu_matches_the_slot_reference_on_random_sequences() {
    let mut rng = XorShift64(77);
    for _ in 0..20 {
        let seq: Vec<usize> = (0..9000).map(|_| rng.below(12)).collect();
        for slots in [1, 3, 6] {
            assert_eq!(
                hits(&singles(&seq), slots, Policy::Lfu),
                reference_lfu(&seq, slots)
            );
        }
    }
}

fn grouped(groups: &[&[usize]]) -> RequestTrace {
    let groups: Vec<Vec<(usize, usize)>> = groups
        .iter()
        .map(|g| g.iter().map(|&e| (0, e)).collect())
        .collect();
    RequestTrace::from_groups(groups.iter().map(|g| g.as_slice()))
}

#[test]
fn current_group_is_never_evicted() {
    // {A B} {C A}, 2 slots. LRU: C evicts A (least recent, not yet requested in this group),
    // then A must evict B because C is in use: 0 hits, 2 evictions.
    let t = grouped(&[&[0, 1], &[2, 0]]);
    assert_eq!(t.max_group(), 2);
    let r = simulate(&t, 2, Policy::Lru).unwrap();
    assert_eq!((r.hits, r.evictions), (0, 2));
    // Belady: C evicts B (never used again) rather than A: 1 hit.
    assert_eq!(hits(&t, 2, Policy::Belady), 1);
    let e = simulate(&t, 1, Policy::Lru).unwrap_err().to_string();
    assert!(e.contains("capacity 1 is below the 2 experts"), "{e}");

    // LFU: B reaches count 3; in {A C} A (count 1) is in use, so C must evict B, and the final
    // A hits. Evicting A instead would lose that hit.
    let t = grouped(&[&[1], &[1], &[1], &[0, 2], &[0]]);
    assert_eq!(hits(&t, 2, Policy::Lfu), 3);
    // Belady: {B} {A C} {B}: C may not evict A (in use) although A is never used again, so B
    // goes and misses: 0 hits.
    let t = grouped(&[&[1], &[0, 2], &[1]]);
    assert_eq!(hits(&t, 2, Policy::Belady), 0);
}

#[test]
fn trace_records_become_requests_in_replay_order() {
    // Prompt of two tokens written layer-major: requests must go token by token.
    let rec = |pos, layer, experts: &[usize]| TraceRecord {
        pos,
        layer,
        experts: experts.to_vec(),
        weights: vec![0.5; experts.len()],
    };
    let records = vec![
        rec(0, 0, &[1, 2]),
        rec(1, 0, &[3, 1]),
        rec(0, 1, &[0, 1]),
        rec(1, 1, &[0, 2]),
    ];
    let t = RequestTrace::from_tokens(&replay_order(&records));
    let names: Vec<(usize, usize)> = t.keys.iter().map(|&k| t.names[k as usize]).collect();
    assert_eq!(
        names,
        vec![
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
            (0, 3),
            (0, 1),
            (1, 0),
            (1, 2)
        ]
    );
    assert_eq!(t.group_starts, vec![0, 2, 4, 6]);
    assert_eq!(t.distinct(), 6);
    // 4 slots: LRU hits (0,1) at request 6? Order: miss ×4, (0,3) evicts (0,1) → (0,1) misses,
    // (1,0): evicted by (0,1)? LRU order after 4 misses: (0,1)(0,2)(1,0)(1,1);
    // (0,3) evicts (0,1); (0,1) evicts (0,2); (1,0) hits; (1,2) evicts (1,1).
    assert_eq!(hits(&t, 4, Policy::Lru), 1);
    // Belady: (0,3) evicts (0,2)/(1,1) (never used again), (0,1) and (1,0) hit.
    assert_eq!(hits(&t, 4, Policy::Belady), 2);
}

#[test]
fn capacity_fractions() {
    assert_eq!(
        capacities_from_fractions(&[0.25, 0.5, 1.0, 0.001], 96).unwrap(),
        vec![24, 48, 96, 1]
    );
    assert!(capacities_from_fractions(&[0.0], 96).is_err());
    assert!(capacities_from_fractions(&[1.5], 96).is_err());
    assert!(capacities_from_fractions(&[f64::NAN], 96).is_err());
    assert!(simulate(&singles(&[1]), 0, Policy::Belady).is_err());
}

/// Layer-cyclic access (what decoding does): each token visits layers 0..4 in turn and routes
/// expert 0 in each. With 3 slots LRU always evicts the layer that comes next and never hits;
/// `reuse` evicts the layer served longest before the next visit, as Belady's optimum does.
#[test]
fn reuse_beats_lru_on_layer_cycles() {
    let groups: Vec<Vec<(usize, usize)>> = (0..400).map(|i| vec![(i % 4, 0)]).collect();
    let t = RequestTrace::from_groups(groups.iter().map(|g| g.as_slice()));
    let lru = hits(&t, 3, Policy::Lru);
    let reuse = hits(&t, 3, Policy::Reuse);
    let best = hits(&t, 3, Policy::Belady);
    assert_eq!(lru, 0);
    assert!(reuse <= best);
    assert!(
        reuse as f64 >= 0.95 * best as f64,
        "reuse {reuse} vs Belady {best}"
    );
}

/// The lookahead bound knows the current token's later layers: on a trace where the
/// frequency estimate points the wrong way within a token, it hits where `reuse` misses, and
/// it never beats Belady.
#[test]
fn lookahead_bound_sits_between_reuse_and_belady() {
    // Four layers, top-2 of 8, random routing (nothing for the estimates to learn), capacity
    // one token's worth (8): most misses evict an expert of a later layer, and knowing which of
    // them this token needs keeps the right ones.
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut rng = XorShift64(0x2545_f491_4f6c_dd1d);
    for _ in 0..400 {
        for l in 0..4 {
            let a = rng.below(8);
            let b = (a + 1 + rng.below(7)) % 8;
            groups.push(vec![(l, a), (l, b)]);
        }
    }
    let trace = RequestTrace::from_groups(groups.iter().map(|g| g.as_slice()));
    let reuse = simulate(&trace, 8, Policy::Reuse).unwrap().hits;
    let ahead = simulate(&trace, 8, Policy::ReuseLookahead).unwrap().hits;
    let next = simulate(&trace, 8, Policy::ReuseNextVisit).unwrap().hits;
    let best = simulate(&trace, 8, Policy::Belady).unwrap().hits;
    assert!(ahead > reuse, "lookahead {ahead} should beat reuse {reuse}");
    // Knowing the next token's earlier layers too keeps the experts it needs there.
    assert!(
        next > ahead,
        "next-visit {next} should beat lookahead {ahead}"
    );
    assert!(next <= best, "next-visit {next} cannot beat Belady {best}");
}

/// The `reuse` estimate learns which experts follow which: on a layer that alternates between
/// experts 0 and 1 (top-1 of 4), after a while the expert due next looks closer than the one
/// just used, although both have the same routing rate.
#[test]
fn reuse_estimate_learns_expert_transitions() {
    use moe_edge::experts::ReuseEstimator;
    let mut est = ReuseEstimator::new(1, 4, 1);
    for t in 0..200 {
        est.visit(0, &[t % 2]);
    }
    // The last visit (t = 199) routed to expert 1; expert 0 comes next.
    let next = est.steps_to_next_use(0, 0);
    let just_used = est.steps_to_next_use(0, 1);
    let never = est.steps_to_next_use(0, 2);
    assert!(next < just_used, "next {next} vs just used {just_used}");
    assert!(just_used < never, "just used {just_used} vs never {never}");
}

/// The `context` policy learns what follows each *set* of experts: here every layer cycles
/// through four pairs of 8 experts in which each expert is followed by two different pairs, so
/// per-expert rates and transitions cannot tell the next pair but the last pair can. With one
/// token's worth of slots (2 per layer) `context` keeps the pair due next far more often than
/// `reuse` does, and never beats Belady.
#[test]
fn context_learns_what_follows_a_set() {
    let cycle = [
        [0, 1],
        [2, 3],
        [0, 2],
        [1, 3],
        [4, 5],
        [6, 7],
        [4, 6],
        [5, 7],
    ];
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    for t in 0..600 {
        for l in 0..4 {
            let [a, b] = cycle[(t + l) % cycle.len()];
            groups.push(vec![(l, a), (l, b)]);
        }
    }
    let trace = RequestTrace::from_groups(groups.iter().map(|g| g.as_slice()));
    let reuse = simulate(&trace, 8, Policy::Reuse).unwrap().hits;
    let context = simulate(&trace, 8, Policy::Context).unwrap().hits;
    let best = simulate(&trace, 8, Policy::Belady).unwrap().hits;
    assert!(
        context as f64 >= 1.2 * reuse as f64,
        "context {context} should beat reuse {reuse} clearly"
    );
    assert!(
        context <= best,
        "context {context} cannot beat Belady {best}"
    );
}
