"""Latency of stock (extracted) students and of the elastic forward, as a device measures it.

Protocol: fixed thread count, torch.inference_mode, warm-up calls, then `repeats` timed calls per variant,
round-robin across variants so slow drift of a shared machine hits all of them alike, the turn reversed every
other round so each variant runs after both of its neighbours (files measured before 2026-12-03 did not reverse
it); min / median / max reported; CUDA synchronised around each call. Three workloads:
  ttft_b1 / ttft_b8         time to first token: the prefill `generate` runs, over a (1 or 8) x prefill_len batch
                            (prefill_len = min(128, n_positions)) with the KV cache, keeping only the last
                            position's logits (logits_to_keep=1) (and ttft_b32 on CUDA)
  prefill_b1 / prefill_b8   scoring: the same forward computing the logits of every position (perplexity,
                            classification, evaluation), no cache (and prefill_b32 on CUDA)
  decode_tok_s              greedy `generate` with KV cache, batch 1, 16-token prompt, 32 new tokens
                            (fewer if the model's context is shorter)
  elastic_prefill_b1        the batch-1 scoring forward through ElasticGPT2 (shows its overhead)
  decode_static_tok_s       (CUDA only) the same decode with HF's static KV cache and compiled forward
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from transformers import GPT2LMHeadModel

from ..arch.gpt2 import cost
from ..device import device_info, resolve, set_threads, synchronize
from ..nesting.elastic import ElasticGPT2, extract_student
from ..nesting.depth import as_subnet, subnet_key
from ..nesting.width import WidthSpec
from ..store.latency_report import LatencyReport, LatencyRow, Throughput, Timing
from ..store.runs import now

PREFILL_LEN = 128
DECODE_PROMPT, DECODE_NEW = 16, 32


def interleaved_timings(fns: dict[str, Callable], device: str, repeats: int = 10, warmup: int = 2,
                        before: Callable[[str], object] | None = None) -> dict[str, dict]:
    """name -> {min_ms, median_ms, max_ms, repeats}; each round calls every fn once, in turn, and every other round
    in the reverse turn: a call's time depends on what ran just before it (the memory a large output left freed,
    the caches), so each fn is measured after both of its neighbours, not always after the same one. `before`:
    called with the name of the fn about to be timed, untimed, ahead of every timed call (evict_caches: each call
    as it runs after other work)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns.items())
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        synchronize(device)
        for i in range(repeats):
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                if before:
                    before(name)
                    synchronize(device)
                t = time.perf_counter()
                fn()
                synchronize(device)
                times[name].append((time.perf_counter() - t) * 1e3)
    return {k: {"min_ms": round(min(v), 3), "median_ms": round(statistics.median(v), 3), "max_ms": round(max(v), 3),
                "repeats": len(v)} for k, v in times.items()}


EVICT_BYTES = 128 * 2 ** 20  # well past the last-level cache of this project's CPUs (32 MB on a Zen 4 CCD)


