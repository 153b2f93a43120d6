"""MatTA against plain NML at equal steps (where built), the default NML run's students of each shape (nested in the
teacher itself) and the independent-KD students, from the runs' own eval.json: the table README and BENCHMARKS
render (nml_core.docs.matta).

  python scripts/matta_table.py [--root cached_runs]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nml_core.docs import matta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="cached_runs")
    print(matta(Path(ap.parse_args().root)))


if __name__ == "__main__":
    main()
