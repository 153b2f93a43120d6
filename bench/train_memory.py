"""Peak memory of nested training vs a plain fine-tune of the same model (CPU: peak RSS; CUDA: peak allocated).

  python -m bench.train_memory [--shape embedded|gpt2-small] [--batch 8] [--steps 3]

Each variant runs in its own fresh process (peak RSS is per process), for a few steps:
  plain    stock HF fine-tune: model(input_ids, labels).loss, backward, AdamW
  nested   NML: frozen teacher + widths 1, 1/2, 1/4, 1/8 via nml_core.training.loop.nested_step, AdamW
  nested_eager_loss  the same with the loss's eager chunks (TrainConfig.fused_loss=False) instead of the
           compiled kernels
Target (performance issue): nested <= 1.3 x plain.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from bench.nested_step import SHAPES, widths_of


def child(variant: str, shape: str, batch: int, ctx: int, steps: int, device: str) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from nml_core.nesting.elastic import ElasticGPT2
    from nml_core.training.config import TrainConfig
    from nml_core.training.loop import make_accelerator, make_optimizer, nested_step
    torch.manual_seed(0)
    config = GPT2Config(**SHAPES[shape], resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    cfg = TrainConfig(batch_size=batch, ctx=ctx, device=device, fused_loss=variant != "nested_eager_loss")
    accelerator = make_accelerator(cfg)
    dev = accelerator.device
    model = GPT2LMHeadModel(config).to(dev).train()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if variant.startswith("nested"):
        teacher = GPT2LMHeadModel(config).to(dev).eval().requires_grad_(False)
        elastic = ElasticGPT2(model)
    opt = make_optimizer(model, cfg, fused=dev.type == "cuda")
    batch_ids = torch.randint(0, config.vocab_size, (batch, ctx + 1), device=dev)
    for _ in range(steps):
        if variant.startswith("nested"):
            nested_step(elastic, teacher, batch_ids, widths_of(config), cfg, accelerator)
        else:
            accelerator.backward(model(input_ids=batch_ids[:, :-1], labels=batch_ids[:, :-1]).loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_after_model_mb": base_rss / 1024, "precision": accelerator.mixed_precision}
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="embedded")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.shape, a.batch, a.ctx, a.steps, a.device)))
        return
    res = {}
    for variant in ("plain", "nested", "nested_eager_loss"):
        out = subprocess.run([sys.executable, "-m", "bench.train_memory", "--child", variant, "--shape", a.shape, "--batch", str(a.batch),
                              "--ctx", str(a.ctx), "--steps", str(a.steps), "--device", a.device],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
        res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    key = "peak_cuda_mb" if a.device == "cuda" else "peak_rss_mb"
    print(f"{a.shape} shape, batch {a.batch}x{a.ctx}, {a.steps} steps, {a.device}, precision {res['plain']['precision']}")
    print(f"| variant | peak {'CUDA allocated' if a.device == 'cuda' else 'RSS'} MB |\n|---|---|")
    for v, r in res.items():
        print(f"| {v} | {r[key]:.0f} |")
    for v in ("nested", "nested_eager_loss"):
        ratio = res[v][key] / res["plain"][key]
        print(f"{v} / plain = {ratio:.2f}x (target <= 1.3x: {'meets' if ratio <= 1.3 else 'misses'})")


if __name__ == "__main__":
    main()
