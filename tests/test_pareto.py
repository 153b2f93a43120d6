from nml_core.analysis.pareto import pareto_front, run_points
from nml_core.store.runs import load_run


def test_front_keeps_only_undominated_points():
    pts = [{"ppl": 10, "prefill_b1_ms": 5}, {"ppl": 12, "prefill_b1_ms": 3}, {"ppl": 13, "prefill_b1_ms": 4},
           {"ppl": 20, "prefill_b1_ms": 1}, {"ppl": 9, "prefill_b1_ms": None}]
    assert pareto_front(pts, "ppl", "prefill_b1_ms") == [True, True, False, True, False]
    acc = [{"acc": 0.5, "decode_tok_s": 100}, {"acc": 0.4, "decode_tok_s": 90}]
    assert pareto_front(acc, "acc", "decode_tok_s") == [True, False]


def test_run_points_join_quality_and_latency(nested_copy):
    from nml_core import api
    api.baseline(nested_copy, "naive")
    api.evaluate_run(nested_copy, max_tokens=256)
    api.bench_run(nested_copy, repeats=2, threads=1)
    pts = run_points(load_run(nested_copy))
    groups = {p["group"] for p in pts}
    assert {"teacher", "NML", "naive slice"} <= groups
    naive = [p for p in pts if p["group"] == "naive slice"]
    nml = {p["width"]: p for p in pts if p["group"] == "NML"}
    assert all(p["prefill_b1_ms"] == nml[p["width"]]["prefill_b1_ms"] for p in naive)
