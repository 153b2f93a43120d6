"""The CPU proxies of the nested step's GPU cost: ops dispatched per step, host time at a tiny shape, and the
bytes a width's backward allocates.

  python -m bench.nested_step_ops [--shape gpt2-small|embedded] [--batch 8] [--repeats 5]

  ops per nested step    torch.profiler count of the leaf aten ops that do work (views and metadata ops left out)
                         in one nested step (teacher forward + 4 widths forward/backward + AdamW): on a GPU
                         each is at least one kernel launch
  host ms per step       median wall time of a nested step at a tiny shape (2L/64d, 2x16), where the arithmetic
                         is negligible and what is left is Python + dispatch: the part a GPU cannot hide
  backward MB, width w   bytes allocated by the backward of width w alone (profile_memory); a prefix width
                         that materialised a full-size gradient per parameter allocates as much as width 1
  --compare-prefix       also times the whole nested step with in-place prefix gradients against autograd's
                         slicing (ElasticGPT2.prefix_grads), interleaved round-robin, median of --repeats
Random weights; widths 1, 1/2, 1/4, 1/8; fp32 on this CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import GPT2Config, GPT2LMHeadModel

from bench.nested_step import SHAPES, widths_of
from nml_core.device import set_threads
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.training.config import TrainConfig
from nml_core.training.loop import make_accelerator, make_optimizer, nested_step
from nml_core.training.losses import nested_kd_loss

TINY = dict(n_layer=2, n_embd=64, n_head=8, n_inner=256, n_positions=32, vocab_size=50257)


def setup(shape: dict, batch: int, ctx: int):
    torch.manual_seed(0)
    config = GPT2Config(**shape, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    cfg = TrainConfig(batch_size=batch, ctx=ctx, device="cpu")
    accelerator = make_accelerator(cfg)
    model = ElasticGPT2(GPT2LMHeadModel(config).train())
    teacher = GPT2LMHeadModel(config).eval().requires_grad_(False)
    opt = make_optimizer(model, cfg, fused=False)
    data = torch.randint(0, config.vocab_size, (batch, ctx + 1))

    def step():
        nested_step(model, teacher, data, widths_of(config), cfg, accelerator)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, model, data, cfg


# ops that only make a view or read metadata: no kernel runs for them on a GPU
NO_KERNEL = {"aten::view", "aten::slice", "aten::as_strided", "aten::expand", "aten::t", "aten::transpose",
             "aten::reshape", "aten::unsqueeze", "aten::squeeze", "aten::permute", "aten::detach", "aten::alias",
             "aten::select", "aten::split", "aten::split_with_sizes", "aten::unbind", "aten::_unsafe_view",
             "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::resize_", "aten::lift_fresh",
             "aten::numpy_T", "aten::_reshape_alias", "aten::flatten", "aten::narrow", "aten::chunk",
             "aten::result_type", "aten::is_nonzero", "aten::_local_scalar_dense", "aten::item", "aten::set_",
             "aten::view_as", "aten::expand_as", "aten::contiguous", "aten::unflatten", "aten::matrix_H"}


def ops_per_step(step) -> int:
    """Leaf aten ops that do work (each one kernel launch or more on a GPU) in one nested step."""
    step()  # warm-up (lazy inits, caches)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children
               and e.name not in NO_KERNEL)


HOST_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch",
                 "cudaMemcpyAsync", "cudaMemsetAsync")  # the runtime calls by which the host starts GPU work


def launches_per_step(step, device: torch.device, host: bool = False) -> int:
    """Kernel launches of one step: on CUDA the kernels (and memcpy/memset) the profiler saw run on the GPU, or
    with host the launch calls the host made (a replayed CUDA graph is one, however many kernels it holds); on a
    CPU the proxy, the leaf aten ops that do work (ops_per_step)."""
    if device.type != "cuda":
        return ops_per_step(step)
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    if host:
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU and e.name in HOST_LAUNCHES)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def backward_mb(model, data, cfg, width: float) -> float:
    x, y = data[:, :-1], data[:, 1:]
    loss, _ = nested_kd_loss(model(x, width=width).logits, y, None, cfg.alpha, cfg.temperature)
    model.zero_grad(set_to_none=False)  # gradients exist already: what the backward itself allocates
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss.backward()
    allocated = sum(max(0, e.self_cpu_memory_usage) for e in prof.key_averages())
    return allocated / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compare-prefix", action="store_true")
    a = ap.parse_args()
    threads = set_threads(None)
    step, model, data, cfg = setup(SHAPES[a.shape], a.batch, a.ctx)
    ops = ops_per_step(step)
    for p in model.parameters():  # gradients allocated once, as in training after the first step
        p.grad = torch.zeros_like(p)
    widths = widths_of(model.config)
    mb = {w: backward_mb(model, data, cfg, w) for w in widths}
    tiny_step = setup(TINY, 2, 16)[0]
    for _ in range(3):
        tiny_step()
    times = []
    for _ in range(max(10, a.repeats)):
        t = time.perf_counter()
        tiny_step()
        times.append((time.perf_counter() - t) * 1e3)
    print(f"{a.shape} shape, batch {a.batch}x{a.ctx}, widths {widths}, CPU {threads} threads, torch {torch.__version__}")
    print("| ops per nested step | host ms per step (2L/64d, 2x16) | " +
          " | ".join(f"backward MB, width {w:g}" for w in widths) + " |")
    print("|---|---|" + "---|" * len(widths))
    print(f"| {ops} | {statistics.median(times):.1f} | " + " | ".join(f"{mb[w]:.0f}" for w in widths) + " |")
    if a.compare_prefix:
        compare_prefix(step, model, a.repeats)


def compare_prefix(step, model, repeats: int) -> None:
    """Nested step with prefix gradients vs autograd slicing, interleaved in this process."""
    runs = {True: [], False: []}
    for flag in (True, False):  # warm-up both
        model.prefix_grads = flag
        step()
    for _ in range(repeats):
        for flag in (True, False):
            model.prefix_grads = flag
            t = time.perf_counter()
            step()
            runs[flag].append(time.perf_counter() - t)
    on, off = statistics.median(runs[True]), statistics.median(runs[False])
    print(f"\nnested step, prefix gradients {on:.3f} s vs autograd slicing {off:.3f} s "
          f"(median of {repeats}, interleaved): {off / on:.2f}x")


if __name__ == "__main__":
    main()
