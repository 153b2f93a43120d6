"""What a run will cost before it starts: tokens, FLOPs and wall time from one timed nested step here."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from transformers import GPT2LMHeadModel

from ..arch.gpt2 import cost
from ..device import synchronize
from ..nesting.depth import subnets
from ..nesting.elastic import ElasticGPT2
from .config import TrainConfig, width_shares
from .loop import make_accelerator, nested_step


@dataclass(frozen=True)
class FollowUps:
    """What a job runs after training, to be counted in its estimate: eval on eval_tokens val tokens (and as
    many train tokens, up to 16,384) of the students, the teacher and the naive slices; bench with repeats; and
    one Python process per command."""
    eval_tokens: int
    bench_repeats: int
    processes: int
    naive: bool = True


def estimate(model: GPT2LMHeadModel, widths: list[float], axes, cfg: TrainConfig, teacher: bool = True,
             calibration_batch: int = 2, depths: list[float] = (1.0,), follow: FollowUps | None = None) -> dict:
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
    # the periodic val CE (and step 0's): eval_windows x ctx tokens through every sub-model, forward only
    evals = cfg.steps // cfg.eval_every + 2 if cfg.eval_every else 0
    val_s = evals * cfg.eval_windows / b * sum(width_s.values()) / 3
    after = follow_up_seconds(model, [w for w, d in configs if d == 1.0], axes, follow, cfg.ctx) if follow else None
    train_s = step_s * cfg.steps + val_s
    return {"tokens": tokens, "flops": tokens * per_token, "step_s": step_s, "minutes": train_s / 60,
            "follow_up_s": after, "total_minutes": (train_s + (after["total_s"] if after else 0)) / 60,
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


def follow_up_seconds(model: GPT2LMHeadModel, widths: list[float], axes, follow: FollowUps, ctx: int) -> dict:
    """Seconds of the follow-ups, from forwards timed here at their shapes (batch 1 and 8 x ctx, one token) and
    one timed start of a Python process that imports the engine."""
    elastic = ElasticGPT2(model.eval(), axes)
    device = next(model.parameters()).device
    tokens = {b: torch.randint(0, model.config.vocab_size, (b, ctx), device=device) for b in (1, 8)}
    one = torch.randint(0, model.config.vocab_size, (1, 1), device=device)
    t = {}
    with torch.inference_mode():
        for w in widths:
            t[w] = {b: _timed(lambda w=w, x=x: elastic(x, width=w), device) for b, x in tokens.items()}
            t[w]["token"] = _timed(lambda w=w: elastic(one, width=w), device)
    scored = len(widths) + 1 + (len([w for w in widths if w < 1]) if follow.naive else 0)  # + teacher, naive
    per_token = sum(t[w][8] for w in widths) / len(widths) / (8 * ctx)
    eval_s = scored * (follow.eval_tokens + min(follow.eval_tokens, 16384)) * per_token
    bench_s = (follow.bench_repeats + 1) * sum(3 * t[w][1] + 2 * t[w][8] + 32 * t[w]["token"] for w in widths)
    with tempfile.TemporaryDirectory() as empty:  # a command's own start: Python, torch, transformers, the API
        start = time.time()
        subprocess.run([sys.executable, "-m", "nml_core", "list", empty], check=True, capture_output=True)
        start_s = time.time() - start
    return {"eval_s": eval_s, "bench_s": bench_s, "processes_s": follow.processes * start_s,
            "total_s": eval_s + bench_s + follow.processes * start_s}
