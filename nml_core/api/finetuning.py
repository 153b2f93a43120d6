"""Fine-tuning one width of a run from several starting points on a downstream task."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import device as devices
from ..arch.gpt2 import cost
from ..errors import NMLError
from ..files import atomic_write_json
from ..store.models import run_config, run_tokenizer
from ..store.runs import Run, load_run, now
from ..training.finetune import STARTS


def finetune(run_path, width: float, task: str, starts=STARTS, cfg=None, device: str = "auto",
             seeds: tuple[int, ...] | None = None) -> dict[str, dict]:
    """Fine-tune each starting point of one width on a downstream task with the same recipe, once per seed;
    writes <run>/finetune/<task>/<start>-w<width>-seed<seed>.json (curve, final metric, what the start had read)
    and returns them by file stem. Genre's test works are the works the run's teacher never read."""
    from ..data.tasks import TASKS, domain_task, genre_task
    from ..training.finetune import FinetuneConfig, run_task, starting_model
    if task not in TASKS:
        raise NMLError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    cfg = cfg or FinetuneConfig()
    run, device = load_run(run_path), devices.resolve(device)
    positions = run_config(run).n_positions
    if cfg.ctx > positions:
        raise NMLError(f"--ctx {cfg.ctx} exceeds the model's {positions} positions; use --ctx {positions} or less")
    tokenizer = run_tokenizer(run)
    data = genre_task(tokenizer, cfg.ctx, test_works=_unread_works(run)) if task == "genre" else domain_task(tokenizer)
    if task == "domain" and min(len(data["train"]), len(data["val"])) < 4 * (cfg.ctx + 1):
        raise NMLError(f"the domain task has too little text for --ctx {cfg.ctx}; use a smaller --ctx")
    results = {}
    for seed in seeds if seeds is not None else (cfg.seed,):
        seeded = dataclasses.replace(cfg, seed=seed)
        for start in starts:
            model = starting_model(run, width, start, seed)
            name = start if start in STARTS else Path(start).name
            result = {**run_task(task, model, data, seeded, device), "start": name, "width": width, "seed": seed,
                      "run": run.name, "params": cost(model.config)["params"], "saw": _seen_before(run, start),
                      "finished": now()}
            stem = f"{name}-w{width:g}-seed{seed}"
            atomic_write_json(run.path / "finetune" / task / f"{stem}.json", result)
            results[stem] = result
    return results


def _unread_works(run: Run) -> list[str] | None:
    """The genre task's works that the run's teacher held out of its LM training (its validation files), or None
    when it trained on none of them (other text: the task's default split then)."""
    from ..data.tasks import GENRE_OF
    works = {w for names in GENRE_OF.values() for w in names}
    files = [f.removesuffix(".txt").removesuffix("_gut") for f in run.info.get("data", {}).get("val_files", [])]
    held_out = [f for f in files if f in works]
    return held_out or None


def _seen_before(run: Run, start: str) -> str:
    """Which text a starting point had read before fine-tuning (the card and page say it)."""
    data = run.info.get("data", {})
    split = f"the LM training split of {data.get('source', 'the run data')}" + (
        f" (held out: {', '.join(data['val_files'])})" if data.get("val_files") else "")
    return {"nml": f"{split}: the teacher's pretraining, then NML distillation on it",
            "independent": f"{split}: the teacher's pretraining, then its own KD on it",
            "naive": f"{split}: the teacher's pretraining (a slice of it, no training of its own)",
            "random": "nothing (random initialisation)"}.get(start, f"unknown (the model dir {start})")
