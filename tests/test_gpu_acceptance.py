"""The one-call GPU acceptance script, run in quick mode on a CPU over the tiny nested run."""
import json

import pytest

from bench import gpu_acceptance


@pytest.fixture
def small_probe(monkeypatch):
    from nml_core.training import precision  # the profile's bf16 probe at a small size (tests/test_precision has it whole)
    monkeypatch.setattr(precision, "PROBE_SHAPE", dict(n_layer=1, n_embd=32, n_head=2, n_positions=16))
    monkeypatch.setattr(precision, "PROBE_BATCH", (2, 16))


def test_quick_mode_runs_every_section_and_writes_the_table(nested_copy, tmp_path, capsys, small_probe):
    out = tmp_path / "acc"
    assert gpu_acceptance.main(["--device", "cpu", "--quick", "--run", str(nested_copy), "--out", str(out)]) == 0
    result = json.loads((out / "acceptance.json").read_text())
    assert list(result["sections"]) == list(gpu_acceptance.SECTIONS)
    assert {n: s["status"].split(":")[0] for n, s in result["sections"].items()} == \
        {**{n: "done" for n in gpu_acceptance.SECTIONS}, "compile": "skipped"}  # compiling for a CPU: minutes
    step = result["sections"]["nested_step"]["rows"][0]
    assert step["nested_ms"] > 0 and step["launches_per_step"] > 100 and step["over_flop_proportional"] > 0
    assert step["widths"] == [1.0, 0.5, 0.25, 1 / 6]  # the 12-head toy: 1/8 is 1.5 heads, so the nearest whole: 2
    key = result["sections"]["profile_bench"]["device_key"]
    assert (out / "device_profiles" / f"{key}.json").exists() and (out / f"nested.latency.{key}.json").exists()
    assert result["sections"]["whatif"]["memory"]["n"] == 4  # every width at batch 1
    assert not (nested_copy / "latency").exists(), "the run itself is never written"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files  # what a device call can bring back
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-len(gpu_acceptance.SECTIONS):][0].startswith("| tests | done")


def test_a_section_that_does_not_fit_the_budget_is_skipped_not_run(nested_copy, tmp_path):
    out = tmp_path / "acc"
    assert gpu_acceptance.main(["--device", "cpu", "--quick", "--budget-s", "1", "--run", str(nested_copy),
                                "--out", str(out)]) == 0
    statuses = [s["status"] for s in json.loads((out / "acceptance.json").read_text())["sections"].values()]
    assert statuses and all(s.startswith("skipped") for s in statuses)


def test_bad_arguments_get_one_line_and_nothing_is_written(nested_copy, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    cases = [["--sections", "nope"], ["--run", str(tmp_path / "missing")], ["--out", str(foreign)]]
    for extra in cases:
        args = ["--device", "cpu", "--quick", "--run", str(nested_copy), "--out", str(tmp_path / "new")] + extra
        assert gpu_acceptance.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "new").exists() and [p.name for p in foreign.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_quick_mode_on_a_12_head_run_whose_weights_are_not_shipped(corpus, tmp_path, small_probe):
    """The timing sections time seeded random weights at the run's shapes; eval says why it is skipped."""
    from nml_core import api
    from nml_core.nesting.width import parse_axes, whole_head_widths
    from nml_core.training.config import TrainConfig
    cfg = TrainConfig(steps=2, batch_size=2, ctx=32, log_every=1, checkpoint_every=2)
    api.pretrain(tmp_path / "teacher", str(corpus), cfg, n_layer=2, n_embd=96, n_head=12)
    run = tmp_path / "nested"
    api.train_nested(run, str(tmp_path / "teacher"), None, whole_head_widths(12), parse_axes(None), cfg,
                     depths=[1.0, 0.5])
    for d in (tmp_path / "teacher", run):
        (d / "model" / "model.safetensors").unlink()
    out = tmp_path / "acc"
    assert gpu_acceptance.main(["--device", "cpu", "--quick", "--run", str(run), "--depth-run", str(run),
                                "--out", str(out)]) == 0
    sections = json.loads((out / "acceptance.json").read_text())["sections"]
    assert {n: s["status"].split(":")[0] for n, s in sections.items()} == \
        {**{n: "done" for n in gpu_acceptance.SECTIONS}, "eval": "skipped", "compile": "skipped"}
    assert "ships no weights" in sections["eval"]["status"]
    bench = sections["profile_bench"]
    assert "random weights" in bench["weights"]
    assert bench["widths"].keys() == {f"{w}{d}" for w in ("1", "0.5", "0.25", "0.166667") for d in ("", "@d0.5")}


def test_a_failing_row_keeps_the_rows_before_it(nested_copy, tmp_path, monkeypatch):
    import bench.nested_step as nested_step
    real, calls = nested_step.measure, []

    def measure(shape, *args, **kw):
        calls.append(shape)
        if len(calls) > 1:
            raise RuntimeError("the second row broke")
        return real(shape, *args, **kw)
    monkeypatch.setattr(nested_step, "measure", measure)
    monkeypatch.setattr(gpu_acceptance, "SHAPES_FULL", [("tiny", 2), ("tiny", 2)])
    monkeypatch.setitem(gpu_acceptance.ESTIMATE_S, "nested_step", (0, 0))
    out = tmp_path / "acc"
    args = ["--device", "cpu", "--run", str(nested_copy), "--out", str(out), "--sections", "nested_step"]
    monkeypatch.setattr(gpu_acceptance, "TINY", dict(n_layer=1, n_embd=24, n_head=12, n_inner=48, n_positions=128))
    assert gpu_acceptance.main(args) == 0
    step = json.loads((out / "acceptance.json").read_text())["sections"]["nested_step"]
    assert step["status"].startswith("failed: RuntimeError: the second row broke") and len(step["rows"]) == 1
