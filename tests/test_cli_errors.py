"""Every bad input gives one line on stderr, naming the problem and the fix, and a non-zero exit code."""
import json
import shutil
import subprocess
import sys

import pytest

from nml_core.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def assert_one_line_error(code, err, *words):
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], err[0]


@pytest.mark.parametrize("widths, words", [("1,1.5", ["outside (0, 1]"]), ("1,0.25,0.5", ["not sorted"]),
                                           ("1,0.5,0.5", ["duplicate"]), ("1,0.01", ["keeps 0 of the teacher's 8 heads"]),
                                           ("0.5,0.25", ["must start with 1"])])
def test_bad_widths(capsys, teacher_run, tmp_path, widths, words):
    code, err = run_cli(capsys, "train", "--teacher", teacher_run, "--out", tmp_path / "x", "--widths", widths,
                        "--steps", 1)
    assert_one_line_error(code, err, *words)


def test_non_gpt2_teacher(capsys, tmp_path):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    code, err = run_cli(capsys, "train", "--teacher", tmp_path / "llama", "--data", tmp_path, "--out", tmp_path / "x",
                        "--steps", 1)
    assert_one_line_error(code, err, "'llama' model, not GPT-2")


def test_hub_teacher_offline_fails_at_once(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(capsys, "train", "--teacher", "gpt2-nonexistent-test", "--data", tmp_path,
                        "--out", tmp_path / "x", "--steps", 1)
    assert_one_line_error(code, err, "not in the local HF cache", "huggingface.co is unreachable")


@pytest.mark.parametrize("text, words", [("", ["text is empty"]), ("hi", ["fewer than the", "smaller --ctx"])])
def test_empty_or_short_text(capsys, tmp_path, text, words):
    (tmp_path / "t.txt").write_text(text)
    code, err = run_cli(capsys, "pretrain", "--data", tmp_path / "t.txt", "--out", tmp_path / "r", "--steps", 1,
                        "--n-layer", 1, "--n-embd", 16, "--n-head", 2)
    assert_one_line_error(code, err, *words)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "failed"


def test_missing_run_dir(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "eval", tmp_path / "nope"), "does not exist")


def test_existing_run_is_not_clobbered(capsys, teacher_run, corpus):
    code, err = run_cli(capsys, "pretrain", "--data", corpus, "--out", teacher_run, "--steps", 1)
    assert_one_line_error(code, err, "already holds a run", "--resume")


@pytest.fixture
def run_copy(teacher_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(teacher_run, dst)
    return dst


def test_corrupt_run_json(capsys, run_copy):
    (run_copy / "run.json").write_text("{not json")
    assert_one_line_error(*run_cli(capsys, "eval", run_copy), "run.json is not valid JSON", "build_cached_runs.py")


def test_corrupt_safetensors(capsys, run_copy):
    weights = run_copy / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_one_line_error(*run_cli(capsys, "export", run_copy, "--width", 0.5, "--out", run_copy / "e"),
                          "model.safetensors is corrupt")


def test_missing_weights(capsys, run_copy):
    (run_copy / "model" / "model.safetensors").unlink()
    assert_one_line_error(*run_cli(capsys, "bench", run_copy), "model.safetensors is missing")


def test_baseline_needs_a_nested_run(capsys, teacher_run):
    assert_one_line_error(*run_cli(capsys, "baseline", teacher_run, "--kind", "naive"), "baselines belong to a nested run")


def test_subprocess_error_has_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "nml_core", "eval", str(tmp_path / "missing")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: run directory {tmp_path / 'missing'} does not exist; "
                                               "`python -m nml_core list` shows the runs"]