def evict_caches() -> Callable[[], None]:
    """A call that rewrites EVICT_BYTES of host memory: the CPU's caches then hold none of what ran before it, as
    `bench` leaves them for each call (every model's calls interleaved: the others' weights and logits pass
    through the caches in between)."""
    buffer = torch.ones(EVICT_BYTES // 4)
    return lambda: buffer.mul_(1.0)


def matmul_gflops(device: str, n: int = 1024, repeats: int = 10) -> float:
    """Achievable fp32 GFLOP/s here: the median of timed n x n matmuls (each latency file records it)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    t = interleaved_timings({"mm": lambda: a @ b}, device, repeats=repeats)["mm"]["median_ms"]
    return round(2 * n ** 3 / (t * 1e-3) / 1e9, 1)


def prefill_len(cfg) -> int:
    return min(PREFILL_LEN, cfg.n_positions)


def decode_new_tokens(cfg) -> int:
    return min(DECODE_NEW, cfg.n_positions - DECODE_PROMPT)


def prefill_fn(model_call: Callable, batch: int, cfg, device: str) -> Callable:
    x = torch.randint(0, cfg.vocab_size, (batch, prefill_len(cfg)), generator=torch.Generator().manual_seed(0)).to(device)
    return lambda: model_call(x)


def decode_fn(model, device: str, static_cache: bool = False) -> Callable:
    """Greedy decode of decode_new_tokens; static_cache: HF's static KV cache (transformers compiles the
    forward), the fast path on a GPU."""
    prompt = torch.randint(0, model.config.vocab_size, (1, DECODE_PROMPT),
                           generator=torch.Generator().manual_seed(0)).to(device)
    eos, new = model.config.eos_token_id, decode_new_tokens(model.config)
    cache = {"cache_implementation": "static"} if static_cache else {}
    return lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                  min_new_tokens=new, do_sample=False, pad_token_id=eos, **cache)


def tokens_per_s(stats: dict, tokens: int) -> Throughput:
    """Turn call times into throughput (min time -> max throughput)."""
    return Throughput(min=round(tokens / stats["max_ms"] * 1e3, 2), median=round(tokens / stats["median_ms"] * 1e3, 2),
                      max=round(tokens / stats["min_ms"] * 1e3, 2))


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bench_widths(model: GPT2LMHeadModel, axes, widths: list, device: str = "auto", threads: int | None = None,
                 repeats: int = 10, precision: str = "fp32", layer_rank: list[int] | None = None) -> LatencyReport:
    """Time every width (or (width, depth) pair) of `model`: extracted students and the elastic forward,
    interleaved in one process, with weights and compute in `precision` (bf16: a device of its own, key
    <device>-bf16)."""
    device = resolve(device).type
    threads = set_threads(threads)
    model = model.to(device, PRECISIONS[precision]).eval()
    cfg = model.config
    elastic = ElasticGPT2(model, axes, layer_rank).eval()
    fns = {}
    batches = (1, 8, 32) if device == "cuda" else (1, 8)  # batch 32: where a GPU starts to pay
    subnets = [as_subnet(x) for x in widths]
    for w, d in subnets:
        key = subnet_key(w, d)
        s = extract_student(model, WidthSpec(w, axes), elastic.dims(w, d).layers).to(PRECISIONS[precision]).eval()
        # the elastic forward next to the extracted one of the same batch (after it, and before it in the reversed
        # rounds): both find the allocator in the same states (after a large scoring batch the next call's logits
        # may land in fresh pages, a cost of its own that would be billed to whichever call came next)
        fns[f"{key}/prefill_b1"] = prefill_fn(lambda x, s=s: s(input_ids=x, use_cache=False), 1, cfg, device)
        fns[f"{key}/elastic_prefill_b1"] = prefill_fn(lambda x, w=w, d=d: elastic(x, width=w, depth=d, use_cache=False),
                                                      1, cfg, device)
        for b in batches:
            fns[f"{key}/ttft_b{b}"] = prefill_fn(lambda x, s=s: s(input_ids=x, use_cache=True, logits_to_keep=1),
                                                 b, cfg, device)
            if b > 1:
                fns[f"{key}/prefill_b{b}"] = prefill_fn(lambda x, s=s: s(input_ids=x, use_cache=False), b, cfg, device)
        fns[f"{key}/decode"] = decode_fn(s, device)
        if device == "cuda":  # the static-cache decode beside the eager one
            fns[f"{key}/decode_static"] = decode_fn(s, device, static_cache=True)
    times = interleaved_timings(fns, device, repeats=repeats)
    info = device_info(device, threads)
    if precision != "fp32":
        info.update(device_key=f"{info['device_key']}-{precision}", precision=precision)
    rows = []
    for w, d in subnets:
        key = subnet_key(w, d)
        measures = [f"{kind}_b{b}" for kind in ("ttft", "prefill") for b in batches] + ["elastic_prefill_b1"]
        static = times.get(f"{key}/decode_static")
        rows.append(LatencyRow(width=w, depth=d, **cost(cfg, elastic.dims(w, d), prefill_len(cfg)),
                               timings={f"{m}_ms": Timing(**times[f"{key}/{m}"]) for m in measures
                                        if f"{key}/{m}" in times},
                               decode=tokens_per_s(times[f"{key}/decode"], decode_new_tokens(cfg)),
                               decode_static=tokens_per_s(static, decode_new_tokens(cfg)) if static else None))
    return LatencyReport(**info, measured=now(), protocol=__doc__.strip(), prefill_len=prefill_len(cfg),
                         decode_new_tokens=decode_new_tokens(cfg), matmul_gflops=matmul_gflops(device), rows=rows)
