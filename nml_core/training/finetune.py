"""Students as starting points (NML's claim): fine-tune the same shape from different starts — the NML student,
the independent-KD student, the naive slice, a random initialisation — with one recipe and equal steps, on a
downstream task (nml_core.data.tasks), and record the curve and the final metric.

  genre   GPT2ForSequenceClassification whose transformer is the start's (a fresh, seeded 4-way head); metric:
          test accuracy on passages of works never seen in training
  domain  plain language modelling (CE) on held-out documentation topics; metric: val perplexity
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

from ..data.batches import eval_windows, random_batch
from ..errors import NMLError
from ..nesting.elastic import extract_student
from ..nesting.width import WidthSpec
from ..store.models import load_run_model, run_config
from ..store.runs import RUN_FILE, Run, check_model_dir
from .inits import reordered_teacher


@dataclass
class FinetuneConfig:
    steps: int = 150
    batch_size: int = 16
    ctx: int = 128
    lr: float = 3e-4
    warmup: int = 10
    weight_decay: float = 0.01
    eval_every: int = 25
    eval_examples: int = 512
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise NMLError("finetune needs --steps >= 1, --batch-size >= 1 and --lr > 0")


def _optimizer(model, cfg: FinetuneConfig):
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) *
                                              0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))
    return opt, sched


def classifier_from(model: GPT2LMHeadModel, classes: int, seed: int) -> GPT2ForSequenceClassification:
    """A sequence classifier whose transformer holds `model`'s weights; its head is fresh (seeded)."""
    cfg = model.config.to_dict()
    cfg.update(num_labels=classes, pad_token_id=model.config.eos_token_id)
    torch.manual_seed(seed)
    clf = GPT2ForSequenceClassification(type(model.config).from_dict(cfg))
    clf.transformer.load_state_dict(model.transformer.state_dict())
    return clf


@torch.no_grad()
def _accuracy(clf, x: torch.Tensor, y: torch.Tensor, device, batch: int = 64) -> tuple[float, float]:
    clf.eval()
    right, loss = 0, 0.0
    for i in range(0, len(x), batch):
        logits = clf(input_ids=x[i:i + batch].to(device)).logits.float()
        right += int((logits.argmax(-1).cpu() == y[i:i + batch]).sum())
        loss += float(F.cross_entropy(logits, y[i:i + batch].to(device), reduction="sum"))
    clf.train()
    return right / len(x), loss / len(x)


def finetune_genre(model: GPT2LMHeadModel, task: dict, cfg: FinetuneConfig, device) -> dict:
    classes = len(task["info"]["classes"])
    clf = classifier_from(model, classes, cfg.seed).to(device).train()
    opt, sched = _optimizer(clf, cfg)
    rng = random.Random(cfg.seed)
    by_class = [[i for i, y in enumerate(task["train_y"].tolist()) if y == k] for k in range(classes)]
    test_x, test_y = _every_class(task["test_x"], task["test_y"], cfg.eval_examples)
    curve = []
    for step in range(1, cfg.steps + 1):
        idx = [rng.choice(by_class[i % classes]) for i in range(cfg.batch_size)]  # every class equally
        loss = F.cross_entropy(clf(input_ids=task["train_x"][idx].to(device)).logits.float(),
                               task["train_y"][idx].to(device))
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            acc, test_loss = _accuracy(clf, test_x, test_y, device)
            curve.append({"step": step, "train_loss": round(float(loss.detach()), 4), "test_acc": round(acc, 4),
                          "test_loss": round(test_loss, 4)})
    acc, test_loss = _accuracy(clf, task["test_x"], task["test_y"], device)
    return {"curve": curve, "final": {"test_acc": round(acc, 4), "test_loss": round(test_loss, 4),
                                      "test_examples": len(task["test_x"])}, "metric": "test_acc"}


def _every_class(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most n examples for the periodic check, taken evenly across the (class-sorted) test set."""
    idx = torch.linspace(0, len(x) - 1, min(n, len(x))).round().long()
    return x[idx], y[idx]


@torch.no_grad()
def _val_nll(model, windows: torch.Tensor, device, batch: int = 16) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch].to(device)
        logits = model(input_ids=w[:, :-1]).logits.float()
        total += float(F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum"))
        count += w[:, 1:].numel()
    model.train()
    return total / count


def finetune_lm(model: GPT2LMHeadModel, task: dict, cfg: FinetuneConfig, device) -> dict:
    model = model.to(device).train()
    opt, sched = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    val = eval_windows(task["val"], cfg.ctx)
    curve = []
    for step in range(1, cfg.steps + 1):
        batch = random_batch(task["train"], cfg.batch_size, cfg.ctx, gen).to(device)
        loss = F.cross_entropy(model(input_ids=batch[:, :-1]).logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            nll = _val_nll(model, val[:max(1, cfg.eval_examples // 4)], device)
            curve.append({"step": step, "train_loss": round(float(loss.detach()), 4), "val_ppl": round(math.exp(nll), 3)})
    nll = _val_nll(model, val, device)
    return {"curve": curve, "final": {"val_ppl": round(math.exp(nll), 3), "val_tokens": val[:, 1:].numel()},
            "metric": "val_ppl"}


def run_task(task_name: str, model: GPT2LMHeadModel, task: dict, cfg: FinetuneConfig, device) -> dict:
    out = (finetune_genre if task_name == "genre" else finetune_lm)(model, task, cfg, device)
    return {**out, "task": task_name, "recipe": asdict(cfg), "info": task["info"]}


STARTS = ("nml", "independent", "naive", "random")


def starting_model(run: Run, width: float, start: str, seed: int = 0) -> GPT2LMHeadModel:
    """The width-w model a fine-tuning starts from: the NML student, the independent-KD student, the naive slice
    of the reordered starting model, a random initialisation of that shape, or an exported HF dir (a path)."""
    spec = WidthSpec(width, run.axes)
    if start == "nml":
        return extract_student(load_run_model(run)[0], spec)
    if start == "independent":
        path = run.path / "baselines" / f"independent-{width:g}"
        if not (path / RUN_FILE).exists():
            raise NMLError(f"{run.name} has no independent-KD student at width {width:g}; make it with "
                           f"python -m nml_core baseline {run.path} --kind independent --width {width:g}")
        return load_run_model(path)[0]
    if start == "naive":
        return extract_student(reordered_teacher(run), spec)
    if start == "random":
        torch.manual_seed(seed)
        return GPT2LMHeadModel(spec.student_config(run_config(run)))
    if Path(start).is_dir():
        check_model_dir(Path(start))
        return GPT2LMHeadModel.from_pretrained(start, dtype=torch.float32, use_safetensors=True, local_files_only=True)
    raise NMLError(f"unknown starting point {start!r}; use one of {', '.join(STARTS)} or an exported model dir")
