"""Run storage: one directory per run, every file written atomically (temp file + rename).

runs/<name>/ (or cached_runs/<name>/)
  run.json        what the run is: kind, teacher, data, widths, axes, hyper-parameters, versions, status
  model/          weights (safetensors) + config.json + tokenizer files: a stock HF GPT-2 directory
  data/           train.bin / val.bin token files (uint16) and data.json, when the run tokenised text
  metrics.jsonl   one JSON row per logged training step
  eval.json       quality per width (nml_core.analysis.evaluate)
  latency/*.json  speed per width on one device (nml_core.analysis.latency)
  checkpoints/    resumable training state
  baselines/<b>/  naive-slice / independent-KD baselines of this run, each itself a run directory
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..device import is_main_process, wait_for_everyone, world_size
from ..errors import NMLError
from ..files import REBUILD_HINT, atomic_write_json, check_new_folder, read_json
from .latency_report import LatencyReport

RUN_FILE = "run.json"
KINDS = ("pretrain", "nested", "independent", "naive")
STATUSES = ("running", "done", "failed", "cancelled")  # + "interrupted": reported by run_state, never stored


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def library_versions() -> dict:
    import accelerate
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


@dataclass
class Run:
    """A run directory and its run.json."""
    path: Path
    info: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def kind(self) -> str:
        return self.info["kind"]

    @property
    def status(self) -> str:
        return self.info.get("status", "?")

    @property
    def widths(self) -> list[float]:
        return self.info.get("widths", [1.0])

    @property
    def depths(self) -> list[float]:
        """The depths trained together with the widths (width-only runs: [1])."""
        return self.info.get("depths", [1.0])

    @property
    def layer_rank(self) -> list[int] | None:
        """The teacher's layers, most important first, as measured for depth nesting (None: prefix order)."""
        return self.info.get("layer_rank")

    @property
    def axes(self) -> list[str]:
        return self.info.get("axes", ["ffn", "heads", "hidden"])

    def update(self, **fields) -> None:
        """Change run.json; in a multi-process run only the main process writes (the others keep the change in
        memory), so a run directory is written by one process."""
        self.info.update(fields, updated=now())
        if is_main_process():
            atomic_write_json(self.path / RUN_FILE, self.info)
            if self.status in ("done", "failed", "cancelled"):
                release_lock(self.path)  # the writer is done: a resume may take the run

    def eval(self) -> dict | None:
        p = self.path / "eval.json"
        return read_json(p) if p.exists() else None

    def grid(self) -> dict | None:
        """grid.json: every head count x every depth of the run scored (nml eval --grid)."""
        p = self.path / "grid.json"
        return read_json(p) if p.exists() else None

    def latency(self) -> dict[str, LatencyReport]:
        """device key -> what that device measured for this run's widths."""
        return {p.stem: LatencyReport.from_json(read_json(p), str(p)) for p in sorted((self.path / "latency").glob("*.json"))}

    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def baselines(self) -> list["Run"]:
        root = self.path / "baselines"
        return [load_run(p, require_model=False) for p in sorted(root.iterdir()) if (p / RUN_FILE).exists()] \
            if root.is_dir() else []


def create_run(path: Path, info: dict, resume: bool = False) -> Run:
    """Start a run directory; refuses to clobber an existing run unless resuming it, and refuses to resume it
    with another recipe. Every process of a multi-process run gets the Run; only the main one writes it."""
    path = Path(path)
    exists = (path / RUN_FILE).exists()
    if not exists:  # a new run goes into a new or empty folder, never among someone else's files
        check_new_folder(path, ours=OWN_FILES)
    if is_main_process():
        hold_lock(path)
    wait_for_everyone()  # every rank has looked before the main one writes
    if exists:
        if not resume:
            raise NMLError(f"{path} already holds a run; pick another --out, or add --resume to continue it")
        run = load_run(path, require_model=False)
        try:
            check_same_recipe(run, info)
        except NMLError:
            release_lock(path)
            raise
        run.update(status="running", process=process_record())
        return run
    if resume:
        raise NMLError(f"--resume given but {path} holds no run; drop --resume to start a new one")
    info = {"name": path.name, **info, "status": "running", "created": now(), "updated": now(),
            "versions": library_versions(), "process": process_record()}
    if is_main_process():
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path / RUN_FILE, info)
    return Run(path, info)


LOCK_FILE = ".lock"
# what nml itself puts in a run dir before its run.json (the lock, the heartbeat, a background job's description,
# log and lock): a folder holding only these is still an empty one for a new run
JOB_FILE, LOG_FILE, JOB_LOCK = "job.json", "job.log", ".job.lock"  # a background job's (nml_core.jobs)
OWN_FILES = frozenset({LOCK_FILE, "heartbeat.json", JOB_FILE, LOG_FILE, JOB_LOCK})


_LOCKS: dict[str, int] = {}  # run dir -> open fd of its lock, held until this process exits


def hold_lock(path: Path) -> None:
    """One writer per run directory: an exclusive lock on <run>/.lock, held for the life of this process (the
    OS drops it when the process dies, even by kill -9). A second trainer on the same run is refused."""
    import fcntl
    key = str(Path(path).resolve())
    if key in _LOCKS:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise NMLError(f"{path} is being written by another process (pid {owner}); wait for it or cancel it, "
                       "then resume") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _LOCKS[key] = fd


