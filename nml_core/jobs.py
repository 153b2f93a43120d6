"""Training jobs in a background process, so a UI (the Streamlit Train page) never trains in its own thread.

A job is a shell chain of CLI commands (train, then eval, then bench) started in its own process group with
its output in <run>/job.log and its description in <run>/job.json. The run directory itself is the state:
metrics.jsonl is followed for progress, run.json says running/done/cancelled/failed, so a page that is
reloaded re-attaches by reading the directory. A job is followed by its whole process group, so it counts as
alive until the last of its processes has exited. Cancel sends SIGTERM to the group and returns once every
process has exited: the trainer checkpoints, marks the run `cancelled` and the chain stops; Resume starts the
same chain with --resume, and is refused while any process of the job lives.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import NMLError
from .files import atomic_write_json, read_json
from .store.runs import JOB_FILE, JOB_LOCK, LOG_FILE, RUN_FILE
from .training.config import TrainConfig
from .training.estimate import FollowUps



def train_argv(out: Path, teacher: str, data: str | None, widths: str, nest: str, cfg: TrainConfig,
               depths: str = "1") -> list[str]:
    """`python -m nml_core train ...` for these choices; the recipe's flags come from TrainConfig itself."""
    argv = [sys.executable, "-m", "nml_core", "train", "--teacher", teacher, "--out", str(out),
            "--widths", widths, "--nest", nest] + (["--depths", depths] if depths != "1" else [])
    if data:
        argv += ["--data", data]
    return argv + cfg.argv()


def follow_up_argvs(out: Path, eval_tokens: int | None, bench_repeats: int, device: str = "auto",
                    grid: bool = False, naive: bool = False) -> list[list[str]]:
    """What runs once training is done, on the training's device, so the run arrives on every page
    evaluated, timed and with its model card (grid: a width x depth run's whole family scored too, for the
    Pareto page; naive: the naive slice of the teacher recorded first, so eval scores it beside the students)."""
    nml = [sys.executable, "-m", "nml_core"]
    ev = nml + ["eval", str(out), "--device", device] + (["--max-tokens", str(eval_tokens)] if eval_tokens else [])
    return ([nml + ["baseline", str(out), "--kind", "naive"]] if naive else []) + [ev] + \
        ([nml + ["eval", str(out), "--grid", "--device", device]] if grid else []) + \
        [nml + ["bench", str(out), "--repeats", str(bench_repeats), "--device", device], nml + ["card", str(out)]]


