"""Ranking the teacher's layers for depth nesting, by measurement.

A depth-k student keeps the k top-ranked layers (nml_core.nesting.depth). Three candidate rankings:
  - "prefix":    the first layers first (layer dropping from the top, the baseline);
  - "residual":  how much a block changes the residual stream, 1 - E cos(h_in, h_out) over the calibration
                 tokens (ShortGPT's Block Influence): a block that barely turns the stream matters least;
  - "drop-one":  how much the calibration loss rises when that block alone is skipped.
None is right for every model, so the ranking is *chosen* by measurement: each candidate's top-k teacher (no
training, the naive layer drop) is scored on the calibration batch at the depths the run nests, and the one with
the lowest mean loss wins. The scores and the losses are stored with the run, so the choice can be read back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

from .depth import DepthSpec
from .elastic import ElasticGPT2

CRITERIA = ("prefix", "residual", "drop-one")


@torch.no_grad()
def block_influence(model: GPT2LMHeadModel, input_ids: torch.Tensor) -> list[float]:
    """1 - mean cosine(input, output) of each block's residual stream (higher: the block does more)."""
    scores = []

    def hook(module, args, out):
        h_in, h_out = args[0].float(), out[0].float() if isinstance(out, tuple) else out.float()
        scores.append(1 - F.cosine_similarity(h_in, h_out, dim=-1).mean().item())

    hooks = [block.register_forward_hook(hook) for block in model.transformer.h]
    try:
        model(input_ids=input_ids)
    finally:
        for h in hooks:
            h.remove()
    return scores


@torch.no_grad()
def calib_loss(elastic: ElasticGPT2, input_ids: torch.Tensor, depth: float = 1.0) -> float:
    """Mean next-token cross-entropy of the full-width, depth-d model on the calibration batch."""
    logits = elastic(input_ids[:, :-1], depth=depth).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), input_ids[:, 1:].flatten()).item()


@torch.no_grad()
def drop_one_increase(model: GPT2LMHeadModel, input_ids: torch.Tensor) -> list[float]:
    """The calibration loss with block i skipped, minus the full model's, for each i."""
    n = model.config.n_layer
    base = calib_loss(ElasticGPT2(model), input_ids)
    out = []
    for i in range(n):
        without_i = [j for j in range(n) if j != i] + [i]  # i ranked last: depth (n-1)/n drops exactly i
        out.append(calib_loss(ElasticGPT2(model, layer_rank=without_i), input_ids, (n - 1) / n) - base)
    return out


def _descending(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


@torch.no_grad()
def rank_layers(model: GPT2LMHeadModel, input_ids: torch.Tensor, depths: list[float]) -> dict:
    """{'layer_rank': the chosen ranking, 'criterion', 'candidates': {criterion: {rank, scores, loss: {depth: calib
    loss of its naive layer drop}}}, 'full_loss'}. depths: the depths the run nests (those below 1 are scored)."""
    was_training = model.training
    model.eval()
    try:
        n = model.config.n_layer
        scored = [d for d in depths if d < 1] or [k / n for k in range(1, n)]
        residual, drop_one = block_influence(model, input_ids), drop_one_increase(model, input_ids)
        candidates = {"prefix": {"rank": list(range(n)), "scores": None},
                      "residual": {"rank": _descending(residual), "scores": [round(s, 5) for s in residual]},
                      "drop-one": {"rank": _descending(drop_one), "scores": [round(s, 5) for s in drop_one]}}
        for c in candidates.values():
            elastic = ElasticGPT2(model, layer_rank=c["rank"])
            c["loss"] = {f"{d:.4g}": round(calib_loss(elastic, input_ids, d), 5) for d in scored}
        best = min(CRITERIA, key=lambda k: (sum(candidates[k]["loss"].values()), CRITERIA.index(k)))
        return {"layer_rank": candidates[best]["rank"], "criterion": best, "candidates": candidates,
                "full_loss": round(calib_loss(ElasticGPT2(model), input_ids), 5),
                "kept": {f"{d:.4g}": list(DepthSpec(d).layers(candidates[best]["rank"]) or range(n)) for d in scored}}
    finally:
        model.train(was_training)