def release_lock(path: Path) -> None:
    fd = _LOCKS.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


# What a resume may change: where and how often it runs and reports, not what it trains.
RESUMABLE = {"device", "mixed_precision", "log_every", "checkpoint_every", "eval_every", "eval_windows", "compile",
             "cuda_graphs"}


def check_same_recipe(run: Run, info: dict) -> None:
    """--resume continues the run it finds, so the recipe must be the stored one (a longer --steps would bend
    the cosine schedule the run has followed so far): one line naming what differs and how to resume."""
    changed = [f"{k} {run.info.get(k)} -> {info[k]}" for k in ("kind", "widths", "axes", "reorder", "width", "ta")
               if k in info and run.info.get(k) != info[k]]
    stored, given = run.info.get("hparams", {}), info.get("hparams", {})
    changed += [f"{k} {stored.get(k)} -> {v}" for k, v in given.items()
                if k not in RESUMABLE and k in stored and stored[k] != v]
    if changed:
        command = run.info.get("process", {}).get("command")
        raise NMLError(f"--resume with another recipe than {run.path.name} was started with ({'; '.join(changed)}); "
                       + (f"resume with its own flags: {command} --resume" if command else
                          "resume with the flags it was started with, or start a new run with another --out"))


def process_record() -> dict:
    """Which process writes this run: pid and host (to tell a dead run from a live one) and, when started from
    the CLI, the command that resumes it."""
    argv = [a for a in sys.argv if a != "--resume"]
    cli = argv and (argv[0].endswith(os.path.join("nml_core", "__main__.py")) or Path(argv[0]).name == "nml")
    return {"pid": os.getpid(), "host": socket.gethostname(), "processes": world_size(),
            "command": "python -m nml_core " + shlex.join(argv[1:]) if cli else None}


def load_run(path, require_model: bool = True) -> Run:
    """Load and validate a run directory; names the first missing or corrupt file."""
    path = Path(path)
    if path.is_file():
        raise NMLError(f"{path} is a file, not a run directory; give the run's folder (`python -m nml_core list` "
                       "shows the runs)")
    if not path.is_dir():
        raise NMLError(f"run directory {path} does not exist; `python -m nml_core list` shows the runs")
    if not (path / RUN_FILE).exists():
        raise NMLError(f"{path} holds no run ({RUN_FILE} is missing); give a run's folder (`python -m nml_core "
                       "list` shows the runs)")
    info = read_json(path / RUN_FILE)
    for key in ("kind", "status"):
        if key not in info:
            raise NMLError(f"{path / RUN_FILE} has no {key!r} field; {REBUILD_HINT}")
    run = Run(path, info)
    if require_model and run.kind != "naive":
        check_model_dir(run.model_dir, status=run.status)
    return run


WEIGHTS, SHARD_INDEX = "model.safetensors", "model.safetensors.index.json"


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model dir: model.safetensors, or the shards its index names."""
    model_dir = Path(model_dir)
    if (model_dir / SHARD_INDEX).is_file():
        index = read_json(model_dir / SHARD_INDEX)
        return [model_dir / name for name in sorted(set(index.get("weight_map", {}).values()))]
    return [model_dir / WEIGHTS]


def has_weights(model_dir: Path) -> bool:
    return (Path(model_dir) / WEIGHTS).is_file() or (Path(model_dir) / SHARD_INDEX).is_file()


def check_model_dir(model_dir: Path, status: str = "done") -> None:
    """config.json + readable safetensors headers (one file or every shard), or a one-line error."""
    if status == "running" and not has_weights(model_dir):
        raise NMLError(f"{model_dir.parent} is still training (no weights yet); wait for it or resume it")
    read_json(model_dir / "config.json")
    files = weight_files(model_dir)
    for weights in files:
        if not weights.is_file():
            raise NMLError(f"{weights} is missing; {REBUILD_HINT}")
        try:
            from safetensors import safe_open
            with safe_open(str(weights), framework="pt") as f:
                list(f.keys())
        except Exception as e:  # safetensors raises several types for truncated / garbage files
            raise NMLError(f"{weights} is corrupt ({type(e).__name__}); {REBUILD_HINT}") from None


def append_metrics(run_path: Path, row: dict) -> None:
    """Append one row; a single small write, so a reader never sees half a line but the last."""
    with open(Path(run_path) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def read_metrics(run_path: Path) -> list[dict]:
    p = Path(run_path) / "metrics.jsonl"
    if not p.exists():
        return []
    rows = []
    for line in p.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written, or one a crash cut short: the others still count
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def find_runs(*roots) -> list[Run]:
    """Every top-level run under the given directories (default: cached_runs/ and runs/)."""
    roots = roots or ("cached_runs", "runs")
    found = []
    for root in map(Path, roots):
        if (root / RUN_FILE).exists():
            found.append(load_run(root, require_model=False))
            continue
        if root.is_dir():
            for p in sorted(root.iterdir()):
                if p.name.startswith("."):  # temp and swap dirs (.tmp-*, .old-*) are not runs
                    continue
                if (p / RUN_FILE).exists():
                    try:
                        found.append(load_run(p, require_model=False))
                    except NMLError as e:
                        found.append(Run(p, {"kind": "?", "status": "corrupt", "error": str(e)}))
    return found
