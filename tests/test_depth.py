"""Depth as a nest axis: whole layers kept by a measured ranking, nested depths, joint width x depth training,
stock export with n_layer = k, baselines at reduced depth."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import GPT2LMHeadModel

from nml_core import api
from nml_core.errors import NMLError
from nml_core.nesting.depth import DepthSpec, parse_depths, parse_subnet_key, subnet_key, subnets
from nml_core.nesting.elastic import ElasticGPT2, extract_student
from nml_core.nesting.layer_rank import CRITERIA, rank_layers
from nml_core.nesting.width import WidthSpec
from nml_core.store.runs import load_run, read_metrics
from nml_core.training.config import TrainConfig

from conftest import tiny_config


@pytest.fixture
def deep_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=97)
    cfg.n_layer = 4
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def deep_teacher(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("runs") / "deep-teacher"
    api.pretrain(out, str(corpus), TrainConfig(steps=8, batch_size=4, ctx=32, lr=2e-3, log_every=2,
                                               checkpoint_every=4), n_layer=4, n_embd=64, n_head=8)
    return out


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory, deep_teacher):
    out = tmp_path_factory.mktemp("runs") / "width-depth"
    cfg = TrainConfig(steps=4, batch_size=2, ctx=32, lr=1e-3, log_every=1, checkpoint_every=2, eval_every=2,
                      eval_windows=2)
    api.train_nested(out, str(deep_teacher), None, [1.0, 0.5], frozenset({"ffn", "heads", "hidden"}), cfg,
                     depths=[1.0, 0.5])
    return out


def test_a_depth_is_a_whole_number_of_layers_and_the_error_names_the_nearest():
    assert DepthSpec(0.5).n_layers(6) == 3 and DepthSpec(0.333).n_layers(6) == 2
    with pytest.raises(NMLError, match=r"1/6 \(1 layer\) or 2/6 \(2 layers\)"):
        DepthSpec(0.25).n_layers(6)
    for bad in (0, 1.5, -1):
        with pytest.raises(NMLError, match="outside"):
            DepthSpec(bad)
    with pytest.raises(NMLError, match="start with 1"):
        parse_depths("0.5")
    with pytest.raises(NMLError, match="not sorted"):
        parse_depths("1,0.25,0.5")
    assert parse_depths("1,1/2") == [1.0, 0.5]


def test_depths_nest_and_keep_the_ranked_layers_in_their_original_order():
    rank = [5, 0, 3, 1, 4, 2]
    assert DepthSpec(1 / 3).layers(rank) == (0, 5)
    assert DepthSpec(0.5).layers(rank) == (0, 3, 5)
    assert set(DepthSpec(1 / 3).layers(rank)) <= set(DepthSpec(0.5).layers(rank)) <= set(DepthSpec(5 / 6).layers(rank))
    assert DepthSpec(1).layers(rank) is None


def test_subnet_keys_read_back_and_width_only_keys_are_unchanged():
    assert subnet_key(0.5) == "0.5" and parse_subnet_key("0.5") == (0.5, 1.0)
    assert parse_subnet_key(subnet_key(0.25, 0.5)) == (0.25, 0.5)
    order = subnets([1.0, 0.5], [1.0, 0.5])
    assert order[0] == (1.0, 1.0) and order[-1] == (0.5, 0.5) and len(order) == 4


def test_elastic_depth_forward_equals_the_extracted_stock_student(deep_model):
    rank = [3, 0, 2, 1]
    elastic = ElasticGPT2(deep_model, layer_rank=rank).eval()
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    layers = DepthSpec(0.5).layers(rank)
    student = extract_student(deep_model, WidthSpec(0.5), layers).eval()
    assert student.config.n_layer == 2 and layers == (0, 3)
    with torch.no_grad():
        torch.testing.assert_close(elastic(x, width=0.5, depth=0.5).logits, student(input_ids=x).logits,
                                   atol=1e-5, rtol=1e-5)
        # the student's block 1 is the teacher's block 3
        torch.testing.assert_close(student.transformer.h[1].mlp.c_proj.bias, deep_model.transformer.h[3].mlp.c_proj.bias[:32])


def test_a_depth_students_gradient_lands_only_in_its_layers(deep_model):
    elastic = ElasticGPT2(deep_model.train(), layer_rank=[3, 0, 2, 1])
    x = torch.randint(0, 97, (2, 12))
    elastic(x, width=1.0, depth=0.5).logits.sum().backward()
    blocks = deep_model.transformer.h
    assert blocks[0].mlp.c_fc.weight.grad is not None and blocks[3].mlp.c_fc.weight.grad is not None
    assert blocks[1].mlp.c_fc.weight.grad is None and blocks[2].mlp.c_fc.weight.grad is None


def test_the_layer_ranking_is_the_candidate_whose_layer_drop_scores_best(deep_model):
    x = torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(2))
    out = rank_layers(deep_model, x, [1.0, 0.5])
    assert sorted(out["layer_rank"]) == [0, 1, 2, 3] and out["criterion"] in CRITERIA
    losses = {c: sum(v["loss"].values()) for c, v in out["candidates"].items()}
    assert losses[out["criterion"]] == min(losses.values())
    assert out["layer_rank"] == out["candidates"][out["criterion"]]["rank"]


def test_a_width_x_depth_run_trains_every_pair_and_stores_its_ranking(depth_run):
    run = load_run(depth_run)
    assert run.depths == [1.0, 0.5] and sorted(run.layer_rank) == [0, 1, 2, 3]
    assert run.info["layer_ranking"]["criterion"] in CRITERIA
    rows = read_metrics(depth_run)
    assert set(rows[-1]["ce"]) == {"1", "0.5", "1@d0.5", "0.5@d0.5"}
    assert set(rows[-1]["val_ce"]) == {"1", "0.5", "1@d0.5", "0.5@d0.5"}


def test_export_at_a_depth_is_a_stock_model_with_n_layer_k(depth_run, tmp_path):
    out = api.export(depth_run, 0.5, tmp_path / "student", depth=0.5)
    x = torch.randint(0, 50257, (1, 10), generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.float32).eval()
        with torch.no_grad():
            torch.save(m(input_ids=torch.load({str(tmp_path / 'x.pt')!r})).logits, {str(tmp_path / 'y.pt')!r})
        assert not any(k.startswith("nml_core") for k in sys.modules)
        print(m.config.n_layer, m.config.n_embd)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["2", "32"]
    run = load_run(depth_run)
    model, _ = api.load_run_model(run)
    with torch.no_grad():
        expected = ElasticGPT2(model, run.axes, run.layer_rank).eval()(x, width=0.5, depth=0.5).logits
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), expected, atol=1e-4, rtol=1e-4)
    assert "depth 0.5" in (out / "README.md").read_text()


def test_export_refuses_a_depth_that_is_no_whole_number_of_layers_writing_nothing(depth_run, tmp_path):
    with pytest.raises(NMLError, match="not a whole number of the teacher's 4 layers"):
        api.export(depth_run, 1.0, tmp_path / "x", depth=0.6)
    assert not (tmp_path / "x").exists()


def test_baselines_at_depth_are_evaluated_beside_the_nested_grid(depth_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(depth_run, run_dir)
    api.baseline(run_dir, "naive")
    (path,) = api.baseline(run_dir, "independent", width=1.0, depth=0.5, steps=2)
    assert path.name == "independent-1-d0.5"
    ev = api.evaluate_run(run_dir, max_tokens=256).report.to_json()
    nml = {(r["width"], r["depth"]) for r in ev["widths"]}
    assert nml == {(1.0, 1.0), (0.5, 1.0), (1.0, 0.5), (0.5, 0.5)}
    naive = {(r["width"], r["depth"]) for r in ev["baselines"]["naive"]}
    assert (1.0, 0.5) in naive and (1.0, 1.0) not in naive
    assert [(r["width"], r["depth"], r["n_layer"]) for r in ev["baselines"]["independent"]] == [(1.0, 0.5, 2)]
    own = json.loads((path / "eval.json").read_text())
    assert own["widths"][0]["depth"] == 0.5


def test_the_grid_scores_every_head_count_at_every_depth_and_never_replaces_a_fuller_one(depth_run, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(depth_run, run_dir)
    grid = api.evaluate_grid(run_dir, max_tokens=512)
    run = load_run(run_dir)
    assert len(grid["rows"]) == 8 * 4 and run.grid()["tokens_scored"] == grid["tokens_scored"]
    trained = {(r["width"], r["depth"]) for r in grid["rows"] if r["trained"]}
    assert trained == {(1.0, 1.0), (0.5, 1.0), (1.0, 0.5), (0.5, 0.5)}
    assert {r["n_layer"] for r in grid["rows"]} == {1, 2, 3, 4}
    smaller = api.evaluate_grid(run_dir, max_tokens=128)
    assert smaller["written"].endswith("grid-" + str(smaller["tokens_scored"]) + "-tokens.json")
    assert load_run(run_dir).grid()["tokens_scored"] == grid["tokens_scored"], "the fuller grid is kept"


def test_the_budget_search_names_the_frontier_the_best_fit_and_the_axis_that_paid(depth_run, tmp_path):
    import shutil
    from nml_core.analysis.device_profile import save_profile
    from nml_core.analysis.whatif import project
    from nml_core.nesting.depth import subnet_dims
    from nml_core.store.models import run_config
    run_dir = tmp_path / "runs" / "run"
    shutil.copytree(depth_run, run_dir)
    api.evaluate_grid(run_dir, max_tokens=256)
    save_profile(_shipped_cpu_profile(), run_dir.parent)
    answer, choice = api.budget_search(run_dir, "preset-nvidia-h100-sxm", batch=1)
    assert not choice.measured and len(answer.points) == 32
    keys = [(p["width"], p["depth"]) for p in answer.frontier]
    assert keys and all(p["latency_measured"] is False for p in answer.frontier)
    lat = [p[answer.latency_key] for p in answer.frontier]
    ppl = [p["ppl"] for p in answer.frontier]
    assert lat == sorted(lat) and ppl == sorted(ppl, reverse=True), "faster along the frontier costs quality"
    cfg = run_config(load_run(run_dir))
    prof = choice.profile
    full, half = (project(prof, cfg, subnet_dims(cfg, ["ffn", "heads", "hidden"], 1.0, d), batches=(1,))["ttft_b1_ms"]
                  for d in (1.0, 0.5))
    assert answer.depth_speedup == pytest.approx(full / half)
    assert answer.paid == "depth", "a launch-bound GPU at batch 1 pays for layers, not width"
    tight = api.budget_search(run_dir, "preset-nvidia-h100-sxm", batch=1, latency_ms=half * 1.01)[0]
    assert tight.best is not None and tight.best["depth"] < 1
    assert api.budget_search(run_dir, "preset-nvidia-h100-sxm", 1, latency_ms=1e-6)[0].best is None
    with pytest.raises(NMLError, match="choose one of"):
        api.budget_search(run_dir, "no such device")


def test_whatif_cli_prints_the_frontier_and_why(depth_run, tmp_path):
    import shutil
    from nml_core.analysis.device_profile import save_profile
    run_dir = tmp_path / "runs" / "run"
    shutil.copytree(depth_run, run_dir)
    save_profile(_shipped_cpu_profile(), run_dir.parent)
    unscored = subprocess.run([sys.executable, "-m", "nml_core", "whatif", str(run_dir), "--target", "preset-nvidia-h100-sxm"],
                              capture_output=True, text=True)
    assert unscored.returncode == 2 and "no quality scored yet" in unscored.stderr
    api.evaluate_grid(run_dir, max_tokens=256)
    res = subprocess.run([sys.executable, "-m", "nml_core", "whatif", str(run_dir), "--target", "preset-nvidia-h100-sxm",
                          "--latency-ms", "1000"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "best within budget: width" in res.stdout and "pays here" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "nml_core", "whatif", str(run_dir), "--target", "x", "--batch", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--batch 0" in bad.stderr


def _shipped_cpu_profile():
    """A device profile of this CPU's shape (figures of the right magnitude; the presets scale from it)."""
    import json
    from pathlib import Path

    from nml_core.analysis.device_profile import DeviceProfile
    shipped = Path(__file__).resolve().parent.parent / "cached_runs" / "device_profiles"
    return DeviceProfile.from_json(json.loads(next(iter(sorted(shipped.glob("cpu-*-2t.json")))).read_text()))
