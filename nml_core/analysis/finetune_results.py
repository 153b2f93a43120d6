"""Fine-tuning results of a run (<run>/finetune/<task>/<start>-w<width>-seed<seed>.json) gathered per
(width, start) across seeds: mean, standard deviation and count, for the page, the docs and the card."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass
class StartSummary:
    """One starting point at one width: its final metric over the seeds."""
    width: float
    start: str
    metric: str
    mean: float
    std: float
    seeds: list[int]
    saw: str

    def cell(self) -> str:
        digits = 3 if self.metric == "test_acc" else 1
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def load_results(run_path: Path, task: str) -> dict[str, dict]:
    """File stem -> result, for every readable result of the current layout (one file per seed)."""
    out = {}
    for path in sorted(Path(run_path, "finetune", task).glob("*-seed*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def summarize(results: dict[str, dict]) -> list[StartSummary]:
    """(width, start) groups, widest first, in the order the starts first appear."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for r in results.values():
        groups.setdefault((r["width"], r["start"]), []).append(r)
    rows = []
    for (width, start), rs in sorted(groups.items(), key=lambda kv: -kv[0][0]):
        metric = rs[0]["metric"]
        values = [r["final"][metric] for r in rs]
        rows.append(StartSummary(width, start, metric, statistics.fmean(values),
                                 statistics.stdev(values) if len(values) > 1 else 0.0,
                                 sorted(r.get("seed", 0) for r in rs), rs[0].get("saw", "")))
    return rows


def finetune_table(results: dict[str, dict]) -> str:
    """Markdown: one row per width, one column per start (mean ± std over seeds)."""
    rows = summarize(results)
    if not rows:
        return "no fine-tuning results"
    starts = list(dict.fromkeys(r.start for r in rows))
    first = next(iter(results.values()))
    n = max(len(r.seeds) for r in rows)
    lines = [f"{first['task']} ({'test accuracy, higher is better' if rows[0].metric == 'test_acc' else 'held-out perplexity, lower is better'}; "
             f"mean ± std over {n} seeds; {first['recipe']['steps']} steps x batch {first['recipe']['batch_size']})", "",
             "| width | " + " | ".join(starts) + " |", "|---|" + "---|" * len(starts)]
    for width in sorted({r.width for r in rows}, reverse=True):
        cells = {r.start: r.cell() for r in rows if r.width == width}
        lines.append(f"| {width:g} | " + " | ".join(cells.get(s, "—") for s in starts) + " |")
    return "\n".join(lines)


def verdict(rows: list[StartSummary], width: float) -> str | None:
    """One sentence from the figures: at this width, the nested student against each other start, better or worse
    only where the gap exceeds both standard deviations (else: within the noise of the seeds)."""
    mine = {r.start: r for r in rows if r.width == width}
    nml = mine.get("nml")
    if nml is None or len(mine) < 2:
        return None
    higher = nml.metric == "test_acc"
    parts = []
    for start, r in mine.items():
        if start == "nml":
            continue
        gap = nml.mean - r.mean if higher else r.mean - nml.mean
        if len(nml.seeds) < 2 or len(r.seeds) < 2:
            call = "better" if gap > 0 else "worse" if gap < 0 else "level"
            parts.append(f"{call} than {start} (one seed: no spread to judge by)")
        elif abs(gap) <= max(nml.std, r.std):
            parts.append(f"within one standard deviation of {start}")
        else:
            parts.append(f"{'better' if gap > 0 else 'worse'} than {start}")
    return f"At width {width:g}, the nested student is " + "; ".join(parts) + f" ({nml.metric}, mean ± std over seeds)."
