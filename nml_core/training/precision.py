"""Which precision a CPU trains fastest in, decided by measurement on that CPU, never by assumption.

bf16 autocast is 1.3x faster than fp32 on a training step on an Intel Xeon with AMX-BF16 and far slower on CPUs
without native bf16, so `--mixed-precision auto` on a CPU takes bf16 only where a short probe measured it
>= device.AUTO_BF16 x faster. The probe (a few seconds: one width's distillation step of a small GPT-2, fp32 and bf16
autocast interleaved) runs once per device key (CPU model + threads) and is kept: in the device profile when
`profile-device` measured it, else in ~/.cache/nml_core/precision/<key>.json. A VM may name two CPUs alike ("AMD
EPYC" was both a CPU without native bf16 and one with AVX512-BF16 on this project's machines), so a kept probe
also records the CPU's bf16 instructions and is used only on a CPU that has the same ones.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from .. import device as devices
from ..files import atomic_write_json

INFERENCE_PPL_TOLERANCE = 0.005  # bf16 inference must keep perplexity within 0.5% of fp32's to be chosen
PROBE_SHAPE = dict(n_layer=4, n_embd=256, n_head=8, n_positions=128)  # GPT-2's vocabulary: the head is measured
PROBE_BATCH = (4, 128)
CACHE = Path.home() / ".cache" / "nml_core" / "precision"
PROFILE_ROOTS = ("cached_runs", "runs")  # where device profiles (which carry the probe) are looked for


def bf16_probe(repeats: int = 5) -> dict:
    """Median ms of one width's distillation step (forward, the fused KD + CE loss, backward, AdamW) in fp32
    and under bf16 autocast on this CPU, interleaved so drift hits both alike; speedup = fp32 / bf16."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .losses import DenseTarget, nested_kd_loss, soft_targets
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**PROBE_SHAPE, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model.config.vocab_size, PROBE_BATCH)
    target = DenseTarget.from_logprobs(soft_targets(torch.randn(*PROBE_BATCH, model.config.vocab_size), 2.0), True)

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=x).logits
        nested_kd_loss(logits, x, target, 0.5, 2.0)[0].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = {False: [], True: []}
    for i in range(repeats + 1):  # round 0 warms up
        for bf16 in (False, True):
            t = time.perf_counter()
            step(bf16)
            if i:
                times[bf16].append((time.perf_counter() - t) * 1e3)
    fp32, bf16 = statistics.median(times[False]), statistics.median(times[True])
    return {"fp32_ms": round(fp32, 2), "bf16_ms": round(bf16, 2), "speedup": round(fp32 / bf16, 3),
            "bf16_isa": bf16_isa(),
            "workload": f"one width's KD step of a {PROBE_SHAPE['n_layer']}L/{PROBE_SHAPE['n_embd']}d GPT-2 "
                        f"(vocab 50257), batch {PROBE_BATCH[0]}x{PROBE_BATCH[1]}", "torch": torch.__version__}


def bf16_isa() -> list[str]:
    """The CPU's native bf16 instructions, as /proc/cpuinfo flags (AVX512-BF16, AMX-BF16); [] where none or unknown."""
    return sorted(devices.cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _usable(probe: dict | None) -> bool:
    """A kept probe speaks for this CPU: same torch and, where it recorded them (probes kept before did not), the
    same bf16 instructions."""
    return bool(probe) and probe.get("torch") == torch.__version__ and probe.get("bf16_isa", bf16_isa()) == bf16_isa()


def cpu_bf16_speedup(threads: int | None = None) -> float:
    """This CPU's measured bf16-autocast speed-up over fp32: from a stored probe, else measured now and kept."""
    key = devices.device_info("cpu", threads or torch.get_num_threads())["device_key"]
    for root in PROFILE_ROOTS:
        probe = _read(Path(root) / "device_profiles" / f"{key}.json").get("bf16_probe")
        if _usable(probe):
            return probe["speedup"]
    probe = _read(CACHE / f"{key}.json")
    if not _usable(probe):
        probe = bf16_probe()
        atomic_write_json(CACHE / f"{key}.json", probe)
    return probe["speedup"]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
