"""What fits my budget: the frontier of a run's whole width x depth family on one device, the best sub-model
within a latency and memory budget, and which axis paid for it there.

Latency is measured where the device has a latency file holding that shape, projected from the device's
profile elsewhere (nml_core.analysis.whatif, with its measured error); quality is the grid's (every head count
x every depth, nml eval --grid) or, before the grid is scored, the trained sub-models' eval.json.
"""
from __future__ import annotations

from dataclasses import dataclass

from .pareto import pareto_front, with_latency
from .whatif import DeviceChoice, best_within_budget, device_points

LATENCY_KEYS = {"ttft": "prefill_ms", "prefill": "prefill_ms", "decode": "decode_ms"}
WORKLOAD_NAMES = {"ttft": "time to first token", "prefill": "scoring time", "decode": "time per generated token"}


def family_points(run, device_key: str | None = None) -> list[dict]:
    """One point per (width, depth) of the run's grid (else its trained sub-models), with the latency the
    device's file measured for that shape (device_key None: none)."""
    grid = run.grid()
    rows = grid["rows"] if grid else (run.eval() or {}).get("widths", [])
    rows = [{**r, "depth": r.get("depth", 1.0), "trained": r.get("trained", True)} for r in rows]
    return with_latency(run, rows, "NML", run.latency().get(device_key) if device_key else None)


@dataclass
class BudgetAnswer:
    """The frontier, the best sub-model within the budget, and each axis's speed-up on this device."""
    points: list[dict]
    frontier: list[dict]
    best: dict | None
    latency_key: str
    workload: str
    width_speedup: float | None   # full model / half width, full depth
    depth_speedup: float | None   # full model / full width, half depth
    best_width_only: dict | None  # the best within budget at full depth
    best_depth_only: dict | None  # the best within budget at full width

    @property
    def paid(self) -> str | None:
        """Which axis cuts latency more on this device at this batch."""
        if self.width_speedup is None or self.depth_speedup is None:
            return None
        return "depth" if self.depth_speedup > self.width_speedup else "width"


def search(run, cfg, choice: DeviceChoice, batch: int, workload: str = "ttft", latency_ms: float | None = None,
           memory_mb: float | None = None, ctx: int = 128) -> BudgetAnswer:
    """The budget search on one device choice (whatif.device_choices) at one batch and workload."""
    rows = family_points(run, choice.file_key)
    points = device_points(rows, cfg, run.axes, choice, batch, ctx, "prefill" if workload == "prefill" else "ttft")
    key = LATENCY_KEYS[workload]
    for p in points:
        p["latency_measured"] = p["prefill_measured"] if key == "prefill_ms" else choice.measured
    front = [p for p, on in zip(points, pareto_front(points, "ppl", key)) if on]
    at = {(p["width"], p["depth"]): p for p in points}
    full = at.get((1.0, 1.0))

    def speedup(other):
        return full[key] / other[key] if full and other and full.get(key) and other.get(key) else None

    half_d = next((p for p in sorted(points, key=lambda p: abs(p["depth"] - 0.5)) if p["width"] == 1.0
                   and p["depth"] < 1), None)
    half_w = at.get((0.5, 1.0))
    best = best_within_budget(points, key, latency_ms, memory_mb)
    return BudgetAnswer(points, sorted(front, key=lambda p: p[key]), best, key, workload, speedup(half_w),
                        speedup(half_d),
                        best_within_budget([p for p in points if p["depth"] == 1.0], key, latency_ms, memory_mb),
                        best_within_budget([p for p in points if p["width"] == 1.0], key, latency_ms, memory_mb))


def why(answer: BudgetAnswer, device_name: str, batch: int) -> str:
    """One paragraph: which axis paid on this device, and what the best width-only / depth-only choice would be."""
    parts = []
    if answer.paid:
        parts.append(f"On {device_name} at batch {batch}, halving the width cuts the {WORKLOAD_NAMES[answer.workload]} "
                     f"{answer.width_speedup:.2f}x and halving the depth {answer.depth_speedup:.2f}x: "
                     f"{answer.paid} pays here.")
    elif answer.width_speedup is not None:
        parts.append(f"On {device_name} at batch {batch}, halving the width cuts the {WORKLOAD_NAMES[answer.workload]} "
                     f"{answer.width_speedup:.2f}x (this run nests no depth).")
    for name, p in (("width alone (all layers)", answer.best_width_only),
                    ("depth alone (full width)", answer.best_depth_only)):
        if answer.best is not None and answer.depth_speedup is not None:
            parts.append(f"Best by {name}: " + (f"({p['width']:g}, {p['depth']:.3g}) ppl {p['ppl']:.1f}." if p
                                                else "nothing fits."))
    return " ".join(parts)
