"""Training jobs in a background process, so a UI (the Streamlit Train page) never trains in its own thread.

A job is a shell chain of CLI commands (train, then eval, then bench) started in its own process group with
its output in <run>/job.log and its description in <run>/job.json. The run directory itself is the state:
metrics.jsonl is followed for progress, run.json says running/done/cancelled/failed, so a page that is
reloaded re-attaches by reading the directory. Cancel sends SIGTERM to the group: the trainer checkpoints,
marks the run `cancelled` and the chain stops; Resume starts the same chain with --resume.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from .errors import NMLError
from .runs import RUN_FILE, atomic_write_json, read_json

JOB_FILE, LOG_FILE = "job.json", "job.log"


def train_argv(out: Path, teacher: str, data: str | None, widths: str, nest: str, options: dict) -> list[str]:
    """`python -m nml_core train ...` for these choices; options maps CLI flags (without --) to values."""
    argv = [sys.executable, "-m", "nml_core", "train", "--teacher", teacher, "--out", str(out),
            "--widths", widths, "--nest", nest]
    if data:
        argv += ["--data", data]
    for flag, value in options.items():
        argv += [f"--{flag.replace('_', '-')}", str(value)]
    return argv


def follow_up_argvs(out: Path, eval_tokens: int | None, bench_repeats: int) -> list[list[str]]:
    """What runs once training is done, so the run arrives on every page evaluated and timed."""
    ev = [sys.executable, "-m", "nml_core", "eval", str(out)]
    if eval_tokens:
        ev += ["--max-tokens", str(eval_tokens)]
    return [ev, [sys.executable, "-m", "nml_core", "bench", str(out), "--repeats", str(bench_repeats)]]


def unique_run_dir(root: Path, name: str) -> Path:
    """runs/<name>, or runs/<name>-2, -3 ... if taken: two jobs never share a directory."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.") or "run"
    path, i = Path(root) / safe, 2
    while path.exists():
        path, i = Path(root) / f"{safe}-{i}", i + 1
    return path


def start_job(out: Path, train: list[str], follow_up: list[list[str]], cwd: Path | None = None) -> dict:
    """Launch `train && follow_up...` detached from the caller; returns the job record."""
    out = Path(out)
    if (out / RUN_FILE).exists() and "--resume" not in train:
        raise NMLError(f"{out} already holds a run; pick another name")
    if job_alive(out):
        raise NMLError(f"{out} already has a job running; cancel it first")
    out.mkdir(parents=True, exist_ok=True)
    script = " && ".join(shlex.join(a) for a in [train, *follow_up])
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


def job_alive(out: Path) -> bool:
    """The job's process group still exists (and is ours: a reused pid would not run our command)."""
    try:
        job = read_job(out)
    except NMLError:  # an unreadable job.json: no job we can follow
        return False
    if not job:
        return False
    pid = job["pid"]
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                os.waitpid(pid, os.WNOHANG)  # our own finished child: reap it
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"nml_core" in f.read()  # the pid was reused by something else
    except FileNotFoundError:
        return not os.path.isdir("/proc")  # gone just now; or no /proc at all (not Linux): trust the pid
    except (OSError, ChildProcessError):
        return True


def cancel_job(out: Path, wait_s: float = 30.0) -> bool:
    """SIGTERM the job's group (the trainer checkpoints and marks the run cancelled); True once it has exited."""
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
    return start_job(out, train, job["follow_up"], Path(job["cwd"]) if job.get("cwd") else None)


def log_tail(out: Path, lines: int = 20) -> str:
    p = Path(out) / LOG_FILE
    if not p.exists():
        return ""
    text = p.read_text(errors="replace").replace("\r", "\n")  # tqdm redraws with \r
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
