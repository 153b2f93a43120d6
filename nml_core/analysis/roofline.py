"""Hardware what-if: projected latency of each width on other devices, and the best width within a budget.

Model (a roofline plus host overhead, calibrated on this machine; every number it gives is labelled projected):

  Calibration. Over a run's widths, this machine's measured times are fitted as
      t(w) = c + F(w) / R          (least squares, c >= 0)
  c is the fixed per-call cost (Python, dispatch, kernel launches: what a tiny model still pays), R the
  achieved FLOP rate. u = R / peak_here is the fraction of peak reached, peak_here a timed fp32 matmul
  (latency.matmul_gflops). One fit per measure: prefill 1 x n, prefill 8 x n, decode one token.

  Projection on a device with peak P, bandwidth B:
      t = c * host_factor + max(F / (P * u), bytes / B) + kernels * launch_us
      F      FLOPs of the call: batch * n * FLOPs/token for a prefill, 2 * params for one decoded token
      bytes  weights in the device's compute dtype (+ the logits written, batch * n * V * dtype, for prefill)
  The host overhead c stays: a faster accelerator does not remove Python and dispatch time, which is why
  small widths gain little on a GPU. host_factor scales it for a slower host CPU (Raspberry Pi).
Presets carry vendor peak figures (dense, no sparsity) for the dtype that device runs: fp32 on CPUs
(half-precision compute is far slower on CPUs without native support), fp16/bf16 tensor cores on GPUs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DevicePreset:
    name: str
    peak_tflops: float       # dense, in the dtype below
    bandwidth_gbs: float     # main-memory bandwidth
    dtype_bytes: int         # 4 = fp32 compute, 2 = fp16/bf16
    launch_us: float = 0.0   # per-kernel launch cost (GPUs)
    host_factor: float = 1.0  # host-side overhead relative to this machine's CPU
    note: str = ""


PRESETS = {
    "Raspberry Pi 5": DevicePreset("Raspberry Pi 5", 0.154, 17.0, 4, host_factor=2.5,
                                   note="4x Cortex-A76 2.4 GHz NEON fp32, LPDDR4X-4267"),
    "laptop CPU (8-core AVX2)": DevicePreset("laptop CPU (8-core AVX2)", 0.85, 60.0, 4,
                                             note="8 Zen 4 cores ~3.3 GHz AVX2 fp32, LPDDR5"),
    "NVIDIA T4": DevicePreset("NVIDIA T4", 65.0, 320.0, 2, 5.0, note="fp16 tensor cores, GDDR6"),
    "NVIDIA A10G": DevicePreset("NVIDIA A10G", 125.0, 600.0, 2, 5.0, note="fp16 tensor cores, GDDR6"),
    "NVIDIA A100 40GB": DevicePreset("NVIDIA A100 40GB", 312.0, 1555.0, 2, 4.0, note="bf16 tensor cores, HBM2"),
    "NVIDIA H100 SXM": DevicePreset("NVIDIA H100 SXM", 989.0, 3350.0, 2, 4.0, note="bf16 tensor cores, HBM3"),
}
KERNELS_PER_LAYER = 12
MEASURES = {"prefill_b1_ms": 1, "prefill_b8_ms": 8, "decode_ms": None}  # batch of each prefill; None = decode


def call_flops(row: dict, measure: str, n: int) -> float:
    batch = MEASURES[measure]
    return 2 * row["params"] if batch is None else batch * n * row["flops_per_token"]


def calibrate(rows: list[dict], measure: str, n: int, peak_here_gflops: float | None) -> dict | None:
    """Fit t = c + F / R over the rows measured here -> {overhead_ms, utilisation}; None without data."""
    pts = sorted({(call_flops(r, measure, n), r[measure]) for r in rows if r.get(measure)})  # one per shape
    if not pts:
        return None
    if len(pts) == 1 or len({f for f, _ in pts}) == 1:
        c, slope = 0.0, pts[0][1] / pts[0][0]
    else:
        mf = sum(f for f, _ in pts) / len(pts)
        mt = sum(t for _, t in pts) / len(pts)
        slope = sum((f - mf) * (t - mt) for f, t in pts) / sum((f - mf) ** 2 for f, _ in pts)
        c = mt - slope * mf
        if c < 0 or slope <= 0:  # noisy or odd data: no fixed cost, rate through the largest point
            f_max, t_max = max(pts)
            c, slope = 0.0, t_max / f_max
    rate = 1e3 / slope  # FLOP/s
    u = min(1.0, rate / (peak_here_gflops * 1e9)) if peak_here_gflops else 0.5
    return {"overhead_ms": c, "utilisation": u, "rate_gflops": rate / 1e9}


def project(rows: list[dict], lat: dict | None, preset: DevicePreset, n_layer: int, vocab: int) -> list[dict]:
    """Projected prefill 1 x n, 8 x n (ms) and decode (ms/token, tokens/s) of every row on `preset`.

    rows: pareto.run_points rows of one run (with this machine's measured figures where it has them)."""
    n = (lat or {}).get("prefill_len", 128)
    peak_here = (lat or {}).get("matmul_gflops")
    rows = [{**r, "decode_ms": 1e3 / r["decode_tok_s"] if r.get("decode_tok_s") else None} for r in rows]
    fits = {m: calibrate(rows, m, n, peak_here) for m in MEASURES}
    launch_ms = preset.launch_us * KERNELS_PER_LAYER * n_layer * 1e-3
    out = []
    for r in rows:
        weight_bytes = r["params"] * preset.dtype_bytes
        p = {"weights_mb": weight_bytes / 1e6}
        for m, batch in MEASURES.items():
            fit = fits[m] or {"overhead_ms": 0.0, "utilisation": 0.5}
            out_bytes = 0 if batch is None else batch * n * vocab * preset.dtype_bytes
            compute = call_flops(r, m, n) / (preset.peak_tflops * 1e12 * fit["utilisation"])
            memory = (weight_bytes + out_bytes) / (preset.bandwidth_gbs * 1e9)
            p[m] = fit["overhead_ms"] * preset.host_factor + max(compute, memory) * 1e3 + launch_ms
        p["decode_tok_s"] = 1e3 / p["decode_ms"]
        out.append(p)
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
