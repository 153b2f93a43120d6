import json
import math

import pytest
import torch

from nml_core import api
from nml_core.errors import NMLError
from nml_core.report import format_eval, format_latency
from nml_core.store.runs import load_run
from nml_core.analysis.evaluate import evaluate_models
from nml_core.arch.gpt2 import cost
from nml_core.nesting.elastic import extract_student
from nml_core.nesting.width import WidthSpec
from conftest import tiny_config


def test_param_count_matches_the_real_model():
    from transformers import GPT2LMHeadModel
    cfg = tiny_config()
    for w in (1.0, 0.5, 0.125):
        student = extract_student(GPT2LMHeadModel(cfg), WidthSpec(w))
        assert cost(cfg, WidthSpec(w).dims(cfg))["params"] == sum(p.numel() for p in student.parameters())


def test_flops_fall_monotonically_with_width():
    cfg = tiny_config()
    flops = [cost(cfg, WidthSpec(w).dims(cfg))["flops_per_token"] for w in (1.0, 0.75, 0.5, 0.25, 0.125)]
    assert flops == sorted(flops, reverse=True)


def test_metrics_of_a_model_against_itself(tiny_model):
    windows = torch.randint(0, 97, (6, 17), generator=torch.Generator().manual_seed(0))
    fn = lambda x: tiny_model(input_ids=x).logits  # noqa: E731
    r = evaluate_models({"m": fn}, fn, windows, batch_size=4)["m"]
    assert r["agree"] == 1.0 and abs(r["kl"]) < 1e-6 and r["tokens"] == 6 * 16
    assert math.isclose(r["ppl"], math.exp(r["nll"]), rel_tol=1e-3)


def test_eval_run_reports_every_width_and_baseline(nested_copy):
    api.baseline(nested_copy, "naive")
    report = api.evaluate_run(nested_copy, max_tokens=256).report.to_json()
    assert [r["width"] for r in report["widths"]] == [1.0, 0.5, 0.25, 0.125]
    assert [r["width"] for r in report["baselines"]["naive"]] == [0.5, 0.25, 0.125]
    params = [r["params"] for r in report["widths"]]
    assert params == sorted(params, reverse=True)
    assert all(r["ppl"] > 1 and 0 <= r["acc"] <= 1 for r in report["widths"])
    text = format_eval(report)
    assert "naive" in text and "teacher: ppl" in text


def test_bench_writes_latency_for_each_width(nested_copy):
    report = api.bench_run(nested_copy, repeats=2, threads=1)
    assert [r.width for r in report.rows] == [1.0, 0.5, 0.25, 0.125]
    t = report.rows[0].timings["prefill_b1_ms"]
    assert t.min_ms <= t.median_ms <= t.max_ms and t.repeats == 2
    assert report.threads == 1 and (nested_copy / "latency" / f"{report.device_key}.json").exists()
    for row in report.rows:  # three workloads: time to first token, scoring, decode
        assert {"ttft_b1_ms", "ttft_b8_ms", "prefill_b1_ms", "prefill_b8_ms"} <= set(row.timings) and row.decode.median > 0
    stored = load_run(nested_copy).latency()[report.device_key]
    assert stored == report, "the file reads back as the report that was written"
    text = format_latency(report)
    assert "TTFT 1x" in text and "score 8x" in text


def test_a_run_that_ships_figures_only_is_timed_at_its_shapes(nested_copy):
    """Latency depends on the shape alone: a run without weights (weights_shipped false) is timed with seeded
    random weights of its config, and the report says so; a run that should have weights but lacks them is
    still refused in one line."""
    from nml_core.store.runs import load_run
    for f in (nested_copy / "model").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(NMLError, match="missing"):
        api.bench_run(nested_copy, widths=[1.0, 0.5], repeats=1, threads=1, write=False)
    load_run(nested_copy, require_model=False).update(weights_shipped=False)
    report = api.bench_run(nested_copy, widths=[1.0, 0.5], repeats=1, threads=1)
    assert "random weights" in report.weights and [r.n_embd for r in report.rows] == [64, 32]
    assert {"ttft_b1_ms", "ttft_b8_ms"} <= set(report.rows[1].timings) and report.rows[1].decode


