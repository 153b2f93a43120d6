"""Measuring a device profile: what the what-if needs to know about a device, measured on it in about a minute
(`python -m nml_core profile-device`). The record and its storage are analysis.device_profile; devices we cannot
reach get a preset of vendor peaks instead (analysis.presets).

A profile (JSON, named by the device key of nml_core.device):
  prefill.fixed_us / per_layer_us  host time of one HF GPT-2 forward that does no arithmetic to speak of
                                   (tiny 1- and 4-layer models, use_cache=False): Python, dispatch, launches,
                                   each call timed with the caches evicted first, as `bench` leaves them
                                   (host_evicted; profiles without it timed them hot)
  ttft.fixed_us / per_layer_us     the same for the prefill `generate` runs (KV cache, last logits only);
                                   profiles without it use prefill's
  decode.fixed_us / per_layer_us   the same per generated token through HF `generate` (KV cache)
  ops_per_layer, ops_fixed         leaf aten ops of a GPT-2 forward (torch.profiler): the op count
  op_overhead_us                   per_layer_us / ops_per_layer
  matmul_fp32 (and matmul_half on CUDA)  achieved GFLOP/s against FLOPs per matmul, across the shapes the runs use
  bandwidth_gbs                    a large copy's read + write bytes per second (elementwise ops)
  read_gbs / write_gbs             reading a large tensor; writing into memory already in use
  gemv_by_k                        (CPU) [K, GB/s] of a generated token's LM head, (1 x K) @ (K x 50257) re-read
                                   call after call, by inner dim: the BLAS's kernel changes with K
  gemv_cold_by_k                   (CPU) the same with the weight cold, each call on the next of several copies:
                                   the last position's LM head in a batch-1 prefill, read once after other work
                                   (an AMD EPYC of this project, its profiles: 17-18 GB/s at K = 32, 32-35 re-read)
  gemv_gbs                         the weight read of a matrix-vector product at K = 256, its weight cold (the LM
                                   heads of profiles without the two tables by K): a BLAS may read far slower there
                                   than a plain sum does (an AMD EPYC of this project: 12 against 40 GB/s);
                                   profiles without it use read_gbs
  fresh_write_gbs                  writing a new large tensor (on a CPU its pages fault in first)
  fresh_output_gbs                 a matmul writing a large new output (the LM head's logits)
  head_fp32                        (CPU) [K, achieved GFLOP/s] of the LM head of a 128-token scoring call,
                                   (128 x K) @ (K x 50257), for the inner dims of the runs' widths: a product this
                                   flat runs at a rate of its own K, not of its size (an AMD EPYC of this project,
                                   2 threads: 43 GFLOP/s at K = 32, where its size-indexed table said 159);
                                   profiles without it cost the head by that table
  head_b8_fp32                     (CPU) the same over 1024 positions (batch-8 scoring), its 206 MB output new:
                                   a flat product's own rate plus the output's page faults, measured together
  asynchronous                     true on CUDA: host work and the layers overlap (time = the larger, + the LM head)
  bf16_probe                       (CPU) a training step in fp32 and under bf16 autocast: what --mixed-precision
                                   auto decides by (nml_core.training.precision)
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from .. import device as devices
from ..training.precision import bf16_probe
from ..store.runs import now
from .device_profile import HEAD_ROWS, PROFILE_VERSION, DeviceProfile, loglog
from .latency import DECODE_NEW, DECODE_PROMPT, evict_caches, interleaved_timings

HOST_LAYERS = 4  # host costs from 1- and 4-layer tiny models
GPT2_VOCAB = 50257
# (M, K, N) of matmuls like the runs' layers and LM heads, small to large, outputs below FRESH_OUTPUT (the
# arithmetic rate); a large output's write is measured apart (fresh_output_gbs)
MATMULS = [(1, 32, 32), (1, 256, 1024), (1, 256, 50257), (8, 256, 768), (128, 32, 128), (128, 64, 256),
           (128, 128, 512), (128, 256, 768), (128, 256, 1024), (128, 768, 3072), (128, 256, 50257), (1024, 32, 128),
           (1024, 64, 256), (1024, 256, 1024), (1024, 768, 3072), (4096, 768, 768)]
# on a GPU, also the sizes where it reaches its rate: batch 32-128 x 128 tokens through GPT-2-small's layers and head
MATMULS_CUDA = [(16384, 768, 3072), (4096, 768, 50257), (16384, 768, 50257)]


def _median_us(fn, device: torch.device, repeats: int, inner: int = 1) -> float:
    for _ in range(2):
        fn()
    devices.synchronize(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        devices.synchronize(device)
        times.append((time.perf_counter() - t) / inner * 1e6)
    return statistics.median(times)


def _tiny(n_layer: int, device: torch.device, vocab: int = 64) -> GPT2LMHeadModel:
    cfg = GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, n_inner=64, vocab_size=vocab, n_positions=64,
                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).to(device).eval()


def _host_costs(device: torch.device, repeats: int, head_read_gbs: float) -> dict:
    """fixed + per-layer host time of a prefill forward and of a generated token, from 1- and 4-layer tiny
    models timed in turn (their arithmetic is negligible: what is left is the framework). The decoding models
    have GPT-2's 50257-token vocabulary, because `generate` does vocabulary-sized work per token (logits
    copies, processors, argmax) that a run pays whatever its width; their own LM-head read (at head_read_gbs, the
    rate measured for their K, re-read token after token) is taken out. Each call is timed with the caches evicted
    (latency.evict_caches), as `bench` times a run's calls among its other models' calls: the framework's own code
    and data run cold then (an AMD EPYC of this project: 0.6-1.0 ms more per prefill of widths 1/2 to 1/8,
    bench/cold_head.py, most of it outside the aten ops)."""
    x = torch.zeros(1, 8, dtype=torch.long, device=device)
    # decode as the latency files measure it: its prompt's prefill and generate's setup are shared by its tokens
    prompt = torch.zeros(1, DECODE_PROMPT, dtype=torch.long, device=device)
    calls = {"prefill": (1, lambda m: m(input_ids=x, use_cache=False)),
             "ttft": (1, lambda m: m(input_ids=x, use_cache=True, logits_to_keep=1)),
             "decode": (DECODE_NEW, lambda m: m.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                         max_new_tokens=DECODE_NEW, min_new_tokens=DECODE_NEW,
                                                         do_sample=False, pad_token_id=0))}
    out, evict = {}, evict_caches()
    for name, (per, call) in calls.items():
        vocab = GPT2_VOCAB if name == "decode" else 64
        fns = {n: (lambda m=_tiny(n, device, vocab): call(m)) for n in (1, HOST_LAYERS)}
        head_us = 32 * vocab * 4 / (head_read_gbs * 1e3) if name == "decode" else 0.0
        # the two models in turn, drift hits both alike; each call after an eviction, as bench's calls run
        times = interleaved_timings(fns, device.type, repeats=3 * repeats, before=lambda _: evict())
        t1, tn = (times[n]["median_ms"] * 1e3 / per for n in fns)
        per_layer = max(0.0, (tn - t1) / (HOST_LAYERS - 1))
        out[name] = {"fixed_us": round(max(0.0, t1 - per_layer - head_us), 2), "per_layer_us": round(per_layer, 2)}
    return out


HOST_PASSES = 3  # a shared 2-vCPU VM moved a profile's host costs up to 2x between runs minutes apart (116-259 us
# per layer in four runs): the host costs are the median of passes taken before and after the matmul table


def _median_pass(passes: list[dict]) -> dict:
    """Per kind and field, the median of the host-cost passes."""
    return {kind: {f: round(statistics.median(p[kind][f] for p in passes), 2) for f in passes[0][kind]}
            for kind in passes[0]}


@contextlib.contextmanager
def _native_stderr_silenced():
    """The process's stderr (fd 2) sent to /dev/null: torch's profiler writes two lines there from C++ at each start
    and stop ("USDT: ... profiler_start"), noise in `profile-device`'s output. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _op_counts(device: torch.device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    def leaf_ops(model):
        x = torch.zeros(1, 8, dtype=torch.long, device=device)
        with torch.inference_mode(), _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(input_ids=x, use_cache=False)
        return sum(1 for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children)
    one, two = leaf_ops(_tiny(1, device)), leaf_ops(_tiny(2, device))
    return {"ops_per_layer": two - one, "ops_fixed": 2 * one - two}


