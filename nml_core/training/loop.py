"""The training loop: one loop for teacher pretraining, nested distillation and independent-KD baselines.

Per step (strategy "all"): one frozen-teacher forward, then for each sub-model w — a width, or a (width, depth)
pair when depths are nested too — the most expensive first
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
import signal
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from .. import device as devices
from ..data.batches import eval_windows, random_batch
from ..data.sources import TokenData
from ..errors import NMLError
from ..nesting.depth import as_subnet, subnet_key, subnets
from ..nesting.elastic import ElasticGPT2
from ..files import atomic_write_bytes
from ..store.liveness import HEARTBEAT_S, beat
from ..store.runs import Run, append_metrics, read_metrics
from ..store.checkpoints import load_checkpoint, save_checkpoint
from .config import TrainConfig, lr_factor, widths_for_step
from .graph_step import GraphStep, check_graph_step
from .losses import DenseTarget, WidthLoss, mix_targets, nested_kd_loss
from .teacher_cache import TopKTeacher, topk_soft_targets


def resolve_precision(cfg: TrainConfig) -> tuple[torch.device, str]:
    """(device, accelerate's mixed-precision name) of the recipe, or one line saying why not (a CPU's bf16 choice
    follows its measured probe: nml_core.training.precision)."""
    from .precision import cpu_bf16_speedup
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


@dataclass
class Session:
    """What one training run holds while it runs: built by _start, advanced by the loop's small steps."""
    run: Run
    cfg: TrainConfig
    widths: list[tuple[float, float]]  # the (width, depth) sub-models, the most expensive first
    data: TokenData
    accelerator: object
    elastic: ElasticGPT2
    optimizer: torch.optim.Optimizer
    scheduler: object
    teacher: GPT2LMHeadModel | None
    cache: TopKTeacher | None
    gen: torch.Generator
    rng: random.Random
    start: int
    t0: float
    val_batch: torch.Tensor | None
    tokens_per_step: int
    completed: int = 0
    last_checkpoint_step: int = 0
    sampler_state: tuple = ()  # (generator, rng) as of the start of step `completed`: what a checkpoint stores
    graph: GraphStep | None = None  # --compile: the whole nested step as one compiled graph
    window: list = field(default_factory=lambda: [time.time(), 0])  # tokens/s window: start time, steps


def train(run: Run, model: GPT2LMHeadModel, data: TokenData, cfg: TrainConfig, widths: list[float] = (1.0,),
          axes=None, teacher: GPT2LMHeadModel | None = None, resume: bool = False, callback=None,
          depths: list[float] = (1.0,), layer_rank: list[int] | None = None) -> GPT2LMHeadModel:
    """Train `model` in place at every nested (width, depth); returns it (on CPU, fp32) when done.

    teacher: frozen model for KD (None = plain CE). layer_rank: the layers, most important first (depths < 1
    keep its top ones). callback(row) is called after every logged step.
    Ctrl-C / SIGTERM saves a checkpoint, marks the run `cancelled` and raises NMLError.
    """
    s = _start(run, model, data, cfg, subnets(list(widths), list(depths)), axes, teacher, resume, layer_rank)
    bar = tqdm(total=cfg.steps, initial=s.start, desc=run.name, disable=not s.accelerator.is_main_process,
               dynamic_ncols=True)
    if s.start == 0 and cfg.eval_every and s.accelerator.is_main_process:
        _log_start(s)
    try:
        beat_t = 0.0
        for step in range(s.start, cfg.steps):
            s.sampler_state = (s.gen.get_state(), s.rng.getstate())
            losses = _one_step(s, step)
            s.completed = step + 1
            s.sampler_state = (s.gen.get_state(), s.rng.getstate())
            s.window[1] += 1
            bar.update(1)
            if time.time() - beat_t > HEARTBEAT_S:
                beat(run, s.completed, s.last_checkpoint_step)
                beat_t = time.time()
            if s.completed % cfg.log_every == 0 or s.completed == cfg.steps:
                _log(s, losses, bar, callback)
            if s.completed % cfg.checkpoint_every == 0 and s.completed < cfg.steps:
                _checkpoint(s)
                s.last_checkpoint_step = s.completed
    except torch.OutOfMemoryError:
        run.update(status="failed", error="out of memory")
        raise NMLError(f"out of memory at batch size {cfg.batch_size}; retry with a smaller --batch-size "
                       "(and --grad-accum to keep the tokens per step)") from None
    except KeyboardInterrupt as e:
        _stopped(s, e, bar)
    except RuntimeError as e:
        if not peer_stopped(e, s.accelerator.num_processes):
            raise  # a real error, in one process or several: marks_failure records it as such
        _stopped(s, e, bar)
    bar.close()
    _checkpoint(s)
    run.update(train_time_s=round(time.time() - s.t0, 1), steps_done=cfg.steps, device=str(s.accelerator.device),
               device_name=devices.device_info(s.accelerator.device, torch.get_num_threads())["device_name"],
               precision=s.accelerator.mixed_precision, tokens_seen=cfg.steps * s.tokens_per_step)
    return s.accelerator.unwrap_model(s.elastic).model.cpu().float().eval()


