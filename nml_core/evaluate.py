"""Quality and cost of each width: parameters, FLOPs per token, perplexity, accuracy, agreement, KL.

Cost formulas (per token, forward pass; L layers, d residual width, a attention width = heads x head_dim,
f FFN neurons, V vocab, P positions, n context length):
  params      = V*d + P*d + L*(4d [2 LayerNorms] + d*3a + 3a [c_attn] + a*d + d [c_proj] + d*f + f + f*d + d [MLP]) + 2d
                (the LM head is tied to wte and counted once)
  non-embedding params = params - V*d - P*d
  FLOPs/token = 2*L*(d*3a + a*d + 2*d*f)    matmuls with the layer weights (2 FLOPs per multiply-add)
              + 2*L*n*a                      attention scores and weighted values (Kaplan et al. 2020, eq. 2.2)
              + 2*d*V                        the LM head
Evaluation protocol: the validation tokens are cut into consecutive, non-overlapping blocks of n tokens
(data.eval_windows); each block is scored from its own start (no carried context), so every token after
the first is predicted exactly once. ppl = exp(mean NLL); acc = top-1 next-token accuracy; agree = fraction
of positions where the model's top-1 equals the teacher's; kl = mean per-token KL(teacher || model) at T=1.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import GPT2Config

from .width import StudentDims


def dims_of(cfg: GPT2Config) -> StudentDims:
    return StudentDims(n_head=cfg.n_head, n_embd=cfg.n_embd, n_inner=cfg.n_inner or 4 * cfg.n_embd,
                       head_dim=cfg.n_embd // cfg.n_head)


def cost(cfg: GPT2Config, dims: StudentDims | None = None, ctx: int | None = None) -> dict:
    """Parameter counts, forward FLOPs per token and fp16 size of `cfg` (or of a student of it)."""
    dims = dims or dims_of(cfg)
    L, V, P = cfg.n_layer, cfg.vocab_size, cfg.n_positions
    d, a, f = dims.n_embd, dims.attn_dim, dims.n_inner
    n = ctx or cfg.n_positions
    per_layer = 4 * d + d * 3 * a + 3 * a + a * d + d + d * f + f + f * d + d
    params = V * d + P * d + L * per_layer + 2 * d
    flops = 2 * L * (d * 3 * a + a * d + 2 * d * f) + 2 * L * n * a + 2 * d * V
    return {"n_head": dims.n_head, "n_embd": d, "n_inner": f, "params": params,
            "nonemb_params": params - V * d - P * d, "flops_per_token": flops, "fp16_mb": round(params * 2 / 1e6, 2)}


@torch.no_grad()
def evaluate_models(models: dict[str, Callable], teacher: Callable | None, windows: torch.Tensor,
                    batch_size: int = 8, progress: Callable | None = None, spot_tokens: int = 2048) -> dict[str, dict]:
    """Score every model on the same windows in one pass (one teacher forward per batch, shared).

    models: name -> fn(input_ids) -> logits (B, T, V). Returns name -> {ppl, nll, acc, agree, kl, tokens,
    spot_ppl, spot_tokens}; spot_* is the perplexity over the first whole batches holding >= spot_tokens
    tokens, so a stored result can be re-checked quickly on a prefix of the data.
    """
    sums = {k: {"nll": 0.0, "acc": 0, "agree": 0, "kl": 0.0} for k in models}
    count, spot = 0, {}
    batches = list(windows.split(batch_size))
    for i, batch in enumerate(batches):
        x, y = batch[:, :-1], batch[:, 1:].reshape(-1)
        t_logp = F.log_softmax(teacher(x).float(), -1).flatten(0, 1) if teacher else None
        t_top = t_logp.argmax(-1) if teacher else None
        for name, fn in models.items():
            logp = F.log_softmax(fn(x).float(), -1).flatten(0, 1)
            s = sums[name]
            s["nll"] += F.nll_loss(logp, y, reduction="sum").item()
            top = logp.argmax(-1)
            s["acc"] += (top == y).sum().item()
            if teacher:
                s["agree"] += (top == t_top).sum().item()
                s["kl"] += F.kl_div(logp, t_logp, log_target=True, reduction="sum").item()
        count += y.numel()
        if not spot and count >= spot_tokens:
            spot = {k: (s["nll"], count) for k, s in sums.items()}
        if progress:
            progress((i + 1) / len(batches))
    out = {}
    for name, s in sums.items():
        nll = s["nll"] / count
        spot_nll, spot_count = spot.get(name, (s["nll"], count))
        row = {"ppl": round(math.exp(nll), 3), "nll": round(nll, 5), "acc": round(s["acc"] / count, 5), "tokens": count,
               "spot_ppl": round(math.exp(spot_nll / spot_count), 3), "spot_tokens": spot_count}
        if teacher:
            row.update(agree=round(s["agree"] / count, 5), kl=round(s["kl"] / count, 5))
        out[name] = row
    return out


def unigram_ppl(train_ids, val_ids, vocab_size: int) -> float:
    """Perplexity of an add-one unigram model fit on train: the floor a language model must beat."""
    counts = torch.bincount(torch.as_tensor(train_ids.astype("int64")), minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return round(math.exp(-logp[torch.as_tensor(val_ids[1:].astype("int64"))].mean().item()), 2)
