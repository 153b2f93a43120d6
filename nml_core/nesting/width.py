"""Width specs: which prefix of every weight matrix a nested student keeps.

A GPT-2 teacher has n_layer L, n_head H, head_dim h, n_embd d = H*h and n_inner f. A student of width
w keeps, in every layer,
  - the first k = round(w*H) heads           (axis "heads"),
  - the first k*h residual (hidden) channels (axis "hidden"),
  - the first round(w*f) FFN neurons          (axis "ffn").
Head dim is fixed, so a student is always a stock GPT2Config(n_embd=k*h, n_head=k, n_inner=...).

GPT-2 ties n_embd = n_head * head_dim (GPT2Attention splits c_attn's output at n_embd), so "heads" and
"hidden" can only shrink together: a heads-only student would not be a stock GPT-2 model
(nml_core.arch.gpt2 holds that rule and the rest of GPT-2's layout).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import GPT2Config

from ..arch.gpt2 import StudentDims, model_dims, student_config
from ..errors import NMLError
from ..inputs import parse_fraction

AXES = ("ffn", "heads", "hidden")
ALL_AXES = frozenset(AXES)
VALID_AXIS_SETS = (frozenset({"ffn"}), frozenset({"heads", "hidden"}), ALL_AXES)


def parse_axes(text: str | None) -> frozenset:
    """`"ffn,heads,hidden"` -> frozenset; the default (None or empty) nests all three axes."""
    if not text:
        return ALL_AXES
    axes = frozenset(a.strip() for a in text.split(",") if a.strip())
    unknown = axes - ALL_AXES
    if unknown:
        raise NMLError(f"unknown nest axis {sorted(unknown)}; choose from ffn, heads, hidden (e.g. --nest ffn,heads,hidden)")
    if axes not in VALID_AXIS_SETS:
        raise NMLError(
            f"--nest {','.join(sorted(axes))} does not give a stock GPT-2 (GPT-2 needs n_embd = n_head x head_dim, "
            "so heads and hidden shrink together); use --nest ffn, heads,hidden or ffn,heads,hidden")
    return axes


def axes_label(axes) -> str:
    return ",".join(a for a in AXES if a in axes)


def parse_widths(text: str) -> list[float]:
    """`"1,0.5,0.25"` -> [1.0, 0.5, 0.25]; strictly decreasing, each in (0, 1]."""
    try:
        widths = [float(parse_fraction(t)) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise NMLError(f"--widths {text!r} is not a comma-separated list of numbers; e.g. --widths 1,0.5,0.25,0.125") from None
    if not widths:
        raise NMLError("--widths is empty; e.g. --widths 1,0.5,0.25,0.125")
    for w in widths:
        if not 0 < w <= 1:
            raise NMLError(f"width {w:g} is outside (0, 1]; widths are fractions of the teacher, e.g. 1,0.5,0.25")
    if len(set(widths)) != len(widths):
        raise NMLError(f"--widths {text} has a duplicate; list each width once, largest first")
    if widths != sorted(widths, reverse=True):
        raise NMLError(f"--widths {text} is not sorted; list them largest first, e.g. 1,0.5,0.25,0.125")
    return widths


@dataclass(frozen=True)
class WidthSpec:
    """Width w in (0, 1] of a teacher; with heads nested, w must be a whole number of heads k/H (never a hybrid
    of k heads with another share of the FFN)."""
    width: float
    axes: frozenset = ALL_AXES

    def __post_init__(self):
        if not isinstance(self.width, (int, float)) or not 0 < self.width <= 1:
            raise NMLError(f"width {self.width} is outside (0, 1]; a width is a fraction of the teacher, e.g. 0.5 or 1/4")

    def dims(self, cfg: GPT2Config) -> StudentDims:
        full = model_dims(cfg)
        H, d, f, h = full.n_head, full.n_embd, full.n_inner, full.head_dim
        k = H
        if "heads" in self.axes:
            k = round(self.width * H)
            if k == 0:
                raise NMLError(
                    f"width {self.width:g} keeps 0 of the teacher's {H} heads; the smallest width is 1/{H} = {1 / H:g}")
            if abs(self.width * H - k) > 1e-6:
                below, above = math.floor(self.width * H), math.ceil(self.width * H)
                near = " or ".join(f"{j / H:g} ({j} head{'s' if j > 1 else ''})" for j in (below, above) if 0 < j <= H)
                raise NMLError(f"width {self.width:g} is not a whole number of the teacher's {H} heads "
                               f"({self.width * H:g}); use {near}")
        n_inner = max(1, round(self.width * f)) if "ffn" in self.axes else f
        n_embd = k * h if "hidden" in self.axes else d
        return StudentDims(n_head=k, n_embd=n_embd, n_inner=n_inner, head_dim=h)

    def student_config(self, cfg: GPT2Config) -> GPT2Config:
        return student_config(cfg, self.dims(cfg))


def check_distinct(specs: list[WidthSpec], cfg: GPT2Config) -> None:
    """Two widths that round to the same student would train the same weights twice."""
    seen = {}
    for spec in specs:
        dims = spec.dims(cfg)
        if dims in seen:
            raise NMLError(
                f"widths {seen[dims]:g} and {spec.width:g} give the same student ({dims.n_head} heads, "
                f"{dims.n_embd} hidden, {dims.n_inner} FFN) for this teacher; drop one of them")
        seen[dims] = spec.width


def available_widths(cfg: GPT2Config, axes, ffn_steps: int = 16) -> list[float]:
    """Every distinct width a slider can offer, largest first: k/H for each head count k when heads are
    nested (any k gives a stock GPT-2), else multiples of 1/ffn_steps of the FFN."""
    if "heads" in axes:
        return [k / cfg.n_head for k in range(cfg.n_head, 0, -1)]
    return [k / ffn_steps for k in range(ffn_steps, 0, -1)]


def whole_head_widths(n_head: int, targets=(1.0, 0.5, 0.25, 0.125)) -> list[float]:
    """The whole-head widths k/H nearest to each target (at least one head; the larger on a tie, one each),
    largest first: what a benchmark of "widths 1, 1/2, 1/4, 1/8" takes on a teacher with any head count
    (12 heads: 1, 1/2, 1/4, 1/6)."""
    heads = {max(1, min(n_head, math.floor(t * n_head + 0.5))) for t in targets}
    return [k / n_head for k in sorted(heads, reverse=True)]
