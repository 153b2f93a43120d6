"""A run's latency file (latency/<device key>.json) as typed records: what one device measured for every width
(or (width, depth)) of one run. nml_core.analysis.latency measures it; the Pareto page, the what-if, the model
card and BENCHMARKS read it. Files written before a workload existed lack its timings: `LatencyRow.ms` answers
None there, and every reader says so rather than showing a number.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..device import device_label
from ..errors import NMLError
from ..nesting.depth import same_subnet


@dataclass(frozen=True)
class Timing:
    """Call times of one measure (ms), over `repeats` timed calls."""
    min_ms: float
    median_ms: float
    max_ms: float
    repeats: int


@dataclass(frozen=True)
class Throughput:
    """Generated tokens per second (min / median / max over the timed calls)."""
    min: float
    median: float
    max: float


SHAPE_FIELDS = ("n_head", "n_embd", "n_inner", "n_layer", "params", "nonemb_params", "flops_per_token", "fp16_mb")


@dataclass(frozen=True)
class LatencyRow:
    """One width (and depth) of the run on this device: its shape and cost (arch.gpt2.cost) and its timings,
    keyed by measure (`ttft_b1_ms`, `prefill_b8_ms`, `elastic_prefill_b1_ms`, ...)."""
    width: float
    depth: float
    n_head: int
    n_embd: int
    n_inner: int
    n_layer: int | None  # None: a file written before depth existed (every layer)
    params: int
    nonemb_params: int
    flops_per_token: int
    fp16_mb: float
    timings: dict[str, Timing] = field(default_factory=dict)
    decode: Throughput | None = None          # greedy generate, KV cache
    decode_static: Throughput | None = None   # CUDA: the static KV cache with the compiled forward

    def ms(self, measure: str) -> float | None:
        """The median of one measure in ms (decode_ms: per generated token); None where this row lacks it."""
        if measure == "decode_ms":
            return 1e3 / self.decode.median if self.decode else None
        t = self.timings.get(measure)
        return t.median_ms if t else None

    def shape(self, full_layers: int) -> tuple[int, int, int, int]:
        return self.n_head, self.n_embd, self.n_inner, self.n_layer or full_layers

    @classmethod
    def from_json(cls, d: dict) -> "LatencyRow":
        timings = {k: Timing(**v) for k, v in d.items() if k.endswith("_ms") and isinstance(v, dict)}
        tput = lambda k: Throughput(**d[k]) if d.get(k) else None  # noqa: E731
        return cls(width=d["width"], depth=d.get("depth", 1.0), **{k: d.get(k) for k in SHAPE_FIELDS},
                   timings=timings, decode=tput("decode_tok_s"), decode_static=tput("decode_static_tok_s"))

    def to_json(self) -> dict:
        out = {"width": self.width, "depth": self.depth,
               **{k: getattr(self, k) for k in SHAPE_FIELDS if getattr(self, k) is not None},
               **{k: asdict(t) for k, t in self.timings.items()}}
        out.update({k: asdict(v) for k, v in (("decode_tok_s", self.decode), ("decode_static_tok_s", self.decode_static))
                    if v is not None})
        return out


@dataclass(frozen=True)
class LatencyReport:
    """Every width of one run timed on one device, with the device and the protocol it was measured by."""
    device: str               # cpu / cuda
    device_name: str
    device_key: str           # names the file; a bf16 report's key ends in -bf16
    threads: int | None
    torch: str
    measured: str             # when
    protocol: str
    prefill_len: int
    decode_new_tokens: int
    matmul_gflops: float
    rows: list[LatencyRow]
    weights: str | None = None      # what was timed: the run's trained weights, or its shapes with random ones
    precision: str | None = None    # bf16 reports; None: fp32
    provenance: str | None = None   # a file brought from elsewhere (a reference GPU)
    elastic_views: bool = False     # it timed the superseded elastic forward (see elastic_overhead)

    def row(self, width: float, depth: float = 1.0) -> LatencyRow | None:
        return next((r for r in self.rows if same_subnet(r.width, r.depth, width, depth)), None)

    def where(self) -> str:
        return device_label(self.device, self.threads, self.precision)

    def elastic_overhead(self, row: LatencyRow) -> float | None:
        """The elastic forward's batch-1 scoring time over the extracted student's, minus 1; None where the row
        lacks it, or where the file timed the elastic forward of strided views of the shared weights (its
        protocol says "ElasticGPT2 views"), which inference no longer runs: since 2026-12-03 it runs a stock
        student of contiguous copies (nesting.elastic.ElasticGPT2.view_student), so that figure is of code gone."""
        el, own = row.ms("elastic_prefill_b1_ms"), row.ms("prefill_b1_ms")
        return el / own - 1 if el and own and not self.elastic_views else None

    @classmethod
    def from_json(cls, d: dict, where: str = "latency file") -> "LatencyReport":
        try:
            rows = [LatencyRow.from_json(r) for r in d["widths"]]
            head = {k: d.get(k) for k in ("threads", "weights", "precision", "provenance")}
            return cls(device=d["device"], device_name=d["device_name"], device_key=d["device_key"], torch=d["torch"],
                       measured=d["measured"], protocol=d["protocol"], prefill_len=d["prefill_len"],
                       decode_new_tokens=d["decode_new_tokens"], matmul_gflops=d["matmul_gflops"], rows=rows,
                       elastic_views="ElasticGPT2 views" in d["protocol"], **head)
        except (KeyError, TypeError) as e:
            raise NMLError(f"{where} is not a latency report ({type(e).__name__}: {e}); time the run again: "
                           "python -m nml_core bench RUN") from None

    def to_json(self) -> dict:
        head = {k: getattr(self, k) for k in ("device", "device_name", "threads", "torch", "device_key", "measured",
                                              "protocol", "prefill_len", "decode_new_tokens", "matmul_gflops")}
        tail = {k: getattr(self, k) for k in ("weights", "precision", "provenance") if getattr(self, k) is not None}
        return {**head, **tail, "widths": [r.to_json() for r in self.rows]}
