"""The training loop: one loop for teacher pretraining, nested distillation and independent-KD baselines.

Per step (strategy "all"): one frozen-teacher forward, then for each width w (largest first)
    loss_w = alpha * KL(target || student_w) * T^2 + (1 - alpha) * CE(student_w, labels)
and loss_w.backward() right away, so only one width's activations are alive at a time; the gradients of all
widths add up in the shared full parameters, then one optimizer step. The KD target is the frozen copy of
the original teacher (kd_source "teacher") or the next larger width's detached logits ("cascade").
Pretraining is the same loop with one width and no teacher (plain CE).
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from .data import TokenData, random_batch, eval_windows
from .errors import NMLError
from .losses import nested_kd_loss, soft_targets
from .runs import Run, append_metrics, atomic_write_bytes, atomic_write_json, read_metrics
from .slicing import ElasticGPT2
from .teacher_cache import TopKTeacher, topk_soft_targets

STRATEGIES = ("all", "sandwich", "random")
KD_SOURCES = ("teacher", "cascade")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    ctx: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1      # cosine decays to lr * min_lr_ratio
    warmup: int = -1               # -1: 5% of the steps
    weight_decay: float = 0.1
    grad_accum: int = 1
    grad_clip: float = 1.0
    seed: int = 1337
    alpha: float = 0.5             # weight of KD in every width's loss
    temperature: float = 2.0
    strategy: str = "all"
    kd_source: str = "teacher"
    checkpoint_every: int = 100
    log_every: int = 5
    eval_every: int = 0            # 0: no periodic val loss
    eval_windows: int = 16
    device: str = "auto"
    mixed_precision: str = "auto"  # auto: bf16 on CUDA if supported, fp32 on CPU
    teacher_cache: str | None = None  # top-k teacher cache dir (nml_core.teacher_cache): no teacher forward

    def __post_init__(self):
        checks = [(self.steps > 0, "--steps must be > 0"), (self.batch_size > 0, "--batch-size must be > 0"),
                  (self.ctx > 1, "--ctx must be > 1"), (self.lr > 0, "--lr must be > 0"),
                  (0 <= self.alpha <= 1, "--alpha must be in [0, 1]"),
                  (self.temperature > 0, "--temperature must be > 0"),
                  (self.grad_accum > 0, "--grad-accum must be > 0"),
                  (self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}"),
                  (self.kd_source in KD_SOURCES, f"--kd-source must be one of {', '.join(KD_SOURCES)}"),
                  (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda")]
        for ok, message in checks:
            if not ok:
                raise NMLError(message)

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup >= 0 else max(1, self.steps // 20)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def widths_for_step(widths: list[float], strategy: str, rng: random.Random) -> list[float]:
    """Which widths train this step, largest first."""
    if strategy == "all" or len(widths) <= 2:
        return list(widths)
    if strategy == "sandwich":  # largest + smallest + one random middle width (US-Nets)
        return [widths[0], rng.choice(widths[1:-1]), widths[-1]]
    return [rng.choice(widths)]


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise NMLError("--device cuda but no CUDA GPU is visible; use --device cpu or auto")
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = "no" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if cpu and mp != "no":
        raise NMLError(f"--mixed-precision {mp} on CPU is ~60x slower than fp32 here; use --mixed-precision no")
    return Accelerator(cpu=cpu, mixed_precision=mp)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused or None)


# ---------------------------------------------------------------- checkpoints (safetensors + json only)

def save_checkpoint(run: Run, model: GPT2LMHeadModel, optimizer, step: int, state: dict) -> None:
    """checkpoints/step-N/ written in full, then checkpoints/latest.json flipped to it atomically."""
    root = run.path / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
               if k != "lm_head.weight"}, str(tmp / "model.safetensors"))
    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().contiguous().cpu() for i, s in opt["state"].items() for k, v in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"param_groups": json.dumps(opt["param_groups"])})
    atomic_write_json(tmp / "state.json", {"step": step, **state})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_json(root / "latest.json", {"step": step, "dir": final.name})
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run: Run, model: GPT2LMHeadModel, optimizer) -> dict | None:
    latest = run.path / "checkpoints" / "latest.json"
    if not latest.exists():
        return None
    ckpt = run.path / "checkpoints" / json.loads(latest.read_text())["dir"]
    missing, unexpected = model.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise NMLError(f"checkpoint {ckpt} does not match the model ({len(missing)} missing, {len(unexpected)} unexpected)")
    model.tie_weights()
    from safetensors import safe_open
    with safe_open(str(ckpt / "optimizer.safetensors"), framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        state: dict = {}
        for key in f.keys():
            i, name = key.split(".", 1)
            state.setdefault(int(i), {})[name] = f.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return json.loads((ckpt / "state.json").read_text())


# ---------------------------------------------------------------- the loop

def train(run: Run, model: GPT2LMHeadModel, data: TokenData, cfg: TrainConfig, widths: list[float] = (1.0,),
          axes=None, teacher: GPT2LMHeadModel | None = None, resume: bool = False, callback=None) -> GPT2LMHeadModel:
    """Train `model` in place at the given nested widths; returns it (on CPU, fp32) when done.

    teacher: frozen model for KD (None = plain CE). callback(row) is called after every logged step.
    Ctrl-C / SIGTERM saves a checkpoint, marks the run `cancelled` and raises NMLError.
    """
    widths = list(widths)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    elastic = ElasticGPT2(model.to(device).train(), axes)
    optimizer = make_optimizer(elastic, cfg, fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
    rng = random.Random(cfg.seed)
    start, elapsed0 = 0, 0.0
    if resume:
        state = load_checkpoint(run, model, optimizer)
        if state:
            start, elapsed0 = state["step"], state["elapsed_s"]
            gen.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
            rng.setstate(_tuple(state["rng"]))
            _truncate_metrics(run, start)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg), last_epoch=start - 1)
    elastic, optimizer = accelerator.prepare(elastic, optimizer)
    cache = TopKTeacher(cfg.teacher_cache, data, cfg.ctx, model.config.vocab_size, cfg.temperature) \
        if cfg.teacher_cache else None
    if cache is not None:
        teacher = None  # the cache stands in for the teacher's forward
    if teacher is not None:
        teacher = teacher.to(device).eval().requires_grad_(False)
    val_batch = eval_windows(data.val, cfg.ctx)[:cfg.eval_windows].to(device) if cfg.eval_every else None
    tokens_per_step = cfg.batch_size * cfg.ctx * cfg.grad_accum * accelerator.num_processes
    t0, step = time.time() - elapsed0, start
    bar = tqdm(total=cfg.steps, initial=start, desc=run.name, disable=not accelerator.is_main_process,
               dynamic_ncols=True)

    completed = start
    sampler_state = (gen.get_state(), rng.getstate())  # as of the start of step `completed`

    def checkpoint():
        if accelerator.is_main_process:
            save_checkpoint(run, accelerator.unwrap_model(elastic).model, optimizer, completed,
                            {"elapsed_s": time.time() - t0, "generator": sampler_state[0].tolist(),
                             "rng": sampler_state[1]})
        accelerator.wait_for_everyone()

    try:
        window_t, window_steps = time.time(), 0
        for step in range(start, cfg.steps):
            sampler_state = (gen.get_state(), rng.getstate())
            step_widths = widths_for_step(widths, cfg.strategy, rng)
            losses = {f"{w:g}": 0.0 for w in step_widths}
            for micro in range(cfg.grad_accum):
                target = None
                if cache is not None:
                    batch, top_idx, top_val, lse = cache.batch(cfg.batch_size, gen)
                    target = topk_soft_targets(top_idx.to(device), top_val.to(device), lse.to(device), cfg.temperature)
                else:
                    batch = random_batch(data.train, cfg.batch_size, cfg.ctx, gen)
                micro_losses = nested_step(elastic, teacher, batch.to(device), step_widths, cfg, accelerator,
                                           sync=micro == cfg.grad_accum - 1, target=target)
                for k, v in micro_losses.items():
                    losses[k] += v / cfg.grad_accum
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(elastic.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            completed = done = step + 1
            sampler_state = (gen.get_state(), rng.getstate())
            window_steps += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.time()
                row = {"step": done, "elapsed_s": round(now - t0, 3), "lr": scheduler.get_last_lr()[0],
                       "loss": losses, "tokens": done * tokens_per_step,
                       "tokens_per_s": round(window_steps * tokens_per_step / max(now - window_t, 1e-9), 1)}
                if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                    row["val_loss"] = val_losses(accelerator.unwrap_model(elastic), val_batch, widths)
                window_t, window_steps = now, 0
                if accelerator.is_main_process:
                    append_metrics(run.path, row)
                if callback:
                    callback(row)
            if done % cfg.checkpoint_every == 0 and done < cfg.steps:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        if completed > start:
            checkpoint()  # an interrupted step is discarded: its batch is drawn again on resume
        run.update(status="cancelled", cancelled_at_step=completed)
        raise NMLError(f"training cancelled at step {completed}; checkpoint kept — continue with --resume") from None
    except torch.OutOfMemoryError:
        run.update(status="failed", error="out of memory")
        raise NMLError(f"out of memory at batch size {cfg.batch_size}; retry with a smaller --batch-size "
                       "(and --grad-accum to keep the tokens per step)") from None
    bar.close()
    checkpoint()
    run.update(train_time_s=round(time.time() - t0, 1), steps_done=cfg.steps, device=str(device),
               tokens_seen=cfg.steps * tokens_per_step)
    return accelerator.unwrap_model(elastic).model.cpu().float().eval()


def nested_step(elastic, teacher, batch: torch.Tensor, widths: list[float], cfg: TrainConfig, accelerator,
                sync: bool = True, target: torch.Tensor | None = None) -> dict[str, float]:
    """Forward + backward of one (micro-)batch at every width: one frozen-teacher forward, shared by all widths
    (none when `target`, the teacher's soft targets, comes from a top-k cache).

    Each width's graph is freed right after its backward, so peak memory is one width's activations, not the
    sum. Gradients accumulate in the shared parameters; DDP syncs only after the last width (`sync`).
    """
    x, y = batch[:, :-1], batch[:, 1:]
    if target is None and teacher is not None:
        with torch.no_grad(), accelerator.autocast():
            target = soft_targets(teacher(input_ids=x).logits, cfg.temperature, inplace=True)
    losses = {}
    for i, w in enumerate(widths):
        last = sync and i == len(widths) - 1
        with (contextlib.nullcontext() if last else accelerator.no_sync(elastic)):
            logits = elastic(x, width=w).logits
            loss, _ = nested_kd_loss(logits, y, target, cfg.alpha, cfg.temperature)
            accelerator.backward(loss / cfg.grad_accum)
        losses[f"{w:g}"] = loss.item()
        if cfg.kd_source == "cascade" and target is not None:
            target = soft_targets(logits.detach(), cfg.temperature)
        del logits, loss
    return losses


def estimate(model: GPT2LMHeadModel, widths: list[float], axes, cfg: TrainConfig, teacher: bool = True,
             calibration_batch: int = 2) -> dict:
    """Tokens, FLOPs and expected wall time of a run, from one timed nested step on this device.

    FLOPs = steps x batch x ctx x (sum_w 3 x F(w) [forward + backward] + F(1) [frozen teacher forward]),
    F = forward FLOPs per token (nml_core.evaluate.cost). The calibration step runs at a small batch on
    random tokens (after one warm-up step) and is scaled linearly to the real batch.
    """
    from .evaluate import cost
    from .width import WidthSpec
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
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.time() - t)
    model.zero_grad(set_to_none=True)
    step_s = times[-1] * cfg.batch_size * cfg.grad_accum / b
    return {"tokens": tokens, "flops": tokens * per_token, "step_s": step_s, "minutes": step_s * cfg.steps / 60,
            "tokens_per_s": cfg.batch_size * cfg.ctx * cfg.grad_accum / step_s, "device": str(device),
            "calibration": f"1 nested step at batch {b} x {cfg.ctx} on {device}, scaled to batch {cfg.batch_size}"}


@torch.no_grad()
def val_losses(elastic: ElasticGPT2, batch: torch.Tensor, widths) -> dict:
    was_training = elastic.model.training
    elastic.model.eval()
    out = {}
    for w in widths:
        logits = elastic(batch[:, :-1], width=w).logits
        out[f"{w:g}"] = round(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten()).item(), 4)
    elastic.model.train(was_training)
    return out


def _tuple(x):
    return tuple(_tuple(i) for i in x) if isinstance(x, list) else x


def _truncate_metrics(run: Run, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from, so metrics.jsonl stays one clean curve."""
    rows = [r for r in read_metrics(run.path) if r["step"] <= step]
    atomic_write_bytes(run.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())


def run_hparams(cfg: TrainConfig) -> dict:
    return asdict(cfg)
