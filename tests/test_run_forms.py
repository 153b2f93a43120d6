"""Every command meets a run in every form it ships or is left in: with full weights, as figures only, with its
baselines as figures, interrupted, or written before a field existed. Each command either works on what is
there (exit 0), or says in one line what is missing and the command that rebuilds it (exit 2), writing nothing."""
import json
import re
import shutil
from pathlib import Path

import pytest

from nml_core import api
from nml_core.cli import main

FORMS = ("full", "figures-only", "baselines-as-figures", "interrupted", "predates-fields")
COMMANDS = {
    "list": ["list", "{parent}"],
    "eval": ["eval", "{run}", "--max-tokens", "128", "--device", "cpu"],
    "eval --grid": ["eval", "{run}", "--grid", "--max-tokens", "64", "--device", "cpu"],
    "bench": ["bench", "{run}", "--widths", "1,0.5", "--repeats", "1", "--threads", "1", "--device", "cpu"],
    "whatif": ["whatif", "{run}", "--target", "{device}"],  # the device bench measured
    "export": ["export", "{run}", "--width", "0.5", "--out", "{tmp}/export", "--device", "cpu"],
    "generate": ["generate", "{run}", "--width", "0.5", "--prompt", "the king", "--max-new-tokens", "3",
                 "--device", "cpu"],
    "baseline": ["baseline", "{run}", "--kind", "naive", "--device", "cpu"],
    "finetune": ["finetune", "{run}", "--width", "0.5", "--task", "genre", "--starts", "nml,naive", "--steps", "1", "--ctx", "32",
                 "--device", "cpu"],
}
REBUILD = re.compile(r"python (-m nml_core|scripts/build_cached_runs\.py)|--resume")


def drop_weights(model_dir: Path) -> None:
    for f in model_dir.glob("*.safetensors*"):
        f.unlink()


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory, nested_run):
    """A nested run with everything a shipped one has: baselines (naive, one independent), eval, grid, latency."""
    run = tmp_path_factory.mktemp("forms") / "complete" / "nested"
    shutil.copytree(nested_run, run)
    api.baseline(run, "naive")
    api.baseline(run, "independent", width=0.5, steps=2)
    api.evaluate_run(run, max_tokens=256)
    api.evaluate_grid(run, max_tokens=64)
    api.bench_run(run, widths=[1.0, 0.5], repeats=1, threads=1)
    return run


def make_form(complete: Path, form: str, where: Path) -> Path:
    run = where / form / "nested"
    shutil.copytree(complete, run)
    if form in ("figures-only", "baselines-as-figures"):
        for b in (run / "baselines").glob("independent-*"):
            drop_weights(b / "model")
    if form == "figures-only":
        drop_weights(run / "model")
    if form == "interrupted":  # stopped mid-training: checkpoints, no final model, no figures
        shutil.rmtree(run / "model")
        for f in ("eval.json", "grid.json"):
            (run / f).unlink()
        shutil.rmtree(run / "latency")
        edit_json(run / "run.json", lambda d: d.update(status="cancelled", cancelled_at_step=2))
    if form == "predates-fields":  # fields later versions added: absent from an older run's files
        edit_json(run / "run.json", lambda d: [d.pop(k, None) for k in ("save_dtype", "process", "reorder")])
        edit_json(run / "eval.json", lambda d: [d.pop("tokens_scored", None)] +
                  [r.pop(k, None) for r in d["widths"] for k in ("doc_start_nll", "train_nll", "rest_nll")])
    return run


def snapshot(root: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("form", FORMS)
def test_every_command_works_or_names_what_is_missing(complete_run, tmp_path, capsys, form):
    outcomes = {}
    for name, argv in COMMANDS.items():
        run = make_form(complete_run, form, tmp_path / name.replace(" ", "_"))
        before = snapshot(run)
        device = next((complete_run / "latency").glob("*.json")).stem
        code = main([a.format(run=run, parent=run.parent, tmp=tmp_path / name.replace(" ", "_"), device=device)
                     for a in argv])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
        outcomes[name] = code
        if code == 0:
            continue
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (name, form, err)
        assert REBUILD.search(err[0]), f"{name} on a {form} run: {err[0]} (names no command that rebuilds it)"
        assert snapshot(run) == before, f"{name} on a {form} run refused, yet wrote"
    if form in ("full", "baselines-as-figures", "predates-fields"):
        assert all(code == 0 for code in outcomes.values()), outcomes
    if form == "figures-only":  # what reads figures works; what needs the weights says so
        assert {n for n, c in outcomes.items() if c == 0} >= {"list", "whatif"}, outcomes
