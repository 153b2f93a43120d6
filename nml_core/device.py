"""Where the engine runs: one place that turns `--device auto|cpu|cuda` into a torch device, names it, picks its
compute dtype and thread count.

Every command and loader takes a device spec and resolves it here, so `auto` means the same thing everywhere
(CUDA when a GPU is visible, else the CPU) and a bad choice fails with the same one-line message.
The device *key* names a latency file (`latency/<key>.json`): a CPU is named with its thread count, because
the same CPU at 1 and 2 threads is two different devices for timing.
"""
from __future__ import annotations

import os
import platform
import re

import torch

from .errors import NMLError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "no", "bf16", "fp16")
AUTO_BF16 = 1.2  # --mixed-precision auto takes bf16 on a CPU measured (nml_core.training.precision) this much faster


def resolve(spec: str | torch.device | None = "auto") -> torch.device:
    """`auto` -> cuda if visible else cpu; `cuda` without a GPU -> one-line error."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").lower()
    if spec not in DEVICE_CHOICES and not spec.startswith("cuda:"):
        raise NMLError(f"--device {spec} is not one of {', '.join(DEVICE_CHOICES)}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise NMLError("--device cuda but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(spec)


def mixed_precision(device: torch.device, requested: str = "auto", cpu_bf16_speedup: float | None = None) -> str:
    """accelerate's mixed-precision name for this device. CUDA: bf16 on a GPU that has it (fp16 otherwise).
    A CPU: bf16 autocast where it was measured faster (cpu_bf16_speedup, nml_core.training.precision: auto takes it from
    AUTO_BF16 x on), fp32 ("no") elsewhere; an explicit bf16 is refused where it was measured slower."""
    if requested not in PRECISION_CHOICES:
        raise NMLError(f"--mixed-precision {requested} is not one of {', '.join(PRECISION_CHOICES)}")
    if device.type != "cuda":
        if requested == "fp16":
            raise NMLError("--mixed-precision fp16 has no fast path on a CPU; use --mixed-precision bf16 or no")
        if requested == "auto":
            return "bf16" if cpu_bf16_speedup is not None and cpu_bf16_speedup >= AUTO_BF16 else "no"
        if requested == "bf16" and cpu_bf16_speedup is not None and cpu_bf16_speedup < 1.0:
            raise NMLError(f"--mixed-precision bf16: bf16 autocast ran at {cpu_bf16_speedup:.2f}x the speed of fp32 "
                           "on this CPU (measured: nml_core.training.precision); use --mixed-precision no")
        return requested
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise NMLError("--mixed-precision bf16 but this GPU has no bf16; use --mixed-precision fp16")
    return requested


def set_threads(threads: int | None) -> int:
    """Fix torch's CPU thread count (default: every core this process may use); returns it."""
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads)
    return threads


def _cpuinfo(field: str) -> str | None:
    """The first value of a /proc/cpuinfo field (None where there is no such file or field)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((value.strip() for key, _, value in (line.partition(":") for line in f)
                         if key.strip() == field), None)
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU's model name; where it names no model number (a VM's "AMD EPYC" covers Zen 4 and Zen 5 alike, whose
    LM heads ran 2x apart in this project's measurements), with its family and model, so that measurements of two
    CPUs never share a device key."""
    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    family, model = _cpuinfo("cpu family"), _cpuinfo("model")
    if not any(c.isdigit() for c in name) and family and model:
        return f"{name} (family {family}, model {model})"
    return name


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags (/proc/cpuinfo), empty where unknown."""
    return set((_cpuinfo("flags") or "").split())


def device_info(device: str | torch.device, threads: int) -> dict:
    """{device, device_name, threads, torch, device_key}: what a latency file says it was measured on."""
    dev = resolve(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        key = "cuda-" + name
    else:
        name = cpu_name()
        key = f"cpu-{name}-{threads}t"
    return {"device": dev.type, "device_name": name, "threads": threads, "torch": torch.__version__,
            "device_key": re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")}


def device_label(device: str, threads: int | None, precision: str | None = None) -> str:
    """Where a measurement ran, for a menu: '2 threads' on a CPU, the device kind elsewhere; the precision where
    not fp32."""
    at = f"{threads} threads" if device == "cpu" and threads else device
    return at + (f", {precision}" if precision else "")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch onto the device: pinned and non-blocking on CUDA (the copy overlaps the running step)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work (a timer around a CUDA call must not stop before the kernels do)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- several processes (accelerate launch)

def world_size() -> int:
    """Processes of this run: `accelerate launch --num_processes N` sets WORLD_SIZE; a plain run is 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Only the main process writes run files, metrics, checkpoints and weights."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """A barrier across the run's processes (nothing to wait for in a single-process run)."""
    if world_size() > 1:
        from accelerate import PartialState  # the process group accelerate's Accelerator then reuses (gloo on CPU)
        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()
