"""Hardware what-if: a width's latency and memory on a device, projected from the model's own work and a
profile of the device (nml_core.analysis.profile) — never from latencies measured on that device.

Per forward of a (batch B, new tokens n, cached tokens p) call, the ops of every layer are listed with their
FLOPs and bytes (arch.gpt2 dims: d residual, a attention, f FFN, V vocab):
  matmuls   qkv (Bn x d x 3a), scores and weighted values (2 x 2B n (p+n) a), out (Bn x a x d), fc (Bn x d x f),
            proj (Bn x f x d); the LM head (Bn x d x V)
  elementwise  2 LayerNorms, softmax over B heads n (p+n), GELU over Bn f, 2 residual adds; the logits written
and each costs max(FLOPs / achieved rate at that size, bytes / bandwidth). The host side costs
fixed + L x per_layer (measured on tiny models: Python, dispatch, kernel launches). On a CPU the two add up;
on a GPU they overlap, so a call costs the larger of the host side and the layers, plus the LM head (the last
kernel: issued last, nothing of the host's is left to hide it): at small batch every width of a small model then
costs about the same (launch-bound) and the speedup of small widths appears only once the arithmetic outgrows
the host side. The LM head of scoring on a CPU is priced by its inner dimension (head_fp32, head_b8_fp32); a
matrix-vector head reads its weight at its K's rate, cold in a prefill (gemv_cold_by_k) and re-read token after
token in decode (gemv_by_k).
A decoded token is a forward of n = 1 over the cache, plus generate's own per-token work (in decode.fixed_us).
Memory = weights + KV cache (2 L B (p+n) d) + the largest activations alive (the logits, or one layer's),
checked against the bytes a forward really allocates (analysis.memory, bench/whatif_accuracy.py --memory).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..arch.gpt2 import StudentDims, cost, n_layers
from ..nesting.depth import subnet_dims
from .device_profile import HEAD_ROWS, DeviceProfile, loglog
from .latency import DECODE_NEW, DECODE_PROMPT  # a decode step projected as the latency files measure it

# the latency files' measures at batch 1 and 8, by workload: TTFT (generation's prefill, last logits only) and
# scoring (the logits of every position)
MEASURES = {"ttft_b1_ms": 1, "ttft_b8_ms": 8, "prefill_b1_ms": 1, "prefill_b8_ms": 8}
WORKLOADS = {"ttft": "time to first token (KV cache, last logits)", "prefill": "scoring (all logits)"}


def matmul_ops(dims: StudentDims, batch: int, n: int, past: int) -> list[tuple[int, int, int, int]]:
    """(M, K, N, count) of every matmul of one layer's forward (q/k/v, scores, weighted values, attention output,
    FFN up and down); the LM head is costed apart (breakdown), since it depends on the logits a workload keeps."""
    d, a, f = dims.n_embd, dims.attn_dim, dims.n_inner
    m, ctx, hd, heads = batch * n, past + n, dims.head_dim, dims.n_head
    return [(m, d, 3 * a, 1), (n, hd, ctx, batch * heads), (n, ctx, hd, batch * heads), (m, a, d, 1),
            (m, d, f, 1), (m, f, d, 1)]


def elementwise_bytes(dims: StudentDims, batch: int, n: int, past: int, dtype_bytes: int) -> int:
    """Bytes read + written by one layer's elementwise ops (2 LN, softmax, GELU, 2 residual adds)."""
    m, ctx = batch * n, past + n
    return dtype_bytes * (2 * 2 * m * dims.n_embd + 2 * batch * dims.n_head * n * ctx + 2 * m * dims.n_inner
                          + 2 * 3 * m * dims.n_embd)


