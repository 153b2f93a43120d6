"""Is a run still alive? A training process beats (heartbeat.json: time, step, last checkpoint, pid, host) so
that a run killed without a word (kill -9, the out-of-memory killer, a power cut), whose run.json still says
`running`, is reported as `interrupted`, with its last checkpoint and the command that resumes it."""
from __future__ import annotations

import os
import socket
import time

from ..device import is_main_process
from ..errors import NMLError
from .checkpoints import latest_checkpoint
from ..files import atomic_write_json, read_json
from .runs import Run, process_record

HEARTBEAT_FILE = "heartbeat.json"
HEARTBEAT_S = 10         # a training process beats at most this often
STALE_S = 600            # a run on another host is taken as dead after this long without a beat


def beat(run: Run, step: int, checkpoint_step: int | None) -> None:
    """Say "alive at step N, last checkpoint M" (main process only; atomic)."""
    if is_main_process():
        atomic_write_json(run.path / HEARTBEAT_FILE, {"time": time.time(), "step": step,
                                                      "checkpoint_step": checkpoint_step, **process_record()})


def heartbeat(run: Run) -> dict | None:
    try:
        return read_json(run.path / HEARTBEAT_FILE)
    except NMLError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def run_state(run: Run) -> str:
    """run.json's status, or "interrupted" for a run that says running but whose process is gone: killed (-9,
    out of memory, power cut) before it could say so. Same host: its pid is gone; another host: no beat for
    STALE_S."""
    if run.status != "running":
        return run.status
    owner = (heartbeat(run) or run.info.get("process") or {})
    if not owner.get("pid"):
        return run.status
    if owner.get("host") == socket.gethostname():
        return "running" if pid_alive(owner["pid"]) else "interrupted"
    return "running" if time.time() - owner.get("time", time.time()) < STALE_S else "interrupted"


def resume_hint(run: Run) -> str:
    """One line: where an interrupted run stopped and the command that continues it."""
    ckpt = latest_checkpoint(run)  # the checkpoint --resume will take
    where = f"its last checkpoint is step {int(ckpt.name.removeprefix('step-'))}" if ckpt else \
        "it has no checkpoint yet (resume restarts it)"
    command = run.info.get("process", {}).get("command")
    how = f"{command} --resume" if command else "the command it was started with, plus --resume"
    return f"{run.name} was interrupted (its process is gone); {where}; continue it with: {how}"
