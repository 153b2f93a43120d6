"""Students as fine-tuning starting points: every start gets the same recipe and leaves its curve and final
metric in the run dir; bad starts and tasks are one line."""
import json

import pytest

from nml_core import api
from nml_core.cli import main
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


def test_domain_task_holds_out_whole_topics():
    task = domain_task(load_tokenizer())
    assert len(task["train"]) > 10 * len(task["val"]) > 0 and task["info"]["val_topics"]


@pytest.mark.parametrize("task, metric", [("genre", "test_acc"), ("domain", "val_ppl")])
def test_every_start_is_fine_tuned_with_the_same_recipe(nested_copy, task, metric):
    results = api.finetune(nested_copy, 0.5, task, ["nml", "naive", "random"], CFG, device="cpu")
    assert set(results) == {"nml", "naive", "random"}
    params = {r["params"] for r in results.values()}
    assert len(params) == 1, "every start has the same shape"
    for start, r in results.items():
        stored = json.loads((nested_copy / "finetune" / task / f"{start}-w0.5.json").read_text())
        assert stored["final"][metric] == r["final"][metric] and stored["recipe"]["steps"] == 4
        assert [c["step"] for c in stored["curve"]] == [2, 4]
    if metric == "val_ppl":
        assert all(r["final"]["val_ppl"] > 1 for r in results.values())
    else:
        assert all(0 <= r["final"]["test_acc"] <= 1 for r in results.values())


@pytest.mark.parametrize("argv, words", [(["--task", "poetry"], "unknown task 'poetry'"),
                                         (["--task", "genre", "--starts", "independent"], "no independent-KD student"),
                                         (["--task", "genre", "--starts", "bogus"], "unknown starting point")])
def test_bad_finetune_input_is_one_line(nested_copy, capsys, argv, words):
    code = main(["finetune", str(nested_copy), "--width", "0.5", "--steps", "1", "--device", "cpu"] + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
