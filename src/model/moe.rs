//! The MoE FFN of one layer: route every token, group the batch's tokens by expert so each
//! routed expert's weights are read once, and run the experts as the store makes them ready.

use anyhow::Result;
use smallvec::SmallVec;

use super::forward::{apply_linear, RouteObserver};
use super::linalg::{linear_many, per_row, quantize_rows, swiglu_quantize_rows, LinearJob};
use super::scratch::{at_least, sized, zeroed, MoeScratch};
use super::weights::{ExpertLayout, Matrix};
use super::Model;
use crate::experts::ExpertBytes;

/// Jobs of one parallel region kept on the stack: gate and up of up to 16 experts.
type Jobs<'a> = SmallVec<[LinearJob<'a>; 32]>;

impl Model {
    /// Runs layer `il`'s experts for the `n` tokens of `xn` at positions `pos0..` into `out`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moe_ffn(
        &self,
        il: usize,
        router: &Matrix,
        layout: &ExpertLayout,
        xn: &[f32],
        n: usize,
        pos0: usize,
        observer: &mut Option<&mut dyn RouteObserver>,
        m: &mut MoeScratch,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let e = cfg.n_embd;
        let ne = cfg.n_expert;
        let logits = zeroed(&mut m.router_logits, n * ne);
        apply_linear(router, xn, n, &mut m.qbuf, logits);

        // Route every token; group (token, slot) pairs by expert.
        let probs = zeroed(&mut m.probs, ne);
        m.routes.clear();
        m.route_start.clear();
        m.route_start.push(0);
        let store = &self.store;
        let resident = |x: usize| store.is_resident(il, x);
        for t in 0..n {
            self.router.route_at(
                il,
                Some(pos0 + t),
                &logits[t * ne..(t + 1) * ne],
                probs,
                &resident,
                &mut m.choices,
            );
            if self.prefetcher.enabled {
                self.prefetcher.score(il, t, &m.choices);
            }
            if let Some(obs) = observer.as_deref_mut() {
                obs.observe(il, pos0 + t, &m.choices);
            }
            m.routes.extend_from_slice(&m.choices);
            m.route_start.push(m.routes.len());
        }
        if self.prefetcher.enabled {
            self.prefetcher.consume(il);
        }
        let MoeScratch {
            routes,
            route_start,
            by_expert,
            used,
            group,
            starts,
            pair_of,
            xq_tokens,
            xq_tokens_up,
            xq_gate,
            xq_up,
            xq_down,
            gate,
            up,
            down,
            slot_out,
            ..
        } = m;
        let route = |t: usize| &routes[route_start[t]..route_start[t + 1]];
        let max_slots = (0..n).map(|t| route(t).len()).max().unwrap_or(0);
        at_least(by_expert, ne);
        by_expert.iter_mut().for_each(|b| b.clear());
        for t in 0..n {
            for (slot, c) in route(t).iter().enumerate() {
                by_expert[c.expert].push((t, slot));
            }
        }
        used.clear();
        used.extend((0..ne).filter(|&x| !by_expert[x].is_empty()));

