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
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import NMLError
from .files import REBUILD_HINT, atomic_write_json, read_json

RUN_FILE = "run.json"
KINDS = ("pretrain", "nested", "independent", "naive")
STATUSES = ("running", "done", "failed", "cancelled")


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
    def axes(self) -> list[str]:
        return self.info.get("axes", ["ffn", "heads", "hidden"])

    def update(self, **fields) -> None:
        self.info.update(fields, updated=now())
        atomic_write_json(self.path / RUN_FILE, self.info)

    def eval(self) -> dict | None:
        p = self.path / "eval.json"
        return read_json(p) if p.exists() else None

    def latency(self) -> dict[str, dict]:
        return {p.stem: read_json(p) for p in sorted((self.path / "latency").glob("*.json"))}

    def metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def baselines(self) -> list["Run"]:
        root = self.path / "baselines"
        return [load_run(p, require_model=False) for p in sorted(root.iterdir()) if (p / RUN_FILE).exists()] \
            if root.is_dir() else []


def create_run(path: Path, info: dict, resume: bool = False) -> Run:
    """Start a run directory; refuses to clobber an existing run unless resuming it."""
    path = Path(path)
    if (path / RUN_FILE).exists():
        if not resume:
            raise NMLError(f"{path} already holds a run; pick another --out, or add --resume to continue it")
        run = load_run(path, require_model=False)
        run.update(status="running")
        return run
    if resume:
        raise NMLError(f"--resume given but {path} holds no run; drop --resume to start a new one")
    path.mkdir(parents=True, exist_ok=True)
    info = {"name": path.name, **info, "status": "running", "created": now(), "updated": now(),
            "versions": library_versions()}
    atomic_write_json(path / RUN_FILE, info)
    return Run(path, info)


def load_run(path, require_model: bool = True) -> Run:
    """Load and validate a run directory; names the first missing or corrupt file."""
    path = Path(path)
    if not path.is_dir():
        raise NMLError(f"run directory {path} does not exist; `python -m nml_core list` shows the runs")
    info = read_json(path / RUN_FILE)
    for key in ("kind", "status"):
        if key not in info:
            raise NMLError(f"{path / RUN_FILE} has no {key!r} field; {REBUILD_HINT}")
    run = Run(path, info)
    if require_model and run.kind != "naive":
        check_model_dir(run.model_dir, status=run.status)
    return run


def check_model_dir(model_dir: Path, status: str = "done") -> None:
    """config.json + a readable model.safetensors header, or a one-line error."""
    if status == "running" and not (model_dir / "model.safetensors").exists():
        raise NMLError(f"{model_dir.parent} is still training (no weights yet); wait for it or resume it")
    read_json(model_dir / "config.json")
    weights = model_dir / "model.safetensors"
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
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line still being written
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
                if (p / RUN_FILE).exists():
                    try:
                        found.append(load_run(p, require_model=False))
                    except NMLError as e:
                        found.append(Run(p, {"kind": "?", "status": "corrupt", "error": str(e)}))
    return found
