import pytest
import torch
import torch.nn.functional as F

from nml_core.training import losses
from nml_core.training.losses import nested_kd_loss, soft_targets


def reference(s, y, t, alpha, T):
    ce = F.cross_entropy(s.flatten(0, 1), y.flatten())
    if t is None:
        return ce
    kl = F.kl_div(F.log_softmax(s / T, -1).flatten(0, 1), soft_targets(t, T).flatten(0, 1), log_target=True,
                  reduction="batchmean")
    return alpha * kl * T ** 2 + (1 - alpha) * ce


@pytest.mark.parametrize("alpha, T, with_teacher", [(0.5, 2.0, True), (0.9, 1.0, True), (0.0, 2.0, True),
                                                     (0.5, 2.0, False)])
def test_fused_loss_and_gradient_match_autograd_reference(alpha, T, with_teacher):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 130, 50, generator=g, requires_grad=True)  # 390 rows: several chunks + a partial one
    y = torch.randint(0, 50, (3, 130), generator=g)
    t = torch.randn(3, 130, 50, generator=g) if with_teacher else None
    loss, parts = nested_kd_loss(s, y, soft_targets(t, T) if with_teacher else None, alpha, T)
    (grad,) = torch.autograd.grad(loss * 3.0, s)
    s2 = s.detach().clone().requires_grad_(True)
    ref = reference(s2, y, t, alpha, T)
    (ref * 3.0).backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, s2.grad, atol=1e-6, rtol=1e-4)
    assert float(parts["ce"]) == pytest.approx(F.cross_entropy(s.flatten(0, 1), y.flatten()).item(), rel=1e-5)


def test_inplace_soft_targets_equal_the_allocating_ones():
    logits = torch.randn(2, 5, 97)
    expected = soft_targets(logits, 2.0)
    got = soft_targets(logits.clone(), 2.0, inplace=True)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


@pytest.fixture
def fused_everywhere(monkeypatch):
    """The compiled kernels on any size (they run only from FUSED_MIN_ELEMENTS otherwise), a fresh compile cache."""
    monkeypatch.setattr(losses, "FUSED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(losses, "_COMPILED", {})
    yield
    if any(v is None for v in losses._COMPILED.values()):
        pytest.skip("torch.compile cannot run here (the eager loss ran instead)")


@pytest.mark.parametrize("T", [2.0, 1.0, 3.0])  # 2 and 1 take the one-exp shortcut, 3 the general form
def test_compiled_loss_equals_the_eager_chunks(fused_everywhere, T):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 40, 300, generator=g) * 3
    y = torch.randint(0, 300, (3, 40), generator=g)
    teacher = torch.randn(3, 40, 300, generator=g) * 3
    results = []
    for fused in (False, True):
        z = s.clone().requires_grad_(True)
        target = losses.DenseTarget.from_logits(teacher.clone(), T, fused=fused)
        loss, parts = nested_kd_loss(z, y, target, 0.5, T, fused=fused)
        (grad,) = torch.autograd.grad(loss * 2.0, z)
        results.append((target.probs, target.neg_entropy, loss, parts["ce"], parts["kl"], grad))
    assert losses._COMPILED  # the fused run went through the compiled kernels, not around them
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(results[1][2], reference(s, y, teacher, 0.5, T), atol=1e-5, rtol=1e-5)


def test_compiled_loss_keeps_bf16_logits_and_gradient(fused_everywhere):
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(64, 500, generator=g) * 3).bfloat16()
    y = torch.randint(0, 500, (64,), generator=g)
    target = losses.DenseTarget.from_logits(torch.randn(64, 500, generator=g), 2.0)
    grads = []
    for fused in (False, True):
        z = s.clone().requires_grad_(True)
        loss, _ = nested_kd_loss(z, y, target, 0.5, 2.0, fused=fused)
        (grad,) = torch.autograd.grad(loss, z)
        grads.append(grad)
    assert grads[1].dtype == torch.bfloat16
    torch.testing.assert_close(grads[1].float(), grads[0].float(), atol=2e-6, rtol=1e-2)


def test_a_kernel_that_cannot_compile_falls_back_to_eager_once(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed
    monkeypatch.setattr(losses, "FUSED_MIN_ELEMENTS", 0)
    monkeypatch.setattr(losses, "_COMPILED", {})
    calls = []

    def broken(fn):
        def run(*args):
            calls.append(fn.__name__)
            raise BackendCompilerFailed.__new__(BackendCompilerFailed)
        return run
    monkeypatch.setattr(losses.torch, "compile", broken)
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(8, 50, generator=g), torch.randn(8, 50, generator=g)
    y = torch.randint(0, 50, (8,), generator=g)
    with pytest.warns(UserWarning, match="eager loss runs instead"):
        target = losses.DenseTarget.from_logits(t.clone(), 2.0)
        loss, _ = nested_kd_loss(s, y, target, 0.5, 2.0)
    nested_kd_loss(s, y, target, 0.5, 2.0)  # not tried again
    assert calls == ["teacher_rows", "_loss_rows"]
    torch.testing.assert_close(loss, reference(s[None], y[None], t[None], 0.5, 2.0))
