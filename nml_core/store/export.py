"""Writing stock Hugging Face model directories: run weights and exported students.

A written directory (config.json, model.safetensors, tokenizer files, README.md) loads with plain
`transformers.AutoModelForCausalLM.from_pretrained(dir)`; nothing of nml_core is needed to use it.
"""
from __future__ import annotations

import copy
import shutil
import uuid
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from ..files import atomic_write_bytes, check_new_folder


EXPORT_MARK = ".nml-export"  # left in every exported directory: only a directory holding it may be replaced


def save_model_dir(model: GPT2LMHeadModel, tokenizer, path: Path, dtype: torch.dtype = torch.float32,
                   card: str | None = None, shard_mb: int | None = None, mark: bool = False) -> Path:
    """save_pretrained into a temp dir, then swap it in, so `path` is never half-written. mark: leave EXPORT_MARK
    (an export into a folder the user named; check_export_target then lets only such a folder be replaced).

    shard_mb: write safetensors shards of at most that size (+ model.safetensors.index.json), which
    from_pretrained loads natively: a build on a remote machine comes home in small files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        # fp16 storage halves the bytes; nml_core always loads with dtype=float32 and computes in fp32
        to_save = copy.deepcopy(model).to(dtype) if dtype != torch.float32 else model
        to_save.save_pretrained(str(tmp), safe_serialization=True,
                                **({"max_shard_size": f"{shard_mb}MB"} if shard_mb else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if card:
            atomic_write_bytes(tmp / "README.md", card.encode())
        if mark:
            atomic_write_bytes(tmp / EXPORT_MARK, b"written by nml_core export; a later export may replace this folder\n")
        old = path.parent / f".old-{path.name}-{uuid.uuid4().hex[:8]}"
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def check_export_target(out: Path) -> None:
    """An export may write a new or empty folder, or replace one an earlier export wrote (it holds EXPORT_MARK);
    anything else — a file, a user's own model folder, any folder with files — is refused, never replaced."""
    if not (Path(out) / EXPORT_MARK).exists():
        check_new_folder(out)
