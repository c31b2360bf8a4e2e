//! Router caps: every selection mode on hand-made probabilities, masks, overrides, cache-aware
//! swaps, flag parsing, and the default path staying bit-identical.

use moe_edge::rng::XorShift64;
use std::io::Write;

use clap::Parser;
use moe_edge::router::caps::{
    parse_layer_caps, parse_routing_override, RoutingOverrides, ThresholdRule,
};
use moe_edge::router::*;

fn experts(out: &[Choice]) -> Vec<usize> {
    out.iter().map(|c| c.expert).collect()
}

fn select(caps: &RouterCaps, probs: &[f32], top_k: usize, resident: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let n = caps.select(0, probs, top_k, &|e| resident.contains(&e), &mut out);
    assert_eq!(n, out.len());
    experts(&out)
}

fn router(n_expert: usize, top_k: usize, renormalize: bool, caps: RouterCaps) -> Router {
    Router {
        n_expert,
        n_expert_used: top_k,
        renormalize,
        weights_scale: 1.0,
        caps,
    }
}

/// The default path written out from the building blocks: softmax, top-k, renormalise.
fn reference(r: &Router, logits: &[f32]) -> Vec<Choice> {
    let mut probs = vec![0f32; logits.len()];
    softmax_into(logits, &mut probs, None);
    let mut out = Vec::new();
    top_k_into(&probs, r.n_expert_used, &|_| false, &mut out);
    if r.renormalize {
        let sum: f32 = out.iter().map(|c| c.weight).sum();
        let sum = sum.max(6.103_515_6e-5);
        for c in out.iter_mut() {
            c.weight /= sum;
        }
    }
    out
}

