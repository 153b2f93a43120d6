"""How far is the hardware what-if from what devices really do? Leave-one-out: every (run, device, measure,
width) with a measured latency is projected from a profile of that device alone (profile-device's
microbenchmarks on tiny models, or for an unmeasurable device its preset built on this CPU's profile) —
never from the latencies it is checked against.

  python -m bench.whatif_accuracy [--roots cached_runs runs] [--write] [--without FIELD ...]

Prints the error table per device and measure, and last the line
  what-if error: median X%, worst Y% over N measurements
--without head_fp32 head_b8_fp32 gemv_by_k projects as if the profiles lacked those fields: what they are worth on
the same measurements.
--write stores the per-device-class errors in cached_runs/device_profiles/whatif_error.json, which the
Pareto page shows as the "± x%" of its projections.
--large-batch prints each GPU preset's projected prefill at batch 1-128 against the FLOP time at its rate.
--memory [--device cpu|cuda] checks the memory model instead: for each width of the first nested run with weights
and batch 1, 8 and 32, a fresh process loads the extracted student and runs one 128-token prefill with the KV
cache; the peak of the bytes allocated during it (analysis.memory: max_memory_allocated on CUDA, the allocator's
own events on a CPU) is compared with the projected KV cache + peak activations, and the last line reads
  memory model: median error X%, worst Y% over N measurements
Peak RSS growth is printed beside it (what the OS sees; page reuse makes it noisy at batch 1).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from nml_core.analysis.device_profile import DeviceProfile, load_profiles, profiles_dir
from nml_core.analysis.profile import LATER_FIELDS
from nml_core.analysis.presets import PRESET_FOR_KEY, PRESETS, preset_base, preset_profile
from nml_core.analysis.whatif import memory_mb, project
from nml_core.nesting.depth import subnet_dims
from nml_core.nesting.width import WidthSpec
from nml_core.files import atomic_write_json
from nml_core.store.models import run_config
from nml_core.store.latency_report import LatencyReport
from nml_core.store.runs import find_runs, has_weights

MEASURES = ("ttft_b1_ms", "ttft_b8_ms", "ttft_b32_ms", "prefill_b1_ms", "prefill_b8_ms", "prefill_b32_ms", "decode_ms")


def profile_for(key: str, profiles: dict[str, DeviceProfile]) -> tuple[DeviceProfile | None, str]:
    if key in profiles:
        return profiles[key], "measured profile"
    base = preset_base(profiles)
    if key in PRESET_FOR_KEY and base:
        return preset_profile(PRESET_FOR_KEY[key], base), f"preset {PRESET_FOR_KEY[key]} (host from {base.device_key})"
    return None, "no profile"


# the figures a profile may lack (host_evicted says how its host costs were timed: no figure to take away)
OPTIONAL_FIELDS = sorted({f for fields in LATER_FIELDS.values() for f in fields} - {"host_evicted"})


def check(roots: list[str], without: tuple[str, ...] = ()) -> list[dict]:
    """Every measured latency against its projection; `without`: the profiles read as if they lacked those
    optional fields (what a field is worth, on the same measurements)."""
    profiles = {k: dataclasses.replace(p, **dict.fromkeys(without)) for k, p in load_profiles(*map(Path, roots)).items()}
    rows = []
    for run in find_runs(*roots):
        if run.kind != "nested" or run.status != "done":
            continue
        for key, lat in run.latency().items():
            profile, source = profile_for(key, profiles)
            if profile is None:
                print(f"skipped {run.name} on {key}: {source}")
                continue
            rows += compare(run.name, run_config(run), run.axes, lat, profile, source)
    return rows


def compare(run_name: str, cfg, axes, lat: LatencyReport, profile: DeviceProfile, source: str) -> list[dict]:
    """One row per (width, measure) of a latency report: measured, projected from `profile`, and the error."""
    rows = []
    for r in lat.rows:
        dims = subnet_dims(cfg, axes, r.width, r.depth)
        proj = project(profile, cfg, dims, n=lat.prefill_len, batches=(1, 8, 32))
        for m in MEASURES:
            got = r.ms(m)
            if got:
                rows.append({"run": run_name, "device": lat.device_key, "class": lat.device, "source": source,
                             "width": r.width, "depth": r.depth, "measure": m, "measured": got,
                             "projected": proj[m], "error": proj[m] / got - 1})
    return rows


CHILD = """
import sys, torch
from nml_core.analysis.memory import peak_allocated_mb, peak_rss_growth_mb
from nml_core.device import resolve
from nml_core.nesting.elastic import extract_student
from nml_core.nesting.width import WidthSpec
from nml_core.store.models import load_run_model, shape_model
from nml_core.store.runs import has_weights, load_run
run = load_run(sys.argv[1], require_model=False); width, batch, device = float(sys.argv[2]), int(sys.argv[3]), resolve(sys.argv[4])
# memory depends on the shape alone: a run that ships no weights is measured with random ones at its shape
model = load_run_model(run)[0] if has_weights(run.model_dir) else shape_model(run)
student = extract_student(model, WidthSpec(width, run.axes)).eval().to(device)
n = min(128, student.config.n_positions)
x = torch.randint(0, student.config.vocab_size, (batch, n), device=device)
def prefill():
    with torch.inference_mode():
        student(input_ids=x, use_cache=True)  # logits + the KV cache, as the projection counts them
