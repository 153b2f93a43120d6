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
import random
import time

import torch
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from .. import device as devices
from ..data.batches import eval_windows, random_batch
from ..data.sources import TokenData
from ..errors import NMLError
from ..nesting.elastic import ElasticGPT2
from ..store.files import atomic_write_bytes
from ..store.liveness import HEARTBEAT_S, beat
from ..store.runs import Run, append_metrics, read_metrics
from .checkpoints import load_checkpoint, save_checkpoint
from .config import TrainConfig, lr_factor, widths_for_step
from .losses import DenseTarget, mix_targets, nested_kd_loss, soft_targets
from .teacher_cache import TopKTeacher, topk_soft_targets


def resolve_precision(cfg: TrainConfig) -> tuple[torch.device, str]:
    """(device, accelerate's mixed-precision name) of the recipe, or one line saying why not (a CPU's bf16 choice
    follows its measured probe: nml_core.precision)."""
    from ..precision import cpu_bf16_speedup
    device = devices.resolve(cfg.device)
    probe = cpu_bf16_speedup() if device.type != "cuda" and cfg.mixed_precision in ("auto", "bf16") else None
    return device, devices.mixed_precision(device, cfg.mixed_precision, probe)


def make_accelerator(cfg: TrainConfig):
    """accelerate's Accelerator on the device and precision nml_core.device resolves from the recipe."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    device, precision = resolve_precision(cfg)
    state = AcceleratorState._shared_state
    if devices.world_size() == 1 and state and state.get("_mixed_precision") != precision:
        # accelerate keeps one precision per process; a single process (the app, a benchmark, the tests) may
        # train with another one later, so its state starts afresh (never under `accelerate launch`)
        AcceleratorState._reset_state()
    return Accelerator(cpu=device.type != "cuda", mixed_precision=precision)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=fused or None)


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
    if cfg.compile and accelerator.num_processes > 1:
        raise NMLError("--compile with several processes is not supported; drop --compile or run one process")
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

    completed = last_checkpoint_step = start
    sampler_state = (gen.get_state(), rng.getstate())  # as of the start of step `completed`

    def checkpoint():
        if accelerator.is_main_process:
            save_checkpoint(run, accelerator.unwrap_model(elastic).model, optimizer, completed,
                            {"elapsed_s": time.time() - t0, "generator": sampler_state[0].tolist(),
                             "rng": sampler_state[1]})
        accelerator.wait_for_everyone()

    try:
        window_t, window_steps, beat_t = time.time(), 0, 0.0
        for step in range(start, cfg.steps):
            sampler_state = (gen.get_state(), rng.getstate())
            step_widths = widths_for_step(widths, cfg.strategy, rng)
            losses = {}  # width -> 0-d loss tensor on the device, read once per logged step
            for micro in range(cfg.grad_accum):
                target = None
                if cache is not None:
                    batch, top_idx, top_val, lse = cache.batch(cfg.batch_size, gen)
                    target = topk_soft_targets(*(devices.to_device(t, device) for t in (top_idx, top_val, lse)),
                                               cfg.temperature)
                else:
                    batch = random_batch(data.train, cfg.batch_size, cfg.ctx, gen)
                micro_losses = nested_step(elastic, teacher, devices.to_device(batch, device), step_widths, cfg,
                                           accelerator, sync=micro == cfg.grad_accum - 1, target=target,
                                           ta_weight=min(1.0, (step + 1) / max(1.0, cfg.ta_ramp * cfg.steps)))
                for k, v in micro_losses.items():
                    losses[k] = losses.get(k, 0) + v / cfg.grad_accum
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(elastic.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            completed = done = step + 1
            sampler_state = (gen.get_state(), rng.getstate())
            window_steps += 1
            bar.update(1)
            if time.time() - beat_t > HEARTBEAT_S:
                beat(run, done, last_checkpoint_step)
                beat_t = time.time()
            if done % cfg.log_every == 0 or done == cfg.steps:
                losses = dict(zip(losses, torch.stack(list(losses.values())).tolist()))  # the step's one sync
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
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
                last_checkpoint_step = done
    except torch.OutOfMemoryError:
        run.update(status="failed", error="out of memory")
        raise NMLError(f"out of memory at batch size {cfg.batch_size}; retry with a smaller --batch-size "
                       "(and --grad-accum to keep the tokens per step)") from None
    except (KeyboardInterrupt, RuntimeError) as e:
        bar.close()
        if accelerator.num_processes > 1:
            # one rank of several stopped (killed, or the launcher stopping the rest after a rank died, or Ctrl-C):
            # a collective checkpoint would wait for peers that may be gone, so the last periodic one is kept
            why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e).splitlines()[0][:160]
            message = (f"a process of the {accelerator.num_processes}-process run stopped at step {completed} ({why}); "
                       f"the last checkpoint (step {last_checkpoint_step}) is kept — continue with --resume")
            run.update(status="failed", error=message)
            raise NMLError(message) from None
        if not isinstance(e, KeyboardInterrupt):
            raise
        if completed > start:
            checkpoint()  # an interrupted step is discarded: its batch is drawn again on resume
        run.update(status="cancelled", cancelled_at_step=completed)
        raise NMLError(f"training cancelled at step {completed}; checkpoint kept — continue with --resume") from None
    bar.close()
    checkpoint()
    run.update(train_time_s=round(time.time() - t0, 1), steps_done=cfg.steps, device=str(device),
               precision=accelerator.mixed_precision,
               tokens_seen=cfg.steps * tokens_per_step)
    return accelerator.unwrap_model(elastic).model.cpu().float().eval()


def nested_step(elastic, teacher, batch: torch.Tensor, widths: list[float], cfg: TrainConfig, accelerator,
                sync: bool = True, target: torch.Tensor | None = None, ta_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Forward + backward of one (micro-)batch at every width: one frozen-teacher forward, shared by all widths
    (none when `target`, the teacher's soft targets, comes from a top-k cache).

    Each width's graph is freed right after its backward, so peak memory is one width's activations, not the
    sum. Gradients accumulate in the shared parameters; DDP syncs only after the last width (`sync`).
    kd_source "ta" (MatTA): width 1, the teacher assistant, learns from the teacher; the students learn from
    (1 - ta_weight) x teacher + ta_weight x the TA's logits of this step (losses.mix_targets).
    """
    x, y = batch[:, :-1], batch[:, 1:]
    if target is None and teacher is not None:
        with torch.no_grad(), accelerator.autocast():
            logits = teacher(input_ids=x).logits
        # once per step, shared by every width: probabilities and negative entropy, in the logits' own memory
        target = DenseTarget.from_logprobs(soft_targets(logits.float(), cfg.temperature, inplace=True), inplace=True)
    losses, ta_target = {}, None
    for i, w in enumerate(widths):
        last = sync and i == len(widths) - 1
        width_target = target if ta_target is None else mix_targets(target, ta_target, ta_weight)
        with (contextlib.nullcontext() if last else accelerator.no_sync(elastic)):
            with accelerator.autocast():  # the forward in the mixed precision; the fused loss does its math in fp32
                logits = compiled_logits(elastic, w, x) if cfg.compile else elastic(x, width=w, use_cache=False).logits
            loss, _ = nested_kd_loss(logits, y, width_target, cfg.alpha, cfg.temperature)
            accelerator.backward(loss / cfg.grad_accum)
        losses[f"{w:g}"] = loss.detach()
        if cfg.kd_source == "cascade" and target is not None:
            target = DenseTarget.from_logprobs(soft_targets(logits.detach(), cfg.temperature), inplace=True)
        if cfg.kd_source == "ta" and w == 1.0 and target is not None:
            ta_target = DenseTarget.from_logprobs(soft_targets(logits.detach(), cfg.temperature), inplace=True)
        del logits, loss
    return losses


def compiled_logits(elastic: ElasticGPT2, width: float, x: torch.Tensor) -> torch.Tensor:
    """The compiled forward of one width; a compiler that does not work here becomes one line."""
    try:
        return elastic.compiled(width)(x)
    except Exception as e:
        if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise NMLError(f"--compile failed here ({type(e).__name__}: {first}); drop --compile (eager is the "
                       "default), or install what torch.compile needs (a C++ compiler on CPU, Triton on CUDA)") from None


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
