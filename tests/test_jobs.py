"""Background training jobs: cancel keeps a checkpoint and marks the run cancelled; resume finishes it."""
import time

from nml_core import jobs
from nml_core.errors import NMLError
from nml_core.store.runs import load_run, read_metrics
from nml_core.training.config import TrainConfig

import pytest


def wait(cond, timeout=180):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


@pytest.fixture
def job_dir(tmp_path):
    """A job directory whose job is killed at teardown, even when the test fails half-way."""
    out = jobs.unique_run_dir(tmp_path, "job")
    yield out
    if jobs.job_alive(out):
        jobs.cancel_job(out, wait_s=10)


@pytest.mark.slow
def test_cancel_then_resume(teacher_run, job_dir):
    out = job_dir
    cfg = TrainConfig(steps=30, batch_size=2, ctx=16, lr=1e-3, log_every=1, checkpoint_every=1000)
    jobs.start_job(out, jobs.train_argv(out, str(teacher_run), None, "1,0.5", "ffn,heads,hidden", cfg), [])
    wait(lambda: len(read_metrics(out)) >= 3)
    with pytest.raises(NMLError, match="already has a job running"):
        jobs.start_job(out, ["--resume"], [])
    assert jobs.cancel_job(out)
    run = load_run(out, require_model=False)
    assert run.status == "cancelled"
    stopped = run.info["cancelled_at_step"]
    assert (out / "checkpoints" / "latest.json").exists()
    jobs.resume_job(out)
    wait(lambda: not jobs.job_alive(out))
    run = load_run(out)
    assert run.status == "done", jobs.log_tail(out)
    steps = [r["step"] for r in read_metrics(out)]
    assert steps == list(range(1, 31)) and stopped < 30


def test_unique_run_dirs_never_collide(tmp_path):
    a = jobs.unique_run_dir(tmp_path, "my run")
    a.mkdir()
    b = jobs.unique_run_dir(tmp_path, "my run")
    assert a != b and a.name == "my-run" and b.name == "my-run-2"