if device.type == "cuda":
    prefill()  # warm-up: cuBLAS's one-time workspace is not the model's memory
peak = peak_allocated_mb(prefill, device)
rss = peak_rss_growth_mb(prefill) if device.type == "cpu" else None
print(peak, rss if rss is not None else "nan")
"""


def first_run_with_weights(roots: list[str]):
    return next(r for r in find_runs(*roots) if r.kind == "nested" and r.status == "done" and has_weights(r.model_dir))


def check_memory(run, device: str = "cpu", batches=(1, 8, 32)) -> list[dict]:
    """Projected KV cache + peak activations of a 128-token prefill against the measured peak of bytes
    allocated during it (CUDA: max_memory_allocated; CPU: the allocator's own events), and RSS growth on CPU.
    A fresh process per point, so nothing allocated before skews it."""
    import subprocess
    import sys
    cfg = run_config(run)
    rows = []
    for width in run.widths:
        for batch in batches:
            out = subprocess.run([sys.executable, "-c", CHILD, str(run.path), str(width), str(batch), device],
                                 capture_output=True, text=True, check=True).stdout.split()
            proj = memory_mb(cfg, WidthSpec(width, frozenset(run.axes)).dims(cfg), batch, min(128, cfg.n_positions))
            projected = proj["kv_cache_mb"] + proj["activations_mb"]
            rows.append({"width": width, "batch": batch, "measured": float(out[0]), "rss": float(out[1]),
                         "projected": projected, "error": projected / max(float(out[0]), 1e-9) - 1})
    return rows


def preset_table(rows: list[dict]) -> dict:
    """Every preset against every measurement of its device class the runs ship, per measure (each batch apart);
    prints the table and returns {preset: {measure: summary}} ({} for a preset no shipped measurement checks)."""
    print("\n| preset | checked against | measure | median error | worst | measurements |\n|---|---|---|---|---|---|")
    out = {}
    for name in PRESETS:
        mine = [r for r in rows if r["source"].startswith(f"preset {name} ")]
        out[name] = {m: summary([r for r in mine if r["measure"] == m]) for m in MEASURES
                     if any(r["measure"] == m for r in mine)}
        if not mine:
            print(f"| {name} | no measurement shipped | — | — | — | 0 |")
        for m, s in out[name].items():
            devices = ", ".join(sorted({r["device"] for r in mine if r["measure"] == m}))
            bias = statistics.median(r["error"] for r in mine if r["measure"] == m)
            print(f"| {name} | {devices} | {m} | {s['median']:.0%} (bias {bias:+.0%}) | {s['worst']:.0%} | {s['n']} |")
    return out


def large_batch_table(roots: list[str]) -> None:
    """Each GPU preset's projected prefill (x128) at batch 1 to 128 for width 1 of the first nested run and the
    GPT-2-small shape, beside the FLOP time at the preset's sustained rate (the floor a large batch approaches)."""
    from transformers import GPT2Config

    from nml_core.analysis.presets import SUSTAINED
    from nml_core.analysis.whatif import forward_us
    from nml_core.arch.gpt2 import cost
    profiles = load_profiles(*map(Path, roots))
    base = preset_base(profiles)
    run = first_run_with_weights(roots)
    shapes = {run.name: (run_config(run), run.axes), "GPT-2 small": (GPT2Config(), ("ffn", "heads", "hidden"))}
    print("\n| preset | model | batch x 128 | projected ms | FLOP time at the sustained rate, ms | ratio |\n|---|---|---|---|---|---|")
    for name, spec in PRESETS.items():
        if spec["cpu"]:
            continue
        prof = preset_profile(name, base)
        for label, (cfg, axes) in shapes.items():
            dims = WidthSpec(1.0, frozenset(axes)).dims(cfg)
            for b in (1, 8, 32, 128):
                ms = forward_us(prof, cfg, dims, b, 128) / 1e3
                floor = cost(cfg, dims, 128)["flops_per_token"] * b * 128 / (spec["peak_gflops"] * SUSTAINED) / 1e6
                print(f"| {name} | {label} | {b} | {ms:.2f} | {floor:.2f} | {ms / floor:.2f}x |")


def summary(rows: list[dict]) -> dict:
    errs = [abs(r["error"]) for r in rows]
    return {"median": statistics.median(errs), "worst": max(errs), "n": len(errs)} if errs else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roots", nargs="+", default=["cached_runs", "runs"])
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--large-batch", action="store_true", help="GPU presets' projections at batch 1-128 vs FLOP time")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where --memory measures")
    ap.add_argument("--without", nargs="+", default=[], choices=OPTIONAL_FIELDS, metavar="FIELD",
                    help=f"read every profile as if it lacked these fields (one of {', '.join(OPTIONAL_FIELDS)}); "
                         "never with --write")
    a = ap.parse_args()
    if a.without and a.write:
        ap.error("--without reads the profiles as they are not: it never writes the error file")
    if a.memory:
        mem = check_memory(first_run_with_weights(a.roots), a.device)
        print("| width | batch | peak allocated in the prefill (MB) | peak RSS growth (MB) | projected KV + "
              "activations (MB) | projected - allocated (kB) | error |\n|---|---|---|---|---|---|---|")
        for r in mem:
            print(f"| {r['width']:g} | {r['batch']} | {r['measured']:.3f} | {r['rss']:.0f} | {r['projected']:.3f} "
                  f"| {(r['projected'] - r['measured']) * 1e3:+.1f} | {r['error']:+.3%} |")
        s = summary(mem)
        print(f"memory model: median error {s['median']:.3%}, worst {s['worst']:.3%} over {s['n']} measurements")
        return
    if a.large_batch:
        large_batch_table(a.roots)
        return
    rows = check(a.roots, tuple(a.without))
    print("| run | device | profile | width | measure | measured | projected | error |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['device']} | {r['source']} | {r['width']:g}x{r['depth']:.3g} | {r['measure']} | {r['measured']:.2f} | "
              f"{r['projected']:.2f} | {r['error']:+.0%} |")
    by_device = {d: summary([r for r in rows if r["device"] == d]) for d in dict.fromkeys(r["device"] for r in rows)}
    by_class = {c: summary([r for r in rows if r["class"] == c]) for c in dict.fromkeys(r["class"] for r in rows)}
    print("\n| device | median error | worst | measurements |\n|---|---|---|---|")
    for d, s in by_device.items():
        print(f"| {d} | {s['median']:.0%} | {s['worst']:.0%} | {s['n']} |")
    by_preset = preset_table(rows)
    overall = summary(rows)
    if a.write and overall:
        atomic_write_json(profiles_dir(Path(a.roots[0])) / "whatif_error.json",
                          {"all": overall, "by_class": by_class, "by_device": by_device, "by_preset": by_preset,
                           "by_device_measure": {d: {m: summary([r for r in rows if r["device"] == d and r["measure"] == m])
                                                     for m in MEASURES if any(r["device"] == d and r["measure"] == m
                                                                              for r in rows)} for d in by_device},
                           "worst": [{k: r[k] for k in ("run", "device", "width", "depth", "measure", "measured",
                                                        "projected", "error")}
                                     for r in sorted(rows, key=lambda r: -abs(r["error"]))[:5]],
                           "command": "python -m bench.whatif_accuracy --write"})
    if overall:
        print(f"\nwhat-if error: median {overall['median']:.0%}, worst {overall['worst']:.0%} over {overall['n']} measurements")
    else:
        print("\nwhat-if error: no measurement has a profile of its device")


if __name__ == "__main__":
    main()