#[test]
fn no_caps_is_bit_identical_to_default_routing() {
    let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15);
    let no_flags = RouterArgs::default().to_caps(4, 64, 8).unwrap();
    assert!(no_flags.is_plain());
    let mut checked = 0;
    for &(ne, k) in &[
        (8usize, 2usize),
        (16, 4),
        (60, 4),
        (64, 8),
        (128, 8),
        (5, 5),
    ] {
        for renorm in [false, true] {
            let high_cap = RouterArgs {
                max_active_experts: Some(k + 3),
                layer_caps: Some(format!("{k}")),
                ..RouterArgs::default()
            }
            .to_caps(4, ne, k)
            .unwrap();
            let at_cap = RouterCaps {
                max_active: Some(k),
                ..RouterCaps::none()
            };
            let variants = [
                router(ne, k, renorm, RouterCaps::none()),
                router(ne, k, renorm, no_flags.clone()),
                router(ne, k, renorm, high_cap),
                router(ne, k, renorm, at_cap),
            ];
            for _ in 0..50 {
                // Include ties now and then: logits on a coarse grid.
                let coarse = rng.next_u64().is_multiple_of(4);
                let logits: Vec<f32> = (0..ne)
                    .map(|_| {
                        let x = rng.unit() * 8.0 - 4.0;
                        if coarse {
                            x.round()
                        } else {
                            x
                        }
                    })
                    .collect();
                let want = reference(&variants[0], &logits);
                assert_eq!(want.len(), k);
                for r in &variants {
                    let mut probs = vec![0f32; ne];
                    let mut out = vec![Choice {
                        expert: 999,
                        weight: 9.0,
                    }];
                    r.route(1, &logits, &mut probs, &|e| e % 3 == 0, &mut out);
                    assert_eq!(out.len(), want.len());
                    for (a, b) in out.iter().zip(&want) {
                        assert_eq!(a.expert, b.expert);
                        assert_eq!(a.weight.to_bits(), b.weight.to_bits());
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6 * 2 * 4 * 50);
}

// Probabilities by expert id: sorted order is 2 (0.40), 0 (0.30), 4 (0.15), 1 (0.10), 3 (0.05).
const P: [f32; 5] = [0.30, 0.10, 0.40, 0.05, 0.15];

#[test]
fn max_active_and_layer_caps() {
    let caps = RouterCaps {
        max_active: Some(2),
        ..RouterCaps::none()
    };
    assert_eq!(select(&caps, &P, 4, &[]), vec![2, 0]);
    assert_eq!(select(&caps, &P, 1, &[]), vec![2]);

    let caps = RouterCaps {
        layer_caps: Some(parse_layer_caps("1,3", 2).unwrap()),
        ..RouterCaps::none()
    };
    let mut out = Vec::new();
    caps.select(0, &P, 4, &|_| false, &mut out);
    assert_eq!(experts(&out), vec![2]);
    caps.select(1, &P, 4, &|_| false, &mut out);
    assert_eq!(experts(&out), vec![2, 0, 4]);
    // The smaller of the two caps wins.
    let caps = RouterCaps {
        max_active: Some(2),
        layer_caps: Some(vec![3, 1]),
        ..RouterCaps::none()
    };
    assert_eq!(caps.cap_for(0, 4), 2);
    assert_eq!(caps.cap_for(1, 4), 1);
    assert_eq!(caps.cap_for(7, 4), 2);
}

#[test]
fn threshold_routing_keeps_kmin_then_close_experts() {
    let rule = |threshold, k_min| RouterCaps {
        threshold: Some(ThresholdRule { threshold, k_min }),
        ..RouterCaps::none()
    };
    // 0.5 · 0.40 = 0.20: 0.30 passes, 0.15 stops the run.
    assert_eq!(select(&rule(0.5, 1), &P, 4, &[]), vec![2, 0]);
    // k_min 3 keeps 0.15 regardless; 0.10 < 0.20 stops.
    assert_eq!(select(&rule(0.5, 3), &P, 4, &[]), vec![2, 0, 4]);
    // 0.25 · 0.40 = 0.10: 0.10 passes (≥), capped at top-k 4.
    assert_eq!(select(&rule(0.25, 1), &P, 4, &[]), vec![2, 0, 4, 1]);
    assert_eq!(select(&rule(0.0, 1), &P, 3, &[]), vec![2, 0, 4]);
    assert_eq!(select(&rule(1.0, 1), &P, 4, &[]), vec![2]);
    // k_min above a cap is cut to the cap.
    let mut c = rule(1.0, 4);
    c.max_active = Some(2);
    assert_eq!(select(&c, &P, 4, &[]), vec![2, 0]);
}

#[test]
fn top_p_keeps_the_shortest_prefix_reaching_the_mass() {
    let top_p = |p| RouterCaps {
        top_p: Some(p),
        ..RouterCaps::none()
    };
    assert_eq!(select(&top_p(0.35), &P, 4, &[]), vec![2]);
    assert_eq!(select(&top_p(0.6), &P, 4, &[]), vec![2, 0]);
    assert_eq!(select(&top_p(0.8), &P, 4, &[]), vec![2, 0, 4]);
    // Mass never reached within top-k: all of top-k.
    assert_eq!(select(&top_p(1.0), &P, 4, &[]), vec![2, 0, 4, 1]);
    assert_eq!(select(&top_p(0.9), &P, 2, &[]), vec![2, 0]);
    // With a threshold too, the shorter prefix wins.
    let mut c = top_p(0.8);
    c.threshold = Some(ThresholdRule {
        threshold: 0.5,
        k_min: 1,
    });
    assert_eq!(select(&c, &P, 4, &[]), vec![2, 0]);
}

#[test]
fn weights_are_probabilities_renormalised_per_arch() {
    let logits: Vec<f32> = P.iter().map(|p| p.ln()).collect();
    let caps = RouterCaps {
        max_active: Some(2),
        ..RouterCaps::none()
    };
    let mut probs = vec![0f32; 5];
    let mut out = Vec::new();
    router(5, 4, false, caps.clone()).route(0, &logits, &mut probs, &|_| true, &mut out);
    assert_eq!(experts(&out), vec![2, 0]);
    assert!((out[0].weight - 0.40).abs() < 1e-6 && (out[1].weight - 0.30).abs() < 1e-6);
    router(5, 4, true, caps).route(0, &logits, &mut probs, &|_| true, &mut out);
    assert!((out[0].weight - 0.40 / 0.70).abs() < 1e-6);
    assert!((out[1].weight - 0.30 / 0.70).abs() < 1e-6);
}

#[test]
fn masked_experts_are_never_routed() {
    let mut masks = vec![vec![false; 5]; 2];
    masks[0][2] = true; // the top expert
    let caps = RouterCaps {
        masks,
        ..RouterCaps::none()
    };
    let logits: Vec<f32> = P.iter().map(|p| p.ln()).collect();
    let mut probs = vec![0f32; 5];
    let mut out = Vec::new();
    // Top-5 of 5 experts with one masked: only 4, never the masked one.
    let r = router(5, 5, false, caps.clone());
    r.route(0, &logits, &mut probs, &|_| false, &mut out);
    assert_eq!(experts(&out), vec![0, 4, 1, 3]);
    assert_eq!(probs[2], 0.0);
    assert!(
        (out[0].weight - 0.5).abs() < 1e-6,
        "softmax excludes the masked expert"
    );
    // Layer 1 is not masked.
    r.route(1, &logits, &mut probs, &|_| false, &mut out);
    assert_eq!(out[0].expert, 2);
    // Not even as a cache-aware swap into a resident slot.
    let mut c = caps;
    c.cache_aware_margin = Some(1.0);
    let r = router(5, 2, false, c);
    r.route(0, &logits, &mut probs, &|e| e == 2 || e == 3, &mut out);
    assert_eq!(experts(&out), vec![0, 3]);
    assert!(!experts(&out).contains(&2));
}

#[test]
fn cache_aware_swap_inside_and_outside_the_margin() {
    let margin = |m| RouterCaps {
        cache_aware_margin: Some(m),
        ..RouterCaps::none()
    };
    // Top-2 is {2 (0.40), 0 (0.30)}; expert 4 (0.15) is resident: 0.30 − 0.15 = 0.15.
    assert_eq!(select(&margin(0.2), &P, 2, &[4]), vec![2, 4]);
    assert_eq!(select(&margin(0.1), &P, 2, &[4]), vec![2, 0]);
    // Nothing to do when the selection is resident.
    assert_eq!(select(&margin(1.0), &P, 2, &[2, 0, 4]), vec![2, 0]);
    // Two cold picks, two resident candidates: the least probable pick takes the best candidate
    // (0.30 → 0.15 within 0.26), the other (0.40 → 0.10) is outside the margin.
    assert_eq!(select(&margin(0.26), &P, 2, &[4, 1]), vec![2, 4]);
    // With a wide margin both swap; results stay sorted by probability.
    assert_eq!(select(&margin(0.5), &P, 2, &[4, 1]), vec![4, 1]);
    // Weights follow the swapped-in expert.
    let mut out = Vec::new();
    margin(0.2).select(0, &P, 2, &|e| e == 4, &mut out);
    assert_eq!(out[1].weight, 0.15);
}

#[test]
fn routing_overrides_text_and_json() {
    let text = "# forced routes\n1 * 4,3\n1 7 0   # one position\n";
    let o = parse_routing_override(text, 2, 5, 2).unwrap();
    let json = r#"[{"layer": 1, "experts": [4, 3]}, {"layer": 1, "pos": 7, "experts": [0]}]"#;
    assert_eq!(parse_routing_override(json, 2, 5, 2).unwrap(), o);
    let wrapped = format!("{{\"overrides\": {json}}}");
    assert_eq!(parse_routing_override(&wrapped, 2, 5, 2).unwrap(), o);
    assert_eq!(o.lookup(1, Some(7)), Some(&[0][..]));
    assert_eq!(o.lookup(1, Some(8)), Some(&[4, 3][..]));
    assert_eq!(o.lookup(1, None), Some(&[4, 3][..]));
    assert_eq!(o.lookup(0, Some(7)), None);

    let caps = RouterCaps {
        overrides: o,
        max_active: Some(1),
        ..RouterCaps::none()
    };
    let mut out = Vec::new();
    // Forced experts, sorted by probability, weights = probabilities; caps do not apply.
    caps.select_at(1, Some(3), &P, 2, &|_| false, &mut out);
    assert_eq!(
        out,
        vec![
            Choice {
                expert: 4,
                weight: 0.15
            },
            Choice {
                expert: 3,
                weight: 0.05
            },
        ]
    );
    caps.select_at(1, Some(7), &P, 2, &|_| false, &mut out);
    assert_eq!(experts(&out), vec![0]);
    caps.select_at(0, Some(7), &P, 2, &|_| false, &mut out);
    assert_eq!(experts(&out), vec![2]);
    // Router::route knows no position: layer-wide rules only.
    let logits: Vec<f32> = P.iter().map(|p| p.ln()).collect();
    let mut probs = vec![0f32; 5];
    router(5, 2, true, caps).route(1, &logits, &mut probs, &|_| true, &mut out);
    assert_eq!(experts(&out), vec![4, 3]);
    assert!((out[0].weight - 0.75).abs() < 1e-6);
}

fn err(args: RouterArgs) -> String {
    format!("{:#}", args.to_caps(4, 8, 2).unwrap_err())
}

#[test]
fn flag_errors_are_clear() {
    let a = RouterArgs::default;
    assert!(err(RouterArgs {
        max_active_experts: Some(0),
        ..a()
    })
    .contains("at least 1"));
    assert!(err(RouterArgs {
        router_threshold: Some(1.5),
        ..a()
    })
    .contains("outside [0, 1]"));
    assert!(err(RouterArgs {
        router_threshold: Some(-0.1),
        ..a()
    })
    .contains("outside [0, 1]"));
    assert!(err(RouterArgs {
        router_threshold: Some(f32::NAN),
        ..a()
    })
    .contains("outside"));
    assert!(err(RouterArgs {
        router_kmin: Some(1),
        ..a()
    })
    .contains("needs --router-threshold"));
    let t = || RouterArgs {
        router_threshold: Some(0.5),
        ..a()
    };
    assert!(err(RouterArgs {
        router_kmin: Some(0),
        ..t()
    })
    .contains("at least 1"));
    assert!(err(RouterArgs {
        router_kmin: Some(3),
        ..t()
    })
    .contains("more than the model's 2"));
    assert!(err(RouterArgs {
        router_top_p: Some(0.0),
        ..a()
    })
    .contains("(0, 1]"));
    assert!(err(RouterArgs {
        router_top_p: Some(1.01),
        ..a()
    })
    .contains("(0, 1]"));
    assert!(err(RouterArgs {
        cache_aware_margin: Some(-0.5),
        ..a()
    })
    .contains("[0, 1]"));
    let lc = |s: &str| {
        err(RouterArgs {
            layer_caps: Some(s.into()),
            ..a()
        })
    };
    assert!(lc("1,2,3").contains("3 values for 4 layers"));
    assert!(lc("1,2,3,4,5").contains("5 values for 4 layers"));
    assert!(lc("2,0,2,2").contains("entry 1 is 0"));
    assert!(lc("2,x,2,2").contains("'x' is not a number"));
    assert!(lc("").contains("empty"));
    assert!(lc("@/nonexistent/caps.txt").contains("cannot read"));
    assert_eq!(parse_layer_caps("3", 4).unwrap(), vec![3, 3, 3, 3]);
    assert_eq!(
        parse_layer_caps("1 2\n3,4 # per layer", 4).unwrap(),
        vec![1, 2, 3, 4]
    );
    let m = |s: &str| {
        err(RouterArgs {
            expert_mask: Some(s.into()),
            ..a()
        })
    };
    assert!(m("4:1").contains("layer 4 does not exist"));
    assert!(m("0:8").contains("expert 8 does not exist"));
    assert!(m("0:x").contains("bad expert number"));
    assert!(m("2:*").contains("every expert of layer 2"));
}

#[test]
fn mask_flag_builds_masks() {
    let caps = RouterArgs {
        expert_mask: Some("0:1,3:7,3:0".into()),
        ..RouterArgs::default()
    }
    .to_caps(4, 8, 2)
    .unwrap();
    assert!(caps.mask_for(0).unwrap()[1]);
    assert!(caps.mask_for(1).is_none());
    let m3 = caps.mask_for(3).unwrap();
    assert_eq!(m3.iter().filter(|&&x| x).count(), 2);
    assert!(m3[0] && m3[7]);
}

#[test]
fn override_file_errors_are_clear() {
    let dir = std::env::temp_dir().join(format!("moe-edge-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    };
    let o = |text: &str| {
        let p = write("o.txt", text);
        err(RouterArgs {
            routing_override: Some(p),
            ..RouterArgs::default()
        })
    };
    assert!(o("0 * 1,2,3").contains("3 experts; a rule forces 1 to 2"));
    assert!(o("9 * 1").contains("layer 9 does not exist"));
    assert!(o("0 * 8").contains("expert 8 does not exist"));
    assert!(o("0 * 1,1").contains("listed twice"));
    assert!(o("0 * 1\n0 * 2").contains("line 2: layer 0, every position already has a rule"));
    assert!(o("0 x 1").contains("line 1: bad position 'x'"));
    assert!(o("0 1").contains("line 1: '0 1' is not"));
    assert!(o("[{\"layer\": 0, \"expert\": [1]}]").contains("not a JSON list"));
    // A forced expert that is masked is refused.
    let p = write("ok.txt", "0 3 1\n");
    let e = err(RouterArgs {
        routing_override: Some(p.clone()),
        expert_mask: Some("0:1".into()),
        ..RouterArgs::default()
    });
    assert!(
        e.contains("forces expert 0:1, which --expert-mask disables"),
        "{e}"
    );
    // The same file without the mask loads.
    let caps = RouterArgs {
        routing_override: Some(p),
        ..RouterArgs::default()
    }
    .to_caps(4, 8, 2)
    .unwrap();
    assert_eq!(caps.overrides.lookup(0, Some(3)), Some(&[1][..]));
    assert_eq!(caps.overrides, {
        let mut r = RoutingOverrides::default();
        r.rules.insert((0, Some(3)), vec![1]);
        r
    });
    let missing = err(RouterArgs {
        routing_override: Some(dir.join("missing.json")),
        ..RouterArgs::default()
    });
    assert!(missing.contains("cannot read"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    router: RouterArgs,
}

#[test]
fn flags_parse_from_the_command_line() {
    let cli = Cli::try_parse_from([
        "x",
        "--max-active-experts",
        "3",
        "--router-threshold",
        "0.2",
        "--router-kmin",
        "2",
        "--router-top-p",
        "0.9",
        "--cache-aware-margin",
        "0.05",
        "--layer-caps",
        "2,4",
        "--expert-mask",
        "1:0",
    ])
    .unwrap();
    let caps = cli.router.to_caps(2, 8, 4).unwrap();
    assert_eq!(caps.max_active, Some(3));
    assert_eq!(
        caps.threshold,
        Some(ThresholdRule {
            threshold: 0.2,
            k_min: 2
        })
    );
    assert_eq!(caps.top_p, Some(0.9));
    assert_eq!(caps.cache_aware_margin, Some(0.05));
    assert_eq!(caps.layer_caps, Some(vec![2, 4]));
    assert!(caps.masks[1][0]);
    assert!(Cli::try_parse_from(["x", "--router-kmin", "2"]).is_err());
    assert!(Cli::try_parse_from(["x", "--max-active-experts", "-1"]).is_err());
}
