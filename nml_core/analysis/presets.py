"""Presets: profiles of devices out of reach, made from vendor peaks and bandwidths, with host costs taken from a
CPU measured here (preset_base). Every field says whether it was measured (from that CPU) or assumed.
"""
from __future__ import annotations

from .device_profile import HOST_KINDS, DeviceProfile, HostCost, MatmulModel

# Vendor figures: dense fp32 (CUDA matmuls run in full fp32 unless TF32 is switched on) and memory bandwidth
PRESETS = {
    "Raspberry Pi 5": dict(cpu=True, peak_gflops=153.6, bandwidth_gbs=17.0, host_factor=2.5,
                           note="4x Cortex-A76 2.4 GHz, NEON fp32 FMA; LPDDR4X-4267"),
    "laptop CPU (8-core AVX2)": dict(cpu=True, peak_gflops=845.0, bandwidth_gbs=60.0, host_factor=0.6,
                                     note="8 Zen 4 cores ~3.3 GHz, AVX2 fp32 FMA; LPDDR5"),
    "NVIDIA T4": dict(cpu=False, peak_gflops=8_100.0, bandwidth_gbs=320.0, note="fp32 CUDA cores; GDDR6"),
    "NVIDIA L4": dict(cpu=False, peak_gflops=30_300.0, bandwidth_gbs=300.0, note="fp32 CUDA cores; GDDR6"),
    "NVIDIA A10G": dict(cpu=False, peak_gflops=31_200.0, bandwidth_gbs=600.0, note="fp32 CUDA cores; GDDR6"),
    "NVIDIA A100 40GB": dict(cpu=False, peak_gflops=19_500.0, bandwidth_gbs=1555.0, note="fp32 CUDA cores; HBM2"),
    "NVIDIA H100 SXM": dict(cpu=False, peak_gflops=67_000.0, bandwidth_gbs=3350.0, note="fp32 CUDA cores; HBM3"),
    "NVIDIA H200": dict(cpu=False, peak_gflops=67_000.0, bandwidth_gbs=4800.0, note="fp32 CUDA cores; HBM3e"),
}
# a measured device's class, by device key: the preset bench/whatif_accuracy.py checks against its measurement
PRESET_FOR_KEY = {"cuda-nvidia-h100-80gb-hbm3": "NVIDIA H100 SXM", "cuda-nvidia-h100-sxm": "NVIDIA H100 SXM",
                  "cuda-nvidia-h200": "NVIDIA H200", "cuda-nvidia-l4": "NVIDIA L4", "cuda-tesla-t4": "NVIDIA T4",
                  "cuda-nvidia-a10g": "NVIDIA A10G", "cuda-nvidia-a100-sxm4-40gb": "NVIDIA A100 40GB"}
SUSTAINED = 0.5         # assumed: large matmuls reach half the vendor peak
LAUNCH_US = 5.0         # assumed: one CUDA kernel launch, on top of the host's dispatch
KERNEL_FLOOR_US = 3.0   # assumed: the shortest matmul kernel on a GPU
BANDWIDTH_REACHED = 0.8  # assumed: share of the vendor bandwidth a large copy reaches
TABLE_FLOPS = [10.0 ** e for e in range(3, 14)]  # sizes a preset's rate model is tabulated at (for display)


def preset_profile(name: str, base: DeviceProfile) -> DeviceProfile:
    """A profile of a device we cannot measure: its vendor peaks, with host costs taken from `base`, a profile
    measured here (a CPU preset scales this CPU's host costs by host_factor; a GPU's host side is CPU dispatch
    plus one kernel launch per op). Every field is marked measured (from base) or assumed.

    A GPU's matmul rate is a model, not a table: a kernel floor plus the sustained rate, so it holds at every size
    (a table taken at the base CPU's sizes ended where they end, and large batches were clamped there)."""
    spec = PRESETS[name]
    sustained = spec["peak_gflops"] * SUSTAINED
    model = None
    if spec["cpu"]:
        host = {k: HostCost(base.host(k).fixed_us * spec["host_factor"], base.host(k).per_layer_us * spec["host_factor"])
                for k in HOST_KINDS}
        top = max(r for _, r in base.matmul_fp32)
        table = [[f, r * sustained / top] for f, r in base.matmul_fp32]
    else:
        host = {k: HostCost(base.host(k).fixed_us + base.ops_fixed * LAUNCH_US,
                            base.host(k).per_layer_us + base.ops_per_layer * LAUNCH_US) for k in HOST_KINDS}
        model = MatmulModel(floor_us=KERNEL_FLOOR_US, sustained_gflops=sustained)
        table = [[f, f / (KERNEL_FLOOR_US * 1e3 + f / sustained)] for f in TABLE_FLOPS]
    scaled = f"assumed (measured on {base.device_key}, scaled)"
    return DeviceProfile(
        device_key="preset-" + name.lower().replace(" ", "-"), device_name=name, device="cpu" if spec["cpu"] else "cuda",
        kind="preset", note=spec["note"], **host, ops_per_layer=base.ops_per_layer, ops_fixed=base.ops_fixed,
        matmul_fp32=table, matmul_model=model, **_preset_bandwidths(spec, base), asynchronous=not spec["cpu"],
        based_on=base.device_key,
        fields={"prefill": scaled, "ttft": scaled, "decode": scaled,
                "matmul_fp32": f"assumed ({SUSTAINED:.0%} of the vendor peak {spec['peak_gflops']:g} GFLOP/s"
                               + (f", {KERNEL_FLOOR_US:g} us kernel floor)" if not spec["cpu"] else ")"),
                "bandwidth_gbs": f"assumed ({BANDWIDTH_REACHED:.0%} of the vendor {spec['bandwidth_gbs']:g} GB/s)",
                "read_gbs": "assumed (as bandwidth_gbs; CPUs: scaled from the measured ratios)",
                "fresh_write_gbs": "assumed (GPUs: a caching allocator, no page faults)",
                "ops_per_layer": "measured", "ops_fixed": "measured"})


def _preset_bandwidths(spec: dict, base: DeviceProfile) -> dict[str, float]:
    """A GPU reads and writes at the vendor bandwidth (reached share); a CPU preset keeps the measured CPU's
    ratios of read / write / fresh-write to copy bandwidth."""
    bw = spec["bandwidth_gbs"] * BANDWIDTH_REACHED
    keys = ("bandwidth_gbs", "read_gbs", "write_gbs", "fresh_write_gbs", "fresh_output_gbs", "gemv_gbs")
    if not spec["cpu"]:
        return {k: bw for k in keys}
    return {k: bw * (getattr(base, k) or base.read_gbs) / base.bandwidth_gbs for k in keys}


def preset_base(profiles: dict[str, DeviceProfile]) -> DeviceProfile | None:
    """The measured profile a preset takes its host costs from: the CPU profile with the fastest host (fewest
    microseconds of a 6-layer prefill's Python and dispatch), since a GPU or a faster CPU is driven by a fast core;
    one rule wherever presets are made, so adding a profile of a slower CPU changes no projection."""
    cpus = [p for _, p in sorted(profiles.items()) if p.kind == "measured" and p.device == "cpu"]
    return min(cpus, key=lambda p: p.prefill.fixed_us + 6 * p.prefill.per_layer_us, default=None)
