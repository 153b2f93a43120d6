"""Does nested training waste anything? One nested step vs one plain fine-tune step of the same model.

  python -m bench.nested_step [--shape embedded|gpt2-small] [--batch 8] [--repeats 5] [--device cpu|cuda]
  python -m bench.nested_step --precision fp32,bf16 [--rounds 3]    # one process per precision, interleaved

Times, interleaved round-robin in one process (warm-up, median; each variant timed as the second of two
calls in a row, so it runs in its own steady state, not in the memory the previous variant left):
  plain    one stock HF step: model(input_ids, labels).loss, backward, AdamW step (a plain fine-tune)
  teacher  the frozen teacher's forward on the same batch                  (KD's fixed extra)
  nested   one NML step at widths 1, 1/2, 1/4, 1/8: teacher forward + every width's forward, fused KD+CE loss,
           backward + one AdamW step                                       (nml_core.training.loop.nested_step)
  kd_loss_one_width  the fused KD + CE loss alone (forward + backward) on one width's (B, T, V) logits
  nested_eager_loss, kd_loss_one_width_eager   the same two with the loss's eager chunks instead of the compiled
           one-pass kernels (TrainConfig.fused_loss=False): what compiling the loss buys, in the same run
  nested_topk_cache  the same with the teacher's top-64 logits read from a cache instead of its forward
Target (performance issue): nested <= 1.15 x (sum_w FLOPs(w) / FLOPs(1)) x plain + teacher.
Random weights (timing only); "embedded" is the shipped teacher's shape (6L/256d/8h, ctx 128).
--precision: each precision measured in its own fresh process, alternating (fp32, bf16, fp32, ...) for --rounds
rounds, medians of the rounds' medians; then each precision trains a toy nested model (2L/64d, GPT-2's vocab)
for 50 steps from the same seed, and the final losses are compared (bf16 must stay within 1% of fp32).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from nml_core.arch.gpt2 import cost
from nml_core.device import cpu_name, set_threads, synchronize
from nml_core.docs import graph_step_report, nested_step_report
from nml_core.files import atomic_write_json
from nml_core.training import losses
from nml_core.nesting.elastic import ElasticGPT2
from nml_core.nesting.width import ALL_AXES, WidthSpec, whole_head_widths
from nml_core.training.config import TrainConfig
from nml_core.training.graph_step import GraphStep
from nml_core.training.loop import make_accelerator, make_optimizer, nested_step
from nml_core.training.losses import DenseTarget, nested_kd_loss
from nml_core.training.teacher_cache import topk_soft_targets

SHAPES = {"embedded": dict(n_layer=6, n_embd=256, n_head=8, n_positions=128),
          "gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024)}
WIDTHS = [1.0, 0.5, 0.25, 0.125]  # the nested widths, each taken as the nearest whole number of heads (widths_of)


def widths_of(config: GPT2Config) -> list[float]:
    """WIDTHS in whole heads of this shape (GPT-2-small's 12 heads: 1, 1/2, 1/4, 1/6)."""
    return whole_head_widths(config.n_head, WIDTHS)


def setup(shape: dict, batch: int, ctx: int, device: str, **recipe):
    """(config, widths, recipe, accelerator, device) of a benchmark at a shape, seeded, dropout off."""
    torch.manual_seed(0)
    config = GPT2Config(**shape, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    cfg = TrainConfig(batch_size=batch, ctx=ctx, device=device, **recipe)
    accelerator = make_accelerator(cfg)
    return config, widths_of(config), cfg, accelerator, accelerator.device


def measure(shape: dict, batch: int = 8, ctx: int = 128, device: str = "cpu", repeats: int = 5,
            with_topk: bool = True, launches: bool = False, precision: str = "auto") -> dict:
    """Time the variants of the module doc, interleaved round-robin (round 0 is the warm-up); returns
    {"median_s", "min_s", "max_s" (variant -> s), "flop_ratio", "flop_proportional_s", "target_s",
    "nested_over_flop_proportional", "device", "precision"} and, with launches, "launches_per_step"."""
    config, widths, cfg, accelerator, dev = setup(shape, batch, ctx, device, mixed_precision=precision)
    plain_model, nested_model = GPT2LMHeadModel(config).to(dev), GPT2LMHeadModel(config).to(dev)
    teacher = GPT2LMHeadModel(config).to(dev).eval().requires_grad_(False)
    plain, nested = plain_model.train(), ElasticGPT2(nested_model.train())
    opt_plain = make_optimizer(plain, cfg, fused=dev.type == "cuda")
    opt_nested = make_optimizer(nested, cfg, fused=dev.type == "cuda")
    data = torch.randint(0, config.vocab_size, (batch, ctx + 1), device=dev)

    def step_plain():  # a stock HF fine-tune step (the model shifts the labels itself)
        with accelerator.autocast():
            loss = plain_model(input_ids=data[:, :-1], labels=data[:, :-1]).loss
        accelerator.backward(loss)
        opt_plain.step()
        opt_plain.zero_grad(set_to_none=True)

    def step_teacher():
        with torch.no_grad(), accelerator.autocast():
            teacher(input_ids=data[:, :-1])

    def step_nested(recipe=cfg):
        nested_step(nested, teacher, data, widths, recipe, accelerator)
        opt_nested.step()
        opt_nested.zero_grad(set_to_none=True)

    eager = dataclasses.replace(cfg, fused_loss=False)
    fns = {"plain": step_plain, "teacher": step_teacher, "nested": step_nested,
           "nested_eager_loss": lambda: step_nested(eager)}
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
    fns["kd_loss_one_width"] = _loss_step(config, cfg, data, dev, half)
    fns["kd_loss_one_width_eager"] = _loss_step(config, eager, data, dev, half)
    if with_topk:
        fns["nested_topk_cache"] = _cached_step(teacher, nested, opt_nested, data, cfg, accelerator)
    times = {k: [] for k in fns}
    for i in range(repeats + 1):
        for name, fn in fns.items():
            fn()  # untimed: each variant is timed as the second of two calls in a row, in its own steady state
            synchronize(dev)  # (right after another variant, the allocator and caches hold that one's memory)
            t = time.perf_counter()
            fn()
            synchronize(dev)
            if i:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = [cost(config, WidthSpec(w, ALL_AXES).dims(config), ctx)["flops_per_token"] for w in widths]
    ratio = sum(flops) / flops[0]
    ideal = ratio * med["plain"] + med["teacher"]
    out = {"median_s": med, "min_s": {k: min(v) for k, v in times.items()},
           "max_s": {k: max(v) for k, v in times.items()}, "flop_ratio": ratio, "flop_proportional_s": ideal,
           "target_s": 1.15 * ratio * med["plain"] + med["teacher"], "nested_over_flop_proportional": med["nested"] / ideal,
           "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads",
           "precision": accelerator.mixed_precision, "batch": batch, "ctx": ctx, "repeats": repeats, "widths": widths}
    out.update(loss_floor(data.shape[0] * ctx * config.vocab_size, half, out["device"]))
    if launches:
        from bench.nested_step_ops import launches_per_step
        out["launches_per_step"] = launches_per_step(step_nested, dev)
    return out


def matmul_tflops(device: torch.device, dtype=torch.bfloat16) -> float:
    """This device's measured dense matmul rate in the training precision (8192^2 on a GPU, 1024^2 on a CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    synchronize(device)
    return 2 * n ** 3 * 10 / (time.perf_counter() - t) / 1e12


def all_student_flops(config: GPT2Config, widths: list[float], tokens: int) -> float:
    """The work a nested step must do: each student's 6 N tokens (forward + backward) and the teacher's 2 N tokens
    (forward only), N the parameters of each."""
    params = [cost(config, WidthSpec(w, ALL_AXES).dims(config))["params"] for w in widths]
    return (6 * sum(params) + 2 * params[0]) * tokens


def compiled_row(shape: dict, batch: int = 8, ctx: int = 128, device: str = "cpu", steps: int = 5,
                 launches: bool = False) -> dict:
    """The one-graph nested step (--compile; training.graph_step): seconds from the first call to the end of the
    first step (compilation included, or the cache's load), then the median ms of the next steps, beside the
    eager step's median ms on the same model and batch; on CUDA also replayed as CUDA graphs (--cuda-graphs).
    With launches: the host's launches per step of each, and the all-student MFU (all_student_flops over the
    step time and the device's measured matmul rate)."""
    config, widths, cfg, accelerator, dev = setup(shape, batch, ctx, device, compile=True)
    nested = ElasticGPT2(GPT2LMHeadModel(config).to(dev).train())
    teacher = GPT2LMHeadModel(config).to(dev).eval().requires_grad_(False)
    opt = make_optimizer(nested, cfg, fused=dev.type == "cuda")
    data = torch.randint(0, config.vocab_size, (batch, ctx + 1), device=dev)
    steps_of = {"compiled": GraphStep(nested, teacher, widths, cfg, accelerator)}
    if dev.type == "cuda":
        steps_of["graphed"] = GraphStep(nested, teacher, widths, dataclasses.replace(cfg, cuda_graphs=True), accelerator)
    steps_of["eager"] = lambda batch: nested_step(nested, teacher, batch, widths, cfg, accelerator)

    def step(name: str) -> None:
        steps_of[name](data)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(name: str) -> float:
        t = time.perf_counter()
        step(name)
        synchronize(dev)
        return time.perf_counter() - t
    out = {"first_step_s": timed("compiled"), "widths": widths, "precision": accelerator.mixed_precision}
    if "graphed" in steps_of:
        out["graphed_first_step_s"] = timed("graphed")
    for name in steps_of:  # each variant's first call after another's is its warm-up, not timed
        out[f"{name}_ms"] = statistics.median([timed(name) for _ in range(steps + 1)][1:]) * 1e3
    out["step_ms"], out["eager_step_ms"] = out["compiled_ms"], out["eager_ms"]
    if launches:
        from bench.nested_step_ops import launches_per_step
        rate = matmul_tflops(dev, torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32)
        work = all_student_flops(config, widths, batch * ctx)
        out.update(matmul_tflops=rate, all_student_tflop=work / 1e12)
        for name in steps_of:
            out[f"{name}_launches"] = launches_per_step(lambda: step(name), dev, host=True)
            out[f"{name}_mfu"] = work / (out[f"{name}_ms"] / 1e3) / (rate * 1e12)
    return out


def compile_cold_and_warm(a) -> dict:
    """The one-graph step compiled twice, each in a fresh process on one new cache folder: the first compiles
    (cold), the second loads what the first cached (a second run of the same shape)."""
    import json
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        rows = []
        for _ in ("cold", "warm"):
            cmd = [sys.executable, "-m", "bench.nested_step", "--shape", a.shape, "--batch", str(a.batch), "--ctx",
                   str(a.ctx), "--repeats", str(a.repeats), "--device", a.device, "--child-compile"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    return {"shape": a.shape, "batch": a.batch, "ctx": a.ctx, "device": a.device, "torch": torch.__version__,
            "cpu": cpu_name() if a.device == "cpu" else torch.cuda.get_device_name(0), "threads": torch.get_num_threads(),
            "cold": rows[0], "warm": rows[1], "command": "python -m bench.nested_step " + " ".join(sys.argv[1:])}


def loss_floor(elements: int, dtype: torch.dtype, device_name: str) -> dict:
    """Bytes one width's fused loss must move (read its logits and the teacher's fp32 probabilities, write the
    gradient in the logits' dtype) and the time that takes at this machine's measured read / write bandwidth
    (its device profile, if one is stored), the floor the loss is compared with."""
    from nml_core.analysis.device_profile import load_profiles
    from nml_core.device import device_info
    size = torch.tensor([], dtype=dtype).element_size()
    read, write = elements * (size + 4), elements * size
    out = {"kd_loss_bytes_mb": (read + write) / 1e6}
    if device_name.startswith("CPU"):
        key = device_info("cpu", torch.get_num_threads())["device_key"]
        prof = load_profiles(Path("cached_runs"), Path("runs")).get(key)
        if prof:
            out["kd_loss_floor_s"] = read / (prof.read_gbs * 1e9) + write / (prof.write_gbs * 1e9)
    return out


def _loss_step(config, cfg, data, dev, dtype=torch.float32):
    """The vocab-sized work every width pays whatever its width: fused KD + CE, forward + backward, on logits of
    the dtype the forward produces (bf16 under bf16 autocast)."""
    logits = torch.randn(data.shape[0], data.shape[1] - 1, config.vocab_size, device=dev, dtype=dtype,
                         requires_grad=True)
    soft = DenseTarget.from_logits(torch.randn(data.shape[0], data.shape[1] - 1, config.vocab_size, device=dev),
                                   cfg.temperature, cfg.fused_loss)

    def step():
        nested_kd_loss(logits, data[:, 1:], soft, cfg.alpha, cfg.temperature, cfg.fused_loss)[0].backward()
        logits.grad = None
    return step


def _cached_step(teacher, nested, opt, data, cfg, accelerator, k: int = 64):
    """The nested step with the teacher forward replaced by a top-k cache's targets for this batch (sparse)."""
    dev = data.device
    with torch.no_grad():
        full = teacher(input_ids=data[:, :-1]).logits.float()
        top = full.topk(k, dim=-1)
        lse = torch.logsumexp(full / cfg.temperature, -1).cpu()
    idx, val = top.indices.cpu(), top.values.half().cpu()
    del full

    def step():
        target = topk_soft_targets(idx.to(dev), val.float().to(dev), lse.to(dev), cfg.temperature)
        nested_step(nested, None, data, widths_of(nested.config), cfg, accelerator, target=target)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def toy_losses(precision: str, steps: int = 50, device: str = "cpu", fused: bool = True) -> dict:
    """Final per-width losses of a toy nested run (2L/64d, GPT-2's vocabulary, fixed seed and data). fused: the
    compiled loss on this small batch too (it runs only from losses.FUSED_MIN_ELEMENTS otherwise), so the toy
    checks the loss real runs take; False: the eager chunks."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=8, n_positions=64, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    cfg = TrainConfig(batch_size=4, ctx=32, device=device, mixed_precision=precision, lr=3e-3, fused_loss=fused)
    accelerator = make_accelerator(cfg)
    model = ElasticGPT2(GPT2LMHeadModel(config).to(accelerator.device).train())
    teacher = GPT2LMHeadModel(config).to(accelerator.device).eval().requires_grad_(False)
    opt = make_optimizer(model, cfg, fused=False)
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, 512, (64, 33), generator=gen).to(accelerator.device)  # a small repeating vocabulary
    threshold, losses.FUSED_MIN_ELEMENTS = losses.FUSED_MIN_ELEMENTS, 0
    try:
        for step in range(steps):
            out = nested_step(model, teacher, data[(step * 4) % 64:(step * 4) % 64 + 4], WIDTHS, cfg, accelerator)
            opt.step()
            opt.zero_grad(set_to_none=True)
    finally:
        losses.FUSED_MIN_ELEMENTS = threshold
    return {k: float(v.loss) for k, v in out.items()}


def compare_precisions(a) -> dict:
    """One fresh process per (round, precision), alternating; then the toy losses of each precision (compiled
    loss) and of fp32 with the eager loss. Returns what nml_core.docs.nested_step renders."""
    import json
    import subprocess
    import sys
    names = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
    precisions = a.precision.split(",")
    runs: dict[str, list[dict]] = {p: [] for p in precisions}
    for _ in range(a.rounds):
        for prec in precisions:
            cmd = [sys.executable, "-m", "bench.nested_step", "--shape", a.shape, "--batch", str(a.batch), "--ctx",
                   str(a.ctx), "--repeats", str(a.repeats), "--device", a.device, "--child", names[prec]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[prec].append(json.loads(out.strip().splitlines()[-1]))
    result = {p: {"median_s": {k: statistics.median(r["median_s"][k] for r in rs) for k in rs[0]["median_s"]},
                  "nested_over_flop_proportional": statistics.median(r["nested_over_flop_proportional"] for r in rs),
                  "flop_proportional_s": statistics.median(r["flop_proportional_s"] for r in rs),
                  **{k: rs[0][k] for k in ("kd_loss_bytes_mb", "kd_loss_floor_s") if k in rs[0]}}
              for p, rs in runs.items()}
    first = precisions[0]
    return {"shape": a.shape, "batch": a.batch, "ctx": a.ctx, "device": runs[first][0]["device"],
            "cpu": cpu_name() if a.device == "cpu" else runs[first][0]["device"], "torch": torch.__version__,
            "rounds": a.rounds, "repeats": a.repeats, "precisions": result,
            "toy": {p: toy_losses(names[p], device=a.device) for p in precisions},
            "toy_eager": {first: toy_losses(names[first], device=a.device, fused=False)},
            "command": "python -m bench.nested_step " + " ".join(sys.argv[1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="embedded")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default=None, help="comma list of fp32, bf16 (fp16 on CUDA): compare them")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="--precision: write the results here (BENCHMARKS renders "
                    "bench/results/nested_step-<cpu>.json)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one measurement as JSON (--precision)
    ap.add_argument("--compile", action="store_true", help="the one-graph step (--compile): seconds to the first "
                    "step with a cold and a warm compile cache, ms per step against the eager step")
    ap.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    set_threads(None)
    if a.child_compile:
        import json
        print(json.dumps(compiled_row(SHAPES[a.shape], a.batch, a.ctx, a.device, a.repeats, launches=True)))
        return
    if a.compile or a.precision:  # results kept as JSON (--json) and rendered into BENCHMARKS.md
        res = compile_cold_and_warm(a) if a.compile else compare_precisions(a)
        print((graph_step_report if a.compile else nested_step_report)(res))
        if a.json:
            atomic_write_json(a.json, res)
        return
    if a.child:
        import json
        print(json.dumps(measure(SHAPES[a.shape], a.batch, a.ctx, a.device, a.repeats, with_topk=False,
                                 precision=a.child)))
        return
    r = measure(SHAPES[a.shape], a.batch, a.ctx, a.device, a.repeats)
    med, times_min, times_max = r["median_s"], r["min_s"], r["max_s"]
    tokens = a.batch * a.ctx
    print(f"{a.shape} shape, batch {a.batch}x{a.ctx}, {r['device']}, {r['precision']}, torch {torch.__version__}, "
          f"median of {a.repeats}")
    print("| step | median s | tokens/s |\n|---|---|---|")
    for k in med:
        print(f"| {k} | {med[k]:.3f} [{times_min[k]:.3f}–{times_max[k]:.3f}] | {tokens / med[k]:.0f} |")
    print(f"\nsum_w FLOPs(w)/FLOPs(1) = {r['flop_ratio']:.3f}; FLOP-proportional nested step = "
          f"{r['flop_proportional_s']:.3f} s; target (x1.15 + teacher) = {r['target_s']:.3f} s; measured "
          f"{med['nested']:.3f} s -> {r['nested_over_flop_proportional']:.2f}x the FLOP-proportional time, "
          f"{'meets' if med['nested'] <= r['target_s'] else 'misses'} target")
    print(f"vocab-sized loss work: {len(r['widths'])} widths x {med['kd_loss_one_width']:.3f} s = "
          f"{len(r['widths']) * med['kd_loss_one_width']:.3f} s of the nested step (not in the FLOP count, which counts matmuls)")
    if "kd_loss_floor_s" in r:
        print(f"one width's loss moves {r['kd_loss_bytes_mb']:.0f} MB: {r['kd_loss_floor_s']:.3f} s at this machine's "
              f"measured bandwidth (device profile) -> the loss runs at {med['kd_loss_one_width'] / r['kd_loss_floor_s']:.1f}x "
              "its memory floor")
    print(f"compiled loss vs eager chunks: one width {med['kd_loss_one_width_eager']:.3f} -> "
          f"{med['kd_loss_one_width']:.3f} s, nested step {med['nested_eager_loss']:.3f} -> {med['nested']:.3f} s")
    print(f"top-k cache (k=64): nested step {med['nested_topk_cache']:.3f} s vs {med['nested']:.3f} s with the teacher "
          f"forward -> {med['nested'] / med['nested_topk_cache']:.2f}x faster")


if __name__ == "__main__":
    main()
