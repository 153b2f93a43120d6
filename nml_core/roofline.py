"""Hardware what-if: projected latency of each width on other devices, and the best width within a budget.

Model (a roofline, calibrated on this machine's measurements; every number it gives is labelled projected):
  prefill, batch B x n tokens:   t = max(F / (peak x u), bytes / bandwidth) + launch
      F      = B * n * FLOPs/token of the width (nml_core.evaluate.cost)
      bytes  = weights (in the device's compute dtype) + the logits written (B * n * V * dtype bytes)
      u      = the fraction of peak this machine reached on that width: u = F / (t_measured * peak_here),
               peak_here = a large fp32 matmul timed here (latency.matmul_gflops). Small widths reach a
               smaller fraction (per-call overhead, thin matmuls), and the projection keeps that.
  decode, one token (batch 1):   t = max(2 * params / (peak x u_decode), weight bytes / bandwidth) + launch
  launch = kernels per forward x per-kernel launch cost (GPUs only; ~12 kernels per layer).
Presets carry vendor peak figures (dense, no sparsity) for the dtype that device runs: fp32 on CPUs
(half-precision compute is far slower on CPUs without native support), fp16/bf16 tensor cores on GPUs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DevicePreset:
    name: str
    peak_tflops: float      # dense, in the dtype below
    bandwidth_gbs: float    # main-memory bandwidth
    dtype_bytes: int        # 4 = fp32 compute, 2 = fp16/bf16
    launch_us: float = 0.0  # per-kernel launch overhead (GPUs)
    note: str = ""


PRESETS = {
    "Raspberry Pi 5": DevicePreset("Raspberry Pi 5", 0.154, 17.0, 4, note="4x Cortex-A76 2.4 GHz NEON fp32, LPDDR4X-4267"),
    "laptop CPU (8-core AVX2)": DevicePreset("laptop CPU (8-core AVX2)", 0.85, 60.0, 4,
                                             note="8 Zen 4 cores ~3.3 GHz AVX2 fp32, LPDDR5"),
    "NVIDIA T4": DevicePreset("NVIDIA T4", 65.0, 320.0, 2, 5.0, "fp16 tensor cores, GDDR6"),
    "NVIDIA A10G": DevicePreset("NVIDIA A10G", 125.0, 600.0, 2, 5.0, "fp16 tensor cores, GDDR6"),
    "NVIDIA A100 40GB": DevicePreset("NVIDIA A100 40GB", 312.0, 1555.0, 2, 4.0, "bf16 tensor cores, HBM2"),
    "NVIDIA H100 SXM": DevicePreset("NVIDIA H100 SXM", 989.0, 3350.0, 2, 4.0, "bf16 tensor cores, HBM3"),
}
KERNELS_PER_LAYER = 12


def _utilisation(flops: float, measured_ms: float | None, peak_here_gflops: float) -> float:
    if not measured_ms or not peak_here_gflops:
        return 0.5  # no measurement here: assume half of peak
    return min(1.0, flops / (measured_ms * 1e-3) / (peak_here_gflops * 1e9))


def project(row: dict, lat: dict | None, preset: DevicePreset, n_layer: int, vocab: int) -> dict:
    """Projected prefill (1 x n, 8 x n) ms and decode ms/token of one width (a pareto.run_points row)."""
    n = (lat or {}).get("prefill_len", 128)
    peak_here = (lat or {}).get("matmul_gflops")
    launch_ms = preset.launch_us * KERNELS_PER_LAYER * n_layer * 1e-3
    weight_bytes = row["params"] * preset.dtype_bytes
    out = {}
    for batch, key in ((1, "prefill_b1_ms"), (8, "prefill_b8_ms")):
        flops = batch * n * row["flops_per_token"]
        u = _utilisation(flops, row.get(key), peak_here)
        compute = flops / (preset.peak_tflops * 1e12 * u)
        memory = (weight_bytes + batch * n * vocab * preset.dtype_bytes) / (preset.bandwidth_gbs * 1e9)
        out[key] = (max(compute, memory)) * 1e3 + launch_ms
    decode_ms = 1e3 / row["decode_tok_s"] if row.get("decode_tok_s") else None
    u = _utilisation(2 * row["params"], decode_ms, peak_here)
    compute = 2 * row["params"] / (preset.peak_tflops * 1e12 * u)
    out["decode_ms"] = max(compute, weight_bytes / (preset.bandwidth_gbs * 1e9)) * 1e3 + launch_ms
    out["decode_tok_s"] = 1e3 / out["decode_ms"]
    out["weights_mb"] = weight_bytes / 1e6
    return out


def measured(row: dict) -> dict:
    """This machine's own figures for a row, in the same keys as `project` (fp32 weights on CPU)."""
    out = {k: row.get(k) for k in ("prefill_b1_ms", "prefill_b8_ms", "decode_tok_s")}
    out["decode_ms"] = 1e3 / row["decode_tok_s"] if row.get("decode_tok_s") else None
    out["weights_mb"] = row["params"] * 4 / 1e6
    return out


def best_within_budget(rows: list[dict], latency_key: str, latency_budget: float | None,
                       memory_budget_mb: float | None, quality: str = "ppl") -> dict | None:
    """The best-quality row whose latency (rows[latency_key], ms) and weights_mb fit the budgets."""
    higher_better = quality != "ppl"
    fits = [r for r in rows if r.get(quality) is not None and r.get(latency_key) is not None
            and (latency_budget is None or r[latency_key] <= latency_budget)
            and (memory_budget_mb is None or r["weights_mb"] <= memory_budget_mb)]
    if not fits:
        return None
    return max(fits, key=lambda r: r[quality]) if higher_better else min(fits, key=lambda r: r[quality])
