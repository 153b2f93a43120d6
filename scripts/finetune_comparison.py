"""The shipped fine-tuning comparison: every start, widths 1/2 and 1/4, both tasks, several seeds, one recipe.

  python scripts/finetune_comparison.py [RUN] [--seeds 3] [--widths 0.5,0.25] [--tasks genre,domain]
  python scripts/finetune_comparison.py [RUN] --table        # mean ± std per task, width and start, from the files

Resumable: a (task, width, start, seed) whose result file exists is skipped, so a stopped build continues where it
stopped. Recipes per task (RECIPES) are the ones the shipped results used.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from nml_core import api
from nml_core.analysis.finetune_results import finetune_table, load_results
from nml_core.training.finetune import STARTS, FinetuneConfig

RECIPES = {"genre": FinetuneConfig(steps=250, eval_every=50), "domain": FinetuneConfig(steps=100, eval_every=25)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", default="cached_runs/shakespeare-nml-depth")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--widths", default="0.5,0.25")
    ap.add_argument("--tasks", default="genre,domain")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--parallel", action="store_true", help="one process per (task, width), at once (a GPU)")
    a = ap.parse_args()
    tasks = a.tasks.split(",")
    if a.table:
        for task in tasks:
            print(finetune_table(load_results(Path(a.run), task)), end="\n\n")
        return
    if a.parallel:
        procs = [subprocess.Popen([sys.executable, __file__, a.run, "--seeds", str(a.seeds), "--widths", width,
                                   "--tasks", task, "--device", a.device])
                 for task in tasks for width in a.widths.split(",")]
        if any(p.wait() for p in procs):
            raise SystemExit("a fine-tuning process failed (its log is above); rerun to resume it")
        return
    for task in tasks:
        for width in (float(w) for w in a.widths.split(",")):
            for seed in range(a.seeds):
                todo = [s for s in STARTS
                        if not (Path(a.run) / "finetune" / task / f"{s}-w{width:g}-seed{seed}.json").exists()]
                if todo:
                    api.finetune(a.run, width, task, todo, RECIPES[task], device=a.device, seeds=(seed,))
                    print(f"done {task} width {width:g} seed {seed}: {', '.join(todo)}", flush=True)


if __name__ == "__main__":
    main()
