"""Measured memory of one call: the peak of bytes held by tensors while it runs, above what was held before.

CUDA keeps that figure (max_memory_allocated). torch's CPU allocator keeps none, so on a CPU the profiler records
every allocation and free with its size, and the peak of their running sum is the same figure. This is what the
what-if's memory model (whatif.memory_mb) is checked against. Peak RSS growth is reported beside it (what the OS
sees), but it depends on whether the allocator reuses pages the process already had: at batch 1 it has read anywhere
from nothing to 1.35x of the bytes really allocated (bench/whatif_accuracy.py --memory).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch

from ..device import resolve, synchronize

STATUS = Path("/proc/self/status")


def peak_allocated_mb(fn, device: str | torch.device = "cpu") -> float:
    """MB: the most bytes the tensors made while `fn()` runs held at once, above those held before it."""
    device = resolve(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 1e6
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # kineto's raw events carry every alloc (+bytes) and free (-bytes); prof.events() drops those outside ops
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    return max(itertools.accumulate((n for _, n in events), initial=0)) / 1e6


def peak_rss_growth_mb(fn) -> float | None:
    """MB: growth of the process's peak resident set over its size before `fn()` (Linux; None elsewhere)."""
    if not STATUS.exists():
        return None

    def status(field: str) -> float:  # /proc/self/status gives kB
        return next(int(line.split()[1]) for line in STATUS.read_text().splitlines() if line.startswith(field)) / 1e3

    before = status("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    fn()
    return status("VmHWM:") - before
