"""README.md and BENCHMARKS.md: every run-derived table is rendered from the shipped runs' files, and stays so."""
import json
import shutil
from pathlib import Path

from nml_core.docs import render

REPO = Path(__file__).resolve().parent.parent


def test_the_docs_agree_with_the_shipped_files():
    assert render(REPO, check=True) == [], "run `python -m nml_core render-docs` and commit the docs"


def test_a_changed_evaluation_shows_up_as_a_stale_block_and_renders_back(tmp_path):
    for run in ("shakespeare-teacher", "shakespeare-nml-depth", "shakespeare-nml", "shakespeare-nml-ffn"):
        (tmp_path / "cached_runs" / run).mkdir(parents=True)
        for name in ("run.json", "eval.json"):
            shutil.copy(REPO / "cached_runs" / run / name, tmp_path / "cached_runs" / run / name)
    (tmp_path / "DOC.md").write_text("intro\n<!-- nml:begin headline -->\nold text\n<!-- nml:end headline -->\nend\n")
    assert render(tmp_path, check=True, docs=("DOC.md",)) == ["DOC.md: headline"]
    assert "old text" in (tmp_path / "DOC.md").read_text(), "check changes nothing"
    render(tmp_path, docs=("DOC.md",))
    assert render(tmp_path, check=True, docs=("DOC.md",)) == []
    path = tmp_path / "cached_runs" / "shakespeare-nml-depth" / "eval.json"  # the default run
    ev = json.loads(path.read_text())
    next(r for r in ev["widths"] if (r["width"], r["depth"]) == (0.5, 1.0))["ppl"] = 123.45
    path.write_text(json.dumps(ev))
    assert render(tmp_path, check=True, docs=("DOC.md",)) == ["DOC.md: headline"]
    render(tmp_path, docs=("DOC.md",))
    text = (tmp_path / "DOC.md").read_text()
    assert "| 1/2 | 7.64M | 123.45 |" in text and text.startswith("intro\n") and text.endswith("end\n")


def test_an_unknown_block_is_reported(tmp_path):
    (tmp_path / "DOC.md").write_text("<!-- nml:begin no-such-table -->\n<!-- nml:end no-such-table -->\n")
    (tmp_path / "cached_runs").mkdir()
    assert render(tmp_path, check=True, docs=("DOC.md",)) == ["DOC.md: no-such-table (no such block)"]


def test_the_demo_timing_block_judges_each_figure_against_its_target():
    from nml_core.docs import demo_timing_report
    from nml_core.jobs import DEMO
    run = {"wall_min": 3.2, "train_s": 150.0, "teacher_ppl": 93.8, "width1_ppl": 120.0, "small_width": 0.125,
           "naive_ppl": 2240.0, "nml_ppl": 400.0}
    res = {"device": {"device_name": "a CPU", "threads": 2}, "estimate": {"minutes": 3.4},
           "recipe": {k: getattr(DEMO, k) for k in DEMO.__dataclass_fields__},
           "standalone": run, "browser": {**run, "wall_min": 4.1, "nml_ppl": 500.0}}
    rows = demo_timing_report(res).splitlines()[-2:]
    assert "3.20 min — meets" in rows[0] and "+6% — meets" in rows[0] and "(5.6x) — meets" in rows[0]
    assert "4.10 min — misses" in rows[1] and "-17% — meets" in rows[1] and "(4.5x) — misses" in rows[1]
    assert "width 0.125: naive" in demo_timing_report(res)
