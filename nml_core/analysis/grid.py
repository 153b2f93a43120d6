"""The whole family of a width x depth run: every head count x every depth is a stock student, trained or not.

MatFormer's Mix'n'Match observation: sub-models that were never trained, cut from the same nested weights,
often lie on the accuracy/cost frontier too. The grid scores all of them once (`nml eval RUN --grid`, stored
as the run's grid.json) so the app and the budget search read it at once.
"""
from __future__ import annotations

from transformers import GPT2Config

from ..nesting.depth import same_subnet
from ..nesting.width import available_widths
from ..store.runs import Run


def grid_subnets(cfg: GPT2Config, axes) -> list[tuple[float, float]]:
    """Every (width, depth) a run can cut: each head count (or FFN step) x each whole number of layers, the full
    model first."""
    depths = [k / cfg.n_layer for k in range(cfg.n_layer, 0, -1)]
    return [(w, d) for w in available_widths(cfg, axes) for d in depths]


def subnet_row(run: Run, width: float, depth: float = 1.0) -> dict | None:
    """The scored row of one (width, depth): eval.json's (the fuller evaluation) where trained, else grid.json's."""
    for source in (run.eval() or {}).get("widths", []), (run.grid() or {}).get("rows", []):
        row = next((r for r in source if same_subnet(r["width"], r.get("depth", 1.0), width, depth)), None)
        if row:
            return row
    return None


def subnet_label(row: dict) -> str:
    """'0.5' at full depth, '0.5 x 3L' below (width x the layers kept)."""
    return f"{row['width']:g}" if row.get("depth", 1.0) == 1.0 else f"{row['width']:g} x {row.get('n_layer')}L"
