"""Teacher -> TA -> nested students (MatTA): a larger frozen teacher distils into a smaller teacher assistant that
holds the students; the TA->student term ramps in."""
import pytest
import torch
from transformers import GPT2LMHeadModel

from nml_core import api
from nml_core.analysis.pareto import run_points
from nml_core.cli import main
from nml_core.data.tokenizer import load_tokenizer
from nml_core.nesting.width import parse_axes
from nml_core.report import write_run_card
from nml_core.store.models import same_teacher
from nml_core.store.runs import load_run
from nml_core.training.config import TrainConfig
from nml_core.training.losses import mix_targets, nested_kd_loss, soft_targets
from conftest import tiny_config


@pytest.fixture(scope="module")
def ta_dir(tmp_path_factory):
    """A smaller GPT-2 (2 layers, 32 wide, 4 heads) with the real tokenizer: the TA's starting weights."""
    path = tmp_path_factory.mktemp("ta") / "ta"
    torch.manual_seed(1)
    cfg = tiny_config(n_positions=32)
    cfg.n_embd, cfg.n_head, cfg.n_inner = 32, 4, 128
    GPT2LMHeadModel(cfg).save_pretrained(str(path))
    load_tokenizer().save_pretrained(str(path))
    return path


def test_the_mixed_target_has_the_gradient_of_the_mixed_kl():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 30, generator=g, requires_grad=True)
    y = torch.randint(0, 30, (40,), generator=g)
    teacher, ta = (soft_targets(torch.randn(40, 30, generator=g), 2.0) for _ in range(2))
    r = 0.3
    (mixed,) = torch.autograd.grad(nested_kd_loss(z, y, mix_targets(teacher, ta, r), 1.0, 2.0)[0], z)
    parts = [torch.autograd.grad(nested_kd_loss(z, y, t, 1.0, 2.0)[0], z)[0] for t in (teacher, ta)]
    torch.testing.assert_close(mixed, (1 - r) * parts[0] + r * parts[1], atol=1e-6, rtol=1e-5)
    assert mix_targets(teacher, ta, 1.0) is ta and mix_targets(teacher, ta, 0.0) is teacher


def test_a_ta_run_trains_evaluates_and_exports(teacher_run, ta_dir, tmp_path):
    cfg = TrainConfig(steps=4, batch_size=2, ctx=16, lr=1e-3, log_every=1, checkpoint_every=2, kd_source="ta",
                      ta_ramp=0.5, device="cpu")
    run = api.train_nested(tmp_path / "matta", str(teacher_run), None, [1.0, 0.5, 0.25], parse_axes(None), cfg,
                           init=str(ta_dir))
    run = load_run(run.path)
    assert run.status == "done" and run.info["ta"]["shape_label"] == "2L/32d/4h"
    assert not run.info["ta"]["larger_than_teacher"] and "MatTA" in run.info["label"]
    model, _ = api.load_run_model(run)
    assert model.config.n_embd == 32, "the nested model is the TA, not a copy of the 64-wide teacher"
    api.baseline(run.path, "naive")
    report = api.evaluate_run(run.path, max_tokens=128, device="cpu").report.to_json()
    assert report["teacher"]["n_embd"] == 64 and report["widths"][0]["n_embd"] == 32  # the teacher keeps its own shape
    assert [r["width"] for r in report["baselines"]["naive"]] == [0.5, 0.25]
    assert {p["group"] for p in run_points(load_run(run.path))} == {"teacher", "MatTA", "naive slice"}
    card = write_run_card(run.path).read_text()
    assert "teacher assistant" in card and "2L/32d/4h" in card
    out = api.export(run.path, 0.5, tmp_path / "student", device="cpu")
    assert GPT2LMHeadModel.from_pretrained(str(out)).config.n_embd == 16


def test_a_width_of_a_run_can_be_the_ta(teacher_run, nested_run, tmp_path):
    cfg = TrainConfig(steps=2, batch_size=2, ctx=16, log_every=1, device="cpu")
    run = api.train_nested(tmp_path / "from-width", str(teacher_run), None, [1.0, 0.5], parse_axes(None), cfg,
                           init=f"{nested_run}@0.5")
    assert load_run(run.path).info["ta"]["label"] == "width 0.5 of run nested"
    # the Pareto page charts it with the plain NML run of the same teacher, not with a run of another teacher
    assert same_teacher(load_run(run.path), load_run(nested_run)) and not same_teacher(run, load_run(teacher_run))
    assert api.load_run_model(run.path)[0].config.n_embd == 32


def test_a_ta_with_another_vocabulary_is_one_line(teacher_run, tmp_path, capsys):
    other = tmp_path / "other"
    GPT2LMHeadModel(tiny_config(vocab_size=97)).save_pretrained(str(other))
    load_tokenizer().save_pretrained(str(other))
    capsys.readouterr()
    code = main(["train", "--teacher", str(teacher_run), "--init", str(other), "--out", str(tmp_path / "x"),
                 "--steps", "1", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "another vocabulary or tokenizer" in err[0], err
    assert not (tmp_path / "x" / "run.json").exists()


def test_ta_kd_with_a_top_k_cache_is_refused(capsys, teacher_run, tmp_path):
    code = main(["train", "--teacher", str(teacher_run), "--out", str(tmp_path / "x"), "--steps", "1",
                 "--kd-source", "ta", "--teacher-cache", str(tmp_path)])
    assert code == 2 and "drop --teacher-cache" in capsys.readouterr().err
