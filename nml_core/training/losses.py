"""The nested distillation loss: alpha * KL(teacher || student) * T^2 + (1 - alpha) * CE.

Why a hand-written autograd function: with GPT-2's 50257-token vocabulary and a small model, the loss's
vocab-sized elementwise work (two log-softmaxes, the KL terms, their backward) cost more than the LM-head
matmul itself when done with stock ops (3.0 s per width per 16x128 batch on 2 CPU cores). The gradient
of this loss has a closed form,
    dL/dz = (1 - alpha) * (softmax(z) - onehot(y)) + alpha * T * (softmax(z / T) - p_teacher)
so we compute loss and gradient together, row chunk by row chunk while the chunk is in cache, and the
backward pass only scales the stored gradient (in the logits' dtype: bf16 under autocast, half the bytes).

What every width shares is computed once per step (DenseTarget): the teacher's probabilities p and its
negative entropy sum(p log p) per row, so a width's KL is sum(p log p) - p . log q, with p . log q one dot
product per chunk, and no width takes exp of the teacher's log-probabilities again.

On a CPU, for batches big enough to pay for compiling (FUSED_MIN_ELEMENTS), both the teacher's target and a
width's loss + gradient are written once more as whole-tensor functions for torch.compile, which fuses each into
one parallel loop over rows that reads a row (in cache) a few times and writes the result once: measured 2x
faster than the eager chunks (bench/nested_step.py: nested vs nested_eager_loss). Where compiling fails (no C++
compiler) the eager chunks run, said once.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CHUNK_ROWS = {"cpu": 8, "cuda": 1024}  # CPU: a chunk (8 x 50257 fp32 = 1.6 MB) stays in cache across its
# elementwise passes: 1.7x faster than 128-row chunks on this machine. GPU: few, large launches.
FUSED_MIN_ELEMENTS = 1 << 24  # (rows x vocab) from which the compiled kernels run: compiling costs ~2-3 s once per
# process, the eager loss of a (4 x 128, 50257) batch ~70 ms per width, so below this size it rarely pays back


@dataclass
class DenseTarget:
    """The teacher's distribution at temperature T over the whole vocabulary, as the loss reads it.

    probs (N, V) fp32: p; neg_entropy (N,): sum_v p log p per row."""
    probs: torch.Tensor
    neg_entropy: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor, temperature: float, fused: bool = True) -> "DenseTarget":
        """From a frozen model's (..., V) logits at temperature T: the fused kernel where it runs, else
        soft_targets + from_logprobs in the logits' own memory (overwritten: callers pass logits they are done with)."""
        logits = logits.reshape(-1, logits.size(-1))
        if fused and (out := _run_fused(teacher_rows, logits, float(temperature))) is not None:
            return cls(*out)
        return cls.from_logprobs(soft_targets(logits.float(), temperature, inplace=True), inplace=True)

    @classmethod
    def from_logprobs(cls, logp: torch.Tensor, inplace: bool = False) -> "DenseTarget":
        """From (..., V) log-probabilities; inplace turns them into the probabilities (no second (N, V) tensor)."""
        logp = logp.reshape(-1, logp.size(-1))
        probs = logp if inplace and logp.dtype == torch.float32 else torch.empty(logp.shape, dtype=torch.float32,
                                                                                   device=logp.device)
        neg_entropy = torch.empty(logp.size(0), dtype=torch.float32, device=logp.device)
        chunk = CHUNK_ROWS.get(logp.device.type, 1024) * 16
        for start in range(0, logp.size(0), chunk):
            lp = logp[start:start + chunk].float()
            p = lp.exp()
            neg_entropy[start:start + chunk] = torch.where(p > 0, p * lp, 0).sum(-1)
            probs[start:start + chunk] = p
        return cls(probs, neg_entropy)

    def mix(self, other: "DenseTarget", weight: float) -> "DenseTarget":
        """(1 - weight) x self + weight x other, as a distribution (MatTA's teacher/TA mixture)."""
        probs = torch.lerp(self.probs, other.probs, weight)
        return DenseTarget.from_logprobs(probs.clamp_min(1e-38).log_(), inplace=True)