def _start(run: Run, model, data: TokenData, cfg: TrainConfig, widths: list[tuple[float, float]], axes, teacher,
           resume: bool, layer_rank: list[int] | None = None) -> Session:
    """Accelerator, elastic model, optimizer and schedule, the resumed state, the KD source, the val batch."""
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    elastic = ElasticGPT2(model.to(device).train(), axes, layer_rank)
    optimizer = make_optimizer(elastic, cfg, fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(cfg.seed + accelerator.process_index)
    rng = random.Random(cfg.seed)
    start, elapsed0 = 0, 0.0
    state = load_checkpoint(run, model, optimizer) if resume else None
    if state:
        start, elapsed0 = state["step"], state["elapsed_s"]
        gen.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        rng.setstate(_tuple(state["rng"]))
        _truncate_metrics(run, start)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg), last_epoch=start - 1)
    elastic, optimizer = accelerator.prepare(elastic, optimizer)
    if cfg.compile or cfg.cuda_graphs:
        check_graph_step(cfg, accelerator.num_processes, device)
    cache = TopKTeacher(cfg.teacher_cache, data, cfg.ctx, model.config.vocab_size, cfg.temperature) \
        if cfg.teacher_cache else None
    teacher = None if cache is not None or teacher is None else teacher.to(device).eval().requires_grad_(False)
    val_batch = eval_windows(data.val, cfg.ctx)[:cfg.eval_windows].to(device) if cfg.eval_every else None
    graph = GraphStep(elastic, teacher, widths, cfg, accelerator) if cfg.compile else None
    return Session(run, cfg, widths, data, accelerator, elastic, optimizer, scheduler, teacher, cache, gen, rng,
                   start, time.time() - elapsed0, val_batch,
                   cfg.batch_size * cfg.ctx * cfg.grad_accum * accelerator.num_processes,
                   completed=start, last_checkpoint_step=start, sampler_state=(gen.get_state(), rng.getstate()),
                   graph=graph)


def _one_step(s: Session, step: int) -> dict[str, WidthLoss]:
    """One optimizer step: every micro-batch at this step's widths, then clip, step, schedule. Returns each
    width's losses averaged over the micro-batches (still on the device)."""
    cfg, device = s.cfg, s.accelerator.device
    step_widths = widths_for_step(s.widths, cfg.strategy, s.rng)
    losses: dict[str, WidthLoss] = {}
    for micro in range(cfg.grad_accum):
        target = None
        if s.cache is not None:
            batch, top_idx, top_val, lse = s.cache.batch(cfg.batch_size, s.gen)
            target = topk_soft_targets(*(devices.to_device(t, device) for t in (top_idx, top_val, lse)),
                                       cfg.temperature)
        else:
            batch = random_batch(s.data.train, cfg.batch_size, cfg.ctx, s.gen)
        if s.graph is not None:
            micro_losses = s.graph(devices.to_device(batch, device))
        else:
            micro_losses = nested_step(s.elastic, s.teacher, devices.to_device(batch, device), step_widths, cfg,
                                       s.accelerator, sync=micro == cfg.grad_accum - 1, target=target,
                                       ta_weight=min(1.0, (step + 1) / max(1.0, cfg.ta_ramp * cfg.steps)))
        for k, v in micro_losses.items():
            losses[k] = v.scaled(1 / cfg.grad_accum) if k not in losses else losses[k].plus(v.scaled(1 / cfg.grad_accum))
    if cfg.grad_clip:
        s.accelerator.clip_grad_norm_(s.elastic.parameters(), cfg.grad_clip)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return losses


def _log(s: Session, losses: dict[str, WidthLoss], bar, callback) -> dict:
    """A metrics.jsonl row: per width the optimised loss, its CE and its KL (train), the val CE when due; the
    step's one device sync reads them all."""
    values = WidthLoss.read_all(losses)
    bar.set_postfix({k: f"{v['ce']:.3f}" for k, v in values.items()})
    now = time.time()
    row = {"step": s.completed, "elapsed_s": round(now - s.t0, 3), "lr": s.scheduler.get_last_lr()[0],
           "loss": {k: v["loss"] for k, v in values.items()}, "ce": {k: v["ce"] for k, v in values.items()},
           **({"kl": {k: v["kl"] for k, v in values.items()}} if all("kl" in v for v in values.values()) else {}),
           "tokens": s.completed * s.tokens_per_step,
           "tokens_per_s": round(s.window[1] * s.tokens_per_step / max(now - s.window[0], 1e-9), 1)}
    if s.cfg.eval_every and (s.completed % s.cfg.eval_every == 0 or s.completed == s.cfg.steps):
        row["val_ce"] = val_ce(s.accelerator.unwrap_model(s.elastic), s.val_batch, s.widths)
    s.window[:] = [now, 0]
    if s.accelerator.is_main_process:
        append_metrics(s.run.path, row)
    if callback:
        callback(row)
    return row


