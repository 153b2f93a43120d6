"""The one-call GPU acceptance script, run in quick mode on a CPU over the tiny nested run."""
import json

from bench import gpu_acceptance


def test_quick_mode_runs_every_section_and_writes_the_table(nested_copy, tmp_path, capsys, monkeypatch):
    from nml_core.training import precision  # the profile's bf16 probe at a small size (tests/test_precision has it whole)
    monkeypatch.setattr(precision, "PROBE_SHAPE", dict(n_layer=1, n_embd=32, n_head=2, n_positions=16))
    monkeypatch.setattr(precision, "PROBE_BATCH", (2, 16))
    out = tmp_path / "acc"
    assert gpu_acceptance.main(["--device", "cpu", "--quick", "--run", str(nested_copy), "--out", str(out)]) == 0
    result = json.loads((out / "acceptance.json").read_text())
    assert list(result["sections"]) == list(gpu_acceptance.SECTIONS)
    assert {n: s["status"] for n, s in result["sections"].items()} == {n: "done" for n in gpu_acceptance.SECTIONS}
    step = result["sections"]["nested_step"]["rows"][0]
    assert step["nested_ms"] > 0 and step["launches_per_step"] > 100 and step["over_flop_proportional"] > 0
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
