"""The shipped runs in cached_runs/ load, and their stored numbers are what their weights give."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nml_core import api
from nml_core.data.batches import eval_windows
from nml_core.data.tokenizer import load_tokenizer
from nml_core.analysis.evaluate import evaluate_models
from nml_core.store.runs import load_run
from nml_core.nesting.elastic import ElasticGPT2

ROOT = Path(__file__).resolve().parent.parent
CACHED = ROOT / "cached_runs"
SHIPPED = ["shakespeare-teacher", "shakespeare-nml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_run_loads(name):
    run = load_run(CACHED / name)
    assert run.status == "done" and run.eval() is not None
    model, tok = api.load_run_model(run)
    assert model.config.model_type == "gpt2" and next(model.parameters()).dtype == torch.float32
    assert "pretrained here" in (run.info.get("label") or "") + run.info["teacher"].get("label", "")


def test_shipped_tokenizer_round_trips():
    tok = load_tokenizer(CACHED / "shakespeare-nml" / "model")
    assert tok("Hello world")["input_ids"] == [15496, 995]
    text = "O Romeo, Romeo! wherefore art thou Romeo?\n"
    assert tok.decode(tok(text)["input_ids"]) == text


def test_shipped_eval_matches_a_fresh_evaluation():
    run = load_run(CACHED / "shakespeare-nml")
    report = run.eval()
    model, _ = api.load_run_model(run)
    elastic = ElasticGPT2(model, run.axes).eval()
    spot = report["widths"][0]["spot_tokens"]
    windows = eval_windows(api.run_tokens(run).val, report["ctx"])[: spot // report["ctx"]]
    fresh = evaluate_models({f"{w:g}": (lambda w: lambda x: elastic(x, width=w).logits)(w) for w in run.widths},
                            None, windows, batch_size=8)
    for row in report["widths"]:
        assert fresh[f"{row['width']:g}"]["ppl"] == pytest.approx(row["spot_ppl"], rel=0.01)


def test_shipped_students_beat_the_naive_slice():
    report = load_run(CACHED / "shakespeare-nml").eval()
    naive = {r["width"]: r["ppl"] for r in report["baselines"]["naive"]}
    for row in report["widths"][1:]:
        assert row["ppl"] < naive[row["width"]], row["width"]


def test_shipped_ffn_only_run_has_its_figures():
    """The MatFormer-style baseline ships eval + latency (not weights): FFN-only students keep every head and
    the full hidden size, so they cost more FLOPs than the all-axes NML student of the same width."""
    from nml_core.analysis.pareto import run_points
    ffn = load_run(CACHED / "shakespeare-nml-ffn", require_model=False)
    assert ffn.status == "done" and ffn.axes == ["ffn"] and ffn.latency()
    nml = {p["width"]: p for p in run_points(load_run(CACHED / "shakespeare-nml")) if p["group"] == "NML"}
    points = [p for p in run_points(ffn) if p["group"] == "NML FFN-only"]
    assert [p["width"] for p in points] == [1.0, 0.5, 0.25, 0.125]
    for p in points[1:]:
        assert p["n_head"] == 8 and p["flops_per_token"] > nml[p["width"]]["flops_per_token"]
        assert p["prefill_b1_ms"] is not None


def build_toy(out, profile: str, *stages: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_cached_runs.py"), "--toy", "--profile", profile,
                          "--out", str(out)] + (["--stages", ",".join(stages)] if stages else []),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_build_script_runs_end_to_end_on_a_toy_config(tmp_path):
    profile = "cpu"
    res = build_toy(tmp_path / "cached_runs", profile)
    for name in ("shakespeare-teacher", "shakespeare-nml", "shakespeare-nml-ffn"):
        run = load_run(tmp_path / "cached_runs" / name, require_model=name != "shakespeare-nml-ffn")
        assert run.status == "done" and (run.path / "README.md").exists() and run.eval()
        assert not (run.path / "checkpoints").exists()
    ffn = tmp_path / "cached_runs" / "shakespeare-nml-ffn" / "model"
    assert (ffn / "config.json").exists() and not (ffn / "model.safetensors").exists()  # figures only
    nml = load_run(tmp_path / "cached_runs" / "shakespeare-nml")
    assert {b.kind for b in nml.baselines()} == {"naive", "independent"} and nml.latency()
    assert "all stages done" in res.stdout
    matta = load_run(tmp_path / "cached_runs" / "shakespeare-matta", require_model=False)
    plain = load_run(tmp_path / "cached_runs" / "shakespeare-matta-plain", require_model=False)
    assert matta.info["ta"]["id"].endswith("independent-0.5") and matta.info["hparams"]["kd_source"] == "ta"
    assert plain.info["teacher"]["id"] == matta.info["ta"]["id"] and "ta" not in plain.info  # the TA's init, frozen
    assert {k: v for k, v in matta.info["hparams"].items() if k != "kd_source"} == \
        {k: v for k, v in plain.info["hparams"].items() if k != "kd_source"}  # equal steps, same recipe
    for run in (matta, plain):
        assert [r["width"] for r in run.eval()["widths"]] == [1.0, 0.5, 0.25] and run.info["weights_shipped"] is False
    teacher = load_run(tmp_path / "cached_runs" / "shakespeare-teacher")
    assert teacher.info["build"]["profile"] == profile and teacher.info["build"]["stage_s"] > 0
    assert f"{profile} profile" in (teacher.path / "README.md").read_text()
    assert not list(teacher.model_dir.glob("model-*.safetensors")) and (teacher.model_dir / "model.safetensors").exists()
    data = json.loads((teacher.path / "data" / "data.json").read_text())
    assert "endoftext" in data["convention"] and data["documents"]["train"] > 0
    depth = load_run(tmp_path / "cached_runs" / "shakespeare-nml-depth")
    assert depth.depths == [1.0, 0.5] and depth.grid() and depth.latency()
    assert {(r["width"], r["depth"]) for r in depth.eval()["baselines"]["independent"]} == {(1.0, 0.5), (0.5, 0.5)}
    assert all(b.info.get("weights_shipped") is False for b in depth.baselines() if b.kind == "independent")


@pytest.mark.slow
def test_the_gpu_profile_ships_weights_in_shards_plain_transformers_loads(tmp_path):
    """What the gpu profile changes beyond step counts: shards of <= shard_mb and the profile in the records (the
    stages after the teacher save through the same save_model_dir, run end to end by the test above)."""
    from transformers import GPT2LMHeadModel
    build_toy(tmp_path / "cached_runs", "gpu", "texts", "teacher", "measure")
    teacher = load_run(tmp_path / "cached_runs" / "shakespeare-teacher")
    assert teacher.info["build"]["profile"] == "gpu" and "gpu profile" in (teacher.path / "README.md").read_text()
    assert len(list(teacher.model_dir.glob("model-*.safetensors"))) > 1
    assert (teacher.model_dir / "model.safetensors.index.json").exists()
    GPT2LMHeadModel.from_pretrained(str(teacher.model_dir))


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
    report = load_run(CACHED / "shakespeare-nml").eval()
    for row in [report["teacher"]] + report["widths"]:
        assert row["doc_start_tokens"] > 500 and row["doc_start_nll"] - row["rest_nll"] <= 0.5


def test_shipped_matta_comparison_is_at_equal_steps_from_the_same_init():
    """MatTA (TA under the larger frozen teacher) and plain NML (the same widths in a frozen copy of the TA's init)
    ship with their figures: same init, data, recipe and steps; only the KD sources differ."""
    runs = {n: load_run(CACHED / n, require_model=False)
            for n in ("shakespeare-matta", "shakespeare-matta-plain")}
    matta, plain = runs.values()
    ta_init = matta.info["ta"]["id"]
    assert plain.info["teacher"]["id"] == ta_init != matta.info["teacher"]["id"] and "ta" not in plain.info
    recipe = lambda run: {k: v for k, v in run.info["hparams"].items() if k != "kd_source"}  # noqa: E731
    assert recipe(matta) == recipe(plain) and recipe(matta)["steps"] == 200
    assert [matta.info["hparams"]["kd_source"], plain.info["hparams"]["kd_source"]] == ["ta", "teacher"]
    for run in runs.values():
        report = run.eval()
        assert run.status == "done" and run.info["weights_shipped"] is False
        assert [r["width"] for r in report["widths"]] == [1.0, 0.5, 0.25] and report["widths"][0]["n_embd"] == 128
        assert report["widths"][0]["tokens"] == load_run(CACHED / "shakespeare-nml").eval()["widths"][0]["tokens"]
