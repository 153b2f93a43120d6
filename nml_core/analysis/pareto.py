"""Accuracy-vs-cost points of a nested run and its baselines, and their Pareto frontier.

Latency depends only on a student's shape, so naive-slice and independent-KD students (same shapes as the
NML widths) take the latency measured for the NML student of that width.
"""
from __future__ import annotations

from ..store.latency_report import LatencyReport
from ..store.runs import Run

QUALITY = {"ppl": ("val perplexity", False), "acc": ("top-1 accuracy", True), "agree": ("agreement with teacher", True)}
COST = {"prefill_ms": ("prefill at the chosen batch and workload (ms)", False),
        "ttft_b1_ms": ("time to first token 1x128 (ms)", False), "ttft_b8_ms": ("time to first token 8x128 (ms)", False),
        "prefill_b1_ms": ("scoring 1x128, all logits (ms)", False), "prefill_b8_ms": ("scoring 8x128, all logits (ms)", False),
        "memory_mb": ("memory at the chosen batch (MB)", False),
        "decode_tok_s": ("decode (tokens/s)", True), "decode_ms": ("decode (ms per token)", False), "flops_per_token": ("FLOPs per token", False),
        "fp16_mb": ("fp16 size (MB)", False)}


def student_shape(row: dict, n_layer: int | None = None) -> tuple:
    """(heads, hidden, FFN, layers) of an eval row: latency depends on nothing else (rows written before depth
    was nested have no n_layer: they ran every layer, `n_layer`); LatencyRow.shape is the same for a timing."""
    return row["n_head"], row["n_embd"], row["n_inner"], row.get("n_layer") or n_layer


def default_latency_key(run: Run) -> str | None:
    """The latency file a card or table shows by default: a CPU's at the most threads (how the machine runs by
    default, all cores) in fp32, else the first one."""
    files = run.latency()
    cpus = [k for k, v in files.items() if v.device == "cpu"]
    return max(cpus, key=lambda k: (files[k].threads or 0, files[k].precision is None)) if cpus \
        else next(iter(files), None)


def run_points(run: Run, device_key: str | None = None) -> list[dict]:
    """One dict per model: group (teacher / NML / NML FFN-only / MatTA / naive slice / independent KD), width,
    depth, quality, cost, latency."""
    ev = run.eval()
    if not ev:
        return []
    own = run.kind if run.kind != "nested" else "MatTA" if run.info.get("ta") else \
        "NML FFN-only" if set(run.axes) == {"ffn"} else "NML"
    groups = [("teacher", [{**ev["teacher"], "width": 1.0}])] if "teacher" in ev else []
    groups += [(own, ev["widths"])]
    groups += [({"naive": "naive slice", "independent": "independent KD"}.get(g, g), rows)
               for g, rows in ev.get("baselines", {}).items()]
    lat = run.latency().get(device_key or default_latency_key(run))
    return [p for group, rows in groups for p in with_latency(run, rows, group, lat)]


def with_latency(run: Run, rows: list[dict], group: str, lat: LatencyReport | None) -> list[dict]:
    """Eval or grid rows as points of one group, each with every measure the latency report `lat` (one of the
    run's latency files, or None) has for its shape (older files have no ttft_*: scoring and decode only)."""
    full_layers = run.info.get("teacher", {}).get("shape", {}).get("n_layer")
    by_shape = {r.shape(full_layers): r for r in (lat.rows if lat else [])}
    points = []
    for r in rows:
        p = {"group": group, "run": run.name, **{k: r.get(k) for k in
             ("width", "depth", "n_layer", "n_head", "n_embd", "n_inner", "params", "nonemb_params", "flops_per_token",
              "fp16_mb", "ppl", "acc", "agree", "kl", "nll", "train_nll", "trained", "tokens")}}
        p["depth"], p["n_layer"] = p["depth"] or 1.0, p["n_layer"] or full_layers
        t = by_shape.get(student_shape(r, full_layers))
        if t:
            p.update({k: v.median_ms for k, v in t.timings.items() if not k.startswith("elastic")},
                     decode_tok_s=t.decode.median if t.decode else None)
        points.append(p)
    return points


def pareto_front(points: list[dict], quality: str, cost: str) -> list[bool]:
    """True for points no other point beats on both axes (better-or-equal on both, strictly on one)."""
    q_high, c_high = QUALITY[quality][1], COST[cost][1]

    def key(p):  # both axes as "smaller is better"
        return (-p[quality] if q_high else p[quality]), (-p[cost] if c_high else p[cost])

    usable = [p.get(quality) is not None and p.get(cost) is not None for p in points]
    keys = [key(p) if ok else None for p, ok in zip(points, usable)]
    front = []
    for i, ki in enumerate(keys):
        if ki is None:
            front.append(False)
            continue
        dominated = any(kj is not None and kj[0] <= ki[0] and kj[1] <= ki[1] and kj != ki for kj in keys)
        front.append(not dominated)
    return front
