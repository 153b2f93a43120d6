"""Importance reordering ("rewiring", DynaBERT; activation ranking, Minitron) before nesting a trained teacher.

Prefix slicing keeps the *first* units, so we permute units to put the most important first. Scores come
from one calibration forward pass:
  - FFN neuron j of layer l:  E|gelu(x W_fc)_j| * ||W_proj[j, :]||  (its mean contribution to the output)
  - head i of layer l:        E||context_i W_proj[rows of head i]||  (its mean output norm)
  - hidden channel c (global, one order for the whole residual stream):  sum over every LayerNorm
    output in the model of E|LN(x)_c| (Minitron's embedding-channel score)
Every permutation is function-preserving (nml_core.arch.gpt2.permute_units applies them), so the full-width
logits are unchanged.
"""
from __future__ import annotations

import torch
from transformers import GPT2LMHeadModel

from ..arch.gpt2 import hook_points, model_dims, permute_units


@torch.no_grad()
def importance_scores(model: GPT2LMHeadModel, input_ids: torch.Tensor) -> dict:
    """{'ffn': [L x (f,)], 'heads': [L x (H,)], 'hidden': (d,)} activation-based scores."""
    dims = model_dims(model.config)
    H, h = dims.n_head, dims.head_dim
    points = hook_points(model)
    n_layer = len(points["layers"])
    ffn, heads = [None] * n_layer, [None] * n_layer
    hidden = torch.zeros(dims.n_embd)
    hooks = []

    def on_act(i):
        def hook(module, args, out):
            w_out = points["layers"][i]["ffn_out_weight"]  # (f, d)
            ffn[i] = out.abs().mean(dim=(0, 1)).float().cpu() * w_out.norm(dim=1).float().cpu()
        return hook

    def on_attn_proj(i):
        def hook(module, args):
            ctx = args[0]                                      # (B, T, H*h), heads concatenated
            w = module.weight.view(H, h, -1)                   # (H, h, d)
            per_head = torch.einsum("bthk,hkd->bthd", ctx.view(*ctx.shape[:2], H, h), w)
            heads[i] = per_head.norm(dim=-1).mean(dim=(0, 1)).float().cpu()
        return hook

    def on_ln(module, args, out):
        hidden.add_(out.abs().mean(dim=(0, 1)).float().cpu())

    for i, layer in enumerate(points["layers"]):
        hooks.append(layer["ffn_act"].register_forward_hook(on_act(i)))
        hooks.append(layer["attn_out"].register_forward_pre_hook(on_attn_proj(i)))
        hooks += [norm.register_forward_hook(on_ln) for norm in layer["norms"]]
    hooks.append(points["final_norm"].register_forward_hook(on_ln))
    was_training = model.training
    try:
        model.eval()
        model(input_ids=input_ids)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return {"ffn": ffn, "heads": heads, "hidden": hidden}


def permutations_from_scores(scores: dict) -> dict[str, torch.Tensor]:
    """Descending-importance orders, as flat int64 tensors keyed for safetensors storage."""
    perms = {"hidden": torch.argsort(scores["hidden"], descending=True, stable=True)}
    for i, (f, hd) in enumerate(zip(scores["ffn"], scores["heads"])):
        perms[f"ffn.{i}"] = torch.argsort(f, descending=True, stable=True)
        perms[f"heads.{i}"] = torch.argsort(hd, descending=True, stable=True)
    return perms


def reorder_by_importance(model: GPT2LMHeadModel, calib_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Score on the calibration batch, permute in place, and return the permutations (to store/replay)."""
    perms = permutations_from_scores(importance_scores(model, calib_ids))
    permute_units(model, perms)
    return perms
