//! The MoE FFN of one layer: route every token, group the batch's tokens by expert so each
//! routed expert's weights are read once, and run the experts as the store makes them ready.

use anyhow::Result;
use rayon::prelude::*;
use smallvec::SmallVec;

use super::forward::{apply_linear, RouteObserver};
use super::linalg::{linear_many, per_row, quantize_rows, silu, LinearJob};
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
        let gate_act = layout.gate.ty.vec_dot_type();
        let act_bytes = gate_act.row_bytes(e).expect("validated width");
        quantize_rows(layout.gate.ty, xn, n, xq_tokens);
        let up_bytes = layout
            .up
            .ty
            .vec_dot_type()
            .row_bytes(e)
            .expect("validated width");
        if !same_act {
            quantize_rows(layout.up.ty, xn, n, xq_tokens_up);
        }
        let (xq_tokens, xq_tokens_up) = (&*xq_tokens, &*xq_tokens_up);
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
                    for v in [&mut *xq_gate, &mut *xq_up, &mut *xq_down] {
                        at_least(v, k);
                    }
                    for v in [&mut *gate, &mut *up, &mut *down] {
                        at_least(v, k);
                    }
                    let m_of = |j: usize| by_expert[group[j]].len();
                    // Each expert's tokens' quantized activations, gathered.
                    for j in 0..k {
                        let toks = &by_expert[group[j]];
                        xq_gate[j].clear();
                        for &(t, _) in toks {
                            let row = &xq_tokens[t * act_bytes..(t + 1) * act_bytes];
                            xq_gate[j].extend_from_slice(row);
                        }
                        if !same_act {
                            xq_up[j].clear();
                            for &(t, _) in toks {
                                let row = &xq_tokens_up[t * up_bytes..(t + 1) * up_bytes];
                                xq_up[j].extend_from_slice(row);
                            }
                        }
                    }
                    // Gate and up of every expert in the group: one parallel region.
                    let mut jobs = Jobs::new();
                    for (j, (gj, uj)) in gate.iter_mut().zip(up.iter_mut()).take(k).enumerate() {
                        let xu = if same_act { &xq_gate[j] } else { &xq_up[j] };
                        jobs.push(LinearJob {
                            w: layout.gate.view(experts[j].gate),
                            xq: &xq_gate[j],
                            n_tok: m_of(j),
                            out: sized(gj, m_of(j) * ff),
                        });
                        jobs.push(LinearJob {
                            w: layout.up.view(experts[j].up),
                            xq: xu,
                            n_tok: m_of(j),
                            out: sized(uj, m_of(j) * ff),
                        });
                    }
                    linear_many(&mut jobs);
                    drop(jobs);
                    // silu(gate) · up, quantized for down: expert by expert, over the pool
                    // for a batch.
                    let down_input = |j: usize, g: &mut Vec<f32>, u: &Vec<f32>, q: &mut Vec<u8>| {
                        for (a, b) in g.iter_mut().zip(u) {
                            *a = silu(*a) * b;
                        }
                        quantize_rows(layout.down.ty, g, m_of(j), q);
                    };
                    if n > 1 {
                        gate[..k]
                            .par_iter_mut()
                            .zip(&up[..k])
                            .zip(&mut xq_down[..k])
                            .enumerate()
                            .for_each(|(j, ((g, u), q))| down_input(j, g, u, q));
                    } else {
                        let members = gate[..k].iter_mut().zip(&up[..k]).zip(&mut xq_down[..k]);
                        for (j, ((g, u), q)) in members.enumerate() {
                            down_input(j, g, u, q);
                        }
                    }
                    let mut jobs = Jobs::new();
                    for (j, dj) in down.iter_mut().take(k).enumerate() {
                        jobs.push(LinearJob {
                            w: layout.down.view(experts[j].down),
                            xq: &xq_down[j],
                            n_tok: m_of(j),
                            out: sized(dj, m_of(j) * e),
                        });
                    }
                    linear_many(&mut jobs);
                    drop(jobs);
                    for (j, &ex) in group.iter().enumerate() {
                        for (i, &(t, slot)) in by_expert[ex].iter().enumerate() {
                            let w = route(t)[slot].weight;
                            let at = (t * max_slots + slot) * e;
                            for (o, &v) in slot_out[at..at + e]
                                .iter_mut()
                                .zip(&down[j][i * e..(i + 1) * e])
                            {
                                *o = v * w;
                            }
                        }
                    }
                    Ok(())
                },
            )?;
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
