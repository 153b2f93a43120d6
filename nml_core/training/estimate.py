"""What a run will cost before it starts: tokens, FLOPs and wall time from one timed nested step here."""
from __future__ import annotations

import time

import torch
from transformers import GPT2LMHeadModel

from ..arch.gpt2 import cost
from ..device import synchronize
from ..nesting.depth import subnets
from ..nesting.elastic import ElasticGPT2
from .config import TrainConfig, width_shares
from .loop import make_accelerator, nested_step


def estimate(model: GPT2LMHeadModel, widths: list[float], axes, cfg: TrainConfig, teacher: bool = True,
             calibration_batch: int = 2, depths: list[float] = (1.0,)) -> dict:
    """Tokens, FLOPs and expected wall time of a run, from timed steps on this device.

    Each sub-model's (width x depth) forward + backward and the frozen teacher's forward are timed apart (at a small batch on random
    tokens, after a warm-up, scaled linearly to the real batch), then weighted by how often the strategy trains
    each width (config.width_shares: all = every width every step, sandwich = largest + smallest + one middle,
    random = one). FLOPs = steps x batch x ctx x (sum_w share(w) x 3 x F(w) + F(1) [teacher]), F = forward FLOPs
    per token (nml_core.arch.gpt2.cost).
    """
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    elastic = ElasticGPT2(model.to(device).train(), axes)
    axes = elastic.axes  # None: every axis, as the elastic model takes it
    configs = subnets(list(widths), list(depths))
    shares = width_shares(configs, cfg.strategy)
    teacher_f = cost(model.config, ctx=cfg.ctx)["flops_per_token"] if teacher else 0
    per_token = sum(share * 3 * cost(model.config, elastic.dims(*c), cfg.ctx)["flops_per_token"]
                    for c, share in shares.items()) + teacher_f
    tokens = cfg.steps * cfg.batch_size * cfg.ctx * cfg.grad_accum
    b = min(calibration_batch, cfg.batch_size)
    batch = torch.randint(0, model.config.vocab_size, (b, cfg.ctx + 1), device=device)
    width_s = {c: _timed(lambda c=c: nested_step(elastic, None, batch, [c], cfg, accelerator), device) for c in configs}
    teacher_s = _timed(lambda: _teacher_forward(model, batch, accelerator), device) if teacher else 0.0
    model.zero_grad(set_to_none=True)
    scale = cfg.batch_size * cfg.grad_accum / b
    step_s = scale * (teacher_s + sum(share * width_s[c] for c, share in shares.items()))
    return {"tokens": tokens, "flops": tokens * per_token, "step_s": step_s, "minutes": step_s * cfg.steps / 60,
            "tokens_per_s": cfg.batch_size * cfg.ctx * cfg.grad_accum / step_s, "device": str(device),
            "strategy": cfg.strategy,
            "calibration": f"each sub-model's step and the teacher's forward at batch {b} x {cfg.ctx} on {device}, "
                           f"weighted by the {cfg.strategy} strategy, scaled to batch {cfg.batch_size}"}


def _timed(fn, device, runs: int = 2) -> float:
    """Seconds of the last of `runs` calls (the first warms up)."""
    for _ in range(runs):
        t = time.time()
        fn()
        synchronize(device)
    return time.time() - t


@torch.no_grad()
def _teacher_forward(model: GPT2LMHeadModel, batch: torch.Tensor, accelerator) -> None:
    """The frozen teacher's forward on a batch (the same shape as the model: a fair stand-in)."""
    with accelerator.autocast():
        model(input_ids=batch[:, :-1])