def rate_gflops(profile: DeviceProfile, flops: float) -> float:
    """Achieved GFLOP/s of one matmul kernel of this many FLOPs on the profiled device.

    A preset carries an analytic model (`matmul_model`: a kernel floor plus the sustained rate), good at any size.
    A measured profile carries a table: log-log interpolation inside it; outside it the *time* is extended, never
    the rate clamped: below the smallest size a kernel costs the smallest one's time (a floor), above the largest
    the time grows at the marginal rate of the table's last step (fixed overhead amortised further), so a batch
    far larger than any measured matmul is not charged the largest measured rate's share of overhead again."""
    flops = max(float(flops), 1.0)
    model = profile.matmul_model
    if model:
        return flops / (model.floor_us * 1e3 + flops / model.sustained_gflops)
    table = _arithmetic_envelope(profile.matmul_fp32)
    (f0, r0), (f_top, r_top) = table[0], table[-1]
    if flops <= f0:
        return flops / (f0 / r0)  # the smallest kernel's time
    if flops >= f_top:
        f_prev, r_prev = next(((f, r) for f, r in reversed(table) if f < f_top), (f0, r0))
        dt = f_top / r_top - f_prev / r_prev
        marginal = (f_top - f_prev) / dt if dt > 0 else r_top
        return flops / (f_top / r_top + (flops - f_top) / max(marginal, r_top))
    return loglog(table, flops)



def _arithmetic_envelope(table: list[list[float]]) -> list[list[float]]:
    """The table's rates as a function of size alone: up to its fastest entry, no larger matmul is slower than a
    smaller one. A matrix-vector product (M = 1, e.g. the batch-1 decode head) is slow because it reads a large
    weight once, not for its FLOPs; its weight read is costed apart (max with bytes / bandwidth), so as an
    arithmetic rate it would wrongly slow every compute-bound matmul of similar FLOPs."""
    peak = max(range(len(table)), key=lambda i: table[i][1])
    out, best = [], 0.0
    for i, (f, r) in enumerate(table):
        best = max(best, r) if i <= peak else r
        out.append([f, best])
    return out


FRESH_BYTES = 32 * 2 ** 20  # outputs above this get fresh memory from the OS (glibc's largest mmap threshold)


def _matmul_us(profile: DeviceProfile, m: int, k: int, n: int, count: int, dtype_bytes: int,
               gemv_gbs: float | None = None) -> float:
    """max(arithmetic, memory traffic); on a CPU a large new output (the logits) is written after the
    arithmetic, page by page, so its write adds (measured as fresh_output_gbs). gemv_gbs: the weight read rate of
    a matrix-vector product (M = 1) where the caller knows it better than the profile's one rate (the LM head's, by K)."""
    flops = 2 * m * k * n
    if profile.asynchronous:  # a GPU runs a batched matmul (per-head scores, SDPA) as one kernel
        compute = count * flops / (rate_gflops(profile, count * flops) * 1e3)
    else:  # a CPU works through the batch matrix by matrix: each pays its own size's rate
        compute = count * flops / (rate_gflops(profile, flops) * 1e3)
    out = dtype_bytes * m * n * count
    if out > FRESH_BYTES and not profile.asynchronous:
        return compute + out / (profile.fresh_output_gbs * 1e3)
    read = (gemv_gbs or profile.gemv_read_gbs) if m == 1 else profile.read_gbs  # a matrix-vector product
    memory = count * dtype_bytes * (m * k + k * n) / (read * 1e3) + out / (profile.write_gbs * 1e3)
    return max(compute, memory)


