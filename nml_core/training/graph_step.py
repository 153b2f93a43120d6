"""The nested step as one graph (`--compile`): the frozen teacher's forward, every (width, depth) forward and
loss, summed into one scalar and compiled once with torch.compile(fullgraph=True); its backward is then one
compiled graph too (AOTAutograd), and `--cuda-graphs` replays both as captured CUDA graphs.

Why: at GPT-2 sizes a GPU step is bound by kernel launches, not arithmetic. The eager step (loop.nested_step)
runs one backward per width so that only one width's activations are alive at a time, and launches every width's
slices, losses and prefix-gradient additions on its own: thousands of launches per step. One graph lets the
compiler fuse them; the price is memory: every width's activations are alive until the one backward.

What makes it one graph, with no recompiles across steps:
- static shapes (the batch is always batch x ctx), and the sub-models' plans and skeletons built before tracing;
- plain slices of the shared weights (the compiler fuses their backward into the parameters' gradients; the
  eager step's in-place prefix gradients are an eager-only optimisation);
- the loss as whole-tensor stock ops (losses.kd_loss_terms; the teacher's target: losses.teacher_rows);
- no host synchronisation and no Python branch on a tensor: the per-width losses come back as one (n, 3)
  tensor on the device, read only at a logging step.
Supported: KD source teacher or cascade, strategy all (one fixed set of sub-models), one process.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import NMLError
from ..nesting.depth import as_subnet, subnet_key
from ..nesting.elastic import ElasticGPT2
from .config import TrainConfig
from .losses import WidthLoss, teacher_rows, kd_loss_terms

# the compiled graphs are cached on disk and reused by the next run of the same shapes (inductor's FX graph and
# AOTAutograd caches); a stable folder instead of /tmp, so the cache outlives a reboot
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "nml_core" / "inductor"))


def check_graph_step(cfg: TrainConfig, processes: int, device: torch.device) -> None:
    """What the one-graph step cannot do: one line naming the flag and the way out."""
    if processes > 1:
        raise NMLError("--compile with several processes is not supported (each rank would compile its own graph "
                       "and DDP's hooks would have to run inside it); drop --compile or run one process")
    if cfg.strategy != "all":
        raise NMLError(f"--compile needs --strategy all (strategy {cfg.strategy} trains another set of sub-models "
                       "each step: one graph each, recompiled); drop --compile or use --strategy all")
    if cfg.kd_source == "ta" or cfg.teacher_cache:
        raise NMLError("--compile supports --kd-source teacher or cascade without --teacher-cache; drop --compile")
    if cfg.cuda_graphs and device.type != "cuda":
        raise NMLError("--cuda-graphs replays captured CUDA graphs: it needs --device cuda; drop --cuda-graphs")
    if cfg.cuda_graphs and not cfg.compile:
        raise NMLError("--cuda-graphs captures the compiled step: add --compile")


class GraphStep:
    """step(batch) -> {subnet key: WidthLoss} with the gradients of every sub-model added into the shared
    parameters, like loop.nested_step; the forward and loss are one compiled graph."""

    def __init__(self, elastic: ElasticGPT2, teacher, widths: list, cfg: TrainConfig, accelerator):
        self.subnets = [as_subnet(w) for w in widths]
        self.cfg, self.accelerator, self.teacher = cfg, accelerator, teacher
        self.elastic = accelerator.unwrap_model(elastic)
        # every sub-model's slice plan and skeleton, built eagerly: the graph only slices and runs HF's GPT-2
        self.parts = [None if s == (1.0, 1.0) else (self.elastic.plan(self.elastic.dims(*s)),
                                                    self.elastic.skeleton(self.elastic.dims(*s)))
                      for s in self.subnets]
        self.losses = torch.compile(self.step_losses, fullgraph=True, dynamic=False,
                                    mode="reduce-overhead" if cfg.cuda_graphs else None)

    def step_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the summed loss to backward, (n, 3) per sub-model: loss, CE, KL) of one batch; what is compiled."""
        cfg, target = self.cfg, None
        if self.teacher is not None:
            with torch.no_grad():
                target = teacher_rows(self.teacher(input_ids=x).logits.flatten(0, 1), cfg.temperature)
        rows = []
        for subnet, part in zip(self.subnets, self.parts):
            logits = self.model_logits(x, part).flatten(0, 1)
            rows.append(torch.stack(kd_loss_terms(logits, y.flatten(), target, cfg.alpha, cfg.temperature)))
            if cfg.kd_source == "cascade" and target is not None:
                target = teacher_rows(logits.detach(), cfg.temperature)
        per = torch.stack(rows)
        return per[:, 0].sum(), per

    def model_logits(self, x: torch.Tensor, part) -> torch.Tensor:
        if part is None:
            return self.elastic.model(input_ids=x, use_cache=False).logits
        plan, skeleton = part
        return self.elastic.sliced_forward(plan, skeleton, x, prefix_grads=False, use_cache=False).logits

    def __call__(self, batch: torch.Tensor) -> dict[str, WidthLoss]:
        x, y = batch[:, :-1], batch[:, 1:]
        with self.accelerator.autocast():
            try:
                total, per = self.losses(x, y)
            except Exception as e:  # a compiler that does not work here: one line, not a traceback
                if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise
                first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
                raise NMLError(f"--compile failed here ({type(e).__name__}: {first}); drop --compile (eager is the "
                               "default), or install what torch.compile needs (a C++ compiler on CPU, Triton on "
                               "CUDA)") from None
        self.accelerator.backward(total / self.cfg.grad_accum)
        per = per.detach().clone()  # a replayed CUDA graph reuses its output buffers at the next step
        has_kl = self.teacher is not None
        return {subnet_key(*s): WidthLoss(per[i, 0], per[i, 1], per[i, 2] if has_kl else None)
                for i, s in enumerate(self.subnets)}
