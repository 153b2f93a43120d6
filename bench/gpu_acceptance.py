"""Every GPU target measured in one call: what a session that is lent a GPU for a few minutes runs first.

  python -m bench.gpu_acceptance --device cuda --budget-s 480 --out DIR
  python -m bench.gpu_acceptance --device cpu --quick --out DIR      # the same sections on a CPU, small (<= 3 min)

Sections, in order of value; each runs only if its estimated cost fits what is left of --budget-s (otherwise
it is recorded as skipped), and a section that fails is recorded with its one-line error, not fatal:
  tests         `pytest -m cuda` (CUDA-marked tests; they skip on a CPU, and so do the app's and the browser's
                where streamlit, plotly or playwright is missing); anything but a clean exit is `failed`
  nested_step   bench.nested_step.measure: embedded and GPT-2-small shapes at 8 and 32 x 128 (quick: a tiny
                shape at 2 x 32), widths 1, 1/2, 1/4, 1/8 in whole heads of the shape (12 heads: 1/8 -> 1/6):
                ms per step, kernel launches per step (profiler; on a CPU the work-op count) and the ratio to the
                FLOP-proportional time; a row that fails keeps the rows measured before it
  compile       the one-graph nested step (--compile) at the embedded shape 32 x 128 and GPT-2-small 16 x 1024,
                bf16: seconds to the first step (compilation included), then ms per step, the host's launches per
                step and the all-student MFU of the eager, compiled and CUDA-graphed (--cuda-graphs) steps
  eval          `eval` of the run on the device (seconds, and the largest ppl difference to its eval.json);
                nothing is written into the run; skipped, with the reason, where the run or its teacher ships
                no weights
  decode        batch-1 greedy decode of the width-1 student: HF's default cache against static cache + compile
                (CUDA only; tok/s)
  profile_bench `profile-device`, then `bench` of the run: DIR/device_profiles/<key>.json and
                DIR/<run>.latency.<key>.json (copy them to cached_runs/device_profiles/ and
                cached_runs/<run>/latency/<key>.json to ship a measured device)
  depth         which axis pays here: the width x depth run's (1, 1), (1/2, 1) and (1, 1/2) students timed
                (DIR/<depth run>.latency.<key>.json), the measured speed-up of each axis (time to first token at
                batch 1, decode) beside the matching preset's projection
  whatif        the what-if against what was just measured: the new profile and the preset of this device class
                (latency, each measure and batch apart), and the memory model against the bytes allocated
The timing sections (nested_step, compile, profile_bench, depth, decode, whatif) need no shipped weights: a run
that has none is timed with seeded random weights at its shapes (latency depends on the shape alone).
Writes DIR/acceptance.json after every section (a killed call keeps what was done) and DIR/acceptance.md last,
and prints the markdown table last. Files: at most 6 (json, md, profile, two latency files, pytest log).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from nml_core.device import resolve, set_threads
from nml_core.files import atomic_write_bytes, atomic_write_json

REPO = Path(__file__).resolve().parents[1]
SHAPES_FULL = [("embedded", 8), ("embedded", 32), ("gpt2-small", 8), ("gpt2-small", 32)]
TINY = dict(n_layer=2, n_embd=96, n_head=12, n_inner=384, n_positions=64)  # 12 heads, as GPT-2's: 1/8 -> 1/6
# seconds each section is expected to take (full on a GPU, quick on a CPU): a section starts only if it fits
# (the H200's measured seconds: tests 14 s with no test collected, nested_step 27 s before its failure, profile_bench
# 59 s, depth 12 s, whatif 168 s, decode 3 s; compile: ~190 s for GPT-2-small's per-width graphs, not yet measured
# for the one-graph step)
ESTIMATE_S = {"tests": (150, 40), "nested_step": (150, 30), "compile": (420, 60), "eval": (40, 15), "decode": (60, 10),
              "profile_bench": (90, 40), "depth": (40, 40), "whatif": (200, 30)}


class Skipped(Exception):
    """A section that cannot run here says why (recorded as `skipped: <why>`, not `failed`)."""


def timing_model(run):
    """The run's weights, or seeded random weights at its shapes where it ships none (timing depends on the
    shape alone)."""
    from nml_core.store.models import load_run_model, shape_model
    from nml_core.store.runs import has_weights
    return load_run_model(run)[0] if has_weights(run.model_dir) else shape_model(run)


def section_tests(a, out: Path, partial: dict) -> dict:
    """pytest -m cuda; anything but a clean run (a failure, an error, nothing collected) fails the section."""
    import re
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(REPO / "tests")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, a.left - 5), cwd=REPO)
    atomic_write_bytes(out / "pytest_cuda.log", (done.stdout[-200_000:] + done.stderr[-20_000:]).encode())
    last = next((ln for ln in reversed(done.stdout.strip().splitlines()) if " in " in ln), "no summary line")
    count = lambda word: int(m.group(1)) if (m := re.search(rf"(\d+) {word}", last)) else 0  # noqa: E731
    partial.update(exit_code=done.returncode, summary=last.strip("= "), passed=count("passed"))
    if done.returncode != 0:
        raise RuntimeError(f"pytest exit code {done.returncode} ({last.strip('= ')})")
    return dict(partial)


def section_nested_step(a, out: Path, partial: dict) -> dict:
    from bench.nested_step import SHAPES, measure
    plan = [("tiny", 2)] if a.quick else SHAPES_FULL
    rows = partial.setdefault("rows", [])  # a row that fails keeps the rows measured before it
    for shape, batch in plan:
        r = measure(TINY if shape == "tiny" else SHAPES[shape], batch, 32 if a.quick else 128, a.device,
                    repeats=2 if a.quick else 5, with_topk=False, launches=True)
        rows.append({"shape": shape, "batch": batch, "nested_ms": r["median_s"]["nested"] * 1e3,
                     "plain_ms": r["median_s"]["plain"] * 1e3, "teacher_ms": r["median_s"]["teacher"] * 1e3,
                     "flop_proportional_ms": r["flop_proportional_s"] * 1e3,
                     "over_flop_proportional": r["nested_over_flop_proportional"],
                     "launches_per_step": r["launches_per_step"], "precision": r["precision"], "widths": r["widths"]})
    return {"rows": rows}


def section_compile(a, out: Path, partial: dict) -> dict:
    from bench.nested_step import SHAPES, compiled_row
    if a.quick and a.device == "cpu":
        raise Skipped("compiling for a CPU generates C++ for minutes, longer than a quick check lasts; "
                      "tests/test_graph_step.py checks the compiled step")
    plan = [("tiny", 2, 32)] if a.quick else [("embedded", 32, 128), ("gpt2-small", 16, 1024)]
    rows = partial.setdefault("rows", [])  # a row that fails keeps the rows measured before it
    for shape, batch, ctx in plan:
        rows.append({"shape": shape, "batch": batch, "ctx": ctx, **compiled_row(
            TINY if shape == "tiny" else SHAPES[shape], batch, ctx, a.device, steps=3 if a.quick else 10,
            launches=True)})
    return {"rows": rows}


def section_eval(a, out: Path, partial: dict) -> dict:
    from nml_core.api import evaluate_run
    from nml_core.files import read_json
    from nml_core.store.models import run_teacher_spec
    from nml_core.store.runs import RUN_FILE, has_weights, load_run
    run = load_run(a.run, require_model=False)
    teacher = Path(run_teacher_spec(run))
    if not has_weights(run.model_dir):
        raise Skipped(f"{run.name} ships no weights (figures only); eval needs them")
    if (teacher / RUN_FILE).exists() and not has_weights(teacher / "model"):
        raise Skipped(f"its teacher {teacher.name} has no weights here; eval scores against the teacher")
    t = time.perf_counter()
    report = evaluate_run(a.run, max_tokens=4096 if a.quick else None, device=a.device, write=False).report
    seconds = time.perf_counter() - t
    res = {"seconds": seconds, "tokens": report.tokens_scored, "ppl": {f"{r['width']:g}": r["ppl"]
                                                                             for r in report.widths}}
    shipped = Path(a.run) / "eval.json"
    if shipped.exists() and not a.quick:  # the same protocol on another device: the same figures
        old = {f"{r['width']:g}": r["ppl"] for r in read_json(shipped)["widths"]}
        res["max_rel_diff_to_eval_json"] = max(abs(res["ppl"][k] / old[k] - 1) for k in res["ppl"] if k in old)
    return res


def section_decode(a, out: Path, partial: dict) -> dict:
    from nml_core.analysis.latency import decode_fn, decode_new_tokens, interleaved_timings, tokens_per_s
    from nml_core.nesting.elastic import extract_student
    from nml_core.nesting.width import WidthSpec
    from nml_core.store.runs import load_run
    run = load_run(a.run, require_model=False)
    student = extract_student(timing_model(run), WidthSpec(1.0, run.axes)).eval().to(a.device)
    fns = {"default": decode_fn(student, a.device)}
    if a.device == "cuda":
        fns["static_compiled"] = decode_fn(student, a.device, static_cache=True)
    times = interleaved_timings(fns, a.device, repeats=3 if a.quick else 10, warmup=1 if a.quick else 3)
    n = decode_new_tokens(student.config)
    res = {k: tokens_per_s(v, n).median for k, v in times.items()}
    if "static_compiled" in res:
        res["static_over_default"] = res["static_compiled"] / res["default"]
    return {"tok_s": res}


def section_profile_bench(a, out: Path, partial: dict) -> dict:
    from nml_core.analysis.profile import profile_device
    from nml_core.analysis.device_profile import save_profile
    from nml_core.analysis.latency import bench_widths
    from nml_core.nesting.depth import subnet_key, subnets
    from nml_core.store.runs import has_weights, load_run
    prof = profile_device(a.device, repeats=3 if a.quick else 7)
    save_profile(prof, out)
    run = load_run(a.run, require_model=False)
    report = bench_widths(timing_model(run), run.axes, subnets(run.widths, run.depths), a.device,
                          repeats=3 if a.quick else 10, layer_rank=run.layer_rank)
    report = replace(report, weights="the run's weights" if has_weights(run.model_dir)
                     else "seeded random weights at its shapes")
    atomic_write_json(out / f"{run.name}.latency.{report.device_key}.json", report.to_json())
    a.profile, a.latency = prof, report
    return {"device_key": report.device_key, "profile_s": prof.profile_s, "weights": report.weights,
            "widths": {subnet_key(r.width, r.depth): {**{k: t.median_ms for k, t in r.timings.items()},
                                                      "decode_tok_s": r.decode.median} for r in report.rows}}


def section_whatif(a, out: Path, partial: dict) -> dict:
    from bench.whatif_accuracy import check_memory, compare, summary
    from nml_core.analysis.device_profile import load_profiles
    from nml_core.analysis.presets import PRESET_FOR_KEY, preset_base, preset_profile
    from nml_core.store.models import run_config
    from nml_core.store.runs import load_run
    if getattr(a, "latency", None) is None:
        raise RuntimeError("needs the profile_bench section's measurements (it was skipped or failed)")
    run = load_run(a.run, require_model=False)
    cfg, key = run_config(run), a.latency.device_key
    rows = compare(run.name, cfg, run.axes, a.latency, a.profile, "measured profile")
    res = {"measured_profile": _by_measure(rows, summary)}
    base = preset_base(load_profiles(REPO / "cached_runs"))
    if key in PRESET_FOR_KEY and base:
        name = PRESET_FOR_KEY[key]
        res[f"preset {name}"] = _by_measure(compare(run.name, cfg, run.axes, a.latency, preset_profile(name, base),
                                                    f"preset {name}"), summary)
    mem = check_memory(run, a.device, batches=(1,) if a.quick else (1, 8, 32))
    res["memory"] = summary(mem)
    return res


def _by_measure(rows: list[dict], summary) -> dict:
    measures = dict.fromkeys(r["measure"] for r in rows)
    return {"all": summary(rows), **{m: summary([r for r in rows if r["measure"] == m]) for m in measures}}


DEPTH_SHAPES = [(1.0, 1.0), (0.5, 1.0), (1.0, 0.5)]  # the full model, half width, half depth


def section_depth(a, out: Path, partial: dict) -> dict:
    """Which axis pays on this device: the width x depth run's full, half-width and half-depth students timed
    (extracted, interleaved), beside the matching preset's projection (issue target: depth 1/2 >= 1.6x at batch 1
    on an H100)."""
    from nml_core.analysis.latency import bench_widths
    from nml_core.analysis.device_profile import load_profiles
    from nml_core.analysis.presets import PRESET_FOR_KEY, preset_base, preset_profile
    from nml_core.analysis.whatif import project
    from nml_core.nesting.depth import subnet_dims
    from nml_core.store.models import run_config
    from nml_core.store.runs import load_run
    run = load_run(a.depth_run, require_model=False)
    report = bench_widths(timing_model(run), run.axes, DEPTH_SHAPES, a.device, repeats=3 if a.quick else 10,
                          layer_rank=run.layer_rank)
    atomic_write_json(out / f"{run.name}.latency.{report.device_key}.json", report.to_json())
    ms = {s: {"ttft_b1": report.row(*s).ms("ttft_b1_ms"), "decode": report.row(*s).ms("decode_ms")}
          for s in DEPTH_SHAPES}
    res = {f"measured {m} speedup": {"width 1/2": ms[(1.0, 1.0)][m] / ms[(0.5, 1.0)][m],
                                     "depth 1/2": ms[(1.0, 1.0)][m] / ms[(1.0, 0.5)][m]} for m in ("ttft_b1", "decode")}
    base = preset_base(load_profiles(REPO / "cached_runs"))
    if report.device_key in PRESET_FOR_KEY and base:
        prof, cfg = preset_profile(PRESET_FOR_KEY[report.device_key], base), run_config(run)
        proj = {s: project(prof, cfg, subnet_dims(cfg, run.axes, *s), batches=(1,))["ttft_b1_ms"] for s in DEPTH_SHAPES}
        res["preset ttft_b1 speedup"] = {"width 1/2": proj[(1.0, 1.0)] / proj[(0.5, 1.0)],
                                         "depth 1/2": proj[(1.0, 1.0)] / proj[(1.0, 0.5)]}
    return res


SECTIONS = {"tests": section_tests, "nested_step": section_nested_step, "compile": section_compile, "eval": section_eval,
            "decode": section_decode, "profile_bench": section_profile_bench, "depth": section_depth,
            "whatif": section_whatif}


def run_sections(a, out: Path) -> dict:
    """Each chosen section in order while the budget lasts; acceptance.json rewritten after each one."""
    started = time.perf_counter()
    result = {"device": a.device, "quick": a.quick, "run": str(a.run), "budget_s": a.budget_s, "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name(0) if a.device == "cuda" else "CPU", "sections": {}}
    for name in a.sections:
        a.left = a.budget_s - (time.perf_counter() - started)
        estimate = ESTIMATE_S[name][1 if a.quick else 0]
        if estimate > a.left:
            result["sections"][name] = {"status": f"skipped: {a.left:.0f} s left, needs ~{estimate} s"}
        else:
            t, partial = time.perf_counter(), {}
            try:
                result["sections"][name] = {"status": "done", **SECTIONS[name](a, out, partial)}
            except Skipped as e:
                result["sections"][name] = {"status": f"skipped: {e}"}
            except Exception as e:  # one broken section must not lose the others' figures, nor its own so far
                result["sections"][name] = {"status": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}",
                                            **partial}
            result["sections"][name]["seconds"] = round(time.perf_counter() - t, 1)
        atomic_write_json(out / "acceptance.json", result)
    result["total_s"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / "acceptance.json", result)
    return result


def markdown(result: dict) -> str:
    """The short table printed last: one line per figure."""
    lines = [f"GPU acceptance on {result['device_name']} (torch {result['torch']}), {result['total_s']:.0f} s of "
             f"{result['budget_s']} s budget{' (quick)' if result['quick'] else ''}", "",
             "| section | status | s | figures |", "|---|---|---|---|"]
    for name, s in result["sections"].items():
        lines.append(f"| {name} | {s['status'].split(':')[0]} | {s.get('seconds', 0):.0f} | {_figures(name, s)} |")
    return "\n".join(lines)


def _figures(name: str, s: dict) -> str:
    if s["status"] != "done" and not s.get("rows"):
        return s["status"] + (f" ({s['passed']} passed)" if "passed" in s else "")
    if name == "tests":
        return s["summary"]
    if name == "compile":
        return ("" if s["status"] == "done" else s["status"] + "; before it: ") + "; ".join(
            f"{r['shape']} {r['batch']}x{r['ctx']}: first step {r['first_step_s']:.0f} s; ms / launches / MFU: "
            + ", ".join(f"{k} {r[f'{k}_ms']:.0f} / {r[f'{k}_launches']} / {r[f'{k}_mfu']:.0%}"
                        for k in ("eager", "compiled", "graphed") if f"{k}_ms" in r) for r in s["rows"])
    if name == "nested_step":
        return ("" if s["status"] == "done" else s["status"] + "; before it: ") + "; ".join(f"{r['shape']} {r['batch']}x: {r['nested_ms']:.0f} ms ({r['over_flop_proportional']:.2f}x "
                         f"FLOP-prop., {r['launches_per_step']} launches, {r['precision']})" for r in s["rows"])
    if name == "eval":
        diff = f", max diff to eval.json {s['max_rel_diff_to_eval_json']:.2%}" if "max_rel_diff_to_eval_json" in s else ""
        return f"{s['tokens']} tokens in {s['seconds']:.1f} s{diff}"
    if name == "decode":
        return ", ".join(f"{k} {v:.1f}" for k, v in s["tok_s"].items())
    if name == "profile_bench":
        return f"{s['device_key']}: " + "; ".join(
            f"w{w} " + "/".join(f"{v:.2f}" for k, v in r.items() if k.startswith("prefill")) + " ms"
            for w, r in s["widths"].items())
    if name == "depth":
        return "; ".join(f"{k}: " + ", ".join(f"{axis} {v:.2f}x" for axis, v in d.items())
                         for k, d in s.items() if isinstance(d, dict))
    if name == "whatif":
        return "; ".join(f"{k}: median {v['all']['median']:.0%} worst {v['all']['worst']:.0%}"
                         for k, v in s.items() if isinstance(v, dict) and "all" in v) + \
            (f"; memory median {s['memory']['median']:.1%}" if s.get("memory") else "")
    return json.dumps(s)[:200]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", default="cached_runs/shakespeare-nml-depth", help="a nested run (with weights for eval)")
    ap.add_argument("--depth-run", default="cached_runs/shakespeare-nml-depth",
                    help="a width x depth run with weights (the depth section)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a CPU check of the script itself")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    a = ap.parse_args(argv)
    a.sections = [s for s in a.sections.split(",") if s]
    bad = [s for s in a.sections if s not in SECTIONS]
    if bad:
        print(f"error: unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    try:
        resolve(a.device)
        from nml_core.store.runs import load_run
        load_run(a.run, require_model=False)
        if "depth" in a.sections:
            load_run(a.depth_run, require_model=False)
    except Exception as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    out = Path(a.out)
    if out.exists() and any(out.iterdir()) and not (out / "acceptance.json").exists():
        print(f"error: --out {out} is a non-empty folder this script did not write; name a new or empty one",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    set_threads(None)
    result = run_sections(a, out)
    text = markdown(result)
    atomic_write_bytes(out / "acceptance.md", (text + "\n").encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