        // Per (token, slot) outputs, summed in slot order afterwards like llama.cpp. Every
        // (token, slot) that is read is written first: no clearing.
        let slot_out = sized(slot_out, n * max_slots * e);
        let ff = layout.gate.rows;
        let same_act = layout.up.ty.vec_dot_type() == layout.gate.ty.vec_dot_type();
        let by_expert = &*by_expert;
        // Each token's row is quantized once, whichever experts it goes to.
        let act_row_bytes = |ty: moe_edge_kernels::GgmlType| {
            ty.vec_dot_type().row_bytes(e).expect("validated width")
        };
        let (act_bytes, up_bytes) = (act_row_bytes(layout.gate.ty), act_row_bytes(layout.up.ty));
        quantize_rows(layout.gate.ty, xn, n, xq_tokens);
        if !same_act {
            quantize_rows(layout.up.ty, xn, n, xq_tokens_up);
        }
        let (xq_tokens, xq_tokens_up) = (&*xq_tokens, &*xq_tokens_up);
        let n_used = used.len();
        // Set when one call of the closure below has summed the slots into `out`.
        let mut summed = false;
        for chunk in used.chunks(self.store.max_batch().max(1)) {
            // Resident experts are computed while the missing ones load; the results land in
            // per-(token, slot) rows summed in slot order below, so the order does not matter.
            self.store.with_experts_as_ready(
                il,
                chunk,
                &mut |ready, experts: &[ExpertBytes<'_>]| {
                    group.clear();
                    group.extend(ready.iter().map(|&i| chunk[i]));
                    let k = group.len();
                    // The group's (token, slot) pairs, expert after expert: expert j's are
                    // pairs starts[j]..starts[j + 1]. Every buffer below is one flat array of
                    // pairs, so its size is the same layer after layer (no regrowth).
                    starts.clear();
                    starts.push(0);
                    for &ex in group.iter() {
                        starts.push(starts[starts.len() - 1] + by_expert[ex].len());
                    }
                    let pairs = starts[k];
                    let m_of = |j: usize| starts[j + 1] - starts[j];
                    // Each expert's tokens' quantized activations, gathered.
                    let gather = |from: &[u8], width: usize, to: &mut Vec<u8>| {
                        let to = sized(to, pairs * width);
                        let tokens = group.iter().flat_map(|&ex| by_expert[ex].iter());
                        for (dst, &(t, _)) in to.chunks_exact_mut(width).zip(tokens) {
                            dst.copy_from_slice(&from[t * width..(t + 1) * width]);
                        }
                    };
                    // One token (decode): every expert reads the token's own row, so the
                    // products share one set of activations (and their summaries).
                    let one = n == 1 && group.iter().all(|&ex| by_expert[ex].len() == 1);
                    if !one {
                        gather(xq_tokens, act_bytes, xq_gate);
                        if !same_act {
                            gather(xq_tokens_up, up_bytes, xq_up);
                        }
                    }
                    let (xg, xg_bytes) = if one {
                        (&xq_tokens[..], 0)
                    } else {
                        (&xq_gate[..], act_bytes)
                    };
                    let (xu, xu_bytes) = match (same_act, one) {
                        (true, _) => (xg, xg_bytes),
                        (false, true) => (&xq_tokens_up[..], 0),
                        (false, false) => (&xq_up[..], up_bytes),
                    };
                    // Pairs a..b's activations: rows a..b of the gathered ones, or the token's.
                    fn rows_of(x: &[u8], stride: usize, width: usize, a: usize, b: usize) -> &[u8] {
                        &x[a * stride..a * stride + (b - a - 1) * stride + width]
                    }
                    // Gate and up of every expert in the group: one parallel region.
                    let mut jobs = Jobs::new();
                    let mut g_rest = sized(gate, pairs * ff);
                    let mut u_rest = sized(up, pairs * ff);
                    for j in 0..k {
                        let m = m_of(j);
                        let (g, tail) = std::mem::take(&mut g_rest).split_at_mut(m * ff);
                        g_rest = tail;
                        let (u, tail) = std::mem::take(&mut u_rest).split_at_mut(m * ff);
                        u_rest = tail;
                        let (a, b) = (starts[j], starts[j + 1]);
                        jobs.push(LinearJob {
                            w: layout.gate.view(experts[j].gate),
                            xq: rows_of(xg, xg_bytes, act_bytes, a, b),
                            n_tok: m,
                            out: g,
                        });
                        jobs.push(LinearJob {
                            w: layout.up.view(experts[j].up),
                            xq: rows_of(xu, xu_bytes, up_bytes, a, b),
                            n_tok: m,
                            out: u,
                        });
                    }
                    linear_many(&mut jobs);
                    drop(jobs);
                    // silu(gate) · up, quantized for down.
                    swiglu_quantize_rows(
                        layout.down.ty,
                        &mut gate[..pairs * ff],
                        &up[..pairs * ff],
                        pairs,
                        xq_down,
                    );
                    let down_bytes = xq_down.len() / pairs.max(1);
                    let mut jobs = Jobs::new();
                    let mut d_rest = sized(down, pairs * e);
                    for j in 0..k {
                        let m = m_of(j);
                        let (d, tail) = std::mem::take(&mut d_rest).split_at_mut(m * e);
                        d_rest = tail;
                        jobs.push(LinearJob {
                            w: layout.down.view(experts[j].down),
                            xq: &xq_down[starts[j] * down_bytes..starts[j + 1] * down_bytes],
                            n_tok: m,
                            out: d,
                        });
                    }
                    linear_many(&mut jobs);
                    drop(jobs);
                    if n == 1 && k == n_used {
                        // One token and every routed expert in this call (decode with the
                        // experts in RAM): its slots summed straight from the products, in
                        // slot order and with the same roundings as the per-slot rows below
                        // (each v·w rounded, then added), without writing and rereading them.
                        let o = zeroed(out, e);
                        for c in route(0) {
                            let p = group
                                .iter()
                                .position(|&ex| ex == c.expert)
                                .expect("every routed expert is in the group");
                            for (a, &v) in o.iter_mut().zip(&down[p * e..(p + 1) * e]) {
                                *a += v * c.weight;
                            }
                        }
                        summed = true;
                        return Ok(());
                    }
                    // Each pair's weighted output into its (token, slot) row, row by row
                    // (over the pool for a batch).
                    let pair_of = sized(pair_of, n * max_slots);
                    pair_of.fill(usize::MAX);
                    let tokens = group.iter().flat_map(|&ex| by_expert[ex].iter());
                    for (p, &(t, slot)) in tokens.enumerate() {
                        pair_of[t * max_slots + slot] = p;
                    }
                    let (pair_of, down) = (&*pair_of, &down[..pairs * e]);
                    per_row(&mut slot_out[..], e, |ts, row| {
                        let p = pair_of[ts];
                        if p != usize::MAX {
                            let w = route(ts / max_slots)[ts % max_slots].weight;
                            for (o, &v) in row.iter_mut().zip(&down[p * e..(p + 1) * e]) {
                                *o = v * w;
                            }
                        }
                    });
                    Ok(())
                },
            )?;
        }
        if summed {
            return Ok(());
        }
        let slot_out = &*slot_out;
        per_row(zeroed(out, n * e), e, |t, o| {
            for slot in 0..route(t).len() {
                let at = (t * max_slots + slot) * e;
                for (a, &b) in o.iter_mut().zip(&slot_out[at..at + e]) {
                    *a += b;
                }
            }
        });
        Ok(())
    }
}
