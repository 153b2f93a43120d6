"""Does nested training waste anything? One nested step vs one plain fine-tune step of the same model.

  python -m bench.nested_step [--shape embedded|gpt2-small] [--batch 8] [--repeats 5] [--device cpu|cuda]

Times, interleaved round-robin in one process (warm-up, median):
  plain    one stock HF step: model(input_ids, labels).loss, backward, AdamW step (a plain fine-tune)
  teacher  the frozen teacher's forward on the same batch                  (KD's fixed extra)
  nested   one NML step at widths 1, 1/2, 1/4, 1/8: teacher forward + every width's forward, fused KD+CE loss,
           backward + one AdamW step                                       (nml_core.training.loop.nested_step)
  kd_loss_one_width  the fused KD + CE loss alone (forward + backward) on one width's (B, T, V) logits
  nested_topk_cache  the same with the teacher's top-64 logits read from a cache instead of its forward
Target (performance issue): nested <= 1.15 x (sum_w FLOPs(w) / FLOPs(1)) x plain + teacher.
Random weights (timing only); "embedded" is the shipped teacher's shape (6L/256d/8h, ctx 128).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nml_core.arch.gpt2 import cost
from nml_core.device import set_threads
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.nesting.width import ALL_AXES, WidthSpec
from nml_core.training.config import TrainConfig
from nml_core.training.loop import make_accelerator, make_optimizer, nested_step
from nml_core.training.losses import nested_kd_loss, soft_targets
from nml_core.training.teacher_cache import topk_soft_targets

SHAPES = {"embedded": dict(n_layer=6, n_embd=256, n_head=8, n_positions=128),
          "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)}
WIDTHS = [1.0, 0.5, 0.25, 0.125]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="embedded")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    threads = set_threads(None)
    torch.manual_seed(0)
    config = GPT2Config(**SHAPES[a.shape], resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    cfg = TrainConfig(batch_size=a.batch, ctx=a.ctx, device=a.device)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    plain_model, nested_model = GPT2LMHeadModel(config).to(device), GPT2LMHeadModel(config).to(device)
    teacher = GPT2LMHeadModel(config).to(device).eval().requires_grad_(False)
    plain, nested = plain_model.train(), ElasticGPT2(nested_model.train())
    opt_plain = make_optimizer(plain, cfg, fused=device.type == "cuda")
    opt_nested = make_optimizer(nested, cfg, fused=device.type == "cuda")
    batch = torch.randint(0, config.vocab_size, (a.batch, a.ctx + 1), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step_plain():  # a stock HF fine-tune step (the model shifts the labels itself)
        accelerator.backward(plain_model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss)
        opt_plain.step()
        opt_plain.zero_grad(set_to_none=True)

    def step_teacher():
        with torch.no_grad(), accelerator.autocast():
            teacher(input_ids=batch[:, :-1])

    def step_nested():
        nested_step(nested, teacher, batch, WIDTHS, cfg, accelerator)
        opt_nested.step()
        opt_nested.zero_grad(set_to_none=True)

    TOPK = 64  # a top-k teacher cache's targets for this batch (as nml_core.training.teacher_cache would load them)
    with torch.no_grad():
        full = teacher(input_ids=batch[:, :-1]).logits.float()
        top = full.topk(TOPK, dim=-1)
        cached_lse = torch.logsumexp(full / cfg.temperature, -1).cpu()
    cached_idx, cached_val = top.indices.cpu(), top.values.half().cpu()
    del full

    def step_cached():  # the same nested step, the teacher forward replaced by the cached top-k (sparse target)
        target = topk_soft_targets(cached_idx.to(device), cached_val.float().to(device), cached_lse.to(device),
                                   cfg.temperature)
        nested_step(nested, None, batch, WIDTHS, cfg, accelerator, target=target)
        opt_nested.step()
        opt_nested.zero_grad(set_to_none=True)

    logits = torch.randn(a.batch, a.ctx, config.vocab_size, device=device, requires_grad=True)
    soft = soft_targets(torch.randn(a.batch, a.ctx, config.vocab_size, device=device), cfg.temperature)

    def step_loss():  # the vocab-sized work every width pays whatever its width: fused KD + CE, forward + backward
        nested_kd_loss(logits, batch[:, 1:], soft, cfg.alpha, cfg.temperature)[0].backward()
        logits.grad = None

    fns = {"plain": step_plain, "kd_loss_one_width": step_loss, "teacher": step_teacher, "nested": step_nested, "nested_topk_cache": step_cached}
    times = {k: [] for k in fns}
    for i in range(a.repeats + 1):  # round 0 is the warm-up
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            if i:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = [cost(config, WidthSpec(w, ALL_AXES).dims(config), a.ctx)["flops_per_token"] for w in WIDTHS]
    ratio = sum(flops) / flops[0]
    budget = 1.15 * ratio * med["plain"] + med["teacher"]
    ideal = ratio * med["plain"] + med["teacher"]
    tokens = a.batch * a.ctx
    dev = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {threads} threads"
    print(f"{a.shape} shape, batch {a.batch}x{a.ctx}, {dev}, torch {torch.__version__}, median of {a.repeats}")
    print("| step | median s | tokens/s |\n|---|---|---|")
    for k in fns:
        print(f"| {k} | {med[k]:.3f} [{min(times[k]):.3f}–{max(times[k]):.3f}] | {tokens / med[k]:.0f} |")
    print(f"\nsum_w FLOPs(w)/FLOPs(1) = {ratio:.3f}; FLOP-proportional nested step = {ideal:.3f} s; "
          f"target (x1.15 + teacher) = {budget:.3f} s; measured {med['nested']:.3f} s -> "
          f"{med['nested'] / ideal:.2f}x the FLOP-proportional time, {'meets' if med['nested'] <= budget else 'misses'} target")
    print(f"vocab-sized loss work: {len(WIDTHS)} widths x {med['kd_loss_one_width']:.3f} s = "
          f"{len(WIDTHS) * med['kd_loss_one_width']:.3f} s of the nested step (not in the FLOP count, which counts matmuls)")
    print(f"top-k cache (k={TOPK}): nested step {med['nested_topk_cache']:.3f} s vs {med['nested']:.3f} s with the teacher "
          f"forward -> {med['nested'] / med['nested_topk_cache']:.2f}x faster")


if __name__ == "__main__":
    main()
