"""Several processes through accelerate (gloo on the CPU): one consistent run directory, written by the main
process only; a rank killed mid-run ends the run `failed` in one line with its last checkpoint intact.

`accelerate launch --cpu` always starts one process; two CPU processes are `--multi_gpu --num_processes 2` with
no GPU visible (CUDA_VISIBLE_DEVICES=""), which torchrun starts with the gloo backend.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nml_core.store.runs import load_run, read_metrics

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def launch(out: Path, teacher: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
            "-m", "nml_core", "train", "--teacher", str(teacher), "--out", str(out), "--widths", "1,0.5",
            "--steps", str(steps), "--batch-size", "2", "--ctx", "16", "--checkpoint-every", "3", "--log-every", "1",
            "--device", "cpu", *extra]


def test_two_processes_write_one_consistent_run(teacher_run, tmp_path):
    out = tmp_path / "mp"
    res = subprocess.run(launch(out, teacher_run, 6), capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    run = load_run(out)
    assert run.status == "done" and run.info["process"]["processes"] == 2
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5, 6], "one metrics row per step, not per rank"
    assert run.info["tokens_seen"] == 6 * 2 * 16 * 2, "both ranks' batches count"
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["step"] == 6
    assert not [p for p in out.rglob("*") if p.name.startswith((".tmp", ".old"))], "nothing half-written"
    from transformers import GPT2LMHeadModel
    GPT2LMHeadModel.from_pretrained(str(out / "model"))


def test_a_killed_rank_ends_the_run_failed_in_one_line(teacher_run, tmp_path):
    out = tmp_path / "mp"
    proc = subprocess.Popen(launch(out, teacher_run, 2000), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=ROOT)
    try:
        deadline = time.time() + 300
        while len(read_metrics(out)) < 4 and time.time() < deadline:
            time.sleep(0.1)
        ranks = [int(p) for p in os.listdir("/proc") if p.isdigit() and _rank(int(p), out) == "1"]
        assert len(ranks) == 1, "rank 1 of the run is running"
        os.kill(ranks[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    run = load_run(out, require_model=False)
    assert run.status == "failed"
    assert "\n" not in run.info["error"] and "2-process run stopped" in run.info["error"], run.info["error"]
    ours = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "--resume" in ours[0], err[-3000:]
    ckpt = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert ckpt["step"] >= 3 and (out / "checkpoints" / ckpt["dir"] / "state.json").exists()
    assert not (out / "model").exists(), "no half-written weights"
    assert not [p for p in out.rglob(".tmp-*")]


def _rank(pid: int, out: Path) -> str | None:
    """RANK of a process of this run (None for other processes)."""
    try:
        if str(out).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
        return env.get("RANK")
    except OSError:
        return None
