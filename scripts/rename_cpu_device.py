"""Give latency files and device profiles measured on a CPU whose model name names no model number the device key
they would get now (nml_core.device.cpu_name adds the family and model), when the family and model of the machine
they were measured on are known from its records.

  python scripts/rename_cpu_device.py KEY_PREFIX FAMILY MODEL [--roots cached_runs]

e.g. `cpu-amd-epyc 26 2`: every `<root>/*/latency/cpu-amd-epyc-<N>t[-bf16].json` and
`<root>/device_profiles/cpu-amd-epyc-<N>t.json` becomes `cpu-amd-epyc-family-26-model-2-<N>t...json`, its device_name
"AMD EPYC (family 26, model 2)" and device_key the new key; nothing else in the file changes. A target that exists
already is never overwritten (the command stops, naming it).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from nml_core.files import atomic_write_json, read_json


def renames(roots: list[Path], prefix: str) -> list[Path]:
    pattern = re.compile(re.escape(prefix) + r"-\d+t(-bf16)?\.json$")
    found = [p for root in roots for glob in ("*/latency/*.json", "device_profiles/*.json")
             for p in sorted(root.glob(glob)) if pattern.match(p.name)]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prefix")
    ap.add_argument("family", type=int)
    ap.add_argument("model", type=int)
    ap.add_argument("--roots", nargs="+", type=Path, default=[Path("cached_runs")])
    a = ap.parse_args()
    tag = f"family-{a.family}-model-{a.model}"
    plan = [(p, p.with_name(p.name.replace(a.prefix, f"{a.prefix}-{tag}", 1))) for p in renames(a.roots, a.prefix)]
    clash = [str(new) for _, new in plan if new.exists()]
    if clash:
        print(f"{clash[0]} exists already; move it away first, nothing was renamed", file=sys.stderr)
        return 2
    for old, new in plan:
        d = read_json(old)
        d["device_name"] = f"{d['device_name']} (family {a.family}, model {a.model})"
        d["device_key"] = new.stem  # a file is named by its key (a bf16 report's ends in -bf16)
        atomic_write_json(new, d)
        old.unlink()
        print(f"{old} -> {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
