"""Latency on this machine, the device profile, and the what-if budget search."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..analysis.device_profile import DeviceProfile
from ..analysis.latency import bench_widths
from ..commands import check_values
from ..errors import NMLError
from ..nesting.depth import subnets
from ..files import atomic_write_json
from ..store.latency_report import LatencyReport
from ..store.models import load_run_model, run_config, shape_model
from ..store.runs import check_model_dir, load_run


def bench_run(run_path, widths: list[float] | None = None, device: str = "auto", threads: int | None = None,
              repeats: int = 10, write: bool = True, precision: str = "fp32") -> LatencyReport:
    """Latency of each width's extracted student (and the elastic forward) of a run; writes latency/<device>.json
    (a bf16 measurement is a device of its own: latency/<device>-bf16.json)."""
    run = load_run(run_path, require_model=False)
    if run.info.get("weights_shipped") is False:
        # a run that ships its figures only: a student's latency depends on its shape alone, not on the values of
        # its weights, so its shapes are timed with seeded random weights (the report says so)
        model, weights = shape_model(run), "seeded random weights at the run's shapes " \
            "(the run ships no weights; latency depends on the shape alone)"
    else:
        check_model_dir(run.model_dir, status=run.status)  # missing or corrupt weights: one line
        model, weights = load_run_model(run)[0], "the run's weights"
    report = bench_widths(model, run.axes, widths or subnets(run.widths, run.depths), device, threads, repeats,
                          precision=precision, layer_rank=run.layer_rank)
    report = replace(report, weights=weights)
    if write:
        atomic_write_json(run.path / "latency" / f"{report.device_key}.json", report.to_json())
    return report


def profile_device(device: str = "auto", threads: int | None = None, out: str | Path = "runs") -> tuple[Path, DeviceProfile]:
    """Measure this device for the what-if and store the profile in <out>/device_profiles/<device key>.json."""
    from ..analysis.profile import profile_device as measure
    from ..analysis.device_profile import save_profile
    prof = measure(device, threads)
    return save_profile(prof, Path(out)), prof


def budget_search(run_path, target: str, batch: int = 1, workload: str = "ttft", latency_ms: float | None = None,
                  memory_mb: float | None = None, profiles: list[str | Path] = ()):
    """`nml whatif`: the run's width x depth family on one device (measured, profiled or a preset: key or
    name, any case), its frontier, and the best sub-model within the budgets. Returns (BudgetAnswer, choice)."""
    from ..analysis import budget, whatif
    from ..analysis.device_profile import load_profiles, load_whatif_errors
    run = load_run(run_path, require_model=False)  # it reads figures and shapes, never weights
    if run.kind != "nested":
        raise NMLError(f"{run.path} is a {run.kind} run; the budget search reads a nested run's family")
    check_values("whatif", batch=batch, latency_ms=latency_ms, memory_mb=memory_mb)
    if workload not in budget.LATENCY_KEYS:
        raise NMLError(f"--workload {workload} is not one of {', '.join(budget.LATENCY_KEYS)}")
    if not run.grid() and not run.eval():
        raise NMLError(f"{run.path.name} has no quality scored yet: run python -m nml_core eval {run.path} --grid "
                       "(every width x depth) or eval (the trained ones)")
    roots = [run.path.parent, *map(Path, profiles)]
    choices = whatif.device_choices([run], load_profiles(*roots), load_whatif_errors(*roots))
    if not choices:
        raise NMLError(f"no device is measured or profiled for {run.path.name}: run python -m nml_core profile-device "
                       f"--out {run.path.parent} (or bench the run), or name a folder holding one with --profiles")
    wanted = target.lower()
    choice = next((c for c in choices if wanted in (c.key.lower(), c.name.lower())), None) or \
        next((c for c in choices if wanted in c.label.lower()), None)
    if choice is None:
        raise NMLError(f"--target {target!r} is not a measured, profiled or preset device here; choose one of: "
                       + "; ".join(c.key for c in choices))
    answer = budget.search(run, run_config(run), choice, batch, workload, latency_ms, memory_mb)
    return answer, choice
