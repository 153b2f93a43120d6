"""Depth specs: which of the teacher's layers a nested student keeps.

The layers are ranked once, most important first (`layer_rank`, measured on the teacher: nml_core.nesting.
layer_rank). A student of depth d keeps the top k = d x L layers of that ranking, in their original order, so
depths nest: every layer of a shallower student is in every deeper one, and a student is always a stock
GPT2Config(n_layer=k). A (width, depth) pair names one sub-model of a run; depth 1 is every layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from transformers import GPT2Config

from ..arch.gpt2 import StudentDims
from ..errors import NMLError
from ..inputs import parse_fraction
from .width import WidthSpec

Subnet = tuple[float, float]  # (width, depth)


def parse_depths(text: str) -> list[float]:
    """`"1,0.5,1/3"` -> [1.0, 0.5, 0.333...]; strictly decreasing, each in (0, 1], starting at 1."""
    try:
        depths = [float(parse_fraction(t)) for t in str(text).split(",") if t.strip()]
    except (ValueError, ZeroDivisionError):
        raise NMLError(f"--depths {text!r} is not a comma-separated list of numbers; e.g. --depths 1,0.5") from None
    if not depths or depths[0] != 1.0:
        raise NMLError(f"--depths {text!r} must start with 1 (every layer; the full model keeps learning); "
                       "e.g. --depths 1,0.5")
    for d in depths:
        if not 0 < d <= 1:
            raise NMLError(f"depth {d:g} is outside (0, 1]; depths are fractions of the teacher's layers, e.g. 1,0.5")
    if depths != sorted(set(depths), reverse=True):
        raise NMLError(f"--depths {text} has a duplicate or is not sorted; list each depth once, largest first")
    return depths


@dataclass(frozen=True)
class DepthSpec:
    """Depth d in (0, 1] of a teacher of L layers: a whole number of layers k = d x L (1/L at the least)."""
    depth: float

    def __post_init__(self):
        if not isinstance(self.depth, (int, float)) or not 0 < self.depth <= 1:
            raise NMLError(f"depth {self.depth} is outside (0, 1]; a depth is a fraction of the teacher's layers, "
                           "e.g. 0.5 or 1/3")

    def n_layers(self, n_layer: int) -> int:
        k = round(self.depth * n_layer)
        if k == 0:
            raise NMLError(f"depth {self.depth:g} keeps 0 of the teacher's {n_layer} layers; the smallest depth "
                           f"is 1/{n_layer} = {1 / n_layer:.3g}")
        if abs(self.depth * n_layer - k) > 1e-2:  # 0.333 of 6 layers is 2 layers; 0.25 of 6 is no whole number
            near = " or ".join(f"{j}/{n_layer} ({j} layer{'s' if j > 1 else ''})"
                               for j in (math.floor(self.depth * n_layer), math.ceil(self.depth * n_layer))
                               if 0 < j <= n_layer)
            raise NMLError(f"depth {self.depth:g} is not a whole number of the teacher's {n_layer} layers "
                           f"({self.depth * n_layer:.3g}); use {near}")
        return k

    def layers(self, layer_rank: list[int]) -> tuple[int, ...] | None:
        """The kept layers in their original order (None: all of them)."""
        k = self.n_layers(len(layer_rank))
        return None if k == len(layer_rank) else tuple(sorted(layer_rank[:k]))


def subnet_dims(cfg: GPT2Config, axes, width: float, depth: float = 1.0,
                layer_rank: list[int] | None = None) -> StudentDims:
    """The sizes of a (width, depth) student of `cfg`: the width's prefixes and the depth's top-ranked layers
    (layer_rank None: prefix order; how many layers, not which, is all a cost needs)."""
    dims = WidthSpec(width, frozenset(axes)).dims(cfg)
    if depth == 1.0:
        return dims
    return replace(dims, layers=DepthSpec(depth).layers(layer_rank or list(range(cfg.n_layer))))


def subnet_key(width: float, depth: float = 1.0) -> str:
    """The key of a sub-model in metrics and result files: "0.5" at full depth (as width-only runs wrote it),
    "0.5@d0.5" below."""
    return f"{width:g}" if depth == 1 else f"{width:g}@d{depth:.4g}"


def same_subnet(width: float, depth: float, other_width: float, other_depth: float) -> bool:
    """Whether two (width, depth) pairs name one sub-model (widths written as 1/3 and 0.333333 are one)."""
    return abs(width - other_width) < 1e-6 and abs(depth - other_depth) < 1e-3


def parse_subnet_key(key: str) -> Subnet:
    width, _, depth = key.partition("@d")
    return float(width), float(depth) if depth else 1.0


def subnets(widths: list[float], depths: list[float]) -> list[Subnet]:
    """Every (width, depth) pair of a run, the most expensive first (width 1, depth 1), the cheapest last: the
    order the step strategies (all / sandwich / random) and the cascade's "next larger" read."""
    return sorted(((w, d) for w in widths for d in depths), key=lambda s: (-s[0] * s[0] * s[1], -s[1]))


def as_subnet(x) -> Subnet:
    """A width alone (a float) is the sub-model at full depth."""
    return (float(x[0]), float(x[1])) if isinstance(x, tuple) else (float(x), 1.0)
