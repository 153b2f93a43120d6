"""Move a build home from a rented machine in a few small files, and unpack it here.

  python scripts/stage_pack.py pack OUT_RUNS DEST --runs a,b --weights a     # on the build machine
  python scripts/stage_pack.py unpack DEST TARGET                             # here: TARGET/<run>/...

A pack is one tar.gz of the runs' files, cut into parts of at most 15 MiB (DEST/part-000, ...), with a manifest
(sha256 of every file) inside. What travels:
- every file of each run and of its baselines, but not resumable state (checkpoints/) or process files;
- model dirs only for the runs named by --weights (else their config.json alone), each safetensors file
  byte-split (the high bytes of fp16 values compress well, the low bytes do not) and zlib-compressed: about 83%
  of the raw size;
- one copy of identical files (the token files and tokenizer of every run): a later copy records the first.
Unpacking checks every file against the manifest and refuses to write into a run folder that exists.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import zlib
from pathlib import Path

PART_BYTES = 15 * 2**20
SKIP_DIRS = {"checkpoints"}
SKIP_FILES = {".lock", "heartbeat.json", "job.json", "job.log", ".job.lock"}
SPLIT = ".bsz"  # a byte-split, zlib-compressed safetensors file


def split_compress(raw: bytes) -> bytes:
    """[len(even) 8 bytes][len(zlib even) 8 bytes] zlib(even bytes) zlib(odd bytes)."""
    even, odd = zlib.compress(raw[0::2], 6), zlib.compress(raw[1::2], 6)
    return len(raw).to_bytes(8, "little") + len(even).to_bytes(8, "little") + even + odd


def split_decompress(blob: bytes) -> bytes:
    size, n_even = int.from_bytes(blob[:8], "little"), int.from_bytes(blob[8:16], "little")
    even, odd = zlib.decompress(blob[16:16 + n_even]), zlib.decompress(blob[16 + n_even:])
    raw = bytearray(size)
    raw[0::2], raw[1::2] = even, odd
    return bytes(raw)


def run_files(run_dir: Path, weights: bool) -> list[Path]:
    """The files of a run dir that travel (weights only when asked)."""
    out = []
    for f in sorted(run_dir.rglob("*")):
        rel = f.relative_to(run_dir)
        if not f.is_file() or SKIP_DIRS & set(rel.parts) or f.name in SKIP_FILES:
            continue
        if "model" in rel.parts[:-1] and f.name != "config.json" and not (weights and rel.parts[0] == "model"):
            continue  # a baseline's or a figures-only run's model dir: its config.json alone
        out.append(f)
    return out


def pack(root: Path, runs: list[str], dest: Path, weights: set[str]) -> list[Path]:
    buf, manifest, packed = io.BytesIO(), {"files": {}, "same_as": {}}, {}
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for run in runs:
            for f in run_files(root / run, run in weights):
                name, raw = str(Path(run) / f.relative_to(root / run)), f.read_bytes()
                digest = hashlib.sha256(raw).hexdigest()
                manifest["files"][name] = digest
                if digest in packed:  # the same bytes as a file already packed (token files, tokenizers)
                    manifest["same_as"][name] = packed[digest]
                    continue
                packed[digest] = name
                if f.suffix == ".safetensors" and "model" in Path(name).parts:
                    add(name + SPLIT, split_compress(raw))
                else:
                    add(name, raw)
        add("manifest.json", json.dumps(manifest, indent=1).encode())
    blob = buf.getvalue()
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(blob), PART_BYTES):
        part = dest / f"part-{i // PART_BYTES:03d}"
        part.write_bytes(blob[i:i + PART_BYTES])
        parts.append(part)
    return parts


def unpack(src: Path, target: Path) -> list[str]:
    """Write the packed runs under target/ (each run folder must not exist yet); returns the run names."""
    blob = b"".join(p.read_bytes() for p in sorted(src.glob("part-*")))
    if not blob:
        raise SystemExit(f"error: no part-* files in {src}; give the folder the pack wrote")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            files[m.name.removesuffix(SPLIT)] = split_decompress(data) if m.name.endswith(SPLIT) else data
    manifest = json.loads(files.pop("manifest.json"))
    for name, source in manifest["same_as"].items():
        files[name] = files[source]
    bad = [n for n, digest in manifest["files"].items() if hashlib.sha256(files.get(n, b"")).hexdigest() != digest]
    if bad:
        raise SystemExit(f"error: {len(bad)} file(s) differ from the manifest (first: {bad[0]}); pack again")
    runs = sorted({Path(n).parts[0] for n in files})
    taken = [r for r in runs if (target / r).exists()]
    if taken:
        raise SystemExit(f"error: {target / taken[0]} exists; unpack into another folder")
    for name, data in files.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    return runs


def pack_stages(root: Path, dest: Path, runs: list[str], weights: set[str]) -> None:
    """What build_cached_runs.py --pack calls: the finished runs, weights for those that ship them."""
    parts = pack(root, [r for r in runs if (root / r / "run.json").exists()], dest, weights)
    print(f"packed {len(parts)} part(s), {sum(p.stat().st_size for p in parts) / 1e6:.1f} MB into {dest}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("root")
    p.add_argument("dest")
    p.add_argument("--runs", required=True)
    p.add_argument("--weights", default="")
    u = sub.add_parser("unpack")
    u.add_argument("src")
    u.add_argument("target")
    a = ap.parse_args()
    if a.cmd == "pack":
        pack_stages(Path(a.root), Path(a.dest), a.runs.split(","), set(filter(None, a.weights.split(","))))
    else:
        print("unpacked:", ", ".join(unpack(Path(a.src), Path(a.target))))


if __name__ == "__main__":
    sys.exit(main())
