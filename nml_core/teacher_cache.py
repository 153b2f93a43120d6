"""A top-k teacher cache: the frozen teacher's k largest logits for every training token, computed once per
(teacher, dataset, context) and stored on disk, so nested training needs no teacher forward at all.

Layout of a cache directory (written to a temp dir, renamed into place when complete):
  cache.json   teacher, k, ctx, vocab, sha256 of the train tokens it was built on, windows
  topk_idx.npy (windows, ctx, k) uint16 (int32 if vocab > 65535)   token ids of the k largest logits
  topk_val.npy (windows, ctx, k) float16                             their logits
Windows are the train split's consecutive non-overlapping (ctx + 1)-token blocks (data.eval_windows), so a
cached run samples whole windows instead of random offsets.

At temperature T the target is the teacher's softmax over its top-k logits only (renormalised): a
sparse approximation of p_teacher; the mass outside the top k is dropped (for k = 64 on the shipped
teacher it is the `tail_mass` recorded in cache.json).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .data import TokenData, eval_windows
from .errors import NMLError
from .runs import atomic_write_json, read_json

FAR = -1.0e4  # log-prob outside the top k: exp() is exactly 0 in fp32, and 0 * finite stays finite in the loss


def data_fingerprint(ids: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()


@torch.no_grad()
def build_topk_cache(teacher, data: TokenData, ctx: int, k: int, out: Path, teacher_id: str,
                     batch_size: int = 16, device: str = "cpu", progress=None) -> Path:
    """Run the teacher once over every train window and keep its top-k logits per position."""
    out = Path(out)
    if (out / "cache.json").exists():
        raise NMLError(f"{out} already holds a teacher cache; pick another --out or delete it")
    windows = eval_windows(data.train, ctx)
    vocab = teacher.config.vocab_size
    idx_dtype = np.uint16 if vocab <= 65535 else np.int32
    tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=f".{out.name}."))
    try:
        idx = np.lib.format.open_memmap(tmp / "topk_idx.npy", mode="w+", dtype=idx_dtype, shape=(len(windows), ctx, k))
        val = np.lib.format.open_memmap(tmp / "topk_val.npy", mode="w+", dtype=np.float16, shape=(len(windows), ctx, k))
        teacher = teacher.to(device).eval()
        tail, t0 = 0.0, time.time()
        for i in range(0, len(windows), batch_size):
            x = windows[i:i + batch_size, :-1].to(device)
            logits = teacher(input_ids=x).logits.float()
            top = logits.topk(k, dim=-1)
            tail += (1 - torch.softmax(logits, -1).gather(-1, top.indices).sum(-1)).sum().item()
            idx[i:i + len(x)] = top.indices.cpu().numpy().astype(idx_dtype)
            val[i:i + len(x)] = top.values.cpu().numpy().astype(np.float16)
            if progress:
                progress(min(1.0, (i + len(x)) / len(windows)))
        idx.flush()
        val.flush()
        atomic_write_json(tmp / "cache.json", {
            "teacher": teacher_id, "k": k, "ctx": ctx, "vocab": vocab, "windows": len(windows),
            "train_sha256": data_fingerprint(data.train), "tail_mass": round(tail / (len(windows) * ctx), 5),
            "build_s": round(time.time() - t0, 1)})
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class TopKTeacher:
    """A built cache, checked against the data it is used with; draws batches with their cached targets."""

    def __init__(self, path: Path, data: TokenData, ctx: int, vocab: int):
        path = Path(path)
        self.info = read_json(path / "cache.json")
        if self.info["ctx"] != ctx:
            raise NMLError(f"teacher cache {path} was built for --ctx {self.info['ctx']}, not {ctx}; rebuild it or use "
                           f"--ctx {self.info['ctx']}")
        if self.info["vocab"] != vocab:
            raise NMLError(f"teacher cache {path} has vocab {self.info['vocab']}, the model {vocab}; wrong teacher")
        if self.info["train_sha256"] != data_fingerprint(data.train):
            raise NMLError(f"teacher cache {path} was built on other train tokens; rebuild it for this data "
                           "(python -m nml_core cache-teacher)")
        self.idx = np.load(path / "topk_idx.npy", mmap_mode="r")
        self.val = np.load(path / "topk_val.npy", mmap_mode="r")
        self.windows = eval_windows(data.train, ctx)
        self.vocab = vocab

    def batch(self, batch_size: int, generator: torch.Generator):
        """(tokens (B, ctx+1), top-k ids (B, ctx, k), top-k logits (B, ctx, k)) of random whole windows."""
        rows = torch.randint(0, len(self.windows), (batch_size,), generator=generator).sort().values.numpy()
        return (self.windows[rows], torch.from_numpy(self.idx[rows].astype(np.int64)),
                torch.from_numpy(self.val[rows].astype(np.float32)))


def topk_soft_targets(idx: torch.Tensor, val: torch.Tensor, temperature: float, vocab: int) -> torch.Tensor:
    """Dense (B, T, V) log-probs of the renormalised top-k teacher at T; FAR elsewhere (probability 0)."""
    out = torch.full((*idx.shape[:-1], vocab), FAR, dtype=torch.float32, device=idx.device)
    return out.scatter_(-1, idx, torch.log_softmax(val.float() / temperature, -1))