def test_a_bf16_bench_is_a_device_of_its_own(nested_copy):
    fp32 = api.bench_run(nested_copy, widths=[1.0, 0.5], repeats=1, threads=1)
    bf16 = api.bench_run(nested_copy, widths=[1.0, 0.5], repeats=1, threads=1, precision="bf16")
    assert bf16.device_key == fp32.device_key + "-bf16" and bf16.precision == "bf16"
    from nml_core.analysis import latency
    seen = []
    real = latency.extract_student
    latency.extract_student = lambda *a, **k: seen.append(real(*a, **k)) or seen[-1]
    try:
        api.bench_run(nested_copy, widths=[0.5], repeats=1, threads=1, precision="bf16")
    finally:
        latency.extract_student = real
    assert seen and all(p.dtype == torch.bfloat16 for s in seen for p in s.parameters()), "bf16 students are timed"
    assert {p.name for p in (nested_copy / "latency").glob("*.json")} == {f"{fp32.device_key}.json",
                                                                          f"{bf16.device_key}.json"}


def test_time_to_first_token_is_generates_own_prefill(nested_copy):
    """TTFT times the forward `generate` runs first: KV cache on, the last position's logits only."""
    from nml_core.analysis.latency import prefill_fn
    from nml_core.store.models import load_run_model
    from nml_core.store.runs import load_run
    model = load_run_model(load_run(nested_copy))[0].eval()
    seen = {}
    fn = prefill_fn(lambda x: seen.setdefault("out", model(input_ids=x, use_cache=True, logits_to_keep=1)), 2,
                    model.config, "cpu")
    with torch.inference_mode():
        fn()
    assert seen["out"].logits.shape[1] == 1 and seen["out"].past_key_values is not None


def test_a_partial_evaluation_never_replaces_a_fuller_one(nested_copy):
    """eval records how many tokens it scored; a quicker check goes beside the fuller eval.json, or replaces it
    only with force."""
    import json
    api.baseline(nested_copy, "naive")
    full = api.evaluate_run(nested_copy, max_tokens=512)
    assert full.written.name == "eval.json" and full.report.tokens_scored > 0
    stored = json.loads((nested_copy / "eval.json").read_text())
    quick = api.evaluate_run(nested_copy, max_tokens=128)
    assert quick.report.tokens_scored < full.report.tokens_scored
    assert quick.written.name == f"eval-{quick.report.tokens_scored}-tokens.json"
    assert json.loads((nested_copy / "eval.json").read_text()) == stored, "the fuller evaluation is kept"
    for b in (nested_copy / "baselines").iterdir():
        assert json.loads((b / "eval.json").read_text())["tokens_scored"] == full.report.tokens_scored
    forced = api.evaluate_run(nested_copy, max_tokens=128, force=True)
    assert forced.written.name == "eval.json"
    assert json.loads((nested_copy / "eval.json").read_text())["tokens_scored"] == quick.report.tokens_scored


def test_eval_keeps_the_figures_of_baselines_that_ship_no_weights(nested_copy):
    """A run whose independent students ship as figures (the default run does) is evaluated again: their
    stored rows stand in the report, and their eval.json is left as it was."""
    (student,) = api.baseline(nested_copy, "independent", width=0.5, steps=2)
    api.evaluate_run(nested_copy, max_tokens=512)
    stored = (student / "eval.json").read_bytes()
    row = json.loads(stored)["widths"][0]
    for f in (student / "model").glob("*.safetensors"):
        f.unlink()
    report = api.evaluate_run(nested_copy, max_tokens=512).report.to_json()
    assert report["baselines"]["independent"] == [row] and "kept_baselines" in report
    assert (student / "eval.json").read_bytes() == stored
