//! `routing-stats` on small synthetic traces with known answers.

use moe_edge::analysis::heatmap;
use moe_edge::analysis::stats::compute;
use moe_edge::analysis::{infer_n_expert, replay_order, TokenRoutes};
use moe_edge::trace::TraceRecord;

fn rec(pos: usize, layer: usize, experts: &[usize]) -> TraceRecord {
    TraceRecord {
        pos,
        layer,
        experts: experts.to_vec(),
        weights: vec![1.0 / experts.len() as f32; experts.len()],
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn replay_order_is_token_major_and_splits_runs() {
    // A prompt of 2 tokens written layer-major, then one generated token, then a new run at 0.
    let records = vec![
        rec(0, 0, &[1]),
        rec(1, 0, &[2]),
        rec(0, 1, &[3]),
        rec(1, 1, &[0]),
        rec(2, 0, &[1]),
        rec(2, 1, &[2]),
        rec(0, 0, &[3]),
        rec(0, 1, &[1]),
    ];
    let t = replay_order(&records);
    let want = vec![
        TokenRoutes {
            pos: 0,
            layers: vec![(0, vec![1]), (1, vec![3])],
        },
        TokenRoutes {
            pos: 1,
            layers: vec![(0, vec![2]), (1, vec![0])],
        },
        TokenRoutes {
            pos: 2,
            layers: vec![(0, vec![1]), (1, vec![2])],
        },
        TokenRoutes {
            pos: 0,
            layers: vec![(0, vec![3]), (1, vec![1])],
        },
    ];
    assert_eq!(t, want);
}

#[test]
fn uniform_round_robin_has_full_entropy_and_no_imbalance() {
    // 4 experts, top-2, 8 tokens cycling over the pairs (0,1), (2,3).
    let records: Vec<_> = (0..8)
        .map(|p| {
            if p % 2 == 0 {
                rec(p, 0, &[0, 1])
            } else {
                rec(p, 0, &[2, 3])
            }
        })
        .collect();
    let s = compute(&records, None, 10).unwrap();
    assert_eq!(s.n_expert, 4);
    assert_eq!(s.tokens, 8);
    assert_eq!(s.max_active, 2);
    assert!(close(s.mean_active, 2.0));
    let l = &s.layers[0];
    assert_eq!(l.counts, vec![4, 4, 4, 4]);
    assert_eq!(l.uses, 16);
    assert!(close(l.entropy_bits, 2.0));
    assert!(close(l.entropy_norm, 1.0));
    assert!(close(l.imbalance, 1.0));
    // Pairs: (0,1) and (2,3) each 4 of 8 tokens; P(a)=P(b)=0.5 → lift 0.5/0.25 = 2.
    assert_eq!(l.top_pairs.len(), 2);
    let p = &l.top_pairs[0];
    assert_eq!((p.a, p.b, p.count), (0, 1, 4));
    assert!(close(p.p_ab, 0.5) && close(p.lift, 2.0));
    assert_eq!((l.top_pairs[1].a, l.top_pairs[1].b), (2, 3));
    // Every warm use is at distance 2; 4 cold uses; none repeats the previous token.
    assert_eq!(l.reuse.cold, 4);
    assert_eq!(l.reuse.histogram, vec![(2, 12)]);
    assert_eq!(l.reuse.repeat_prev, 0);
    assert_eq!(l.reuse.median, Some(2));
    assert!(close(l.reuse.cdf(1), 0.0));
    assert!(close(l.reuse.cdf(2), 12.0 / 16.0));
}

#[test]
fn skewed_layer_entropy_imbalance_and_reuse() {
    // Layer 3, 4 experts, top-1: expert 0 for tokens 0..6, then 1, then 0 again.
    // Layer 5 always expert 2 (zero entropy).
    let seq = [0, 0, 0, 0, 0, 0, 1, 0];
    let mut records = Vec::new();
    for (p, &e) in seq.iter().enumerate() {
        records.push(rec(p, 3, &[e]));
        records.push(rec(p, 5, &[2]));
    }
    let s = compute(&records, Some(4), 3).unwrap();
    assert_eq!(s.layers.len(), 2);
    let l3 = &s.layers[0];
    assert_eq!(l3.layer, 3);
    assert_eq!(l3.counts, vec![7, 1, 0, 0]);
    let h = -(7.0f64 / 8.0 * (7.0f64 / 8.0).log2() + 1.0 / 8.0 * (1.0f64 / 8.0).log2());
    assert!(close(l3.entropy_bits, h));
    assert!(close(l3.entropy_norm, h / 2.0));
    assert!(close(l3.imbalance, 7.0 / 2.0));
    assert!(l3.top_pairs.is_empty());
    // Expert 0: 5 uses at distance 1, one at distance 2 (skipping token 6); 2 cold uses.
    assert_eq!(l3.reuse.histogram, vec![(1, 5), (2, 1)]);
    assert_eq!(l3.reuse.cold, 2);
    assert_eq!(l3.reuse.repeat_prev, 5);
    assert!(close(l3.reuse.repeat_prev_frac, 5.0 / 8.0));
    assert!(close(l3.reuse.mean.unwrap(), 7.0 / 6.0));
    let l5 = &s.layers[1];
    assert!(close(l5.entropy_bits, 0.0));
    assert!(close(l5.imbalance, 4.0));
    assert_eq!(l5.reuse.repeat_prev, 7);
    // Overall: 16 uses, 3 cold, 12 at distance 1.
    assert_eq!(s.reuse.uses, 16);
    assert_eq!(s.reuse.cold, 3);
    assert_eq!(s.reuse.repeat_prev, 12);
    assert!(close(s.reuse.cdf(1), 12.0 / 16.0));
    assert!(close(s.reuse.cdf(100), 13.0 / 16.0));
}

#[test]
fn lift_of_independent_and_anti_correlated_pairs() {
    // 4 tokens, top-2 over 4 experts: (0,2), (0,3), (1,2), (1,3): every pair of the two halves
    // is independent (lift 1), and 0 never meets 1 (no pair listed).
    let records = vec![
        rec(0, 0, &[0, 2]),
        rec(1, 0, &[0, 3]),
        rec(2, 0, &[1, 2]),
        rec(3, 0, &[1, 3]),
    ];
    let s = compute(&records, None, 10).unwrap();
    let l = &s.layers[0];
    assert_eq!(l.top_pairs.len(), 4);
    for p in &l.top_pairs {
        assert!(close(p.lift, 1.0), "{p:?}");
        assert!(p.a < 2 && p.b >= 2);
    }
}

#[test]
fn heatmap_outputs() {
    let records = vec![rec(0, 0, &[0, 1]), rec(1, 0, &[0, 2]), rec(0, 2, &[3, 0])];
    let s = compute(&records, Some(4), 3).unwrap();
    // Utilisation: layer 0 = [1, .5, .5, 0], layer 2 = [1, 0, 0, 1].
    assert_eq!(s.layers[0].utilisation(), vec![1.0, 0.5, 0.5, 0.0]);
    let t = heatmap::terminal(&s);
    let rows: Vec<&str> = t.lines().skip(1).collect();
    assert!(rows[0].starts_with("L0   │█▒▒·│"), "{}", rows[0]);
    assert!(rows[1].starts_with("L2   │█··█│"), "{}", rows[1]);
    assert_eq!(heatmap::shade(0.1, 1.0), '░');
    assert_eq!(heatmap::shade(0.75, 1.0), '▓');
    assert_eq!(heatmap::shade(0.76, 1.0), '█');

    let svg = heatmap::svg(&s, "a<b");
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("a&lt;b"));
    assert_eq!(svg.matches("<title>").count(), 8);
    let hot = heatmap::colour(1.0);
    let cold = heatmap::colour(0.0);
    assert_eq!(hot, [0xfd, 0xe7, 0x25]);
    assert_eq!(cold, [0x44, 0x01, 0x54]);
    assert!(svg.contains("fill=\"#fde725\"><title>layer 2 expert 3: 100.0% of tokens (1 uses)"));

    let (w, h, px) = heatmap::raster(&s);
    let c = 24; // 1200 / 4 experts, capped at 24 px
    assert_eq!((w, h), (4 * c, 2 * (c + 1)));
    let at = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        [px[i], px[i + 1], px[i + 2]]
    };
    assert_eq!(at(0, 0), hot);
    assert_eq!(at(3 * c + 5, 5), cold);
    assert_eq!(at(c + 1, 1), heatmap::colour(0.5));
    assert_eq!(at(0, c), [255, 255, 255]); // separator line
    assert_eq!(at(3 * c, c + 1), hot);
    let png = heatmap::png_bytes(&s).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Width and height in the IHDR chunk.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), w);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), h);
}

#[test]
fn bad_traces_are_errors() {
    assert!(compute(&[], None, 3).is_err());
    let e = compute(&[rec(0, 0, &[5])], Some(4), 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("routes expert 5, but --n-expert is 4"), "{e}");
    let e = compute(&[rec(0, 0, &[1, 1])], None, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("routes expert 1 twice"), "{e}");
    assert!(infer_n_expert(&[rec(0, 0, &[1 << 20])], None).is_err());
    assert!(infer_n_expert(&[rec(0, 0, &[1])], Some(0)).is_err());
    assert_eq!(infer_n_expert(&[rec(0, 0, &[6])], None).unwrap(), 7);
}
