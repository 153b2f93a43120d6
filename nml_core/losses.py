"""The nested distillation loss: alpha * KL(teacher || student) * T^2 + (1 - alpha) * CE.

Why a hand-written autograd function: with GPT-2's 50257-token vocabulary and a small model, the loss's
vocab-sized elementwise work (two log-softmaxes, the KL terms, their backward) cost more than the LM-head
matmul itself when done with stock ops (3.0 s per width per 16x128 batch on 2 CPU cores). The gradient
of this loss has a closed form,
    dL/dz = (1 - alpha) * (softmax(z) - onehot(y)) + alpha * T * (softmax(z / T) - p_teacher)
so we compute loss and gradient together, row chunk by row chunk while the chunk is in cache, and the
backward pass only scales the stored gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ROWS = 128


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities at temperature T, computed once per step and shared by every width."""
    return F.log_softmax(logits.float() / temperature, dim=-1)


class _NestedKDLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, target_logprobs, alpha: float, temperature: float):
        n, vocab = logits.shape
        grad = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        ce_sum = logits.new_zeros((), dtype=torch.float32)
        kl_sum = logits.new_zeros((), dtype=torch.float32)
        rows = torch.arange(CHUNK_ROWS, device=logits.device)
        for start in range(0, n, CHUNK_ROWS):
            z = logits[start:start + CHUNK_ROWS].float()
            y = labels[start:start + CHUNK_ROWS]
            r = rows[:len(y)]
            logp = z - torch.logsumexp(z, -1, keepdim=True)
            ce_sum += -logp[r, y].sum()
            g = logp.exp_().mul_(1 - alpha)                  # (1-alpha) * softmax(z)
            g[r, y] -= 1 - alpha
            if target_logprobs is not None and alpha > 0:
                t_logp = target_logprobs[start:start + CHUNK_ROWS]
                zt = z / temperature
                logq = zt - torch.logsumexp(zt, -1, keepdim=True)
                t_p = t_logp.exp()
                kl_sum += (t_p * (t_logp - logq)).sum()
                g += (logq.exp_() - t_p).mul_(alpha * temperature)
            grad[start:start + CHUNK_ROWS] = g / n
        ce, kl = ce_sum / n, kl_sum / n
        ctx.save_for_backward(grad)
        ctx.logits_dtype = logits.dtype
        ctx.mark_non_differentiable(ce, kl)
        return alpha * kl * temperature ** 2 + (1 - alpha) * ce, ce, kl

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kl):
        (grad,) = ctx.saved_tensors
        return (grad * grad_loss).to(ctx.logits_dtype), None, None, None, None


def nested_kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, target_logprobs: torch.Tensor | None,
                   alpha: float, temperature: float) -> tuple[torch.Tensor, dict]:
    """Loss of one width.

    student_logits (B, T, V); labels (B, T); target_logprobs (B, T, V) = soft_targets(teacher logits) or None
    for plain CE. KL is averaged per token and scaled by T^2 so its gradient size does not depend on T
    (Hinton et al. 2015).
    """
    vocab = student_logits.size(-1)
    if target_logprobs is None:
        alpha = 0.0
    else:
        target_logprobs = target_logprobs.reshape(-1, vocab)
    loss, ce, kl = _NestedKDLoss.apply(student_logits.reshape(-1, vocab), labels.reshape(-1), target_logprobs,
                                      float(alpha), float(temperature))
    parts = {"ce": ce.item()}
    if alpha > 0:
        parts["kl"] = kl.item()
    return loss, parts