@dataclass
class WidthLoss:
    """One width's losses of a step, as 0-d tensors on the device: read all at once per logged step (one sync).

    loss: what is optimised, alpha KL T^2 + (1 - alpha) CE; ce: the cross-entropy against the labels, the number
    to hold against validation CE; kl: KL(teacher || student) at T (None without a teacher)."""
    loss: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor | None = None

    def scaled(self, factor: float) -> "WidthLoss":
        return WidthLoss(self.loss * factor, self.ce * factor, None if self.kl is None else self.kl * factor)

    def plus(self, other: "WidthLoss") -> "WidthLoss":
        kl = None if self.kl is None or other.kl is None else self.kl + other.kl
        return WidthLoss(self.loss + other.loss, self.ce + other.ce, kl)

    @staticmethod
    def read_all(losses: dict[str, "WidthLoss"]) -> dict[str, dict[str, float]]:
        """width -> {loss, ce[, kl]} as floats, from one stacked transfer."""
        names = [(k, f) for k, v in losses.items() for f in ("loss", "ce", "kl") if getattr(v, f) is not None]
        values = torch.stack([getattr(losses[k], f).float() for k, f in names]).tolist()
        out: dict[str, dict[str, float]] = {k: {} for k in losses}
        for (k, f), v in zip(names, values):
            out[k][f] = v
        return out


def soft_targets(logits: torch.Tensor, temperature: float, inplace: bool = False) -> torch.Tensor:
    """Log-probabilities at temperature T, computed once per step and shared by every width.

    inplace: overwrite `logits` (the frozen teacher's, not needed afterwards) instead of allocating two more
    (B, T, V) tensors: 2 x 206 MB less at 8 x 128 x 50257."""
    if inplace and logits.dtype == torch.float32 and not logits.requires_grad:
        logits.div_(temperature)
        return logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True))
    return F.log_softmax(logits.float() / temperature, dim=-1)


def mix_targets(teacher: torch.Tensor, ta: torch.Tensor, ta_weight: float) -> torch.Tensor:
    """log((1 - r) p_teacher + r p_TA): KL to this mixture has the gradient of (1 - r) KL(teacher) + r KL(TA),
    because the KD gradient is linear in the target probabilities (dL/dz = T (q - p))."""
    if ta_weight >= 1:
        return ta
    if ta_weight <= 0:
        return teacher
    if isinstance(teacher, DenseTarget):
        return teacher.mix(ta, ta_weight)
    return torch.logaddexp(teacher + math.log1p(-ta_weight), ta + math.log(ta_weight))