def _head_us(profile: DeviceProfile, m: int, k: int, vocab: int, dtype_bytes: int, reread: bool = False) -> float:
    """The LM head over m rows. A CPU profile that measured its scoring heads prices one of HEAD_ROWS rows or more
    at the rate measured for its inner dim K (head_fp32 at 128 rows, head_b8_fp32 at 1024 with its new output's
    page faults; log-log between them by rows, held past 1024): a (rows x K) @ (K x 50257) product runs at a rate
    of its own K that a table indexed by size does not show. Without the 1024-row table only a head whose logits
    stay below FRESH_BYTES is priced so. Any other head is a matmul like the rest. A matrix-vector one reads its
    weight at the rate measured for its K: re-read call after call (gemv_by_k) where `reread`, a generated token's
    head, which the token before it read; else cold (gemv_cold_by_k), the last position's at batch 1, read once per
    prefill after other work (bench/cold_head.py: of the 0.8-1.0 ms more that an AMD EPYC of this project took for
    the time to first token of widths 1/4 and 1/8 with the caches evicted, 0.2-0.4 ms was this read; the rest is
    the framework's code and data run cold, in the profile's host costs)."""
    if profile.head_fp32 and m >= HEAD_ROWS and dtype_bytes == 4 and not profile.asynchronous:
        rates = [[HEAD_ROWS, loglog(profile.head_fp32, k)]]
        if profile.head_b8_fp32:
            rates.append([8 * HEAD_ROWS, loglog(profile.head_b8_fp32, k)])
        if len(rates) == 2 or dtype_bytes * m * vocab <= FRESH_BYTES:
            return 2 * m * k * vocab / (loglog(rates, m) * 1e3)
    gemv = profile.head_read_gbs(k, cold=not reread) if m == 1 else None
    return _matmul_us(profile, m, k, vocab, 1, dtype_bytes, gemv)


def breakdown(profile: DeviceProfile, cfg, dims: StudentDims, batch: int, n: int, past: int = 0, kind: str = "prefill",
              dtype_bytes: int = 4) -> dict:
    """Projected microseconds of one forward: host side, the layers' arithmetic, the LM head, and the total.
    kind: prefill (scoring: the head over all n positions), ttft (the head over the last position only; the
    layers write the KV cache, as generate's prefill does) or decode (n = 1 over `past` cached tokens)."""
    layer = sum(_matmul_us(profile, m, k, nn, c, dtype_bytes) for m, k, nn, c in matmul_ops(dims, batch, n, past))
    layer += elementwise_bytes(dims, batch, n, past, dtype_bytes) / (profile.bandwidth_gbs * 1e3)
    if kind == "ttft":  # each layer writes its keys and values into the cache
        layer += 2 * batch * n * dims.attn_dim * dtype_bytes / (profile.write_gbs * 1e3)
    head = _head_us(profile, batch * (1 if kind == "ttft" else n), dims.n_embd, cfg.vocab_size, dtype_bytes,
                    reread=kind == "decode")
    host_cost = profile.host(kind)
    L = n_layers(cfg, dims)  # a depth-reduced student runs fewer blocks: fewer launches and less arithmetic
    host = host_cost.fixed_us + L * host_cost.per_layer_us
    # a GPU overlaps the host's launches with the layers' kernels, but the LM head is the forward's last kernel:
    # the host issues it last, so no host work is left to hide it behind (a CPU does the two in turn)
    total = max(host, L * layer) + head if profile.asynchronous else host + L * layer + head
    return {"host_us": host, "layers_us": L * layer, "head_us": head, "total_us": total}


def forward_us(profile: DeviceProfile, cfg, dims: StudentDims, batch: int, n: int, past: int = 0, kind: str = "prefill",
               dtype_bytes: int = 4) -> float:
    """Projected time (microseconds) of one forward on the profiled device."""
    return breakdown(profile, cfg, dims, batch, n, past, kind, dtype_bytes)["total_us"]


def speedup_batch(profile: DeviceProfile, cfg, full: StudentDims, small: StudentDims, n: int = 128, at_least: float = 1.5,
                  batches=(1, 2, 4, 8, 16, 32, 64, 128, 256), kind: str = "prefill") -> int | None:
    """The smallest batch at which the small width's prefill (of `kind`) is projected at_least x faster than the
    full one."""
    for b in batches:
        if forward_us(profile, cfg, full, b, n, kind=kind) >= at_least * forward_us(profile, cfg, small, b, n, kind=kind):
            return b
    return None


