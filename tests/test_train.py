import copy

import numpy as np
import pytest
import torch

from nml_core.data.sources import TokenData
from nml_core.errors import NMLError
from nml_core.store.runs import create_run, load_run, read_metrics
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.training.config import TrainConfig, lr_factor, widths_for_step
from nml_core.training.loop import train

WIDTHS = [1.0, 0.5, 0.25, 0.125]


def pattern_data(n=4000):
    """Low-entropy token stream (a repeating 11-token phrase) that a tiny model learns in a few steps."""
    ids = np.tile(np.array([5, 17, 3, 42, 8, 8, 61, 2, 33, 90, 14], dtype=np.uint16), n // 11 + 1)[:n]
    return TokenData(ids, ids[:500].copy(), {"source": "pattern"})


def losses(model, batch, widths=WIDTHS):
    e = ElasticGPT2(model).eval()
    with torch.no_grad():
        return [torch.nn.functional.cross_entropy(e(batch[:, :-1], width=w).logits.flatten(0, 1),
                                                  batch[:, 1:].flatten()).item() for w in widths]


def test_nested_training_lowers_every_width_loss(tmp_path, tiny_model):
    data = pattern_data()
    batch = torch.from_numpy(data.val[:4 * 17].astype(np.int64).reshape(4, 17))
    before = losses(tiny_model, batch)
    teacher = copy.deepcopy(tiny_model)
    cfg = TrainConfig(steps=8, batch_size=4, ctx=16, lr=3e-3, warmup=0, log_every=1, checkpoint_every=100)
    run = create_run(tmp_path / "r", {"kind": "nested"})
    train(run, tiny_model, data, cfg, WIDTHS, teacher=teacher)
    after = losses(tiny_model, batch)
    assert all(a < b for a, b in zip(after, before)), (before, after)
    rows = read_metrics(run.path)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert set(rows[-1]["loss"]) == {"1", "0.5", "0.25", "0.125"} and rows[-1]["tokens_per_s"] > 0


def _cfg(**kw):
    return TrainConfig(steps=6, batch_size=4, ctx=16, lr=2e-3, warmup=1, log_every=1, checkpoint_every=100,
                       strategy="sandwich", **kw)


def test_interrupted_run_resumes_to_the_same_state(tmp_path, tiny_model):
    data = pattern_data()
    straight = copy.deepcopy(tiny_model)
    train(create_run(tmp_path / "a", {"kind": "nested"}), straight, data, _cfg(), WIDTHS, teacher=copy.deepcopy(tiny_model))

    def stop_at_3(row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    model = copy.deepcopy(tiny_model)
    run = create_run(tmp_path / "b", {"kind": "nested"})
    with pytest.raises(NMLError, match="cancelled at step 3; checkpoint kept"):
        train(run, model, data, _cfg(), WIDTHS, teacher=copy.deepcopy(tiny_model), callback=stop_at_3)
    assert load_run(run.path, require_model=False).status == "cancelled"
    resumed = copy.deepcopy(tiny_model)  # fresh weights: everything must come from the checkpoint
    run = create_run(tmp_path / "b", {}, resume=True)
    train(run, resumed, data, _cfg(), WIDTHS, teacher=copy.deepcopy(tiny_model), resume=True)
    for (n, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=n)
    assert [r["step"] for r in read_metrics(run.path)] == [1, 2, 3, 4, 5, 6]


def test_cascade_kd_and_random_strategy_train(tmp_path, tiny_model):
    cfg = TrainConfig(steps=3, batch_size=2, ctx=16, kd_source="cascade", strategy="random", log_every=1)
    train(create_run(tmp_path / "c", {"kind": "nested"}), tiny_model, pattern_data(), cfg, WIDTHS,
          teacher=copy.deepcopy(tiny_model))
    assert all(len(r["loss"]) == 1 for r in read_metrics(tmp_path / "c"))


def test_out_of_memory_becomes_a_clear_error(tmp_path, tiny_model, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr("nml_core.training.loop.nested_kd_loss", oom)
    run = create_run(tmp_path / "o", {"kind": "nested"})
    with pytest.raises(NMLError, match="out of memory at batch size 4; retry with a smaller --batch-size"):
        train(run, tiny_model, pattern_data(), _cfg(), WIDTHS)
    assert load_run(run.path, require_model=False).status == "failed"


def test_schedule_and_sampling_rules():
    cfg = TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) == pytest.approx(0.1, abs=1e-3)
    import random
    rng = random.Random(0)
    picks = widths_for_step(WIDTHS, "sandwich", rng)
    assert picks[0] == 1.0 and picks[-1] == 0.125 and len(picks) == 3
    assert widths_for_step(WIDTHS, "all", rng) == WIDTHS


@pytest.mark.parametrize("strategy, widths_per_step", [("all", 4), ("sandwich", 3), ("random", 1)])
def test_the_estimate_counts_the_widths_the_strategy_trains(tiny_model, monkeypatch, strategy, widths_per_step):
    """Each width's step and the teacher's forward are timed apart and weighted by how often the strategy trains
    each width: a random run costs one width per step, not all four."""
    from nml_core.training import estimate as est
    from nml_core.training.config import TrainConfig
    timings = iter([1.0, 0.5, 0.25, 0.125, 0.2])  # widths 1 .. 1/8, then the teacher (s at the calibration batch)
    monkeypatch.setattr(est, "_timed", lambda fn, device, runs=2: next(timings))
    cfg = TrainConfig(steps=10, batch_size=2, ctx=16, strategy=strategy, device="cpu", mixed_precision="no")
    e = est.estimate(tiny_model, [1.0, 0.5, 0.25, 0.125], None, cfg)
    width_s = {"all": 1.875, "sandwich": 1.0 + 0.125 + (0.5 + 0.25) / 2, "random": 1.875 / 4}[strategy]
    assert e["step_s"] == pytest.approx(0.2 + width_s) and e["strategy"] == strategy
    assert widths_per_step == round(sum(est.width_shares([1.0, 0.5, 0.25, 0.125], strategy).values()))


def test_metrics_log_train_ce_and_kl_per_width_beside_val_ce(nested_run):
    """Train CE is logged apart from the optimised KD + CE loss, so it can be held against val CE."""
    rows = load_run(nested_run).metrics()
    last = rows[-1]
    assert set(last["ce"]) == set(last["kl"]) == set(last["loss"]) == {"1", "0.5", "0.25", "0.125"}
    for w in last["loss"]:  # loss = alpha KL T^2 + (1 - alpha) CE, with the recipe's alpha 0.5 and T 2
        assert last["loss"][w] == pytest.approx(0.5 * last["kl"][w] * 4 + 0.5 * last["ce"][w], rel=1e-4)
