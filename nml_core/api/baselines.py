"""Baselines of a nested run: the naive slice (recorded, scored by eval) and independent KD students."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..errors import NMLError
from ..nesting.depth import subnet_dims
from ..nesting.elastic import extract_student
from ..nesting.width import WidthSpec
from ..store.models import load_gpt2, run_config, run_teacher_spec, run_tokens
from ..store.runs import Run, create_run, load_run
from ..training.config import TrainConfig
from ..training.inits import reordered_teacher
from ..training.loop import train
from .training import finish_run, marks_failure


def baseline(run_path, kind: str, width: float | None = None, steps: int | None = None, device: str = "auto",
             callback=None, depth: float = 1.0, into: Path | None = None) -> list[Path]:
    """naive: record the naive-slice (and layer-drop) baseline (evaluated by `eval`); independent: distil one
    standalone student per width (at `depth`: the run's top-ranked layers) from the same teacher, same
    hyper-parameters and per-student steps as the nested run.
    An interrupted independent student resumes from its checkpoint; a finished one is kept.
    The nested run need not be finished: a baseline needs only its importance order and layer ranking, fixed
    before its first step (so the baselines can train beside it, on one GPU); `into` then keeps them apart
    (default: the run's baselines/ folder) until the run is finished."""
    run = load_run(run_path, require_model=False)
    if run.kind != "nested":
        raise NMLError(f"{run.path} is a {run.kind} run; baselines belong to a nested run (python -m nml_core train)")
    if not order_fixed(run):
        raise NMLError(f"{run.path.name} has not fixed its importance order yet (its training has not started); "
                       "start or resume it first: python -m nml_core train ... --resume")
    widths = [width] if width else [w for w in run.widths if w < 1]
    # what each student is cut from: the starting model with the run's order (loaded once; a running run has no
    # model/config.json yet, so its config comes from it too)
    start = reordered_teacher(run) if kind != "naive" or not (run.model_dir / "config.json").exists() else None
    config = run_config(run) if start is None else start.config
    for w in widths:  # a width or depth the model cannot take: one line
        layers = subnet_dims(config, run.axes, w, depth, run.layer_rank).layers
    base = {"teacher": run.info["teacher"], "parent": run.name, "axes": run.axes, "data": run.info.get("data")}
    if kind == "naive":
        path = run.path / "baselines" / "naive"
        b = create_run(path, {**base, "kind": "naive", "widths": widths, "depths": run.depths,
                              "label": "naive slice (and layer drop) of the importance-reordered teacher (no training)"},
                       resume=(path / "run.json").exists())
        b.update(status="done")
        return [path]
    paths = []
    hp = {**run.info["hparams"], "device": device}
    if steps:
        hp["steps"] = steps
    cfg = TrainConfig(**hp)
    teacher = tokenizer = None
    for w in widths:
        path = Path(into or run.path / "baselines") / f"independent-{w:g}{f'-d{depth:.4g}' if depth != 1 else ''}"
        if (path / "run.json").exists() and load_run(path, require_model=False).status == "done":
            paths.append(path)
            continue
        if teacher is None:  # the frozen teacher, once for every student
            teacher, tokenizer, _ = load_gpt2(run_teacher_spec(run))
        student = extract_student(start, WidthSpec(w, run.axes), layers)
        shape = f"width {w:g}" + (f", depth {depth:.3g} (layers {list(layers)} of the teacher)" if layers else "")
        b = create_run(path, {**base, "kind": "independent", "width": w, "depth": depth, "widths": [1.0],
                              "hparams": asdict(cfg), "label": f"independent KD student, {shape}, same steps as "
                              "the nested run"},
                       resume=(path / "run.json").exists())
        with marks_failure(b):
            model = train(b, student, run_tokens(run), cfg, [1.0], teacher=teacher, resume=b.path.joinpath(
                "checkpoints", "latest.json").exists(), callback=callback)
            finish_run(b, model, tokenizer, run.info.get("save_dtype", "fp32"))
        paths.append(path)
    return paths


def order_fixed(run: Run) -> bool:
    """Whether a nested run has stored what its baselines start from: its importance order (when it reorders)
    and its layer ranking (when it nests depth)."""
    return (not run.info.get("reorder", True) or (run.path / "reorder.safetensors").exists()) and \
        (run.depths == [1.0] or run.layer_rank is not None)
