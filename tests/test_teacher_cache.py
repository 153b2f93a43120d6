"""The top-k teacher cache: exact when k = vocab, training with it never runs the teacher, bad caches refused."""
import numpy as np
import pytest
import torch

from nml_core import api
from nml_core.data.sources import TokenData
from nml_core.errors import NMLError
from nml_core.training.losses import nested_kd_loss, soft_targets
from nml_core.store.runs import create_run
from nml_core.training.teacher_cache import TopKTeacher, build_topk_cache, dense_targets, topk_soft_targets
from nml_core.training.config import TrainConfig
from nml_core.training.loop import train


def sparse_target(logits, k, temperature):
    top = logits.topk(k, dim=-1)
    return topk_soft_targets(top.indices, top.values, torch.logsumexp(logits / temperature, -1), temperature)


def test_full_k_targets_equal_the_teacher_soft_targets(tiny_model):
    logits = tiny_model(input_ids=torch.randint(0, 97, (2, 16))).logits
    dense = dense_targets(*sparse_target(logits, 97, 2.0), 97)
    torch.testing.assert_close(dense, soft_targets(logits, 2.0), atol=1e-5, rtol=1e-5)


def test_small_k_keeps_exact_top_probabilities_and_spreads_the_tail(tiny_model):
    """Not renormalised: the top k keep the teacher's own probabilities, the rest share the tail evenly."""
    logits = tiny_model(input_ids=torch.randint(0, 97, (1, 8))).logits
    idx, logp = sparse_target(logits, 5, 1.0)
    p = dense_targets(idx, logp, 97).exp()
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 8))
    torch.testing.assert_close(p.gather(-1, idx), torch.softmax(logits, -1).gather(-1, idx))
    rest = p.scatter(-1, idx, float("nan"))[0, 0]
    rest = rest[~rest.isnan()]
    torch.testing.assert_close(rest, rest[:1].expand_as(rest))


@pytest.mark.parametrize("k", [4, 97])
def test_sparse_loss_equals_the_dense_loss_and_gradient(tiny_model, k):
    """The fused loss on (ids, log-probs) gives the loss and gradient of the same target made dense;
    with k = V that is exact KD."""
    x = torch.randint(0, 97, (2, 16))
    teacher_logits = tiny_model(input_ids=x).logits.detach()
    sparse = sparse_target(teacher_logits, k, 2.0)
    student = torch.randn(2, 16, 97, requires_grad=True)
    labels = torch.randint(0, 97, (2, 16))
    loss_s, _ = nested_kd_loss(student, labels, sparse, 0.5, 2.0)
    (grad_s,) = torch.autograd.grad(loss_s, student)
    dense = soft_targets(teacher_logits, 2.0) if k == 97 else dense_targets(*sparse, 97)
    loss_d, _ = nested_kd_loss(student, labels, dense, 0.5, 2.0)
    (grad_d,) = torch.autograd.grad(loss_d, student)
    torch.testing.assert_close(loss_s, loss_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_s, grad_d, atol=1e-6, rtol=1e-5)


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
        TopKTeacher(cache, other, 16, 97, 2.0)
    with pytest.raises(NMLError, match="--ctx 16"):
        TopKTeacher(cache, tokens, 32, 97, 2.0)
    with pytest.raises(NMLError, match="--temperature 2.0, not 1.0"):
        TopKTeacher(cache, tokens, 16, 97, 1.0)
    with pytest.raises(NMLError, match="already holds"):
        build_topk_cache(tiny_model, tokens, ctx=16, k=4, out=cache, teacher_id="tiny")


def test_cache_teacher_command_on_a_teacher_run(teacher_run, tmp_path):
    out = api.cache_teacher(str(teacher_run), None, tmp_path / "c", k=16, ctx=32)
    info = TopKTeacher(out, api.run_tokens(api.load_run(teacher_run)), 32, 50257, 2.0).info
    assert info["k"] == 16 and 0 <= info["tail_mass_t1"] <= info["tail_mass_at_temperature"] < 1