def _log_start(s: Session) -> None:
    """Step 0's val CE, before any update: at width 1 the starting model's (the teacher's, unless --init), at a
    smaller width the naive slice of it. The curves' landmarks: where training starts and what it must beat."""
    append_metrics(s.run.path, {"step": 0, "elapsed_s": 0.0,
                                "val_ce": val_ce(s.accelerator.unwrap_model(s.elastic), s.val_batch, s.widths)})


def _checkpoint(s: Session) -> None:
    if s.accelerator.is_main_process:
        save_checkpoint(s.run, s.accelerator.unwrap_model(s.elastic).model, s.optimizer, s.completed,
                        {"elapsed_s": time.time() - s.t0, "generator": s.sampler_state[0].tolist(),
                         "rng": s.sampler_state[1]})
    s.accelerator.wait_for_everyone()


PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")


def peer_stopped(e: RuntimeError, processes: int) -> bool:
    """Whether an error of a multi-process run means another process stopped (its collective found the peer
    gone), not a bug of this one: only then is it an interruption to resume."""
    return processes > 1 and (isinstance(e, torch.distributed.DistError) or any(w in str(e) for w in PEER_GONE))


def _stopped(s: Session, e: BaseException, bar) -> None:
    """An interrupt or a stopped peer process: mark the run and raise one line (a real error is re-raised)."""
    n = s.accelerator.num_processes
    if n > 1:
        # the launcher follows a dead rank's error with SIGTERM to the others: one stop is enough to record
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    bar.close()
    if n > 1:
        # one rank of several stopped (killed, or the launcher stopping the rest after a rank died, or Ctrl-C):
        # a collective checkpoint would wait for peers that may be gone, so the last periodic one is kept
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e).splitlines()[0][:160]
        message = (f"a process of the {n}-process run stopped at step {s.completed} ({why}); "
                   f"the last checkpoint (step {s.last_checkpoint_step}) is kept — continue with --resume")
        s.run.update(status="failed", error=message)
        raise NMLError(message) from None
    if not isinstance(e, KeyboardInterrupt):
        raise e
    if s.completed > s.start:
        _checkpoint(s)  # an interrupted step is discarded: its batch is drawn again on resume
    s.run.update(status="cancelled", cancelled_at_step=s.completed)
    raise NMLError(f"training cancelled at step {s.completed}; checkpoint kept — continue with --resume") from None


def nested_step(elastic, teacher, batch: torch.Tensor, widths: list, cfg: TrainConfig, accelerator,
                sync: bool = True, target: torch.Tensor | None = None, ta_weight: float = 1.0) -> dict[str, WidthLoss]:
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
        # once per step, shared by every width: probabilities and negative entropy
        target = DenseTarget.from_logits(logits, cfg.temperature, cfg.fused_loss)
    losses, ta_target = {}, None
    for i, (w, d) in enumerate(map(as_subnet, widths)):
        last = sync and i == len(widths) - 1
        width_target = target if ta_target is None else mix_targets(target, ta_target, ta_weight)
        with (contextlib.nullcontext() if last else accelerator.no_sync(elastic)):
            with accelerator.autocast():  # the forward in the mixed precision; the fused loss does its math in fp32
                logits = elastic(x, width=w, depth=d, use_cache=False).logits
            loss, parts = nested_kd_loss(logits, y, width_target, cfg.alpha, cfg.temperature, cfg.fused_loss)
            accelerator.backward(loss / cfg.grad_accum)
        losses[subnet_key(w, d)] = WidthLoss(loss.detach(), parts["ce"], parts.get("kl"))
        if cfg.kd_source == "cascade" and target is not None:
            target = DenseTarget.from_logits(logits.detach(), cfg.temperature, cfg.fused_loss)  # (backward is done)
        if cfg.kd_source == "ta" and (w, d) == (1.0, 1.0) and target is not None:
            ta_target = DenseTarget.from_logits(logits.detach(), cfg.temperature, cfg.fused_loss)
        del logits, loss
    return losses


@torch.no_grad()
def val_ce(elastic: ElasticGPT2, batch: torch.Tensor, widths) -> dict:
    was_training = elastic.model.training
    elastic.model.eval()
    out = {}
    for w, d in map(as_subnet, widths):
        logits = elastic(batch[:, :-1], width=w, depth=d).logits
        out[subnet_key(w, d)] = round(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten()).item(), 4)
    elastic.model.train(was_training)
    return out


def _tuple(x):
    return tuple(_tuple(i) for i in x) if isinstance(x, list) else x


def _truncate_metrics(run: Run, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from, so metrics.jsonl stays one clean curve."""
    rows = [r for r in read_metrics(run.path) if r["step"] <= step]
    atomic_write_bytes(run.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