@dataclass(frozen=True)
class DemoPreset:
    """The classroom demo: the embedded teacher's widths 1 and 1/8 for a few steps, with the naive slice, a quick
    evaluation and timing: NML's lesson on screen in about three minutes of a two-core laptop, all included."""
    widths: str = "1,0.125"
    nest: str = "ffn,heads,hidden"
    steps: int = 150
    batch_size: int = 4
    lr: float = 2.5e-3
    # pure distillation at T = 1 kept width 1 nearest the teacher and helped width 1/8 most on the embedded teacher
    # (180 steps, a two-core AMD EPYC: alpha 0.5 / T 2 left width 1 at 140 ppl and 1/8 at 473; alpha 1 / T 1 at 120
    # and 396; teacher 94, naive 1/8 2,240). 150 steps: the demo in 3.5 minutes with the app open beside it.
    alpha: float = 1.0
    temperature: float = 1.0
    eval_tokens: int = 4096
    bench_repeats: int = 3

    def recipe(self, device: str = "auto") -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, alpha=self.alpha,
                           temperature=self.temperature, device=device,
                           log_every=1, eval_every=max(1, self.steps // 6), checkpoint_every=max(1, self.steps // 3))

    def argvs(self, out: Path, teacher: str, device: str = "auto") -> tuple[list[str], list[list[str]]]:
        """(train, follow-ups) of the demo job."""
        train = train_argv(out, teacher, None, self.widths, self.nest, self.recipe(device))
        return train, follow_up_argvs(out, self.eval_tokens, self.bench_repeats, device, naive=True)

    def follow_ups(self) -> FollowUps:
        """What the Estimate counts after training: the follow-ups of argvs, one process each, and the trainer's."""
        n = len(follow_up_argvs(Path("x"), self.eval_tokens, self.bench_repeats, naive=True)) + 1
        return FollowUps(self.eval_tokens, self.bench_repeats, processes=n, naive=True)


DEMO = DemoPreset()


def unique_run_dir(root: Path, name: str) -> Path:
    """runs/<name>, or runs/<name>-2, -3 ... if taken: two jobs never share a directory."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "run"
    path, i = Path(root) / safe, 2
    while path.exists():
        path, i = Path(root) / f"{safe}-{i}", i + 1
    return path


def start_job(out: Path, train: list[str], follow_up: list[list[str]], cwd: Path | None = None,
              trained: bool = False) -> dict:
    """Launch `train && follow_up...` detached from the caller; returns the job record. Two starts on one
    directory at the same moment are serialised by a lock, so the second sees the first job and is refused.
    trained: the run is done training, only the follow-ups run (their evaluation or timing was stopped)."""
    import fcntl
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / JOB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / RUN_FILE).exists() and "--resume" not in train and not trained:
            raise NMLError(f"{out} already holds a run; pick another name")
        if job_alive(out):
            raise NMLError(f"{out} already has a job running; cancel it first")
        script = " && ".join(shlex.join(a) for a in ([] if trained else [train]) + follow_up)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        with open(out / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(["/bin/sh", "-c", script], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        job = {"pid": proc.pid, "train": train, "follow_up": follow_up, "cwd": str(cwd) if cwd else None,
               "started": time.time()}
        atomic_write_json(out / JOB_FILE, job)
    return job


def read_job(out: Path) -> dict | None:
    p = Path(out) / JOB_FILE
    return read_json(p) if p.exists() else None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group that run nml_core (a reused pgid runs something else).

    A job is `sh -c "train && eval && bench"`: SIGTERM ends `sh` at once, while the trainer it started is still
    checkpointing; so a job is followed by its whole group, not by the pid of `sh`.
    """
    if not os.path.isdir("/proc"):  # not Linux: trust the group's existence
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields: state, ppid, pgrp, ...
                continue
            if fields[0] == "Z":
                if int(entry) == pgid:
                    _reap(pgid)  # our own finished `sh`: reap it
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"nml_core" in f.read():
                    members.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    return members


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def job_alive(out: Path) -> bool:
    """Any process of the job (its `sh` and every command it started) is still running."""
    try:
        job = read_job(out)
    except NMLError:  # an unreadable job.json: no job we can follow
        return False
    return bool(job) and bool(group_members(job["pid"]))


def cancel_job(out: Path, wait_s: float = 60.0) -> bool:
    """SIGTERM the job's group: the trainer checkpoints and marks the run cancelled. Returns True only once every
    process of the job has exited (the run's status is then final); False if some still run after wait_s."""
    job = read_job(out)
    if not job or not job_alive(out):
        return True
    try:
        os.killpg(job["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if not job_alive(out):
            return True
        time.sleep(0.2)
    return False


def resume_job(out: Path) -> dict:
    """Start the stored chain again with --resume: training continues from the last checkpoint."""
    job = read_job(out)
    if not job:
        raise NMLError(f"{out} has no {JOB_FILE}; resume it from the command line with --resume")
    train = [a for a in job["train"] if a != "--resume"] + ["--resume"]
    trained = (Path(out) / RUN_FILE).exists() and read_json(Path(out) / RUN_FILE).get("status") == "done"
    return start_job(out, train, job["follow_up"], Path(job["cwd"]) if job.get("cwd") else None, trained=trained)


def follow_ups_done(run) -> dict[str, bool]:
    """Which of a finished run's follow-ups left their files: what a stopped job reports it did."""
    return {"evaluated": bool(run.eval()), "timed": bool(run.latency()), "card": (run.path / "README.md").exists()}


def log_tail(out: Path, lines: int = 20) -> str:
    p = Path(out) / LOG_FILE
    if not p.exists():
        return ""
    text = p.read_text(errors="replace").replace("\r", "\n")  # tqdm redraws with \r
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
