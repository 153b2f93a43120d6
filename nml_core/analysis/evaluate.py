"""Quality of each width: perplexity, accuracy, agreement with the teacher, KL (cost: nml_core.arch.gpt2.cost).

Evaluation protocol: the validation tokens are cut into consecutive, non-overlapping blocks of n tokens
(data.eval_windows); each block is scored from its own start (no carried context), so every token after
the first is predicted exactly once. ppl = exp(mean NLL); acc = top-1 next-token accuracy; agree = fraction
of positions where the model's top-1 equals the teacher's; kl = mean per-token KL(teacher || model) at T=1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_models(models: dict[str, Callable], teacher: Callable | None, windows: torch.Tensor,
                    batch_size: int = 8, progress: Callable | None = None, spot_tokens: int = 2048,
                    device: str | torch.device = "cpu", apart: torch.Tensor | None = None) -> dict[str, dict]:
    """Score every model on the same windows in one pass (one teacher forward per batch, shared).

    models: name -> fn(input_ids) -> logits (B, T, V). Returns name -> {ppl, nll, acc, agree, kl, tokens,
    spot_ppl, spot_tokens}; spot_* is the perplexity over the first whole batches holding >= spot_tokens
    tokens, so a stored result can be re-checked quickly on a prefix of the data. Batches go to `device`
    (where the models live); sums are accumulated there and read once at the end, not once per batch.
    apart: an optional bool mask over the labels (windows[:, 1:]); the NLL of the labels outside it is also
    reported as rest_nll (e.g. everything but the first tokens of each document).
    """
    device = torch.device(device)
    sums = {k: torch.zeros(5, dtype=torch.float64, device=device) for k in models}  # nll, acc, agree, kl, nll apart
    count, spot = 0, {}
    batches = list(windows.split(batch_size))
    masks = list(apart.split(batch_size)) if apart is not None else [None] * len(batches)
    for i, (batch, mask) in enumerate(zip(batches, masks)):
        batch = batch.to(device, non_blocking=True)
        mask = mask.reshape(-1).to(device) if mask is not None else None
        x, y = batch[:, :-1], batch[:, 1:].reshape(-1)
        t_logp = F.log_softmax(teacher(x).float(), -1).flatten(0, 1) if teacher else None
        t_top = t_logp.argmax(-1) if teacher else None
        for name, fn in models.items():
            logp = F.log_softmax(fn(x).float(), -1).flatten(0, 1)
            top = logp.argmax(-1)
            s = sums[name]
            nll = F.nll_loss(logp, y, reduction="none")
            s[0] += nll.sum()
            if mask is not None:
                s[4] += nll[mask].sum()
            s[1] += (top == y).sum()
            if teacher:
                s[2] += (top == t_top).sum()
                s[3] += F.kl_div(logp, t_logp, log_target=True, reduction="sum")
        count += y.numel()
        if not spot and count >= spot_tokens:
            spot = {k: (s[0].clone(), count) for k, s in sums.items()}
        if progress:
            progress((i + 1) / len(batches))
    sums = {k: dict(zip(("nll", "acc", "agree", "kl", "apart"), s.tolist())) for k, s in sums.items()}  # one sync
    n_apart = int(apart[:len(windows)].sum()) if apart is not None else 0
    spot = {k: (float(v), n) for k, (v, n) in spot.items()}
    out = {}
    for name, s in sums.items():
        nll = s["nll"] / count
        spot_nll, spot_count = spot.get(name, (s["nll"], count))
        row = {"ppl": round(math.exp(nll), 3), "nll": round(nll, 5), "acc": round(s["acc"] / count, 5), "tokens": count,
               "spot_ppl": round(math.exp(spot_nll / spot_count), 3), "spot_tokens": spot_count}
        if teacher:
            row.update(agree=round(s["agree"] / count, 5), kl=round(s["kl"] / count, 5))
        if apart is not None and count > n_apart:
            row["rest_nll"] = round((s["nll"] - s["apart"]) / (count - n_apart), 5)
        out[name] = row
    return out


def unigram_ppl(train_ids, val_ids, vocab_size: int) -> float:
    """Perplexity of an add-one unigram model fit on train: the floor a language model must beat."""
    counts = torch.bincount(torch.as_tensor(train_ids.astype("int64")), minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return round(math.exp(-logp[torch.as_tensor(val_ids[1:].astype("int64"))].mean().item()), 2)


@dataclass
class EvalReport:
    """What `eval` measured: eval.json's content, typed. Each row is one model's scores (evaluate_models' fields
    plus its shape and cost: width, depth, params, flops_per_token, ...)."""
    meta: dict  # protocol, doc_start, train_nll, data, ctx, evaluated: how the rows were measured
    widths: list[dict]  # the nested run's (width, depth) students, or a teacher run's one row
    teacher: dict | None = None
    baselines: dict[str, list[dict]] = field(default_factory=dict)  # naive / independent rows
    unigram_ppl: float | None = None
    kept_baselines: str | None = None  # rows of weightless baselines, kept from their stored eval.json

    @property
    def tokens_scored(self) -> int:
        return self.widths[0]["tokens"] if self.widths else 0

    def to_json(self) -> dict:
        out = {**self.meta, "teacher": self.teacher, "widths": self.widths, "baselines": self.baselines or None,
               "unigram_ppl": self.unigram_ppl, "kept_baselines": self.kept_baselines,
               "tokens_scored": self.tokens_scored}
        return {k: v for k, v in out.items() if v is not None}
