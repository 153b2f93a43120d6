"""The training recipe: one dataclass whose fields are the single source of the CLI flags, the background job's
argv and the Train page's fields (name, default, help), plus the schedules that read it.

A field's metadata says which commands take it as a flag: "train" (pretrain and nested train), "kd" (nested
train only); fields without a group are internal.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields

from ..device import DEVICE_CHOICES, PRECISION_CHOICES
from ..errors import NMLError
from ..inputs import Input

STRATEGIES = ("all", "sandwich", "random")
KD_SOURCES = ("teacher", "cascade", "ta")
# The NML recipe of the build's cpu profile (scripts/build_cached_runs.py) where it differs from the defaults: the
# Train page starts from it, since it finishes in minutes on a 2-core CPU (the shipped runs took the gpu profile).
SHIPPED_RECIPE = {"steps": 200, "batch_size": 8, "lr": 5e-4}


def option(default, help: str, group: str | None = "train", choices: tuple | None = None, label: str | None = None,
           low: float | None = None, high: float | None = None, low_open: bool = False):
    """A recipe field; low/high: its range (numbers), the one the CLI, the Train page and __post_init__ enforce."""
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "label": label,
                                            "low": low, "high": high, "low_open": low_open})


@dataclass
class TrainConfig:
    steps: int = option(1000, "optimizer steps", label="Steps", low=1, high=10 ** 8)
    batch_size: int = option(16, "sequences per micro-batch", label="Batch size", low=1, high=65536)
    ctx: int = option(128, "context length of the training windows", label="Context", low=2, high=2 ** 20)
    lr: float = option(1e-3, "peak learning rate (AdamW)", label="Learning rate", low=0, high=10, low_open=True)
    min_lr_ratio: float = option(0.1, "cosine decays to lr x this", low=0, high=1)
    warmup: int = option(-1, "warm-up steps (-1: 5%% of --steps)", low=-1, high=10 ** 8)
    weight_decay: float = option(0.1, "AdamW weight decay of the matrices", low=0, high=10)
    grad_accum: int = option(1, "micro-batches per optimizer step", low=1, high=65536)
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: off)", low=0, high=1e6)
    seed: int = option(1337, "seed of the model init, batches and strategy draws", low=0, high=2 ** 32 - 1)
    alpha: float = option(0.5, "KD weight: alpha*KL*T^2 + (1-alpha)*CE", group="kd", label="alpha (KD weight)",
                          low=0, high=1)
    temperature: float = option(2.0, "KD temperature T", group="kd", label="Temperature", low=0, high=100,
                                low_open=True)
    strategy: str = option("all", "widths per step: all; sandwich = largest + smallest + one random; "
                           "random = one", group="kd", choices=STRATEGIES, label="Strategy")
    kd_source: str = option("teacher", "KD target of every width: the frozen teacher; cascade: the next larger "
                            "width; ta: the teacher for width 1 (the TA), the TA for the students, ramped in "
                            "(MatTA)", group="kd", choices=KD_SOURCES, label="KD source")
    ta_ramp: float = option(0.1, "--kd-source ta: fraction of the steps over which the TA->student term ramps "
                            "in (the teacher's share ramps out)", group="kd", low=0, high=1)
    checkpoint_every: int = option(100, "checkpoint every N steps", low=1, high=10 ** 8)
    log_every: int = option(5, "log a metrics.jsonl row every N steps", low=1, high=10 ** 8)
    eval_every: int = option(0, "log val loss every N steps (0: never)", low=0, high=10 ** 8)
    eval_windows: int = option(16, "val windows of the periodic val loss", group=None, low=1, high=10 ** 6)
    device: str = option("auto", "auto picks CUDA when present", choices=DEVICE_CHOICES, label="Device")
    mixed_precision: str = option("auto", "auto: bf16 on a CUDA GPU that has it; on a CPU bf16 autocast where a "
                                  "probe measured it >= 1.2x faster than fp32 (kept per CPU), else fp32",
                                  choices=PRECISION_CHOICES)
    compile: bool = option(False, "the whole nested step (teacher, every sub-model's forward and loss) as one "
                           "torch.compile'd graph, compiled once, its backward one graph too; pays on CUDA, where an "
                           "eager step is launch-bound; every sub-model's activations are alive at once")
    cuda_graphs: bool = option(False, "with --compile on CUDA: replay the compiled step as captured CUDA graphs "
                               "(one launch per graph)")
    fused_loss: bool = option(True, "on a CPU, the compiled one-pass KD loss for big batches (losses.py); False: "
                              "the eager chunks", group=None)
    teacher_cache: str | None = option(None, "top-k teacher cache dir (cache-teacher): KD with no teacher forward",
                                       group="kd")

    def __post_init__(self):
        for f in fields(self):  # every range and choice, as the CLI and the Train page enforce them
            spec = config_input(f)
            if spec.numeric:
                spec.check(getattr(self, f.name))
            elif spec.choices and getattr(self, f.name) not in spec.choices:
                raise NMLError(f"{spec.name} {getattr(self, f.name)} is not one of {', '.join(spec.choices)}")
        if self.kd_source == "ta" and self.teacher_cache:
            raise NMLError("--kd-source ta mixes the teacher's full distribution with the TA's; drop --teacher-cache")

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup >= 0 else max(1, self.steps // 20)

    def argv(self, groups=("train", "kd")) -> list[str]:
        """The CLI flags that reproduce this recipe (fields that differ from the defaults)."""
        default = TrainConfig()
        out = []
        for f in option_fields(groups):
            value = getattr(self, f.name)
            if value != getattr(default, f.name) or f.name == "steps":  # the CLI asks for --steps
                out += [flag(f.name)] if isinstance(value, bool) else [flag(f.name), str(value)]
        return out


def option_fields(groups=("train", "kd")) -> list:
    """The TrainConfig fields that the commands of these groups take as flags."""
    return [f for f in fields(TrainConfig) if f.metadata.get("group") in groups]


def config_input(f) -> Input:
    """The declaration (nml_core.inputs) of one TrainConfig field: what its flag and its form field take."""
    m = f.metadata
    kind = "bool" if isinstance(f.default, bool) else {int: "int", float: "float"}.get(type(f.default), "str")
    return Input(flag(f.name), m["help"].replace("%%", "%"), kind, f.default, m["low"], m["high"], m["low_open"],
                 m["choices"], label=m["label"] or f.name)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_input(name: str) -> Input:
    """The declaration of one field by name: what a form shows for it (label, help, default, range, choices)."""
    return config_input(next(f for f in fields(TrainConfig) if f.name == name))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def width_shares(widths: list[float], strategy: str) -> dict[float, float]:
    """How often each width trains per step under the strategy (its probability of being in widths_for_step):
    what a step costs on average, for the estimate."""
    n = len(widths)
    if strategy == "all" or n <= 2:
        return {w: 1.0 for w in widths}
    if strategy == "sandwich":
        return {w: 1.0 if w in (widths[0], widths[-1]) else 1 / (n - 2) for w in widths}
    return {w: 1 / n for w in widths}


def widths_for_step(widths: list[float], strategy: str, rng: random.Random) -> list[float]:
    """Which widths train this step, largest first."""
    if strategy == "all" or len(widths) <= 2:
        return list(widths)
    if strategy == "sandwich":  # largest + smallest + one random middle width (US-Nets)
        return [widths[0], rng.choice(widths[1:-1]), widths[-1]]
    return [rng.choice(widths)]
