"""Importance reordering ("rewiring", DynaBERT; activation ranking, Minitron) before nesting a trained teacher.

Prefix slicing keeps the *first* units, so we permute units to put the most important first. Scores come
from one calibration forward pass:
  - FFN neuron j of layer l:  E|gelu(x W_fc)_j| * ||W_proj[j, :]||  (its mean contribution to the output)
  - head i of layer l:        E||context_i W_proj[rows of head i]||  (its mean output norm)
  - hidden channel c (global, one order for the whole residual stream):  sum over every LayerNorm
    output in the model of E|LN(x)_c| (Minitron's embedding-channel score)
Every permutation is function-preserving: FFN neurons and heads are summed over, and LayerNorm's mean and
variance do not depend on channel order, so the full-width logits are unchanged.
"""
from __future__ import annotations

import torch
from transformers import GPT2LMHeadModel


@torch.no_grad()
def importance_scores(model: GPT2LMHeadModel, input_ids: torch.Tensor) -> dict:
    """{'ffn': [L x (f,)], 'heads': [L x (H,)], 'hidden': (d,)} activation-based scores."""
    cfg = model.config
    H, d = cfg.n_head, cfg.n_embd
    h = d // H
    ffn, heads = [None] * cfg.n_layer, [None] * cfg.n_layer
    hidden = torch.zeros(d)
    hooks = []

    def on_act(i):
        def hook(module, args, out):
            w_out = model.transformer.h[i].mlp.c_proj.weight  # (f, d)
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

    for i, block in enumerate(model.transformer.h):
        hooks.append(block.mlp.act.register_forward_hook(on_act(i)))
        hooks.append(block.attn.c_proj.register_forward_pre_hook(on_attn_proj(i)))
        hooks += [block.ln_1.register_forward_hook(on_ln), block.ln_2.register_forward_hook(on_ln)]
    hooks.append(model.transformer.ln_f.register_forward_hook(on_ln))
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


@torch.no_grad()
def apply_permutations(model: GPT2LMHeadModel, perms: dict[str, torch.Tensor]) -> GPT2LMHeadModel:
    """Reorder units in place (see module doc); the model computes the same function afterwards."""
    cfg = model.config
    H, d = cfg.n_head, cfg.n_embd
    h = d // H
    t = model.transformer
    hid = perms["hidden"].to(t.wte.weight.device)

    def take(p: torch.nn.Parameter, index: torch.Tensor, dim: int):
        p.data = p.data.index_select(dim, index.to(p.device)).contiguous()

    take(t.wte.weight, hid, 1)   # lm_head is tied to wte and follows
    take(t.wpe.weight, hid, 1)
    for ln in [t.ln_f] + [b.ln_1 for b in t.h] + [b.ln_2 for b in t.h]:
        take(ln.weight, hid, 0)
        take(ln.bias, hid, 0)
    for i, block in enumerate(t.h):
        attn, mlp = block.attn, block.mlp
        # heads: expand head order to column order inside each of q, k, v
        head_cols = (perms[f"heads.{i}"].view(H, 1) * h + torch.arange(h)).reshape(-1)
        qkv_cols = torch.cat([head_cols + j * d for j in range(3)])
        take(attn.c_attn.weight, hid, 0)
        take(attn.c_attn.weight, qkv_cols, 1)
        take(attn.c_attn.bias, qkv_cols, 0)
        take(attn.c_proj.weight, head_cols, 0)
        take(attn.c_proj.weight, hid, 1)
        take(attn.c_proj.bias, hid, 0)
        ffn = perms[f"ffn.{i}"]
        take(mlp.c_fc.weight, hid, 0)
        take(mlp.c_fc.weight, ffn, 1)
        take(mlp.c_fc.bias, ffn, 0)
        take(mlp.c_proj.weight, ffn, 0)
        take(mlp.c_proj.weight, hid, 1)
        take(mlp.c_proj.bias, hid, 0)
    model.tie_weights()
    return model


def reorder_by_importance(model: GPT2LMHeadModel, calib_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Score on the calibration batch, permute in place, and return the permutations (to store/replay)."""
    perms = permutations_from_scores(importance_scores(model, calib_ids))
    apply_permutations(model, perms)
    return perms
