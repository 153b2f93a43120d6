"""The top-k teacher cache: exact when k = vocab, training with it never runs the teacher, bad caches refused."""
import numpy as np
import pytest
import torch

from nml_core import commands
from nml_core.data import TokenData
from nml_core.errors import NMLError
from nml_core.losses import soft_targets
from nml_core.runs import create_run
from nml_core.teacher_cache import TopKTeacher, build_topk_cache, topk_soft_targets
from nml_core.train import TrainConfig, train


def test_full_k_targets_equal_the_teacher_soft_targets(tiny_model):
    x = torch.randint(0, 97, (2, 16))
    logits = tiny_model(input_ids=x).logits
    top = logits.topk(97, dim=-1)
    dense = topk_soft_targets(top.indices, top.values, 2.0, 97)
    torch.testing.assert_close(dense, soft_targets(logits, 2.0), atol=1e-5, rtol=1e-5)


def test_small_k_keeps_the_top_tokens_and_renormalises(tiny_model):
    logits = tiny_model(input_ids=torch.randint(0, 97, (1, 8))).logits
    top = logits.topk(5, dim=-1)
    p = topk_soft_targets(top.indices, top.values, 1.0, 97).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 8))
    assert ((p > 0).sum(-1) == 5).all()


@pytest.fixture
def tokens():
    rng = np.random.default_rng(0)
    return TokenData(rng.integers(0, 97, 4000).astype(np.uint16), rng.integers(0, 97, 800).astype(np.uint16))


def test_training_with_the_cache_never_runs_the_teacher(tiny_model, tokens, tmp_path):
    import copy
    teacher = copy.deepcopy(tiny_model)
    cache = build_topk_cache(teacher, tokens, ctx=16, k=8, out=tmp_path / "cache", teacher_id="tiny")

    def forbidden(*a, **k):
        raise AssertionError("the teacher ran although a cache was given")

    teacher.forward = forbidden
    run = create_run(tmp_path / "run", {"kind": "nested", "widths": [1.0, 0.5]})
    cfg = TrainConfig(steps=12, batch_size=4, ctx=16, lr=3e-3, log_every=1, checkpoint_every=100,
                      teacher_cache=str(cache))
    train(run, tiny_model.train(), tokens, cfg, [1.0, 0.5], teacher=teacher)
    losses = [r["loss"]["0.5"] for r in run.metrics()]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_a_cache_for_other_data_or_context_is_refused(tiny_model, tokens, tmp_path):
    cache = build_topk_cache(tiny_model, tokens, ctx=16, k=4, out=tmp_path / "cache", teacher_id="tiny")
    other = TokenData(tokens.train[::-1].copy(), tokens.val)
    with pytest.raises(NMLError, match="other train tokens"):
        TopKTeacher(cache, other, 16, 97)
    with pytest.raises(NMLError, match="--ctx 16"):
        TopKTeacher(cache, tokens, 32, 97)
    with pytest.raises(NMLError, match="already holds"):
        build_topk_cache(tiny_model, tokens, ctx=16, k=4, out=cache, teacher_id="tiny")


def test_cache_teacher_command_on_a_teacher_run(teacher_run, tmp_path):
    out = commands.cache_teacher(str(teacher_run), None, tmp_path / "c", k=16, ctx=32)
    info = TopKTeacher(out, commands.run_tokens(commands.load_run(teacher_run)), 32, 50257).info
    assert info["k"] == 16 and 0 <= info["tail_mass"] < 1
