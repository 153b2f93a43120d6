"""The nested distillation loss: alpha * KL(teacher || student) * T^2 + (1 - alpha) * CE."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities at temperature T, computed once per step and shared by every width."""
    return F.log_softmax(logits.float() / temperature, dim=-1)


def nested_kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, target_logprobs: torch.Tensor | None,
                   alpha: float, temperature: float) -> tuple[torch.Tensor, dict]:
    """Loss of one width.

    student_logits (B, T, V); labels (B, T); target_logprobs (B, T, V) = soft_targets(teacher logits) or None
    for plain CE. KL is averaged per token and scaled by T^2 so its gradient size does not depend on T
    (Hinton et al. 2015).
    """
    logits = student_logits.float()
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
    if target_logprobs is None or alpha == 0:
        return ce, {"ce": ce.item()}
    student_logprobs = F.log_softmax(logits / temperature, dim=-1)
    kl = F.kl_div(student_logprobs.reshape(-1, logits.size(-1)), target_logprobs.reshape(-1, logits.size(-1)),
                  log_target=True, reduction="batchmean")
    loss = alpha * kl * temperature ** 2 + (1 - alpha) * ce
    return loss, {"ce": ce.item(), "kl": kl.item()}
