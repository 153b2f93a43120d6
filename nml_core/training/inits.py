"""The models a nested run starts from: its teacher assistant (MatTA's --init: a hub id, an HF dir, a run, or
one width of a run as RUN@WIDTH) and its starting model with the run's stored importance order applied (the
naive slice, the independent students' initialisation)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

from ..arch.gpt2 import permute_units
from ..errors import NMLError
from ..inputs import parse_fraction
from ..nesting.elastic import extract_student
from ..nesting.width import WidthSpec
from ..store.models import load_gpt2, load_run_model, load_teacher_of
from ..store.runs import RUN_FILE, Run, load_run


def load_init(spec: str, device: str | torch.device = "cpu") -> tuple[GPT2LMHeadModel, object, dict]:
    """The nested model's starting weights (MatTA's teacher assistant): a hub id, a local HF GPT-2 dir, a run
    dir, or one width of a run as `RUN@WIDTH` (its extracted student)."""
    path, _, width = str(spec).rpartition("@")
    if path and (Path(path) / RUN_FILE).exists():
        run = load_run(path)
        try:
            w = parse_fraction(width)
        except ValueError:
            raise NMLError(f"--init {spec}: {width!r} is not a width; e.g. --init {path}@0.5") from None
        model, tokenizer = load_run_model(run, device)
        student = extract_student(model, WidthSpec(w, run.axes)).eval()
        label = f"width {w:g} of run {run.name}"
        return student, tokenizer, {"id": str(spec), "source": "run width", "label": label}
    return load_gpt2(spec, device)


def init_of(run: Run, device: str | torch.device = "cpu") -> GPT2LMHeadModel:
    """The model a nested run started from: its teacher assistant (--init) if it had one, else its teacher."""
    ta = run.info.get("ta")
    return load_init(ta["id"], device)[0] if ta else load_teacher_of(run, device)


def reordered_teacher(run: Run, device: str | torch.device = "cpu") -> GPT2LMHeadModel:
    """The nested run's starting model (teacher, or teacher assistant) with the run's stored importance order
    applied: the naive-slice baseline and the independent students' initialisation."""
    start = init_of(run, device)
    perms_file = run.path / "reorder.safetensors"
    if perms_file.exists():
        permute_units(start, load_file(str(perms_file)))
    return start