def project(profile: DeviceProfile, cfg, dims: StudentDims, n: int = 128, batches=(1, 8)) -> dict:
    """ttft_b<B>_ms and prefill_b<B>_ms (scoring) for each batch, decode_ms (per generated token) and
    decode_tok_s of one width."""
    out = {f"{kind}_b{b}_ms": forward_us(profile, cfg, dims, b, n, kind=kind) / 1e3 for kind in WORKLOADS
           for b in batches}
    steps = [forward_us(profile, cfg, dims, 1, 1, past=DECODE_PROMPT + i, kind="decode") for i in range(DECODE_NEW)]
    out["decode_ms"] = sum(steps) / len(steps) / 1e3
    out["decode_tok_s"] = 1e3 / out["decode_ms"]
    return out


def point_dims(cfg, axes, point: dict) -> StudentDims:
    """A chart point's own shape (a MatTA run's teacher point is larger than the run's model, so its width says
    nothing about it), else its (width, depth) of the run."""
    if point.get("n_head") and point.get("n_embd") and point.get("n_inner"):
        layers = point.get("n_layer") or cfg.n_layer
        return StudentDims(point["n_head"], point["n_embd"], point["n_inner"], point["n_embd"] // point["n_head"],
                           layers=None if layers == cfg.n_layer else tuple(range(layers)))
    return subnet_dims(cfg, axes, point["width"], point.get("depth", 1.0))


def memory_mb(cfg, dims: StudentDims, batch: int, ctx: int, dtype_bytes: int = 4) -> dict:
    """Weights + KV cache at this batch and context + the largest activations alive in a forward."""
    weights = cost(cfg, dims)["params"] * dtype_bytes
    kv = 2 * n_layers(cfg, dims) * batch * ctx * dims.attn_dim * dtype_bytes
    d, a, f = dims.n_embd, dims.attn_dim, dims.n_inner
    # what is alive at each peak of an inference forward (counted with analysis.memory on HF's GPT-2):
    # the logits and the final hidden states they are made from; inside a layer, the residual stream, its
    # LayerNorm, q/k/v, SDPA's output and its merged copy (attention never holds the (n x n) scores: SDPA), or
    # the MLP's fc output with the temporaries of GPT-2's tanh GELU
    logits = batch * ctx * (cfg.vocab_size + d) * dtype_bytes
    layer = batch * ctx * max(3 * d + 6 * a, 6 * d + 4 * f) * dtype_bytes
    mb = {"weights_mb": weights / 1e6, "kv_cache_mb": kv / 1e6, "activations_mb": max(logits, layer) / 1e6}
    mb["memory_mb"] = sum(mb.values())
    return mb


def best_within_budget(rows: list[dict], latency_key: str, latency_budget: float | None,
                       memory_budget_mb: float | None, quality: str = "ppl", memory_key: str = "memory_mb") -> dict | None:
    """The best-quality row whose latency (rows[latency_key], ms) and memory fit the budgets."""
    higher_better = quality != "ppl"
    fits = [r for r in rows if r.get(quality) is not None and r.get(latency_key) is not None
            and (latency_budget is None or r[latency_key] <= latency_budget)
            and (memory_budget_mb is None or r[memory_key] <= memory_budget_mb)]
    if not fits:
        return None
    return max(fits, key=lambda r: r[quality]) if higher_better else min(fits, key=lambda r: r[quality])


# ---------------------------------------------------------------- the devices a page can pick, and their points

@dataclass(frozen=True)
class ErrorBand:
    """The what-if's measured error on a class of device (bench/whatif_accuracy.py): |projected / measured - 1|."""
    median: float
    worst: float
    n: int

    @classmethod
    def of(cls, d: dict | None) -> "ErrorBand | None":
        return cls(d["median"], d["worst"], d["n"]) if d else None


