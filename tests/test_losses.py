import pytest
import torch
import torch.nn.functional as F

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
