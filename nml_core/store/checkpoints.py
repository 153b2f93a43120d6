"""Resumable training state as safetensors + JSON only: checkpoints/step-N/ written in full, then
checkpoints/latest.json flipped to it atomically, so a crash mid-write leaves the previous checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from ..arch.gpt2 import TIED
from ..errors import NMLError
from ..files import atomic_write_json
from .runs import Run


def save_checkpoint(run: Run, model: GPT2LMHeadModel, optimizer, step: int, state: dict) -> None:
    """checkpoints/step-N/ written in full, then checkpoints/latest.json flipped to it atomically."""
    root = run.path / "checkpoints"
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
               if k != TIED}, str(tmp / "model.safetensors"))
    opt = optimizer.state_dict()
    tensors = {f"{i}.{k}": v.detach().contiguous().cpu() for i, s in opt["state"].items() for k, v in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"param_groups": json.dumps(opt["param_groups"])})
    atomic_write_json(tmp / "state.json", {"step": step, **state})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_json(root / "latest.json", {"step": step, "dir": final.name})
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run: Run) -> Path | None:
    """The checkpoint dir latest.json points at; if latest.json is missing or corrupt (a crash while it was
    flipped), the newest complete step-N dir (complete dirs are renamed into place only once whole)."""
    root = run.path / "checkpoints"
    try:
        ckpt = root / json.loads((root / "latest.json").read_text())["dir"]
        if (ckpt / "state.json").is_file():
            return ckpt
    except (OSError, ValueError, KeyError, TypeError):
        pass
    complete = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return complete[-1] if complete else None


def load_checkpoint(run: Run, model: GPT2LMHeadModel, optimizer) -> dict | None:
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return None
    try:
        weights = load_file(str(ckpt / "model.safetensors"))
    except Exception as e:  # safetensors raises several types for truncated / garbage files
        raise NMLError(f"checkpoint {ckpt} is corrupt ({type(e).__name__}); delete that folder to resume from an "
                       "older checkpoint, or start the run again") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {TIED}:
        raise NMLError(f"checkpoint {ckpt} does not match the model ({len(missing)} missing, {len(unexpected)} unexpected)")
    model.tie_weights()
    from safetensors import safe_open
    with safe_open(str(ckpt / "optimizer.safetensors"), framework="pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        state: dict = {}
        for key in f.keys():
            i, name = key.split(".", 1)
            state.setdefault(int(i), {})[name] = f.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return json.loads((ckpt / "state.json").read_text())
