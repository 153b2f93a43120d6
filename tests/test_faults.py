"""Fault injection: a process killed mid-write, corrupt files, a full disk, two writers at once, bad uploads.

Every case checks the same three things: the previous good state survives, the error is one line naming the
fix, and a resume or rerun gives the result an uninterrupted run gives (where that applies). Each kill is a
real SIGKILL of a child process at the named point (the child kills itself from inside the write it is doing).
"""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from nml_core.cli import main
from nml_core.data.sources import save_text_upload
from nml_core.errors import NMLError
from nml_core.report import format_runs
from nml_core import jobs
from nml_core.store.liveness import run_state
from nml_core.store.runs import create_run, find_runs, load_run, read_metrics
from nml_core.store.checkpoints import latest_checkpoint
from nml_core.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def run_child(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python; it is expected to SIGKILL itself at the fault point."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def killed(res: subprocess.CompletedProcess) -> bool:
    return res.returncode == -signal.SIGKILL


def no_temp_dirs(path: Path) -> bool:
    return not [p for p in Path(path).rglob(".tmp-*") if p.is_dir()]


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    res = run_child(f"""
        import os, signal, torch
        from transformers import GPT2Config, GPT2LMHeadModel
        from nml_core.store.runs import Run
        from nml_core.store import checkpoints
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
        opt = torch.optim.AdamW(model.parameters())
        run = Run(__import__("pathlib").Path({str(tmp_path)!r}), {{}})
        checkpoints.save_checkpoint(run, model, opt, 2, {{"elapsed_s": 1.0}})
        real = checkpoints.save_file
        def dying(tensors, path, metadata=None):
            real(tensors, path, metadata=metadata)
            open(path, "r+b").truncate(100)            # half a file on disk ...
            os.kill(os.getpid(), signal.SIGKILL)       # ... and the process dies inside the write
        checkpoints.save_file = dying
        checkpoints.save_checkpoint(run, model, opt, 4, {{"elapsed_s": 2.0}})
    """)
    assert killed(res), res.stderr
    from nml_core.store.runs import Run
    ckpt = latest_checkpoint(Run(tmp_path, {}))
    assert ckpt is not None and ckpt.name == "step-0000002"
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert not (tmp_path / "checkpoints" / "step-0000004").exists()


def test_sigkill_during_an_eval_json_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "eval.json"
    target.write_text(json.dumps({"widths": [{"ppl": 1.5}]}))
    res = run_child(f"""
        import os, signal
        from nml_core import files
        files.os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)   # dies between write and rename
        files.atomic_write_json(__import__("pathlib").Path({str(target)!r}), {{"widths": [{{"ppl": 9.9}}]}})
    """)
    assert killed(res), res.stderr
    assert json.loads(target.read_text()) == {"widths": [{"ppl": 1.5}]}
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["eval.json"]


def test_sigkill_during_an_export_leaves_no_half_written_model(nested_run, tmp_path):
    out = tmp_path / "student"
    res = run_child(f"""
        import os, signal
        from transformers import GPT2LMHeadModel
        from nml_core import api
        real = GPT2LMHeadModel.save_pretrained
        def dying(self, path, **kw):
            real(self, path, **kw)
            os.kill(os.getpid(), signal.SIGKILL)       # weights written into the temp dir, not yet swapped in
        GPT2LMHeadModel.save_pretrained = dying
        api.export({str(nested_run)!r}, 0.5, {str(out)!r}, device="cpu")
    """)
    assert killed(res), res.stderr
    assert not out.exists(), "the export target appears only when complete"
    assert main(["export", str(nested_run), "--width", "0.5", "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()


def test_sigkill_during_a_cached_run_swap_is_recovered(tmp_path):
    out = tmp_path / "cached_runs"
    final, built = out / "shakespeare-nml", tmp_path / "build" / "shakespeare-nml"
    for path, marker in ((final, "old"), (built, "new")):
        create_run(path, {"kind": "naive", "widths": [1.0], "marker": marker}).update(status="done")
    res = run_child(f"""
        import os, signal, runpy
        from pathlib import Path
        build = runpy.run_path("scripts/build_cached_runs.py")
        renames = []
        real = Path.rename
        def dying(self, target):
            renames.append(target)
            if len(renames) == 2:                      # old run moved aside, new one not yet in
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, target)
        Path.rename = dying
        build["promote"](Path({str(built)!r}), Path({str(final)!r}), {{"profile": "cpu"}})
    """)
    assert killed(res), res.stderr
    assert not final.exists() and (out / ".old-shakespeare-nml").exists()
    assert [r.name for r in find_runs(out)] == [], "a swap dir is never listed as a run"
    import runpy
    runpy.run_path(str(ROOT / "scripts" / "build_cached_runs.py"))["recover_swap"](final)
    assert load_run(final, require_model=False).info["marker"] == "old", "the previous good run is back"


def cli_dying_at_step(argv: list[str], step: int) -> subprocess.CompletedProcess:
    """`python -m nml_core <argv>` in a child that SIGKILLs itself right after logging `step` (mid-run, as the
    out-of-memory killer or a power cut would stop it)."""
    return run_child(f"""
        import os, runpy, signal, sys
        from nml_core.training import loop
        real = loop.append_metrics
        def dying(path, row):
            real(path, row)
            if row["step"] == {step}:
                os.kill(os.getpid(), signal.SIGKILL)
        loop.append_metrics = dying
        sys.argv = [os.path.join("nml_core", "__main__.py")] + {argv!r}
        runpy.run_module("nml_core", run_name="__main__")
    """)


def same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)  # float reassociation across processes


TRAIN = ["train", "--widths", "1,0.5", "--steps", "8", "--batch-size", "2", "--ctx", "16", "--lr", "1e-3",
         "--log-every", "1", "--checkpoint-every", "3", "--device", "cpu"]


def test_kill_9_mid_training_is_reported_interrupted_and_resumes_to_the_same_weights(teacher_run, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    argv = TRAIN + ["--teacher", str(teacher_run)]
    assert main(argv + ["--out", str(ref)]) == 0
    assert killed(cli_dying_at_step(argv + ["--out", str(cut)], 5))
    run = load_run(cut, require_model=False)
    assert run.status == "running" and run_state(run) == "interrupted"
    listing = format_runs([run])
    assert "interrupted" in listing and "checkpoint is step 3" in listing
    hint = listing.splitlines()[-1].split("continue it with: ")[1].split()
    assert hint[:3] == ["python", "-m", "nml_core"] and hint[-1] == "--resume"
    res = subprocess.run([sys.executable] + hint[1:], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_run(cut).status == "done" and [r["step"] for r in read_metrics(cut)] == list(range(1, 9))
    same_weights(ref, cut)


def test_a_corrupt_latest_json_falls_back_to_the_newest_complete_checkpoint(teacher_run, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    argv = TRAIN + ["--teacher", str(teacher_run)]
    assert main(argv + ["--out", str(ref)]) == 0
    assert killed(cli_dying_at_step(argv + ["--out", str(cut)], 7))
    (cut / "checkpoints" / "latest.json").write_text('{"step": 6, "di')      # cut short mid-write
    assert main(argv + ["--out", str(cut), "--resume"]) == 0
    assert [r["step"] for r in read_metrics(cut)] == list(range(1, 9))
    same_weights(ref, cut)


def test_a_corrupt_metrics_line_loses_only_that_line(tmp_path):
    rows = [{"step": i, "loss": {"1": 1.0 / i}} for i in range(1, 5)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(text.replace('{"step": 2', '{"st\x00p": 2', 1) + '{"step": 5, "lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 3, 4]


def test_a_corrupt_checkpoint_gives_one_line(teacher_run, tmp_path, capsys):
    argv = TRAIN + ["--teacher", str(teacher_run), "--out", str(tmp_path / "run")]
    assert killed(cli_dying_at_step(argv, 4))
    weights = tmp_path / "run" / "checkpoints" / "step-0000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is corrupt" in err[0] and "delete that folder" in err[0], err


def test_a_full_disk_gives_one_line_and_keeps_the_old_file(nested_copy, capsys, monkeypatch):
    before = (nested_copy / "eval.json").read_bytes() if (nested_copy / "eval.json").exists() else None
    from nml_core import files

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", str(nested_copy / "eval.json"))

    real_fdopen = files.os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    assert main(["eval", str(nested_copy), "--max-tokens", "64", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and "free some disk space" in err[0], err
    after = (nested_copy / "eval.json").read_bytes() if (nested_copy / "eval.json").exists() else None
    assert after == before
    assert not list(nested_copy.glob(".eval.json.*")), "the temp file is removed"


@pytest.mark.slow
def test_two_jobs_started_on_one_run_dir_at_the_same_moment(teacher_run, tmp_path):
    out = tmp_path / "race"
    cfg = TrainConfig(steps=40, batch_size=2, ctx=16, log_every=1, device="cpu")
    argv = jobs.train_argv(out, str(teacher_run), None, "1,0.5", "ffn,heads,hidden", cfg)
    results, barrier = [], threading.Barrier(2)

    def start():
        barrier.wait()
        try:
            results.append(jobs.start_job(out, argv, []))
        except NMLError as e:
            results.append(e)

    threads = [threading.Thread(target=start) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        errors = [r for r in results if isinstance(r, NMLError)]
        assert len(errors) == 1 and ("already has a job running" in str(errors[0]) or
                                     "already holds a run" in str(errors[0]))
    finally:
        assert jobs.cancel_job(out, wait_s=60)


def test_a_second_writer_of_a_run_is_refused(teacher_run, tmp_path):
    out = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from nml_core.store.runs import create_run
        create_run({str(out)!r}, {{"kind": "pretrain", "widths": [1.0]}})
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(NMLError, match="being written by another process"):
            create_run(out, {"kind": "pretrain", "widths": [1.0]}, resume=True)
    finally:
        holder.kill()
        holder.wait()
    create_run(out, {"kind": "pretrain", "widths": [1.0]}, resume=True)  # the lock died with its process


def test_resume_with_another_recipe_is_refused(nested_run, capsys):
    run = load_run(nested_run)
    argv = ["train", "--teacher", run.info["teacher"]["id"], "--out", str(nested_run), "--widths", "1,0.5,0.25,0.125",
            "--steps", "9", "--batch-size", "4", "--ctx", "32", "--lr", "1e-3", "--resume", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another recipe" in err[0] and "steps 4 -> 9" in err[0], err


@pytest.mark.parametrize("raw, words", [(b"\xff\xfe\x00bad", "not UTF-8"), (b"", "is empty"), (b"  \n\n ", "is empty")])
def test_bad_uploads_are_refused_and_nothing_is_written(tmp_path, raw, words):
    with pytest.raises(NMLError, match=words):
        save_text_upload("play.txt", raw, tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists() or not list((tmp_path / "uploads").iterdir())
    ok = save_text_upload("play.txt", "To be, or not to be".encode(), tmp_path / "uploads")
    assert ok.read_text() == "To be, or not to be"


def test_only_a_stopped_peer_is_an_interruption():
    """In a multi-process run, a collective that finds its peer gone is an interruption to resume; any other
    RuntimeError (a bug: a shape mismatch, say) is raised as what it is, in one process or several."""
    import torch
    from nml_core.training.loop import peer_stopped
    bug = RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x64 and 32x64)")
    gone = RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500")
    assert not peer_stopped(bug, 2) and not peer_stopped(bug, 1)
    assert peer_stopped(gone, 2) and not peer_stopped(gone, 1)
    assert peer_stopped(torch.distributed.DistBackendError("NCCL error"), 2)
