"""Latency of stock (extracted) students and of the elastic forward, as a device measures it.

Protocol: fixed thread count, torch.inference_mode, warm-up calls, then `repeats` timed calls per variant,
round-robin across variants so slow drift of a shared machine hits all of them alike; min / median / max
reported; CUDA synchronised around each call.
  prefill_b1 / prefill_b8   one forward over a (1 or 8) x prefill_len batch, prefill_len = min(128, n_positions)
  decode_tok_s              greedy `generate` with KV cache, batch 1, 16-token prompt, 32 new tokens
                            (fewer if the model's context is shorter)
  elastic_prefill_b1        the same batch-1 prefill through ElasticGPT2 views (shows slicing overhead)
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from typing import Callable

import torch

PREFILL_LEN = 128
DECODE_PROMPT, DECODE_NEW = 16, 32


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str, threads: int) -> dict:
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        key = "cuda-" + name
    else:
        name = cpu_name()
        key = f"cpu-{name}-{threads}t"
    return {"device": device, "device_name": name, "threads": threads, "torch": torch.__version__,
            "device_key": re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleaved_timings(fns: dict[str, Callable], device: str, repeats: int = 10, warmup: int = 2) -> dict[str, dict]:
    """name -> {min_ms, median_ms, max_ms, repeats}; each round calls every fn once, in turn."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        _sync(device)
        for _ in range(repeats):
            for name, fn in fns.items():
                t = time.perf_counter()
                fn()
                _sync(device)
                times[name].append((time.perf_counter() - t) * 1e3)
    return {k: {"min_ms": round(min(v), 3), "median_ms": round(statistics.median(v), 3), "max_ms": round(max(v), 3),
                "repeats": len(v)} for k, v in times.items()}


def matmul_gflops(device: str, n: int = 1024, repeats: int = 10) -> float:
    """Achievable fp32 GFLOP/s here: the median of timed n x n matmuls (the roofline's peak for this machine)."""
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


def decode_fn(model, device: str) -> Callable:
    prompt = torch.randint(0, model.config.vocab_size, (1, DECODE_PROMPT),
                           generator=torch.Generator().manual_seed(0)).to(device)
    eos, new = model.config.eos_token_id, decode_new_tokens(model.config)
    return lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                                  min_new_tokens=new, do_sample=False, pad_token_id=eos)


def set_threads(threads: int | None) -> int:
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    return threads


def tokens_per_s(stats: dict, tokens: int) -> dict:
    """Turn call times into throughput (min time -> max throughput)."""
    return {"min": round(tokens / stats["max_ms"] * 1e3, 2), "median": round(tokens / stats["median_ms"] * 1e3, 2),
            "max": round(tokens / stats["min_ms"] * 1e3, 2)}
