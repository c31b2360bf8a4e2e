"""A qwen3moe-style mixture-of-experts decoder in PyTorch, computing what llama.cpp's
`qwen3moe` graph computes (see its src/models/qwen3moe.cpp and llama-graph.cpp build_moe_ffn):

  x = token_embd[ids]
  per layer:
    h = RMSNorm(x) * attn_norm
    q, k, v = h Wq^T, h Wk^T, h Wv^T            (q: n_head heads, k/v: n_head_kv heads, head dim hd)
    q = RMSNorm_per_head(q) * attn_q_norm; k = RMSNorm_per_head(k) * attn_k_norm
    q, k = RoPE_NEOX(q), RoPE_NEOX(k)           (pairs (i, i + hd/2), theta_i = base^(-2i/hd))
    a = causal softmax(q k^T / sqrt(hd)) v     (query head h reads kv head h // (n_head/n_head_kv))
    x = x + a Wo^T
    h = RMSNorm(x) * ffn_norm
    p = softmax(h Wr^T)                          (router over n_expert)
    top-k experts by p, weights renormalised to sum 1
    x = x + sum_k w_k * down_k( silu(gate_k h) * up_k h )
  logits = (RMSNorm(x) * output_norm) E^T        (tied with token_embd)

Weight layouts follow torch's (out, in) convention, which is also the numpy view of the GGUF
tensors: ffn_gate_exps/ffn_up_exps [n_expert, n_ff_exp, n_embd], ffn_down_exps
[n_expert, n_embd, n_ff_exp], ffn_gate_inp [n_expert, n_embd].
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class MoeConfig:
    vocab_size: int = 8192
    n_embd: int = 256
    n_layer: int = 6
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    n_expert: int = 8
    n_expert_used: int = 2
    n_ff_exp: int = 384
    n_ctx: int = 512
    rms_eps: float = 1e-6
    rope_base: float = 10000.0

    def to_dict(self):
        return asdict(self)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_tables(cfg, n_pos, device=None):
    half = cfg.head_dim // 2
    inv = cfg.rope_base ** (-torch.arange(0, half, dtype=torch.float64) * 2.0 / cfg.head_dim)
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float().to(device), ang.sin().float().to(device)


def apply_rope_neox(x, cos, sin):
    # x: [B, H, T, hd]; cos/sin: [T, hd/2]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.n_embd, cfg.head_dim
        self.wq = nn.Linear(d, cfg.n_head * hd, bias=False)
        self.wk = nn.Linear(d, cfg.n_head_kv * hd, bias=False)
        self.wv = nn.Linear(d, cfg.n_head_kv * hd, bias=False)
        self.wo = nn.Linear(cfg.n_head * hd, d, bias=False)
        self.q_norm = nn.Parameter(torch.ones(hd))
        self.k_norm = nn.Parameter(torch.ones(hd))

    def forward(self, x, cos, sin):
        cfg = self.cfg
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, cfg.n_head, cfg.head_dim)
        k = self.wk(x).view(B, T, cfg.n_head_kv, cfg.head_dim)
        v = self.wv(x).view(B, T, cfg.n_head_kv, cfg.head_dim)
        q = rms_norm(q, self.q_norm, cfg.rms_eps).transpose(1, 2)
        k = rms_norm(k, self.k_norm, cfg.rms_eps).transpose(1, 2)
        v = v.transpose(1, 2)
        q = apply_rope_neox(q, cos[:T], sin[:T])
        k = apply_rope_neox(k, cos[:T], sin[:T])
        rep = cfg.n_head // cfg.n_head_kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(cfg.head_dim))
        return self.wo(a.transpose(1, 2).reshape(B, T, cfg.n_head * cfg.head_dim))


class MoeFfn(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        E, d, f = cfg.n_expert, cfg.n_embd, cfg.n_ff_exp
        self.router = nn.Linear(d, E, bias=False)
        # One parameter per expert (gradients stay per expert); gate and up are fused:
        # rows [0, f) are ffn_gate_exps[e], rows [f, 2f) are ffn_up_exps[e].
        self.w_gate_up = nn.ParameterList(nn.Parameter(torch.empty(2 * f, d)) for _ in range(E))
        self.w_down = nn.ParameterList(nn.Parameter(torch.empty(d, f)) for _ in range(E))

    def stacked(self):
        """(gate [E, f, d], up [E, f, d], down [E, d, f]) as in the GGUF expert tensors."""
        f = self.cfg.n_ff_exp
        gu = torch.stack([w.detach() for w in self.w_gate_up])
        return gu[:, :f].contiguous(), gu[:, f:].contiguous(), torch.stack([w.detach() for w in self.w_down])

    def forward(self, x):
        """Returns (output, aux) where aux has 'probs' [N, E] and 'topk' [N, k] for the
        load-balancing loss and routing statistics."""
        cfg = self.cfg
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = F.softmax(self.router(x), dim=-1)
        top_w, top_i = probs.topk(cfg.n_expert_used, dim=-1)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        # Sort the N*k (token, slot) assignments by expert, gather once, run each expert on
        # its contiguous slice, scatter back once.
        flat_e = top_i.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        tok = torch.div(order, cfg.n_expert_used, rounding_mode="floor")
        counts = torch.bincount(flat_e, minlength=cfg.n_expert).tolist()
        xs = x.index_select(0, tok)
        f = cfg.n_ff_exp
        ys = []
        for e, xe in enumerate(xs.split(counts)):
            if xe.shape[0] == 0:
                continue
            gu = xe @ self.w_gate_up[e].t()
            ys.append((F.silu(gu[:, :f]) * gu[:, f:]) @ self.w_down[e].t())
        y = torch.cat(ys) * top_w.reshape(-1).index_select(0, order).unsqueeze(-1)
        out = torch.zeros_like(x).index_add_(0, tok, y)
        return out.view(shape), {"probs": probs, "topk": top_i}


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.attn_norm = nn.Parameter(torch.ones(cfg.n_embd))
        self.attn = Attention(cfg)
        self.ffn_norm = nn.Parameter(torch.ones(cfg.n_embd))
        self.moe = MoeFfn(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attn(rms_norm(x, self.attn_norm, self.cfg.rms_eps), cos, sin)
        m, aux = self.moe(rms_norm(x, self.ffn_norm, self.cfg.rms_eps))
        return x + m, aux


class MoeModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embd = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.output_norm = nn.Parameter(torch.ones(cfg.n_embd))
        cos, sin = rope_tables(cfg, cfg.n_ctx)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def init_weights(self, generator):
        std = 0.02
        out_std = std / math.sqrt(2 * self.cfg.n_layer)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # norms stay at 1
            s = out_std if (name.endswith("wo.weight") or ".w_down." in name) else std
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * s)

    def forward(self, ids):
        x = self.tok_embd(ids)
        auxes = []
        for blk in self.blocks:
            x, aux = blk(x, self.rope_cos, self.rope_sin)
            auxes.append(aux)
        x = rms_norm(x, self.output_norm, self.cfg.rms_eps)
        return x @ self.tok_embd.weight.t(), auxes


def load_balance_loss(auxes, n_expert, k):
    """Switch-Transformer load-balancing loss, averaged over layers:
    n_expert * sum_e f_e * P_e, with f_e the share of the N*k routing slots going to e
    and P_e the mean router probability of e. Equals 1 for perfectly uniform routing."""
    total = 0.0
    for aux in auxes:
        probs, topk = aux["probs"], aux["topk"]
        f = torch.bincount(topk.reshape(-1), minlength=n_expert).float() / topk.numel()
        P = probs.mean(0)
        total = total + n_expert * (f * P).sum()
    return total / len(auxes)


def count_params(cfg):
    d, hd, E, f = cfg.n_embd, cfg.head_dim, cfg.n_expert, cfg.n_ff_exp
    attn = d * cfg.n_head * hd * 2 + d * cfg.n_head_kv * hd * 2 + 2 * hd
    experts = E * 3 * d * f
    router = E * d
    norms = 2 * d
    per_layer = attn + experts + router + norms
    embd = cfg.vocab_size * d
    total = embd + cfg.n_layer * per_layer + d
    active = embd + cfg.n_layer * (attn + router + norms + cfg.n_expert_used * 3 * d * f) + d
    return {
        "total": total,
        "active_per_token": active,
        "embedding_tied": embd,
        "experts_total": cfg.n_layer * experts,
        "attention_total": cfg.n_layer * attn,
        "non_embedding_active": active - embd,
    }