@dataclass(frozen=True)
class DeviceChoice:
    """A device the Pareto page and `nml whatif` can pick. Measured: a latency file of one of the runs (its profile,
    else its preset, projects what the file lacks). Projected: a measured profile or a preset, nothing measured."""
    key: str
    kind: str                         # measured / projected
    name: str
    label: str
    profile: DeviceProfile | None
    error: ErrorBand | None = None    # for what is projected on it
    provenance: str | None = None     # a measured file brought from elsewhere (a reference GPU)

    @property
    def measured(self) -> bool:
        return self.kind == "measured"

    @property
    def outdated(self) -> tuple[str, ...]:
        """What its profile lacks, measured before profile-device measured it (() for a preset or no profile)."""
        from .profile import outdated
        return outdated(self.profile) if self.profile else ()

    def outdated_note(self) -> str | None:
        """One line when what is projected here comes from a profile measured before parts the what-if now reads:
        those parts fall back to coarser figures (the error band shown was measured with this profile as it is)."""
        lacks = self.outdated
        if not lacks:
            return None
        prof = self.profile
        when = f", measured {prof.measured[:10]}," if prof.measured else ""
        threads = f" --threads {prof.threads}" if prof.device == "cpu" and prof.threads else ""
        return (f"{prof.device_name}'s profile{when} predates what profile-device measures now "
                f"({'; '.join(lacks)}): those parts of its projections fall back to coarser figures. "
                f"Measure it again on that machine for a closer projection: python -m nml_core profile-device{threads}")

    @property
    def file_key(self) -> str | None:
        """The latency file a run's figures on this device are read from (None: nothing measured, all projected)."""
        return self.key if self.measured else None


def device_choices(runs: list, profiles: dict[str, DeviceProfile], errors: dict | None = None) -> list[DeviceChoice]:
    """Measured devices first (a latency file of one of the runs), then every profiled device and preset,
    projected, each with the what-if's measured error for its class (bench/whatif_accuracy.py)."""
    from .presets import PRESET_FOR_KEY, PRESETS, preset_base, preset_profile
    errors = errors or {}
    out, seen = [], set()
    base = preset_base(profiles)
    for run in runs:
        for key, lat in run.latency().items():
            if key not in seen:
                seen.add(key)
                # what a workload or batch its latency file lacks is projected from: its own profile, else its preset
                fallback = profiles.get(key) or (preset_profile(PRESET_FOR_KEY[key], base)
                                                 if key in PRESET_FOR_KEY and base else None)
                out.append(DeviceChoice(key, "measured", lat.device_name, f"{lat.device_name} ({lat.where()}) — measured",
                                        fallback, ErrorBand.of(errors.get("by_device", {}).get(key)), lat.provenance))
    candidates = [p for k, p in sorted(profiles.items()) if k not in seen]
    candidates += [preset_profile(name, base) for name in PRESETS] if base else []
    for prof in candidates:
        err = ErrorBand.of(errors.get("by_device", {}).get(prof.device_key) or errors.get("by_class", {}).get(prof.device)
                           or errors.get("all"))
        pm = f" ± {err.median:.0%}" if err else " (error not measured)"
        where = f" ({prof.where()})" if prof.kind == "measured" else ""
        out.append(DeviceChoice(prof.device_key, "projected", prof.device_name,
                                f"{prof.device_name}{where} — projected{pm}", prof, err))
    return out


