"""Batches from token arrays: random training windows, consecutive evaluation blocks, example prompts."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import NMLError


def random_batch(ids: np.ndarray, batch_size: int, ctx: int, generator: torch.Generator) -> torch.Tensor:
    """(batch_size, ctx + 1) windows at random offsets (nanoGPT style); inputs = [:, :-1], labels = [:, 1:]."""
    starts = torch.randint(0, len(ids) - ctx - 1, (batch_size,), generator=generator).tolist()
    return torch.from_numpy(np.stack([np.asarray(ids[s:s + ctx + 1], dtype=np.int64) for s in starts]))


def eval_windows(ids: np.ndarray, ctx: int, max_tokens: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping blocks: window i = ids[i*ctx : i*ctx + ctx + 1] (the +1 is the last label).

    Every validation token after the first is predicted exactly once; the context restarts at each block.
    """
    n = len(ids) - 1
    if max_tokens:
        n = min(n, max_tokens)
    blocks = n // ctx
    if blocks == 0:
        raise NMLError(f"validation split has {len(ids)} tokens, fewer than one {ctx + 1}-token window")
    arr = np.asarray(ids[:blocks * ctx + 1], dtype=np.int64)
    return torch.from_numpy(np.stack([arr[i * ctx:i * ctx + ctx + 1] for i in range(blocks)]))


def example_prompts(ids: np.ndarray, tokenizer, n: int = 3, length: int = 12) -> list[str]:
    """`n` prompts cut from the validation tokens at evenly spaced points, each starting after a line break
    and ending at a word boundary, so the prompts suit whatever data the run was trained on."""
    newline = tokenizer.encode("\n")[0]
    starts = np.flatnonzero(ids[: max(0, len(ids) - length)] == newline) + 1
    starts = starts[ids[np.minimum(starts, len(ids) - 1)] != newline]  # skip blank lines
    if len(starts) == 0:
        return []
    prompts = []
    for i in np.linspace(0, len(starts) - 1, n + 2)[1:-1].astype(int):
        text = tokenizer.decode(ids[starts[i]: starts[i] + length].astype(np.int64).tolist())
        text = text.split("\n")[0].strip()
        if text and text not in prompts:
            prompts.append(text)
    return prompts


DOC_START_TOKENS = 16  # "tokens 1-16 of a document": where a model that ignores <|endoftext|> pays most


def document_starts(ids: np.ndarray, eot: int, ctx: int, max_tokens: int | None = None,
                    n: int = DOC_START_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """How well a model starts a document (GPT-2's convention: right after <|endoftext|>).

    Returns (windows, mask):
      windows (D, n + 1): each <|endoftext|> followed by its document's first n tokens, scored with the
                          end-of-text token as the only context (how tools prompt a GPT-2);
      mask    (blocks, ctx) over the labels of eval_windows(ids, ctx, max_tokens): True where a label is
              among the first n tokens after an end-of-text token, so "the rest" can be scored apart.
    """
    limit = len(ids) if not max_tokens else min(len(ids), max_tokens + 1)
    arr = np.asarray(ids[:limit], dtype=np.int64)
    eots = np.flatnonzero(arr == eot)
    starts = [e for e in eots if e + n < len(arr) and not (arr[e + 1:e + n + 1] == eot).any()]
    windows = torch.from_numpy(np.stack([arr[e:e + n + 1] for e in starts])) if starts \
        else torch.empty((0, n + 1), dtype=torch.int64)
    last = np.where(arr == eot, np.arange(len(arr)), -1)
    last = np.maximum.accumulate(np.concatenate([[-1], last[:-1]]))   # last end-of-text strictly before p
    dist = np.arange(len(arr)) - last
    near = (last >= 0) & (dist >= 1) & (dist <= n)
    blocks = (min(len(ids) - 1, max_tokens or len(ids)) // ctx)
    mask = torch.from_numpy(near[1:blocks * ctx + 1].reshape(blocks, ctx).copy())
    return windows, mask
