"""What a run will cost before it starts: tokens, FLOPs and wall time from one timed nested step here."""
from __future__ import annotations

import time

import torch
from transformers import GPT2LMHeadModel

from ..arch.gpt2 import cost
from ..device import synchronize
from ..nesting.elastic import ElasticGPT2
from ..nesting.width import WidthSpec
from .config import TrainConfig
from .loop import make_accelerator, nested_step


def estimate(model: GPT2LMHeadModel, widths: list[float], axes, cfg: TrainConfig, teacher: bool = True,
             calibration_batch: int = 2) -> dict:
    """Tokens, FLOPs and expected wall time of a run, from one timed nested step on this device.

    FLOPs = steps x batch x ctx x (sum_w 3 x F(w) [forward + backward] + F(1) [frozen teacher forward]),
    F = forward FLOPs per token (nml_core.arch.gpt2.cost). The calibration step runs at a small batch on
    random tokens (after one warm-up step) and is scaled linearly to the real batch.
    """
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    per_token = sum(3 * cost(model.config, WidthSpec(w, axes).dims(model.config), cfg.ctx)["flops_per_token"]
                    for w in widths) + (cost(model.config, ctx=cfg.ctx)["flops_per_token"] if teacher else 0)
    tokens = cfg.steps * cfg.batch_size * cfg.ctx * cfg.grad_accum
    elastic = ElasticGPT2(model.to(device).train(), axes)
    b = min(calibration_batch, cfg.batch_size)
    batch = torch.randint(0, model.config.vocab_size, (b, cfg.ctx + 1), device=device)
    tmodel = model if teacher else None  # the same shape: a fair stand-in for the frozen teacher's forward
    times = []
    for _ in range(2):
        t = time.time()
        nested_step(elastic, tmodel, batch, widths, cfg, accelerator)
        synchronize(device)
        times.append(time.time() - t)
    model.zero_grad(set_to_none=True)
    step_s = times[-1] * cfg.batch_size * cfg.grad_accum / b
    return {"tokens": tokens, "flops": tokens * per_token, "step_s": step_s, "minutes": step_s * cfg.steps / 60,
            "tokens_per_s": cfg.batch_size * cfg.ctx * cfg.grad_accum / step_s, "device": str(device),
            "calibration": f"1 nested step at batch {b} x {cfg.ctx} on {device}, scaled to batch {cfg.batch_size}"}
