"""A device profile as a typed record: what the what-if (analysis.whatif) needs to know about one device. It is
measured there (analysis.profile.profile_device) or made from vendor figures (analysis.presets.preset_profile),
and stored as <root>/device_profiles/<device key>.json (save_profile, load_profiles, below). The fields are described
in analysis.profile.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..device import device_label
from ..errors import NMLError
from ..files import atomic_write_json, read_json

PROFILE_VERSION = 1
HOST_KINDS = ("prefill", "ttft", "decode")  # the forwards whose host cost a profile measures
HEAD_ROWS = 128  # head_fp32 is measured on the LM head of one 128-token scoring call


def loglog(table: list[list[float]], x: float) -> float:
    """y at x by log-log interpolation in a table of [x, y] sorted by x, held at its ends outside it."""
    if x <= table[0][0] or x >= table[-1][0]:
        return table[0][1] if x <= table[0][0] else table[-1][1]
    xs = [math.log(a) for a, _ in table]
    i = bisect.bisect_right(xs, math.log(x))
    t = (math.log(x) - xs[i - 1]) / (xs[i] - xs[i - 1])
    return math.exp(math.log(table[i - 1][1]) + t * (math.log(table[i][1]) - math.log(table[i - 1][1])))


@dataclass(frozen=True)
class HostCost:
    """Host time of one forward (Python, dispatch, kernel launches): fixed + per layer, in microseconds."""
    fixed_us: float
    per_layer_us: float


@dataclass(frozen=True)
class MatmulModel:
    """A preset GPU's matmul time: a kernel floor plus FLOPs at the sustained rate (good at any size)."""
    floor_us: float
    sustained_gflops: float


@dataclass(frozen=True)
class DeviceProfile:
    device_key: str
    device_name: str
    device: str                          # cpu / cuda
    kind: str                            # measured / preset
    prefill: HostCost
    decode: HostCost
    ops_per_layer: int
    ops_fixed: int
    matmul_fp32: list[list[float]]       # [FLOPs, achieved GFLOP/s] per matmul size, small to large
    bandwidth_gbs: float
    read_gbs: float
    write_gbs: float
    fresh_write_gbs: float
    fresh_output_gbs: float
    asynchronous: bool                   # a GPU: host work and device work overlap
    ttft: HostCost | None = None         # profiles without it use prefill's
    gemv_gbs: float | None = None        # profiles without it use read_gbs
    head_fp32: list[list[float]] | None = None  # CPU: [K, GFLOP/s] of the 128-token scoring LM head, by inner dim
    head_b8_fp32: list[list[float]] | None = None  # CPU: the same over 8 x 128 positions (a new 206 MB output)
    gemv_by_k: list[list[float]] | None = None  # CPU: [K, GB/s] of the generated token's LM head, by inner dim
    gemv_cold_by_k: list[list[float]] | None = None  # CPU: the same read cold (a prefill's last position's head)
    host_evicted: bool | None = None     # host costs timed with the caches evicted first (before: timed hot)
    matmul_model: MatmulModel | None = None
    matmul_half: list[list[float]] | None = None
    threads: int | None = None
    precision: str | None = None
    torch: str | None = None
    measured: str | None = None          # when
    profile_s: float | None = None
    op_overhead_us: float | None = None
    bf16_probe: dict | None = None       # a CPU's fp32 vs bf16-autocast training step (training.precision)
    note: str | None = None              # a preset's vendor figures
    based_on: str | None = None          # a preset: the measured profile its host costs come from
    fields: dict[str, str] = field(default_factory=dict)  # field -> "measured" or how it was assumed
    version: int = PROFILE_VERSION

    def host(self, kind: str) -> HostCost:
        """The host cost of a prefill, ttft or decode forward (ttft falls back to prefill's)."""
        return getattr(self, kind, None) or self.prefill

    @property
    def gemv_read_gbs(self) -> float:
        """The weight read rate of a matrix-vector product whose weight is cold (gemv_gbs, else read_gbs)."""
        return self.gemv_gbs or self.read_gbs

    def head_read_gbs(self, k: int, cold: bool = False) -> float:
        """The weight read rate of a matrix-vector LM head of inner dim k, re-read call after call as a generated
        token re-reads it (gemv_by_k), or cold as a prefill's last position reads it (gemv_cold_by_k): measured by K
        where the profile has the table (a BLAS may read a (50257 x 64) weight 6x faster than a (50257 x 128) one),
        else gemv_read_gbs."""
        table = self.gemv_cold_by_k if cold else self.gemv_by_k
        return loglog(table, k) if table else self.gemv_read_gbs

    def where(self) -> str:
        return device_label(self.device, self.threads, self.precision)

    @classmethod
    def from_json(cls, d: dict, where: str = "profile") -> "DeviceProfile":
        """The profile in a stored dict, or one line naming what is missing (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing or d.get("version") != PROFILE_VERSION:
            raise NMLError(f"{where} is not a device profile of this version (missing {missing or 'version'}); "
                           "measure it again: python -m nml_core profile-device")
        kw = {k: v for k, v in d.items() if k in known}
        try:
            kw.update({k: HostCost(**kw[k]) for k in HOST_KINDS if kw.get(k) is not None})
            if kw.get("matmul_model"):
                kw["matmul_model"] = MatmulModel(**kw["matmul_model"])
        except TypeError as e:
            raise NMLError(f"{where} has a malformed field ({e}); measure it again: python -m nml_core profile-device") \
                from None
        return cls(**kw)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# ---------------------------------------------------------------- stored profiles

def profiles_dir(root: Path) -> Path:
    return Path(root) / "device_profiles"


def save_profile(prof: DeviceProfile, root: Path) -> Path:
    path = profiles_dir(root) / f"{prof.device_key}.json"
    atomic_write_json(path, prof.to_json())
    return path


def check_profile(stored: dict, where: str = "profile") -> DeviceProfile:
    """A stored profile the projection can use, or one line naming what is wrong with it."""
    prof = DeviceProfile.from_json(stored, where)
    # a CPU profile is of this kind of machine and can be re-measured here in seconds; a GPU's came home from a
    # machine we no longer hold, and stays valid for the torch it names (shown with it)
    if prof.kind == "measured" and prof.device == "cpu" and \
            (prof.torch or "").split("+")[0].rsplit(".", 1)[0] != torch.__version__.split("+")[0].rsplit(".", 1)[0]:
        raise NMLError(f"{where} was measured with torch {prof.torch}, this is {torch.__version__}; "
                       "measure it again: python -m nml_core profile-device")
    return prof


def load_profiles(*roots: Path) -> dict[str, DeviceProfile]:
    """device key -> profile, for every readable profile under the roots (a bad one is skipped, not used)."""
    out = {}
    for root in roots:
        for path in sorted(profiles_dir(root).glob("*.json")):
            try:
                prof = check_profile(read_json(path), str(path))
            except NMLError:
                continue
            out[prof.device_key] = prof
    return out


def load_whatif_errors(*roots: Path) -> dict:
    """The what-if's measured error per device class (bench/whatif_accuracy.py --write), from the first root
    that has it ({} if none, or unreadable)."""
    for root in roots:
        path = profiles_dir(root) / "whatif_error.json"
        if path.exists():
            try:
                return read_json(path)
            except NMLError:
                return {}
    return {}
