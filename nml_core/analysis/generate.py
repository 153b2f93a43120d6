"""Text generation at any nested width and depth (views + KV cache) and teacher-vs-student token diagnostics.

`transformers.generate` needs a module of fixed shape; the elastic forward is a functional call, so this
file holds the short decode loop that runs it with HF's own KV cache passed through.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nesting.elastic import ElasticGPT2


@torch.inference_mode()
def context_cap(n_positions: int, n_prompt: int, max_new_tokens: int) -> str | None:
    """One line saying how generate_ids caps this request at the model's context, or None where nothing is cut."""
    kept = min(n_prompt, n_positions - 1)
    steps = min(max_new_tokens, n_positions - max(kept, 1))
    if kept == n_prompt and steps == max_new_tokens:
        return None
    return (f"the model reads {n_positions} positions: " + (f"the prompt's last {kept} of {n_prompt} tokens are kept, "
            if kept < n_prompt else "") + f"{steps} of the {max_new_tokens} new tokens asked for fit after it")


def generate_ids(elastic: ElasticGPT2, prompt_ids: list[int], width: float, max_new_tokens: int = 40,
                 temperature: float = 0.0, seed: int = 0, static_cache: bool = False, depth: float = 1.0) -> list[int]:
    """Greedy (temperature 0) or sampled continuation of `prompt_ids` at (width, depth); returns the new ids only.

    static_cache: on CUDA, HF `generate` with a static KV cache on the width's view student (transformers
    compiles its forward: ~4x the tokens/s of the dynamic cache on an H100, ../shared/reference/gpu); sampling
    then draws from torch's global generator, seeded with `seed`. On a CPU it falls back to the loop below
    (a compiled static-cache decode does not pay there)."""
    n_positions = elastic.config.n_positions
    ids = list(prompt_ids)[-(n_positions - 1):] or [elastic.config.eos_token_id]
    device = next(elastic.model.parameters()).device
    steps = min(max_new_tokens, n_positions - len(ids))
    if static_cache and device.type == "cuda":
        return _generate_static(elastic, ids, width, depth, steps, temperature, seed)
    gen = torch.Generator().manual_seed(seed)
    x, past, new = torch.tensor([ids], device=device), None, []
    for _ in range(steps):
        out = elastic(x, width=width, depth=depth, past_key_values=past, use_cache=True)
        logits, past = out.logits[0, -1].float(), out.past_key_values
        if temperature <= 0:
            token = int(logits.argmax())
        else:
            token = int(torch.multinomial(F.softmax(logits / temperature, -1).cpu(), 1, generator=gen))
        new.append(token)
        x = torch.tensor([[token]], device=device)
    return new


def _generate_static(elastic: ElasticGPT2, ids: list[int], width: float, depth: float, steps: int,
                     temperature: float, seed: int) -> list[int]:
    model = elastic.model if (width, depth) == (1.0, 1.0) else elastic.view_student(elastic.dims(width, depth))
    x = torch.tensor([ids], device=next(model.parameters()).device)
    torch.manual_seed(seed)
    sample = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=steps, min_new_tokens=steps,
                         cache_implementation="static", pad_token_id=elastic.config.eos_token_id, **sample)
    return out[0, len(ids):].tolist()


@dataclass
class TokenDiagnostics:
    """Per generated token: the teacher's probability of it, KL(teacher || student) at that position,
    and the top-k next-token tables of both models."""
    tokens: list[str]
    teacher_prob: list[float]
    student_prob: list[float]
    kl: list[float]
    teacher_topk: list[list[tuple[str, float]]]
    student_topk: list[list[tuple[str, float]]]


@torch.inference_mode()
def diagnose(teacher_logits_fn, student_logits_fn, tokenizer, prompt_ids: list[int], new_ids: list[int],
             k: int = 5, device: str | torch.device = "cpu") -> TokenDiagnostics:
    """Score the student's continuation under both models in one forward each (position t-1 predicts t);
    `device` is where the models live."""
    seq = torch.tensor([list(prompt_ids) + list(new_ids)], device=device)
    start = len(prompt_ids) - 1
    t_logp = F.log_softmax(teacher_logits_fn(seq)[0, start:-1].float(), -1)
    s_logp = F.log_softmax(student_logits_fn(seq)[0, start:-1].float(), -1)
    target = torch.tensor(new_ids, device=device)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)

    def topk(logp):
        p, i = logp.exp().topk(k, dim=-1)
        return [[(tokenizer.decode([int(t)]), round(float(q), 4)) for t, q in zip(ri, rp)] for ri, rp in zip(i, p)]

    return TokenDiagnostics(tokens=[tokenizer.decode([t]) for t in new_ids],
                            teacher_prob=t_logp.exp().gather(1, target[:, None])[:, 0].tolist(),
                            student_prob=s_logp.exp().gather(1, target[:, None])[:, 0].tolist(),
                            kl=kl.clamp_min(0).tolist(), teacher_topk=topk(t_logp), student_topk=topk(s_logp))