def device_points(points: list[dict], cfg, axes, choice: DeviceChoice, batch: int, ctx: int = 128,
                  workload: str = "ttft") -> list[dict]:
    """run_points rows with this device's figures. prefill_ms: the workload's prefill (ttft or scoring) at the
    chosen batch, measured where the device has a latency file with it (prefill_measured), else projected from
    its profile; a projected device also gets every projected measure and decode; memory at that batch."""
    out = []
    key = f"{workload}_b{batch}_ms"
    for p in points:
        dims = point_dims(cfg, axes, p)
        row = {**p, **memory_mb(cfg, dims, batch, ctx)}
        if p.get("decode_tok_s"):
            row["decode_ms"] = 1e3 / p["decode_tok_s"]
        measured_here = choice.measured and p.get(key) is not None
        row["prefill_ms"] = p.get(key) if measured_here else None
        if choice.profile:
            proj = project(choice.profile, cfg, dims, n=ctx, batches=tuple(sorted({1, 8, batch})))
            if not measured_here:
                row["prefill_ms"] = proj[key]
            if row.get("decode_ms") is None:
                row["decode_ms"] = proj["decode_ms"]
            if not choice.measured:
                row.update(decode_ms=proj["decode_ms"], decode_tok_s=proj["decode_tok_s"],
                           **{m: proj[m] for m in MEASURES})
        row["prefill_measured"] = measured_here
        row["projected_here"] = choice.measured and not measured_here and row["prefill_ms"] is not None
        out.append(row)
    return out


def lesson(profile: DeviceProfile | None, cfg, axes, family: list[dict], batch: int, n: int = 128,
           workload: str = "ttft") -> str | None:
    """Why small widths gain what they gain on this device for this workload, in one paragraph of projected
    figures."""
    from ..nesting.width import WidthSpec
    if not profile or not family:
        return None
    widths = sorted(p["width"] for p in family)
    w_small, spec = widths[0], lambda w: WidthSpec(w, frozenset(axes)).dims(cfg)
    full, small = (breakdown(profile, cfg, spec(w), batch, n, kind=workload) for w in (1.0, w_small))
    ratio = full["total_us"] / small["total_us"]
    name, what = profile.device_name, WORKLOADS[workload]
    if profile.asynchronous:
        first = speedup_batch(profile, cfg, spec(1.0), spec(w_small), n, kind=workload)
        return (f"On {name} at batch {batch} ({what}), width 1 and width {w_small:g} are projected at "
                f"{full['total_us'] / 1e3:.2f} and {small['total_us'] / 1e3:.2f} ms ({ratio:.1f}x). A GPU runs the "
                f"arithmetic of a small model faster than the host can issue it: {full['host_us'] / 1e3:.2f} ms of "
                "Python, dispatch and kernel launches per forward, whatever the width (launch-bound). "
                + (f"Small widths pay off from batch {first} on (1.5x or more, projected)." if first else
                   "Up to batch 256 no width is projected 1.5x faster than the full model."))
    share = (f"{small['head_us'] / small['total_us']:.0%} LM head, {small['layers_us'] / small['total_us']:.0%} layers "
             f"and {small['host_us'] / small['total_us']:.0%} host overhead of its {small['total_us'] / 1e3:.1f} ms")
    intro = (f"On {name} (a CPU: the host's work and the arithmetic add up), {what} at batch {batch}: width "
             f"{w_small:g} is projected {ratio:.1f}x faster than width 1 ({share}).")
    if workload == "prefill":
        logits_mb = batch * n * cfg.vocab_size * 4 / 1e6
        k_small = spec(w_small).n_embd
        rates = (f" This CPU runs that product over {HEAD_ROWS} positions at {loglog(profile.head_fp32, k_small):.0f} "
                 f"GFLOP/s at width {w_small:g} (inner dimension {k_small}) against "
                 f"{loglog(profile.head_fp32, cfg.n_embd):.0f} at width 1: a product this flat runs at a rate of its "
                 "own inner dimension." if profile.head_fp32 else "")
        return (intro + f" Scoring computes {batch}x{n}x{cfg.vocab_size} fp32 logits ({logits_mb:.0f} MB) whatever the "
                f"width: the width shrinks only the LM head's inner dimension, never its {cfg.vocab_size:,} outputs per "
                f"position — the LM head caps small widths.{rates} Generation does not pay it: its prefill keeps only "
                "the last position's logits (time to first token).")
    return (intro + f" Generation's prefill computes the logits of the last position only ({batch}x{cfg.vocab_size}), "
            "so the layers' arithmetic, which shrinks with the width, is most of the cost — small widths pay off.")