COLD_BYTES = 64 * 2 ** 20  # CPU: weights cycled through this many bytes of copies, more than the L2 holds


def _matmul_rates(device: torch.device, dtype: torch.dtype, repeats: int) -> list[list[float]]:
    """Achieved GFLOP/s per matmul shape. On a CPU each call takes the next of several copies of the weight, as a
    forward reads each layer's weight once: a weight kept hot in cache runs 20-35% faster at the layer shapes of
    a batch-1 prefill than it does in a real forward (measured here)."""
    table = []
    with torch.inference_mode():
        for m, k, n in MATMULS + (MATMULS_CUDA if device.type == "cuda" else []):
            a = torch.randn(m, k, device=device, dtype=dtype)
            copies = 1 if device.type == "cuda" else max(1, min(64, COLD_BYTES // (k * n * a.element_size())))
            bs = [torch.randn(k, n, device=device, dtype=dtype) for _ in range(copies)]
            turn = iter(range(10 ** 9))
            flops = 2 * m * k * n
            inner = max(1, int(2e8 // flops)) if device.type == "cuda" else 1
            us = _median_us(lambda: a @ bs[next(turn) % copies], device, repeats, inner)
            table.append([flops, round(flops / us / 1e3, 2)])  # GFLOP/s
    return sorted(table)


def _bandwidths(device: torch.device, repeats: int) -> dict:
    """GB/s of a 128 MB copy (read + write bytes), a read (sum), a write into memory in use (fill_), and a write
    into fresh memory (a new tensor: on a CPU every page faults in first, which is what a large output pays)."""
    n = 32 * 2 ** 20
    x = torch.ones(n, device=device)
    gbs = lambda nbytes, us: round(nbytes / us / 1e3, 2)  # noqa: E731
    return {"bandwidth_gbs": gbs(2 * 4 * n, _median_us(lambda: x.clone(), device, repeats)),
            "read_gbs": gbs(4 * n, _median_us(lambda: x.sum(), device, repeats)),
            "write_gbs": gbs(4 * n, _median_us(lambda: x.fill_(1.0), device, repeats)),
            "fresh_write_gbs": gbs(4 * n, _median_us(lambda: torch.empty(n, device=device).fill_(1.0), device, repeats)),
            "fresh_output_gbs": _fresh_output_gbs(device, repeats), "gemv_gbs": _gemv_cold_gbs(device, repeats)}


HEAD_K = (32, 64, 128, 256, 512, 768)  # the LM head's inner dim at the widths of the runs and of GPT-2 small


def _head_times_us(device: torch.device, repeats: int, rows: int) -> list[tuple[int, float]]:
    """(K, microseconds) of the LM head over `rows` positions, (rows x K) @ (K x 50257) with a new output as the
    model makes it, the same weight call after call, at each HEAD_K."""
    out = []
    with torch.inference_mode():
        for k in HEAD_K:
            x, w = torch.randn(rows, k, device=device), torch.randn(GPT2_VOCAB, k, device=device)
            out.append((k, _median_us(lambda: torch.nn.functional.linear(x, w), device, repeats)))
    return out


def _head_rates(device: torch.device, repeats: int, rows: int = HEAD_ROWS) -> list[list[float]]:
    """[K, GFLOP/s] of the scoring LM head over `rows` positions, at each HEAD_K."""
    return [[k, round(2 * rows * k * GPT2_VOCAB / us / 1e3, 2)] for k, us in _head_times_us(device, repeats, rows)]


def _gemv_cold_gbs(device: torch.device, repeats: int, k: int = 256) -> float:
    """Weight bytes per second of a (1 x k) @ (k x 50257) product, an LM head over one position, each call on the
    next of several copies of the weight: read from memory, not from cache, as a prefill's last position reads
    it (a generated token re-reads the head the one before it read: _gemv_by_k)."""
    copies = 1 + COLD_BYTES // (GPT2_VOCAB * k * 4)
    x, ws = torch.randn(1, k, device=device), [torch.randn(GPT2_VOCAB, k, device=device) for _ in range(copies)]
    turn = iter(range(10 ** 9))
    with torch.inference_mode():
        us = _median_us(lambda: torch.nn.functional.linear(x, ws[next(turn) % copies]), device, repeats)
    return round(GPT2_VOCAB * k * 4 / us / 1e3, 2)


def _gemv_by_k(device: torch.device, repeats: int) -> list[list[float]]:
    """[K, GB/s] of the weight read of a (1 x K) @ (K x 50257) product re-read call after call, as a generated token
    re-reads the LM head the last one read, at each HEAD_K: the BLAS's kernel changes with K (an AMD EPYC of this
    project read 32-43 GB/s at K = 32 and 64, 6-7 at K = 128 and 256)."""
    return [[k, round(GPT2_VOCAB * k * 4 / us / 1e3, 2)] for k, us in _head_times_us(device, repeats, 1)]


def _fresh_output_gbs(device: torch.device, repeats: int) -> float:
    """Bytes per second of an LM-head-like matmul whose (1024 x 50257) output is new memory and whose inner
    dimension (32) leaves almost no arithmetic: what writing a large logits tensor costs on this device."""
    x, w = torch.randn(1024, 32, device=device), torch.randn(50257, 32, device=device)
    with torch.inference_mode():
        us = _median_us(lambda: torch.nn.functional.linear(x, w), device, repeats)
    return round(1024 * 50257 * 4 / us / 1e3, 2)


def profile_device(device: str = "auto", threads: int | None = None, repeats: int = 7) -> DeviceProfile:
    """Measure this device (about 20-60 s; a 2-core CPU at 1 thread, 54 s) -> a profile (see the module doc)."""
    dev = devices.resolve(device)
    threads = devices.set_threads(threads)
    info = devices.device_info(dev, threads)
    t0 = time.time()
    bandwidths = _bandwidths(dev, repeats)
    by_k = _gemv_by_k(dev, repeats) if dev.type == "cpu" else None
    tiny_head = loglog(by_k, 32) if by_k else bandwidths["gemv_gbs"]  # the decoding tiny models' head: K = 32
    passes = [_host_costs(dev, repeats, tiny_head)]
    matmuls = _matmul_rates(dev, torch.float32, repeats)
    passes += [_host_costs(dev, repeats, tiny_head) for _ in range(HOST_PASSES - 1)]
    prof = {"version": PROFILE_VERSION, **info, "measured": now(), "kind": "measured", **_median_pass(passes),
            "host_evicted": True,
            **_op_counts(dev), **bandwidths, "matmul_fp32": matmuls, "asynchronous": dev.type == "cuda"}
    if dev.type == "cuda":
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        prof["matmul_half"] = _matmul_rates(dev, half, repeats)
    else:  # kept here, the probe `--mixed-precision auto` reads on this CPU (nml_core.training.precision)
        prof["head_fp32"], prof["gemv_by_k"] = _head_rates(dev, repeats), by_k
        prof["gemv_cold_by_k"] = [[k, _gemv_cold_gbs(dev, repeats, k)] for k in HEAD_K]
        prof["head_b8_fp32"] = _head_rates(dev, 3, 8 * HEAD_ROWS)  # 0.1-1 s a call: 3 timed calls
        prof["bf16_probe"] = bf16_probe()
    prof["op_overhead_us"] = round(prof["prefill"]["per_layer_us"] / max(1, prof["ops_per_layer"]), 3)
    prof["fields"] = {k: "measured" for k in prof if k not in ("version", "kind", "fields")}
    prof["profile_s"] = round(time.time() - t0, 1)
    return DeviceProfile.from_json(prof)


# the optional fields profile_device measures, by device type: a stored profile without one was measured before it
LATER_FIELDS = {"cpu": ("ttft", "host_evicted", "gemv_gbs", "gemv_by_k", "gemv_cold_by_k", "head_fp32",
                        "head_b8_fp32"),
                "cuda": ("ttft", "host_evicted", "gemv_gbs", "matmul_half")}


def outdated(profile: DeviceProfile) -> tuple[str, ...]:
    """What profile_device measures today that this stored measured profile lacks, measured before the code did:
    the projection takes an older rule there (bench/whatif_accuracy.py reads what that costs on the shipped
    profiles). () for a current profile or a preset."""
    if profile.kind != "measured":
        return ()
    shapes = MATMULS + (MATMULS_CUDA if profile.device == "cuda" else [])
    have = {flops for flops, _ in profile.matmul_fp32}
    unmeasured = sum(2 * m * k * n not in have for m, k, n in shapes)
    return tuple(f for f in LATER_FIELDS[profile.device] if getattr(profile, f) is None) + \
        ((f"{unmeasured} of the {len(shapes)} matmul_fp32 shapes",) if unmeasured else ())
