"""Students as fine-tuning starting points: every start gets the same recipe and leaves its curve and final
metric in the run dir; bad starts and tasks are one line."""
import json

import pytest

from nml_core import api
from nml_core.analysis.finetune_results import finetune_table, load_results, summarize
from nml_core.cli import main
from nml_core.errors import NMLError
from nml_core.data.tasks import GENRES, domain_task, genre_task
from nml_core.data.tokenizer import load_tokenizer
from nml_core.training.finetune import FinetuneConfig

CFG = FinetuneConfig(steps=4, batch_size=4, ctx=32, eval_every=2, eval_examples=32)


def test_genre_task_is_split_by_whole_work():
    task = genre_task(load_tokenizer(), ctx=32)
    info = task["info"]
    assert not set(info["train_works"]) & set(info["test_works"])
    assert set(task["test_y"].tolist()) == set(range(len(GENRES))), "every genre is in the test works"
    assert task["train_x"].shape[1] == 32 and len(task["train_x"]) == len(task["train_y"])


def test_genre_test_works_are_the_ones_the_teacher_never_read_and_balanced():
    held_out = ["henry_v", "macbeth", "rape_of_lucrece", "twelfth_night"]  # the shipped LM validation works
    task = genre_task(load_tokenizer(), ctx=32, test_works=held_out)
    info = task["info"]
    assert sorted(info["test_works"]) == sorted(held_out) and not set(info["train_works"]) & set(held_out)
    counts = list(info["passages"]["test"].values())
    assert len(set(counts)) == 1 and counts[0] > 0, "the same number of test passages from every genre"


def test_a_held_out_set_without_every_genre_is_refused():
    with pytest.raises(NMLError, match="no test work of genre"):
        genre_task(load_tokenizer(), ctx=32, test_works=["macbeth"])


def test_domain_task_holds_out_whole_topics():
    task = domain_task(load_tokenizer())
    assert len(task["train"]) > 10 * len(task["val"]) > 0 and task["info"]["val_topics"]


@pytest.mark.parametrize("task, metric", [("genre", "test_acc"), ("domain", "val_ppl")])
def test_every_start_is_fine_tuned_with_the_same_recipe(nested_copy, task, metric):
    results = api.finetune(nested_copy, 0.5, task, ["nml", "naive", "random"], CFG, device="cpu", seeds=(0, 1))
    assert set(results) == {f"{s}-w0.5-seed{k}" for s in ("nml", "naive", "random") for k in (0, 1)}
    params = {r["params"] for r in results.values()}
    assert len(params) == 1, "every start has the same shape"
    for stem, r in results.items():
        stored = json.loads((nested_copy / "finetune" / task / f"{stem}.json").read_text())
        assert stored["final"][metric] == r["final"][metric] and stored["recipe"]["steps"] == 4
        assert [c["step"] for c in stored["curve"]] == [2, 4] and stored["recipe"]["seed"] == stored["seed"]
        assert stored["saw"] and ("nothing" in stored["saw"]) == (stored["start"] == "random")
    rows = summarize(load_results(nested_copy, task))
    assert {(r.start, tuple(r.seeds)) for r in rows} == {(s, (0, 1)) for s in ("nml", "naive", "random")}
    assert "± " in finetune_table(load_results(nested_copy, task))
    if metric == "val_ppl":
        assert all(r["final"]["val_ppl"] > 1 for r in results.values())
    else:
        assert all(0 <= r["final"]["test_acc"] <= 1 for r in results.values())


@pytest.mark.parametrize("argv, words", [(["--task", "poetry"], "unknown task 'poetry'"),
                                         (["--task", "genre", "--starts", "independent"], "no independent-KD student"),
                                         (["--task", "genre", "--starts", "bogus"], "unknown starting point")])
def test_bad_finetune_input_is_one_line(nested_copy, capsys, argv, words):
    code = main(["finetune", str(nested_copy), "--width", "0.5", "--steps", "1", "--ctx", "32", "--device", "cpu"] + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err


def test_the_verdict_is_read_off_the_figures():
    from nml_core.analysis.finetune_results import StartSummary, verdict
    row = lambda start, mean, std: StartSummary(0.5, start, "test_acc", mean, std, [0, 1, 2], "")  # noqa: E731
    said = verdict([row("nml", 0.60, 0.02), row("independent", 0.59, 0.03), row("random", 0.40, 0.02)], 0.5)
    assert "within one standard deviation of independent" in said and "better than random" in said
    ppl = [StartSummary(0.5, "nml", "val_ppl", 30.0, 1.0, [0, 1], ""), StartSummary(0.5, "naive", "val_ppl", 25.0, 1.0, [0, 1], "")]
    assert "worse than naive" in verdict(ppl, 0.5)
    assert verdict([row("nml", 0.6, 0.0)], 0.5) is None
