"""A top-k teacher cache: the frozen teacher's k largest logits for every training token, computed once per
(teacher, dataset, context, temperature) and stored on disk, so nested training needs no teacher forward.

Layout of a cache directory (written to a temp dir, renamed into place when complete):
  cache.json   teacher, k, ctx, temperature, vocab, sha256 of the train tokens it was built on, windows
  topk_idx.npy (windows, ctx, k) uint16 (int32 if vocab > 65535)   token ids of the k largest logits
  topk_val.npy (windows, ctx, k) float16                             their logits
  lse.npy      (windows, ctx) float32                                logsumexp over the whole vocab of logits / T
Windows are the train split's consecutive non-overlapping (ctx + 1)-token blocks (data.eval_windows), so a
cached run samples whole windows instead of random offsets.

The target at temperature T keeps the teacher's exact probabilities of its top k tokens (val / T - lse) and
spreads the remaining tail mass uniformly over the other V - k tokens. Renormalising the top k instead
(dropping the tail) was measured to wreck perplexity on the shipped teacher, whose top 64 tokens hold only
71% of its probability on average: the students learn to give every other token almost nothing
(BENCHMARKS.md). The spread tail still costs quality when the teacher is flat at T (on the shipped
teacher the top 64 hold 11% of the mass at T = 2: +0.2 nats at widths 1 to 1/4), so exact KD stays the
default. Because lse depends on T, a cache serves one temperature.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.batches import eval_windows
from ..data.sources import TokenData
from ..errors import NMLError
from ..files import atomic_write_json, check_new_folder, read_json

FAR = -1.0e4  # a log-prob of exactly 0 probability in fp32 that keeps 0 * log-prob finite


def data_fingerprint(ids: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()


@torch.no_grad()
def build_topk_cache(teacher, data: TokenData, ctx: int, k: int, out: Path, teacher_id: str, temperature: float = 2.0,
                     batch_size: int = 16, device: str = "cpu", progress=None) -> Path:
    """Run the teacher once over every train window; keep its top-k logits and the full logsumexp at T."""
    out = Path(out)
    if (out / "cache.json").exists():
        raise NMLError(f"{out} already holds a teacher cache; pick another --out or delete it")
    check_new_folder(out)
    windows = eval_windows(data.train, ctx)
    vocab = teacher.config.vocab_size
    idx_dtype = np.uint16 if vocab <= 65535 else np.int32
    tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=f".{out.name}."))
    try:
        idx = np.lib.format.open_memmap(tmp / "topk_idx.npy", mode="w+", dtype=idx_dtype, shape=(len(windows), ctx, k))
        val = np.lib.format.open_memmap(tmp / "topk_val.npy", mode="w+", dtype=np.float16, shape=(len(windows), ctx, k))
        lse = np.lib.format.open_memmap(tmp / "lse.npy", mode="w+", dtype=np.float32, shape=(len(windows), ctx))
        teacher = teacher.to(device).eval()
        tail, tail_t, t0 = 0.0, 0.0, time.time()
        for i in tqdm(range(0, len(windows), batch_size), desc="teacher top-k cache", unit="batch",
                      disable=progress is not None):
            x = windows[i:i + batch_size, :-1].to(device)
            logits = teacher(input_ids=x).logits.float()
            top = logits.topk(k, dim=-1)
            tail += (1 - torch.softmax(logits, -1).gather(-1, top.indices).sum(-1)).sum().item()
            tail_t += (1 - torch.softmax(logits / temperature, -1).gather(-1, top.indices).sum(-1)).sum().item()
            idx[i:i + len(x)] = top.indices.cpu().numpy().astype(idx_dtype)
            val[i:i + len(x)] = top.values.cpu().numpy().astype(np.float16)
            lse[i:i + len(x)] = torch.logsumexp(logits / temperature, -1).cpu().numpy()
            if progress:
                progress(min(1.0, (i + len(x)) / len(windows)))
        for arr in (idx, val, lse):
            arr.flush()
        atomic_write_json(tmp / "cache.json", {
            "teacher": teacher_id, "k": k, "ctx": ctx, "temperature": temperature, "vocab": vocab, "windows": len(windows),
            "train_sha256": data_fingerprint(data.train), "tail_mass_t1": round(tail / (len(windows) * ctx), 5),
            "tail_mass_at_temperature": round(tail_t / (len(windows) * ctx), 5),
            "build_s": round(time.time() - t0, 1)})
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class TopKTeacher:
    """A built cache, checked against the data it is used with; draws batches with their cached targets."""

    def __init__(self, path: Path, data: TokenData, ctx: int, vocab: int, temperature: float):
        path = Path(path)
        self.info = read_json(path / "cache.json")
        if abs(self.info.get("temperature", -1) - temperature) > 1e-9:
            raise NMLError(f"teacher cache {path} was built for --temperature {self.info.get('temperature')}, not "
                           f"{temperature}; rebuild it with cache-teacher --temperature {temperature}")
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
        self.lse = np.load(path / "lse.npy", mmap_mode="r")
        self.windows = eval_windows(data.train, ctx)
        self.vocab = vocab

    def batch(self, batch_size: int, generator: torch.Generator):
        """(tokens (B, ctx+1), top-k ids (B, ctx, k), top-k logits (B, ctx, k), lse (B, ctx)) of random windows."""
        rows = torch.randint(0, len(self.windows), (batch_size,), generator=generator).sort().values.numpy()
        return (self.windows[rows], torch.from_numpy(self.idx[rows].astype(np.int64)),
                torch.from_numpy(self.val[rows].astype(np.float32)), torch.from_numpy(np.asarray(self.lse[rows])))


def topk_soft_targets(idx: torch.Tensor, val: torch.Tensor, lse: torch.Tensor,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top-k log-probabilities at T, normalised over the whole vocab (val / T - lse), as
    (ids (B, T, k), log-probs (B, T, k)): the sparse target nested_kd_loss takes (the tail mass
    1 - sum(p_k) is spread over the other tokens there). No (B, T, V) tensor is built for the teacher."""
    return idx, val.float() / temperature - lse[..., None]


def dense_targets(idx: torch.Tensor, logp: torch.Tensor, vocab: int) -> torch.Tensor:
    """The same target as a dense (B, T, V) log-prob tensor (the tail mass spread uniformly over the other
    V - k tokens): for checks and comparisons."""
    k = idx.size(-1)
    tail = (1 - logp.exp().sum(-1, keepdim=True)).clamp_min(0) / max(1, vocab - k)
    fill = torch.where(tail > 0, tail.clamp_min(1e-30).log(), torch.full_like(tail, FAR))
    out = fill.expand(*idx.shape[:-1], vocab).clone()
    return out.scatter_(-1, idx, logp)
