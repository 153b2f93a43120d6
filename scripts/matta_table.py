"""MatTA against plain NML at equal steps, from the runs' own eval.json (every held-out token): one row per
student shape, the TA's widths against the same widths nested in a plain copy of the TA's init, with the shipped
NML run's students of that shape (nested in the teacher itself) and the independent-KD students beside them.

  python scripts/matta_table.py [--root cached_runs]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nml_core.analysis.pareto import student_shape
from nml_core.store.runs import load_run


def by_shape(rows: list[dict]) -> dict[tuple, dict]:
    return {student_shape(r): r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="cached_runs")
    root = Path(ap.parse_args().root)
    matta, plain, nml = (load_run(root / n, require_model=False).eval()
                         for n in ("shakespeare-matta", "shakespeare-matta-plain", "shakespeare-nml"))
    plain_rows, nml_rows = by_shape(plain["widths"]), by_shape(nml["widths"])
    indep = by_shape(nml["baselines"]["independent"])
    print(f"teacher (frozen, MatTA's KD source): ppl {matta['teacher']['ppl']:.2f}; TA init (plain NML's frozen "
          f"teacher): ppl {plain['teacher']['ppl']:.2f}\n")
    print("| TA width | shape | params | MatTA | plain NML in a copy of the TA init | MatTA / plain | "
          "NML nested in the teacher (shipped) | independent KD |\n|---|---|---|---|---|---|---|---|")
    for r in matta["widths"]:
        shape = student_shape(r)
        p, n, i = plain_rows[shape], nml_rows.get(shape), indep.get(shape)
        print(f"| {r['width']:g} | {r['n_embd']}d/{r['n_head']}h/{r['n_inner']}f | {r['params'] / 1e6:.2f}M | {r['ppl']:.2f} "
              f"| {p['ppl']:.2f} | {r['ppl'] / p['ppl']:.3f} | {n['ppl'] if n else float('nan'):.2f} "
              f"| {i['ppl'] if i else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