def teacher_rows(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """p = softmax(z / T) (N, V) fp32 and sum_v p log p (N,): DenseTarget's two fields in one pass per row."""
    zt = logits.float() * (1 / temperature)
    zt = zt - zt.amax(-1, keepdim=True)
    e = zt.exp()
    total = e.sum(-1, keepdim=True)
    p = e / total
    return p, (p * (zt - total.log())).sum(-1)


def _loss_rows(z: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, neg_entropy: torch.Tensor, alpha: float,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_NestedKDLoss.forward over whole rows, for torch.compile: (gradient in z's dtype, sum of CE, sum of KL).

    With zs = z - max(z) and e = exp(zs / T): softmax(z / T) = e / sum(e), and at T = 2 softmax(z) = e^2 / sum(e^2),
    so each element takes one exp, not two (and not three: the gradient pass recomputes e instead of storing it)."""
    n = z.size(0)
    a_ce, a_kd = (1 - alpha) / n, alpha * temperature / n
    zf = z.float()
    top = zf.amax(-1, keepdim=True)
    zt = (zf - top) * (1 / temperature)
    e = zt.exp()
    sum_t = e.sum(-1, keepdim=True)
    e1 = e * e if temperature == 2 else e if temperature == 1 else (zf - top).exp()
    sum_1 = e1.sum(-1, keepdim=True)
    ce = (sum_1.log() - (zf.gather(1, labels[:, None]) - top)).sum()
    kl = (neg_entropy - (probs * zt).sum(-1) + sum_t.log().squeeze(-1) * probs.sum(-1)).sum()
    hot = torch.arange(z.size(1), device=z.device)[None, :] == labels[:, None]
    grad = (a_ce / sum_1) * e1 + a_kd * (e / sum_t - probs) - torch.where(hot, a_ce, 0.0)
    return grad.to(z.dtype), ce, kl


_COMPILED: dict = {}  # kernel -> its torch.compile'd form, or None once compiling it failed in this process


def _run_fused(kernel, first: torch.Tensor, *rest):
    """kernel(first, *rest) compiled, or None where the fused path does not run: not a CPU tensor, too small to
    pay for compiling, or compiling failed here (said once; the eager chunks take over)."""
    if first.device.type != "cpu" or first.numel() < FUSED_MIN_ELEMENTS or _COMPILED.get(kernel, 0) is None:
        return None
    if kernel not in _COMPILED:
        _COMPILED[kernel] = torch.compile(kernel)
    try:
        return _COMPILED[kernel](first, *rest)
    except Exception as e:
        if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise
        _COMPILED[kernel] = None
        first_line = (str(e).strip().splitlines() or [""])[0][:160]
        warnings.warn(f"the fused loss could not compile here ({type(e).__name__}: {first_line}); "
                      "the eager loss runs instead (about 2x slower per width)")
        return None


class _NestedKDLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, target, alpha: float, temperature: float, fused: bool = True):
        n, vocab = logits.shape
        if fused and isinstance(target, DenseTarget) and alpha > 0 and (out := _run_fused(
                _loss_rows, logits, labels, target.probs, target.neg_entropy, alpha, temperature)) is not None:
            grad, ce_sum, kl_sum = out
            return _NestedKDLoss._finish(ctx, grad, ce_sum / n, kl_sum / n, alpha, temperature)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        ce_sum = logits.new_zeros((), dtype=torch.float32)
        kl_sum = logits.new_zeros((), dtype=torch.float32)
        chunk = CHUNK_ROWS.get(logits.device.type, 1024)
        rows = torch.arange(chunk, device=logits.device)
        a_ce, a_kd = (1 - alpha) / n, alpha * temperature / n  # the gradient's weights, with the mean's 1/n
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            z = logits[start:stop].float()
            y, r = labels[start:stop], rows[:stop - start]
            logp = torch.log_softmax(z, -1)
            ce_sum -= logp[r, y].sum()
            if isinstance(target, DenseTarget) and alpha > 0:
                # z is our own copy when the logits are bf16/fp16 (scale it in place), else a view of them
                zt = z.mul_(1 / temperature) if logits.dtype != torch.float32 else z / temperature
                logq = torch.log_softmax(zt, -1)
                p = target.probs[start:stop]
                kl_sum += target.neg_entropy[start:stop].sum() - torch.dot(p.reshape(-1), logq.reshape(-1))
                g = logp.exp_().mul_(a_ce).add_(logq.exp_(), alpha=a_kd).sub_(p, alpha=a_kd)
            elif isinstance(target, tuple) and alpha > 0:
                g, kl = _sparse_kd_chunk(z, logp, target, start, stop, vocab, a_ce, a_kd, temperature)
                kl_sum += kl
            else:
                g = logp.exp_().mul_(a_ce)
            g[r, y] -= a_ce
            grad[start:stop] = g
        return _NestedKDLoss._finish(ctx, grad, ce_sum / n, kl_sum / n, alpha, temperature)

    @staticmethod
    def _finish(ctx, grad, ce, kl, alpha: float, temperature: float):
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(ce, kl)
        return alpha * kl * temperature ** 2 + (1 - alpha) * ce, ce, kl

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_kl):
        (grad,) = ctx.saved_tensors
        if grad.device.type == "cpu" and float(grad_loss) == 1.0:  # the usual case: skip a pass over (N, V)
            return grad, None, None, None, None, None
        return grad.mul_(grad_loss.to(grad.dtype)), None, None, None, None, None


def _sparse_kd_chunk(z, logp, target, start: int, stop: int, vocab: int, a_ce: float, a_kd: float,
                     temperature: float):
    """One chunk's gradient and KL against a sparse top-k teacher (ids, log-probs): the tail mass
    r = 1 - sum(p_k) is spread uniformly, u = r / (V - k) on each other token, so KL and gradient need no
    (rows, V) target tensor."""
    t_idx, t_logp = (t[start:stop] for t in target)
    logq = torch.log_softmax(z / temperature, -1)
    t_p = t_logp.exp()
    logq_top = logq.gather(1, t_idx)
    tail = (1 - t_p.sum(-1)).clamp_min(0)
    u = tail / max(1, vocab - t_idx.size(1))
    logq_rest = logq.sum(-1) - logq_top.sum(-1)
    kl = (t_p * (t_logp - logq_top)).sum() + (tail * u.clamp_min(1e-30).log() - u * logq_rest).sum()
    g = logp.exp_().mul_(a_ce).add_(logq.exp_(), alpha=a_kd)
    g -= a_kd * u[:, None]
    g.scatter_add_(1, t_idx, (t_p - u[:, None]).mul_(-a_kd))
    return g, kl


def kd_loss_terms(z: torch.Tensor, labels: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor] | None,
                  alpha: float, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, CE, KL) of one sub-model as stock differentiable ops over whole tensors: the same loss as
    nested_kd_loss, written for a compiler to fuse with its backward (graph_step) instead of by hand.
    z (N, V) logits, labels (N,), target (probs (N, V), neg_entropy (N,)) of teacher_rows, or None (plain CE)."""
    z = z.float()
    ce = F.cross_entropy(z, labels)
    if target is None:
        return ce, ce, torch.zeros_like(ce)
    probs, neg_entropy = target
    kl = (neg_entropy - (probs * F.log_softmax(z / temperature, dim=-1)).sum(-1)).mean()
    return alpha * kl * temperature ** 2 + (1 - alpha) * ce, ce, kl


def nested_kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, target_logprobs: torch.Tensor | None,
                   alpha: float, temperature: float, fused: bool = True) -> tuple[torch.Tensor, dict]:
    """Loss of one width.

    student_logits (B, T, V); labels (B, T); target_logprobs: a DenseTarget (made once per step and shared by
    the widths), (B, T, V) log-probs = soft_targets(teacher logits), or a sparse top-k teacher (ids (B, T, k), log-probs (B, T, k)) from nml_core.teacher_cache, or None for plain
    CE. KL is averaged per token and scaled by T^2 so its gradient size does not depend on T
    (Hinton et al. 2015). fused: let the compiled kernel run where it pays (module doc); False: the eager chunks.
    """
    vocab = student_logits.size(-1)
    if target_logprobs is None:
        alpha = 0.0
    elif isinstance(target_logprobs, tuple):
        target_logprobs = tuple(t.reshape(-1, t.size(-1)) for t in target_logprobs)
    elif not isinstance(target_logprobs, DenseTarget):  # log-probs: the shared form made here, for this width
        target_logprobs = DenseTarget.from_logprobs(target_logprobs)
    loss, ce, kl = _NestedKDLoss.apply(student_logits.reshape(-1, vocab), labels.reshape(-1), target_logprobs,
                                      float(alpha), float(temperature), fused)
    parts = {"ce": ce}  # 0-d tensors on the logits' device: read them when logging, not per width (a GPU sync)
    if alpha > 0:
        parts["kl"] = kl
    return loss, parts
